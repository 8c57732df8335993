//! Whether the delivery shards have room (docs/adr/0010). A full shard refuses the
//! router's deliveries, which then waits, so events pile up on `HS_EVENTS` unrouted:
//! ingest answers 503 instead of accepting more, as it does when `HS_EVENTS` itself is
//! full. Read from the shards' info at most once a second, in the background, so that an
//! ingest never waits for it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::warn;

/// How stale the answer may be.
const REFRESH: Duration = Duration::from_secs(1);
/// A shard counts as full this close to its `max_bytes`: room for one more event's
/// deliveries is not room for the next second's.
const HEADROOM: f64 = 0.98;

#[derive(Default)]
pub struct ShardFill {
    /// Name of a full shard, if any (empty: none).
    full: std::sync::Mutex<String>,
    checked_ms: AtomicU64,
    refreshing: AtomicBool,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl ShardFill {
    /// A full shard's name, from the last look; starts a new look when that one is stale.
    pub fn full_shard(&self, broker: &super::Broker) -> Option<String> {
        let stale = now_ms().saturating_sub(self.checked_ms.load(Ordering::Acquire))
            > REFRESH.as_millis() as u64;
        if stale && !self.refreshing.swap(true, Ordering::AcqRel) {
            let broker = broker.clone();
            tokio::spawn(async move {
                let full = full_now(&broker).await;
                *broker
                    .fill
                    .full
                    .lock()
                    .expect("fill lock is never poisoned") = full.unwrap_or_default();
                broker.fill.checked_ms.store(now_ms(), Ordering::Release);
                broker.fill.refreshing.store(false, Ordering::Release);
            });
        }
        let full = self.full.lock().expect("fill lock is never poisoned");
        (!full.is_empty()).then(|| full.clone())
    }
}

async fn full_now(broker: &super::Broker) -> Option<String> {
    for shard in &broker.shards {
        let mut shard = shard.clone();
        match shard.info().await {
            Ok(info) => {
                let max = info.config.max_bytes;
                if max > 0 && info.state.bytes as f64 >= HEADROOM * max as f64 {
                    return Some(info.config.name.clone());
                }
            }
            Err(e) => {
                warn!(error = %e, "delivery shard info not read");
                return None;
            }
        }
    }
    None
}
