//! Files in, events out (docs/adr/0011): one pipeline behind two doors, `POST /v1/uploads`
//! (the file streamed into the object store `hs_uploads`) and the watched folder (the
//! file read where it lies). Each line becomes one event on `HS_EVENTS` through the
//! ingest rules of the HTTP API, with an id made of the file's id (a hash of its tenant
//! and content) and the line number, so that a line published again after a crash is a
//! JetStream duplicate; progress is checkpointed in KV `hs_files`, whose record of a file
//! is also the lease that lets one replica at a time work on it.
//!
//! - `format.rs`: lines → events or rejections (CSV, NDJSON).
//! - `pipeline.rs`: a file's lines published with many PubAcks in flight, checkpoints.
//! - `progress.rs`: the `hs_files` record, its CAS lease, kept rejected lines.
//! - `runner.rs`: which files this replica takes (claims, permits, the uploads scan).
//! - `folder.rs`: the watched folder (inotify plus rescans, settling, done/, rejected/).
//! - `store.rs`: uploads in the object store.
//!
//! Nothing here knows HTTP: `api/uploads.rs` turns requests into [`UploadRequest`]s.

pub mod folder;
pub mod format;
pub mod pipeline;
pub mod progress;
pub mod runner;
pub mod store;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_nats::jetstream::kv;
use bytes::Bytes;
use chrono::Utc;
use futures::Stream;
use sha2::{Digest, Sha256};
use tokio::sync::{Notify, Semaphore};
use tracing::info;

pub use format::Format;
pub use progress::{FileRecord, KeptErrors, Origin, RejectedLine, Status};

use crate::broker::{Broker, BrokerError, setup};
use crate::config::Config;
use crate::ingest::Ingestor;
use crate::model::{EventType, TenantId};
use crate::telemetry::metrics as m;
use store::{StoreError, UploadStore};

#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("{0}")]
    Invalid(String),
    #[error("the file is over the limit of {max} bytes")]
    TooLarge { max: u64 },
    #[error("the upload broke off: {0}")]
    Body(String),
    #[error("another replica took the file over")]
    LeaseLost,
    #[error("stored file data is unreadable: {0}")]
    Corrupt(String),
    #[error("reading the file: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

impl From<StoreError> for FilesError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::TooLarge { max } => Self::TooLarge { max },
            StoreError::Body(m) => Self::Body(m),
            StoreError::Broker(b) => Self::Broker(b),
        }
    }
}

/// How an upload's lines become events, checked by the API before a byte is stored.
#[derive(Debug, Clone)]
pub struct UploadRequest {
    pub tenant: TenantId,
    pub format: Format,
    pub event_type: Option<EventType>,
    pub type_column: Option<String>,
    pub name: Option<String>,
}

/// What `POST /v1/uploads` answers: a new upload, or the first one with this content.
#[derive(Debug, Clone)]
pub struct Uploaded {
    pub id: String,
    pub tenant: String,
    pub duplicate: bool,
}

