//! Which files this replica works on. A file is taken only with a free permit
//! (`ingest.max_files`) and a successful claim of its record: at once when nobody owns
//! it (a new upload, a released file), or when its record has kept the same revision
//! for a whole `ingest.lease_ms` on this replica's own clock (the owner is presumed
//! dead). The uploads scan walks the object store, whose objects are exactly the uploads
//! whose ingest is not done; the folder scan (`folder.rs`) walks the folder.

use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::progress::{self, FileRecord, Lease, Observed, Origin};
use super::{Files, FilesError, pipeline};

/// An object without a record this old is the leftover of an upload that died between
/// storing and recording: no client got a 202 for it.
const ORPHAN_AGE: Duration = Duration::from_secs(60);

impl Files {
    /// Claims the file when it is this replica's to take, and starts its ingest.
    pub(crate) async fn try_take(
        &self,
        record: FileRecord,
        revision: u64,
        observed: &mut Observed,
        tracker: &TaskTracker,
        token: &CancellationToken,
    ) -> Result<bool, FilesError> {
        if record.status.is_finished() || self.is_running(&record.id) {
            return Ok(false);
        }
        let lease = self.cfg.ingest.lease;
        if record.owner.is_some() && !observed.silent(&record.id, revision, lease) {
            return Ok(false);
        }
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            return Ok(false);
        };
        let previous = record.owner.clone();
        let Some(lease) = Lease::claim(&self.kv, record, revision, &self.owner).await? else {
            return Ok(false);
        };
        observed.forget(&lease.record.id);
        if let Some(previous) = previous {
            info!(file = %lease.record.id, %previous, from_line = lease.record.checkpoint_line, "took over a file whose owner went silent");
        }
        self.start(lease, permit, tracker, token);
        Ok(true)
    }

    /// Runs a claimed file's ingest in the background.
    pub(crate) fn start(
        &self,
        lease: Lease,
        permit: OwnedSemaphorePermit,
        tracker: &TaskTracker,
        token: &CancellationToken,
    ) {
        let id = lease.record.id.clone();
        self.running
            .lock()
            .expect("running set lock is never poisoned")
            .insert(id.clone());
        let files = self.clone();
        let token = token.clone();
        tracker.spawn(async move {
            let _permit = permit;
            if let Err(e) = pipeline::run(&files, lease, &token).await {
                warn!(file = %id, error = %e, "file ingest stopped; it resumes from its checkpoint");
            }
            files
                .running
                .lock()
                .expect("running set lock is never poisoned")
                .remove(&id);
            // A permit is free again: look for waiting files now.
            files.wake.notify_one();
        });
    }

    /// Scans for uploads to take until `token` is cancelled.
    pub async fn run_uploads(self, tracker: TaskTracker, token: CancellationToken) {
        let mut observed = Observed::default();
        let mut tick = tokio::time::interval(self.cfg.ingest.rescan);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = token.cancelled() => return,
                _ = tick.tick() => {}
                _ = self.wake.notified() => {}
            }
            if let Err(e) = self.scan_uploads(&mut observed, &tracker, &token).await {
                warn!(error = %e, "uploads scan failed; trying again");
            }
        }
    }

    async fn scan_uploads(
        &self,
        observed: &mut Observed,
        tracker: &TaskTracker,
        token: &CancellationToken,
    ) -> Result<(), FilesError> {
        for (object, age) in self.store.list().await? {
            let Some((id, _)) = object.split_once('.') else {
                continue;
            };
            if self.is_running(id) {
                continue;
            }
            let found = progress::load(&self.kv, id).await?;
            let ours =
                |r: &FileRecord| matches!(&r.origin, Origin::Upload { object: o } if *o == object);
            match found {
                Some((record, _)) if ours(&record) && record.status.is_finished() => {
                    // Done, but the owner died before deleting it.
                    self.store.delete(&object).await?;
                }
                Some((record, revision)) if ours(&record) => {
                    self.try_take(record, revision, observed, tracker, token)
                        .await?;
                }
                _ if age >= ORPHAN_AGE => {
                    info!(%object, "deleting an upload nobody recorded");
                    self.store.delete(&object).await?;
                }
                _ => {}
            }
        }
        Ok(())
    }
}
