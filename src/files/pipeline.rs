//! One file's ingest: lines parsed on a blocking thread (`format.rs`), each one's event
//! published with `Nats-Msg-Id` = `<file id>_<line>` and up to `ingest.publish_window`
//! PubAcks in flight, outcomes taken in line order, and a checkpoint written every
//! `ingest.checkpoint_lines` lines and at the end.
//!
//! Invariant: a checkpoint at line L is written only after every line up to L has its
//! PubAck (or its rejection), and its counts and kept rejections cover exactly the lines
//! up to L. A crash anywhere then loses nothing (the next owner resumes after L) and
//! stores nothing twice (lines after L that were stored already are duplicates within
//! JetStream's window, and counted as such).

use std::io::Read;

use chrono::Utc;
use futures::future::{BoxFuture, FutureExt};
use futures::stream::{FuturesOrdered, StreamExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, warn};

use super::format::{self, Item, Parsed, Settings};
use super::progress::{self, KeptErrors, Lease, Origin, RejectedLine, Status};
use super::{Files, FilesError, folder};
use crate::broker::BrokerError;
use crate::broker::names;
use crate::ingest::{IngestError, TraceContext};
use crate::model::{EventId, EventType, NewEvent, TenantId};
use crate::telemetry::metrics as m;

/// Lines handed from the parser thread to the publisher at a time.
const BATCH: usize = 256;

/// What became of one line, in line order.
enum Outcome {
    Stored,
    Duplicate,
    Rejected(RejectedLine),
    Failed(BrokerError),
}

struct Done {
    line: u64,
    outcome: Outcome,
}

/// The state of a running ingest: its lease (the record with the counts), the kept
/// rejections, the folder's errors file.
struct Run<'a> {
    files: &'a Files,
    lease: Lease,
    kept: KeptErrors,
    kept_dirty: bool,
    errors_file: Option<folder::ErrorsFile>,
    done_line: u64,
    since_checkpoint: u64,
    lines_done: [u64; 3],
}

pub async fn run(files: &Files, lease: Lease, token: &CancellationToken) -> Result<(), FilesError> {
    let record = &lease.record;
    let id = record.id.clone();
    let tenant =
        TenantId::parse(record.tenant.clone()).map_err(|e| FilesError::Corrupt(e.to_string()))?;
    let event_type = record
        .event_type
        .clone()
        .map(EventType::parse)
        .transpose()
        .map_err(|e| FilesError::Corrupt(e.to_string()))?;
    let settings = Settings {
        format: record.format,
        tenant: tenant.clone(),
        event_type,
        type_column: record.type_column.clone(),
        max_line_bytes: files.cfg.api.body_limit_bytes,
        skip_through: record.checkpoint_line,
    };
    let checkpoint = record.checkpoint_line;
    let mut kept = progress::load_errors(&files.kv, &id).await?;
    kept.lines.retain(|l| l.line <= checkpoint);
    let (reader, errors_file): (Box<dyn Read + Send>, _) = match &record.origin {
        Origin::Upload { object } => {
            let object = files.store.open(object).await?;
            (Box::new(tokio_util::io::SyncIoBridge::new(object)), None)
        }
        Origin::Folder { path } => {
            let path = std::path::PathBuf::from(path);
            let file = std::fs::File::open(&path)?;
            let errors = folder::ErrorsFile::open(&path, checkpoint)?;
            (Box::new(file), Some(errors))
        }
    };
    info!(file = %id, tenant = %tenant, from_line = checkpoint, "file ingest started");
    let mut run = Run {
        files,
        lease,
        kept,
        kept_dirty: false,
        errors_file,
        done_line: checkpoint,
        since_checkpoint: 0,
        lines_done: [0; 3],
    };
    let (tx, rx) = mpsc::channel::<Vec<Item>>(8);
    let parser = tokio::task::spawn_blocking(move || {
        let mut batch = Vec::with_capacity(BATCH);
        let parsed = format::parse(reader, &settings, |item| {
            batch.push(item);
            if batch.len() < BATCH {
                return true;
            }
            let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
            tx.blocking_send(full).is_ok()
        });
        if !batch.is_empty() {
            let _ = tx.blocking_send(batch);
        }
        parsed
    });
    let published = run.publish_all(rx, &tenant, token).await;
    let parsed = parser
        .await
        .map_err(|e| FilesError::Corrupt(format!("the parser thread ended: {e}")))?;
    match published {
        Ok(true) => {}
        // Stopped by shutdown: hand the file over at its checkpoint.
        Ok(false) => {
            run.checkpoint().await?;
            info!(file = %id, line = run.done_line, "file released at shutdown");
            run.lease.release().await;
            return Ok(());
        }
        Err(FilesError::LeaseLost) => return Err(FilesError::LeaseLost),
        Err(e) => {
            // Leave it to be taken again (here or elsewhere) from its last checkpoint.
            run.lease.release().await;
            return Err(e);
        }
    }
    let failure = parsed.err().map(|e| e.to_string());
    run.finish(failure).await
}