/// The file id of some content for a tenant: `upl_` and 32 hex digits of a hash of both.
/// Uploads and folder files share it, so the same content is ingested once per tenant
/// whichever door it comes through.
pub fn file_id(tenant: &TenantId, sha256: &[u8; 32]) -> String {
    let digest = Sha256::new()
        .chain_update(tenant.as_str())
        .chain_update([0u8])
        .chain_update(sha256)
        .finalize();
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("upl_{hex}")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The files service of one process: stores uploads, answers about files, and (in
/// processes that run workers) ingests them.
#[derive(Clone)]
pub struct Files(Arc<Inner>);

pub struct Inner {
    pub(crate) broker: Broker,
    pub(crate) cfg: Arc<Config>,
    pub(crate) ingestor: Ingestor,
    pub(crate) kv: kv::Store,
    pub(crate) store: UploadStore,
    /// This replica's name in the records it owns.
    pub(crate) owner: String,
    /// At most `ingest.max_files` files at once in this replica.
    pub(crate) permits: Arc<Semaphore>,
    /// Ids of the files this replica is working on.
    pub(crate) running: Mutex<HashSet<String>>,
    /// Wakes the uploads scan when this replica stored an upload.
    pub(crate) wake: Notify,
    /// Every file record, kept current by a watch on `hs_files` (`run_index`): the list
    /// is read from here, not by listing the bucket (a consumer per request).
    pub(crate) index: RwLock<HashMap<String, FileRecord>>,
}

impl std::ops::Deref for Files {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl Files {
    pub async fn connect(
        broker: Broker,
        cfg: Arc<Config>,
        ingestor: Ingestor,
    ) -> Result<Self, BrokerError> {
        let kv = Box::pin(setup::ensure_bucket(&broker.js, setup::files_bucket(&cfg))).await?;
        let objects = Box::pin(setup::ensure_object_store(
            &broker.js,
            setup::uploads_store(&cfg),
        ))
        .await?;
        let store = UploadStore::new(broker.js.clone(), objects).await?;
        Ok(Self(Arc::new(Inner {
            permits: Arc::new(Semaphore::new(cfg.ingest.max_files)),
            broker,
            cfg,
            ingestor,
            kv,
            store,
            owner: format!("replica-{}", ulid::Ulid::new()),
            running: Mutex::default(),
            wake: Notify::new(),
            index: RwLock::default(),
        })))
    }

    /// Streams an upload into the object store, then records it (or recognises its
    /// content): nothing of a refused or broken upload is left behind.
    pub async fn upload<E: std::fmt::Display>(
        &self,
        request: UploadRequest,
        body: impl Stream<Item = Result<Bytes, E>> + Unpin,
    ) -> Result<Uploaded, FilesError> {
        let staged = self
            .store
            .stage(body, self.cfg.ingest.upload_max_bytes)
            .await?;
        let id = file_id(&request.tenant, &staged.sha256);
        if progress::load(&self.kv, &id).await?.is_some() {
            self.store.discard(staged).await;
            metrics::counter!(m::FILES, "status" => "duplicate").increment(1);
            return Ok(Uploaded {
                id,
                tenant: request.tenant.to_string(),
                duplicate: true,
            });
        }
        // Unique per upload: two uploads of the same content racing each write their own
        // object, and the one whose record loses deletes its own.
        let object = format!("{id}.{}", ulid::Ulid::new());
        self.store.commit(&staged, &object).await?;
        let record = FileRecord {
            id: id.clone(),
            tenant: request.tenant.to_string(),
            name: request.name,
            origin: Origin::Upload {
                object: object.clone(),
            },
            format: request.format,
            event_type: request.event_type.map(|t| t.to_string()),
            type_column: request.type_column,
            sha256: hex(&staged.sha256),
            size: staged.size,
            status: Status::Queued,
            lines: 0,
            accepted: 0,
            rejected: 0,
            duplicates: 0,
            checkpoint_line: 0,
            owner: None,
            created_at: Utc::now(),
            started_at: None,
            finished_at: None,
            heartbeat_at: None,
            error: None,
        };
        if progress::create(&self.kv, &record).await?.is_err() {
            self.store.delete(&object).await?;
            metrics::counter!(m::FILES, "status" => "duplicate").increment(1);
            return Ok(Uploaded {
                id,
                tenant: record.tenant,
                duplicate: true,
            });
        }
        info!(file = %id, tenant = %record.tenant, bytes = staged.size, "upload stored");
        metrics::counter!(m::FILES, "status" => "queued").increment(1);
        self.wake.notify_one();
        Ok(Uploaded {
            id,
            tenant: record.tenant,
            duplicate: false,
        })
    }

    pub async fn get(&self, id: &str) -> Result<Option<FileRecord>, FilesError> {
        Ok(progress::load(&self.kv, id).await?.map(|(r, _)| r))
    }

    pub async fn errors(&self, id: &str) -> Result<KeptErrors, FilesError> {
        progress::load_errors(&self.kv, id).await
    }

    /// Every file record, newest first.
    pub fn list(&self) -> Vec<FileRecord> {
        let retention = chrono::Duration::seconds(
            i64::try_from(self.cfg.ingest.files_retention.as_secs()).unwrap_or(i64::MAX / 2),
        );
        let now = Utc::now();
        let mut all: Vec<FileRecord> = self
            .index
            .read()
            .expect("index lock is never poisoned")
            .values()
            // A record the bucket let expire leaves no tombstone in the watch.
            .filter(|r| {
                let written = r.heartbeat_at.or(r.finished_at).unwrap_or(r.created_at);
                now.signed_duration_since(written) < retention
            })
            .cloned()
            .collect();
        all.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
        all
    }

    /// Keeps the index of file records current until `token` is cancelled.
    pub async fn run_index(self, token: tokio_util::sync::CancellationToken) {
        use futures::StreamExt;
        loop {
            match self.kv.watch(crate::broker::names::file_key(">")).await {
                Ok(mut watch) => loop {
                    let entry = tokio::select! {
                        _ = token.cancelled() => return,
                        entry = watch.next() => entry,
                    };
                    match entry {
                        Some(Ok(entry)) => self.index_entry(entry),
                        Some(Err(e)) => {
                            tracing::warn!(error = %e, "file records watch failed; watching again");
                            break;
                        }
                        None => break,
                    }
                },
                Err(e) => tracing::warn!(error = %e, "file records not watched; trying again"),
            }
            tokio::select! {
                _ = token.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    fn index_entry(&self, entry: kv::Entry) {
        let Some(id) = crate::broker::names::file_of_key(&entry.key) else {
            return;
        };
        let mut index = self.index.write().expect("index lock is never poisoned");
        match entry.operation {
            kv::Operation::Put => match serde_json::from_slice::<FileRecord>(&entry.value) {
                Ok(record) => {
                    index.insert(id.to_string(), record);
                }
                Err(e) => tracing::warn!(file = %id, error = %e, "unreadable file record"),
            },
            kv::Operation::Delete | kv::Operation::Purge => {
                index.remove(id);
            }
        }
    }

    fn is_running(&self, id: &str) -> bool {
        self.running
            .lock()
            .expect("running set lock is never poisoned")
            .contains(id)
    }
}
