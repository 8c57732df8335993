//! A drain's view of its consumer: what it believes is waiting, the one pull it has
//! open, and when to look again after an empty answer (`dispatcher.rs` drives it).

use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

/// The pull of a drain that the server has not finished answering.
pub(super) struct OpenPull {
    pub(super) request: u64,
    pub(super) asked: usize,
    /// Messages still to come for it.
    pub(super) left: usize,
    /// One in-flight slot of the worker's budget per message still to come.
    pub(super) permits: OwnedSemaphorePermit,
    pub(super) sent: Instant,
}

/// Looks again after a pull found nothing although new events were announced, before
/// the destination goes idle. nats-server tells the signal consumer of a new message
/// before every filtered consumer has counted it, so a pull sent at once can be answered
/// "no messages"; measured (`make bench`, 1,000 ev/s over 1,000 destinations): without
/// these looks an event now and then waited for the destination's next event, ~1 s
/// there, up to the sweep interval for a quiet destination.
const RECHECKS: [Duration; 2] = [Duration::from_millis(10), Duration::from_millis(100)];

/// A drain's view of its consumer: messages believed waiting, and its open pull (one at
/// a time: the next is sent when this one is answered in full or ended).
#[derive(Default)]
pub(super) struct Pulls {
    pub(super) owed: usize,
    pub(super) open: Option<OpenPull>,
    /// Messages were announced since the last one arrived.
    pub(super) announced: bool,
    /// Looks taken since the last message arrived.
    pub(super) rechecks: usize,
    /// When to look again (no pull before).
    pub(super) recheck_at: Option<Instant>,
    /// The consumer was just created after a pull found none.
    pub(super) created: bool,
}

impl Pulls {
    /// Stops waiting for the open pull (its permits go back to the budget) and for a
    /// second look.
    pub(super) fn abandon(&mut self) {
        self.open = None;
        self.recheck_at = None;
    }

    pub(super) fn got_message(&mut self) {
        self.created = false;
        self.announced = false;
        self.rechecks = 0;
    }

    /// After an empty answer: one more look a little later, while announced messages have
    /// not come and looks are left.
    pub(super) fn recheck_if_announced(&mut self) {
        if let Some(wait) = RECHECKS.get(self.rechecks).filter(|_| self.announced) {
            self.rechecks += 1;
            self.owed = 1;
            self.recheck_at = Some(Instant::now() + *wait);
        }
    }
}

pub(super) async fn sleep_until_or_never(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
