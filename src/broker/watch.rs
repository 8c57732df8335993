//! One watch over a whole KV bucket, history first, that reopens itself when it ends
//! (NATS restarted, the connection moved): the one loop that keeps an in-memory copy of
//! a bucket current on every replica (API keys in `access/store.rs`, destinations in
//! `destinations/watch.rs`). What a change means is the caller's.

use std::time::Duration;

use async_nats::jetstream::kv::{self, Entry, Watch};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::BrokerError;

/// How long a watch that ended waits before each try to open it again.
const REOPEN_EVERY: Duration = Duration::from_secs(1);

/// The bucket as it was when a watch opened.
#[derive(Debug, Clone, Copy)]
pub struct Opened {
    /// No values: no history will come, the copy is complete at once.
    pub empty: bool,
    /// The bucket stream's last sequence (an empty bucket may have had entries that
    /// were deleted and expired: nothing to wait for below it).
    pub last_seq: u64,
}

/// What [`BucketWatch::next`] saw.
pub enum Change {
    Entry(Entry),
    /// The watch ended and is open again, history first: what changed meanwhile comes
    /// again as puts, but a deletion made while it was down does not come at all.
    Reopened(Opened),
}

pub struct BucketWatch {
    bucket: kv::Store,
    /// What the bucket holds, for the logs ("API keys", "destinations").
    what: &'static str,
    watch: Watch,
}

impl BucketWatch {
    pub async fn open(
        bucket: kv::Store,
        what: &'static str,
    ) -> Result<(Self, Opened), BrokerError> {
        let (watch, opened) = watch(&bucket).await?;
        Ok((
            Self {
                bucket,
                what,
                watch,
            },
            opened,
        ))
    }

    /// The next change; `None` once `token` is cancelled. An error of the watch is
    /// logged and skipped; a watch that ends is opened again, every second until it
    /// opens.
    pub async fn next(&mut self, token: &CancellationToken) -> Option<Change> {
        loop {
            let next = tokio::select! {
                _ = token.cancelled() => return None,
                next = self.watch.next() => next,
            };
            match next {
                Some(Ok(entry)) => return Some(Change::Entry(entry)),
                Some(Err(e)) => warn!(error = %e, bucket = self.what, "KV watch error"),
                None => {
                    warn!(bucket = self.what, "KV watch ended; reopening");
                    return self.reopen(token).await.map(Change::Reopened);
                }
            }
        }
    }

    /// Opens the watch again, history first, trying every second; `None` once `token`
    /// is cancelled.
    pub async fn reopen(&mut self, token: &CancellationToken) -> Option<Opened> {
        loop {
            tokio::select! {
                _ = token.cancelled() => return None,
                _ = tokio::time::sleep(REOPEN_EVERY) => {}
            }
            match watch(&self.bucket).await {
                Ok((watch, opened)) => {
                    self.watch = watch;
                    return Some(opened);
                }
                Err(e) => warn!(error = %e, bucket = self.what, "KV watch not reopened yet"),
            }
        }
    }
}

/// The bucket's state, then a watch of every key with its history.
async fn watch(bucket: &kv::Store) -> Result<(Watch, Opened), BrokerError> {
    let status = bucket
        .status()
        .await
        .map_err(|e| BrokerError::new("reading a KV bucket's status", e))?;
    let opened = Opened {
        empty: status.values() == 0,
        last_seq: status.info.state.last_sequence,
    };
    let watch = bucket
        .watch_with_history(">")
        .await
        .map_err(|e| BrokerError::new("watching a KV bucket", e))?;
    Ok((watch, opened))
}
