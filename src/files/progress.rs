//! A file's record in KV `hs_files`: what it is, its status and counts, its checkpoint,
//! and who owns it. Every write after the first is a compare-and-set on the record's
//! revision, which makes the record its own lease: the owner rewrites it at least every
//! third of `ingest.lease_ms` (checkpoints and heartbeats), a replica that has seen the
//! same revision for a whole `lease_ms` presumes the owner dead and takes the file with
//! a CAS on that revision, and the old owner's next write fails, so it stops. No clocks
//! are compared between replicas: each times the silence on its own monotonic clock.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::kv;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::FilesError;
use crate::broker::BrokerError;
use crate::broker::names;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Queued,
    Processing,
    Done,
    Failed,
}

impl Status {
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Done | Self::Failed)
    }

    /// As the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Processing => "processing",
            Self::Done => "done",
            Self::Failed => "failed",
        }
    }
}

/// Which door a file came through.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Origin {
    /// In `hs_uploads` under this object name until its ingest is done.
    Upload { object: String },
    /// In the watched folder, read where it lies.
    Folder { path: String },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileRecord {
    pub id: String,
    pub tenant: String,
    /// The file's name as given (upload field or query, or the folder file's name).
    pub name: Option<String>,
    pub origin: Origin,
    pub format: super::Format,
    pub event_type: Option<String>,
    pub type_column: Option<String>,
    /// SHA-256 of the content, hex.
    pub sha256: String,
    pub size: u64,
    pub status: Status,
    /// Lines read (empty lines and a CSV header not counted) = accepted + rejected +
    /// duplicates.
    pub lines: u64,
    pub accepted: u64,
    pub rejected: u64,
    /// Lines whose event JetStream already had: published by an earlier owner that died
    /// before its checkpoint.
    pub duplicates: u64,
    /// Every line up to this number is stored or rejected, and counted above.
    pub checkpoint_line: u64,
    pub owner: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub heartbeat_at: Option<DateTime<Utc>>,
    /// Why a failed file failed.
    pub error: Option<String>,
}

impl FileRecord {
    fn to_bytes(&self) -> Bytes {
        serde_json::to_vec(self)
            .expect("a record serialises")
            .into()
    }
}

/// One rejected line, as `GET /v1/uploads/{id}/errors` and the errors file show it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RejectedLine {
    pub line: u64,
    pub reason: String,
    /// The line (its first 512 bytes).
    pub text: String,
}

/// The rejected lines kept for a file (the first `ingest.errors_kept`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct KeptErrors {
    pub lines: Vec<RejectedLine>,
}

fn broker(context: &'static str) -> impl FnOnce(kv::EntryError) -> FilesError {
    move |e| FilesError::Broker(BrokerError::new(context, e))
}

/// The record and its revision, if there is one.
pub async fn load(kv: &kv::Store, id: &str) -> Result<Option<(FileRecord, u64)>, FilesError> {
    let Some(entry) = kv
        .entry(names::file_key(id))
        .await
        .map_err(broker("reading a file record"))?
    else {
        return Ok(None);
    };
    if entry.operation != kv::Operation::Put {
        return Ok(None);
    }
    let record = serde_json::from_slice(&entry.value)
        .map_err(|e| FilesError::Corrupt(format!("record of {id}: {e}")))?;
    Ok(Some((record, entry.revision)))
}

/// Creates the record unless one exists: `Ok(revision)` when created, else the existing
/// record. Two replicas (or two uploads of the same content) racing: exactly one creates.
pub async fn create(
    kv: &kv::Store,
    record: &FileRecord,
) -> Result<Result<u64, (FileRecord, u64)>, FilesError> {
    loop {
        match kv
            .create(names::file_key(&record.id), record.to_bytes())
            .await
        {
            Ok(revision) => return Ok(Ok(revision)),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                if let Some(existing) = load(kv, &record.id).await? {
                    return Ok(Err(existing));
                }
                // Deleted between the two calls: try again.
            }
            Err(e) => {
                return Err(FilesError::Broker(BrokerError::new(
                    "creating a file record",
                    e,
                )));
            }
        }
    }
}