impl Run<'_> {
    /// Publishes every line; `Ok(false)` when stopped by `token`.
    async fn publish_all(
        &mut self,
        mut rx: mpsc::Receiver<Vec<Item>>,
        tenant: &TenantId,
        token: &CancellationToken,
    ) -> Result<bool, FilesError> {
        let cfg = &self.files.cfg.ingest;
        let window = cfg.publish_window;
        let mut beat = tokio::time::interval(cfg.lease / 3);
        beat.reset();
        let mut pending: FuturesOrdered<BoxFuture<'static, Done>> = FuturesOrdered::new();
        let mut input_open = true;
        let mut stopping = false;
        loop {
            if !input_open && pending.is_empty() {
                return Ok(!stopping);
            }
            tokio::select! {
                biased;
                Some(done) = pending.next(), if !pending.is_empty() => {
                    self.apply(done)?;
                    if self.since_checkpoint >= cfg.checkpoint_lines {
                        self.checkpoint().await?;
                        beat.reset();
                    }
                }
                batch = rx.recv(), if input_open && !stopping && pending.len() < window => {
                    match batch {
                        Some(items) => self.publish(items, tenant, &mut pending, token).await?,
                        None => input_open = false,
                    }
                }
                _ = beat.tick() => self.lease.write().await?,
                _ = token.cancelled(), if !stopping => {
                    // In-flight lines finish; nothing new is read.
                    stopping = true;
                    input_open = false;
                }
            }
        }
    }

    async fn publish(
        &mut self,
        items: Vec<Item>,
        tenant: &TenantId,
        pending: &mut FuturesOrdered<BoxFuture<'static, Done>>,
        token: &CancellationToken,
    ) -> Result<(), FilesError> {
        let events = items
            .iter()
            .filter(|i| matches!(i.parsed, Parsed::Event(_)))
            .count() as u32;
        self.admit(tenant, events, token).await?;
        let files = self.files;
        let trace = TraceContext::default();
        for item in items {
            let line = item.line;
            let event = match item.parsed {
                Parsed::Rejected { reason, text } => {
                    pending.push_back(rejected(line, reason, text));
                    continue;
                }
                Parsed::Event(e) => e,
            };
            let id = EventId::parse(names::file_line_event_id(&self.lease.record.id, line))
                .map_err(|e| FilesError::Corrupt(e.to_string()))?;
            let event = NewEvent {
                id: None,
                tenant: None,
                event_type: event.event_type,
                data: event.data,
                source: event.source,
                occurred_at: event.occurred_at,
                destination_id: event.destination_id,
            };
            let message = match files.ingestor.subject(tenant, &event).await {
                Ok(subject) => files.ingestor.message(&id, tenant, event, subject, &trace),
                Err(e) => Err(e),
            };
            let out = match message {
                Ok(out) => out,
                Err(IngestError::Broker(e)) => return Err(FilesError::Broker(e)),
                Err(e) => {
                    pending.push_back(rejected(line, e.to_string(), String::new()));
                    continue;
                }
            };
            let span = out.span;
            let ack = files
                .broker
                .js
                .publish_with_headers(out.subject, out.headers, out.body)
                .instrument(span.clone())
                .await
                .map_err(|e| {
                    FilesError::Broker(BrokerError::new("publishing a file's event", e))
                })?;
            pending.push_back(
                async move {
                    let outcome = match ack.await {
                        Ok(a) if a.duplicate => Outcome::Duplicate,
                        Ok(_) => Outcome::Stored,
                        Err(e) => {
                            Outcome::Failed(BrokerError::new("awaiting a file event's ack", e))
                        }
                    };
                    Done { line, outcome }
                }
                .instrument(span)
                .boxed(),
            );
        }
        Ok(())
    }

    /// Waits while the tenant is over its ingest limit: a file's lines are held back,
    /// never refused, and the lease is kept alive meanwhile.
    async fn admit(
        &mut self,
        tenant: &TenantId,
        events: u32,
        token: &CancellationToken,
    ) -> Result<(), FilesError> {
        if events == 0 {
            return Ok(());
        }
        loop {
            let wait = match self.files.ingestor.admit(tenant, events).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(wait)) => wait,
                Err(IngestError::Broker(e)) => return Err(FilesError::Broker(e)),
                Err(e) => return Err(FilesError::Invalid(e.to_string())),
            };
            let beat = self.files.cfg.ingest.lease / 3;
            tokio::select! {
                _ = tokio::time::sleep(wait.min(beat)) => {}
                _ = token.cancelled() => return Ok(()),
            }
            self.lease.write().await?;
        }
    }

    /// Counts a line's outcome; the record gets the counts only with a checkpoint (a
    /// heartbeat in between must not carry counts past its checkpoint line).
    fn apply(&mut self, done: Done) -> Result<(), FilesError> {
        match done.outcome {
            Outcome::Stored => self.lines_done[0] += 1,
            Outcome::Duplicate => self.lines_done[2] += 1,
            Outcome::Rejected(rejection) => {
                self.lines_done[1] += 1;
                if let Some(file) = &mut self.errors_file {
                    file.write(&rejection)?;
                }
                if self.kept.lines.len() < self.files.cfg.ingest.errors_kept {
                    self.kept.lines.push(rejection);
                    self.kept_dirty = true;
                }
            }
            Outcome::Failed(e) => return Err(FilesError::Broker(e)),
        }
        self.done_line = done.line;
        self.since_checkpoint += 1;
        Ok(())
    }

    /// Rejections first, then the record: a checkpoint never covers a rejection that is
    /// not stored yet.
    async fn checkpoint(&mut self) -> Result<(), FilesError> {
        if self.kept_dirty {
            progress::save_errors(&self.files.kv, &self.lease.record.id, &self.kept).await?;
            self.kept_dirty = false;
        }
        if let Some(file) = &mut self.errors_file {
            file.flush()?;
        }
        let counts = self.lines_done;
        let before = self.lease.record.clone();
        let record = &mut self.lease.record;
        record.checkpoint_line = self.done_line;
        record.accepted += counts[0];
        record.rejected += counts[1];
        record.duplicates += counts[2];
        record.lines += counts.iter().sum::<u64>();
        if let Err(e) = self.lease.write().await {
            // Not written: what a release writes next must not claim these lines.
            self.lease.record = before;
            return Err(e);
        }
        self.since_checkpoint = 0;
        self.lines_done = [0; 3];
        // Counted once checkpointed: what a crash repeats is not counted twice.
        for (outcome, n) in ["accepted", "rejected", "duplicate"].iter().zip(counts) {
            if n > 0 {
                metrics::counter!(m::FILE_LINES, "outcome" => *outcome).increment(n);
            }
        }
        if counts[0] > 0 {
            metrics::counter!(m::EVENTS_INGESTED, "via" => "file").increment(counts[0]);
        }
        Ok(())
    }

    /// Every line is stored or rejected (or the file could not be read on): the last
    /// checkpoint with the file's status, then the file leaves (`done/`, or its object
    /// deleted).
    async fn finish(mut self, failure: Option<String>) -> Result<(), FilesError> {
        let record = &mut self.lease.record;
        record.status = if failure.is_some() {
            Status::Failed
        } else {
            Status::Done
        };
        record.error = failure.clone();
        record.finished_at = Some(Utc::now());
        record.owner = None;
        self.checkpoint().await?;
        let record = &self.lease.record;
        let status = if failure.is_some() { "failed" } else { "done" };
        metrics::counter!(m::FILES, "status" => status).increment(1);
        match &failure {
            Some(why) => {
                warn!(file = %record.id, error = %why, lines = record.lines, "file failed")
            }
            None => {
                info!(file = %record.id, lines = record.lines, accepted = record.accepted, rejected = record.rejected, duplicates = record.duplicates, "file done")
            }
        }
        match &record.origin {
            Origin::Upload { object } => {
                if let Err(e) = self.files.store.delete(object).await {
                    // The uploads scan deletes it later: the record says done.
                    warn!(file = %record.id, error = %e, "upload not deleted yet");
                }
            }
            Origin::Folder { path } => {
                let errors = self.errors_file.take();
                folder::file_done(
                    std::path::Path::new(path),
                    errors,
                    failure.as_deref(),
                    record.lines,
                )?;
            }
        }
        Ok(())
    }
}

fn rejected(line: u64, reason: String, text: String) -> BoxFuture<'static, Done> {
    futures::future::ready(Done {
        line,
        outcome: Outcome::Rejected(RejectedLine { line, reason, text }),
    })
    .boxed()
}