/// Leases as another replica sees them: the revision of each file record seen with an owner, and since when (this replica's
/// clock): the owner is presumed dead once it has not rewritten it for a lease.
#[derive(Default)]
pub struct Observed(HashMap<String, (u64, Instant)>);

impl Observed {
    /// Whether the owner of `id` has been silent for `lease` at `revision`.
    pub(crate) fn silent(&mut self, id: &str, revision: u64, lease: Duration) -> bool {
        let now = Instant::now();
        let seen = self.0.entry(id.to_string()).or_insert((revision, now));
        if seen.0 != revision {
            *seen = (revision, now);
            return false;
        }
        now.duration_since(seen.1) >= lease
    }

    pub fn forget(&mut self, id: &str) {
        self.0.remove(id);
    }
}

/// Ownership of one file: the record as this replica last wrote it, and its revision.
pub struct Lease {
    kv: kv::Store,
    revision: u64,
    pub record: FileRecord,
}

impl Lease {
    /// Takes the file: a CAS on `revision` (the one seen when the owner was presumed
    /// dead, or the queued record's). `None` if another replica was faster.
    pub async fn claim(
        kv: &kv::Store,
        mut record: FileRecord,
        revision: u64,
        owner: &str,
    ) -> Result<Option<Lease>, FilesError> {
        record.owner = Some(owner.to_string());
        record.status = Status::Processing;
        record.started_at.get_or_insert_with(Utc::now);
        let mut lease = Lease {
            kv: kv.clone(),
            revision,
            record,
        };
        match lease.write().await {
            Ok(()) => Ok(Some(lease)),
            Err(FilesError::LeaseLost) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A lease on a record this replica has just created.
    pub fn created(kv: &kv::Store, record: FileRecord, revision: u64) -> Lease {
        Lease {
            kv: kv.clone(),
            revision,
            record,
        }
    }

    /// Writes the record (checkpoint, heartbeat, the end) if this replica still owns it.
    pub async fn write(&mut self) -> Result<(), FilesError> {
        self.record.heartbeat_at = Some(Utc::now());
        let key = names::file_key(&self.record.id);
        match self
            .kv
            .update(&key, self.record.to_bytes(), self.revision)
            .await
        {
            Ok(revision) => {
                self.revision = revision;
                Ok(())
            }
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                Err(FilesError::LeaseLost)
            }
            Err(e) => Err(FilesError::Broker(BrokerError::new(
                "writing a file record",
                e,
            ))),
        }
    }

    /// Gives the file up on shutdown so that another replica need not wait out the
    /// lease: the record stays `processing` with its checkpoint, without an owner.
    pub async fn release(mut self) {
        self.record.owner = None;
        self.record.status = Status::Queued;
        if let Err(e) = self.write().await {
            tracing::warn!(file = %self.record.id, error = %e, "file not released; another replica takes it after the lease");
        }
    }
}

pub async fn load_errors(kv: &kv::Store, id: &str) -> Result<KeptErrors, FilesError> {
    match kv
        .get(names::file_errors_key(id))
        .await
        .map_err(broker("reading rejected lines"))?
    {
        Some(bytes) if !bytes.is_empty() => serde_json::from_slice(&bytes)
            .map_err(|e| FilesError::Corrupt(format!("rejected lines of {id}: {e}"))),
        _ => Ok(KeptErrors::default()),
    }
}

/// Only the owner writes a file's kept errors, before the checkpoint that covers them.
pub async fn save_errors(kv: &kv::Store, id: &str, errors: &KeptErrors) -> Result<(), FilesError> {
    let value: Bytes = serde_json::to_vec(errors)
        .expect("rejected lines serialise")
        .into();
    kv.put(names::file_errors_key(id), value)
        .await
        .map(drop)
        .map_err(|e| FilesError::Broker(BrokerError::new("writing rejected lines", e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_is_spelled_as_serde_writes_it() {
        for s in [
            Status::Queued,
            Status::Processing,
            Status::Done,
            Status::Failed,
        ] {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
    }
}
