//! Reading the dead letters a request means from `HS_DLQ`, in order: a page of a
//! [`DeadLetterFilter`], or the listed ids of a [`Target`].
//!
//! Everything is read with direct gets (`next_by_subj` from a sequence), so no consumer
//! is created and any replica, or any NATS client, can read the same way. Tenant and
//! destination narrow the subject (`hs.dlq.<tenant|*>.<destination|*>`), so the server
//! skips other dead letters; the event type is only in the headers and is checked here.
//!
//! Costs, per page:
//! - one stream-info request (the stream's bounds);
//! - with a time range, a binary search of the sequence where each bound falls: about
//!   `log2(dead letters)` direct gets per bound (stored times grow with the sequence);
//! - one direct get per dead letter looked at. Oldest first reads forward from the
//!   cursor. Newest first reads windows of sequences backwards (each window forwards,
//!   then reversed), doubling the window while it finds too little, so a page reads at
//!   most about three times the page size of matching dead letters.
//! - at most `budget` dead letters looked at: a page of a selective event-type filter
//!   over a large stream may come back short, with a cursor to go on.
//!
//! A cursor also holds the stream's last sequence when the first page was read: dead
//! letters added later (a replay that failed again) are not part of the same paged read,
//! so a paged replay ends even while its own replays keep failing.

use std::fmt;

use async_nats::jetstream::message::StreamMessage;
use async_nats::jetstream::stream::DirectGetErrorKind;
use chrono::{DateTime, Utc};
use futures::StreamExt;

use super::DlqError;
use super::filter::{DeadLetterFilter, Target};
use super::letter::{self, StoredDeadLetter, stored_at};
use crate::broker::{Broker, BrokerError};
use crate::model::TenantId;

/// Dead letters looked at per call of [`pick`], per dead letter asked for (a selective
/// event-type filter may look at many to find a few).
const SCAN_FACTOR: usize = 20;

/// Order of a listing. Replays and purges always go oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    Oldest,
    #[default]
    Newest,
}

/// Where a paged read goes on: `position` is the last sequence covered (oldest first:
/// go on after it; newest first: go on below it) and `last` the stream's last sequence
/// when the first page was read. Shown to clients as `<position>-<last>`, an opaque token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub position: u64,
    pub last: u64,
}

impl Cursor {
    pub fn parse(text: &str) -> Result<Self, DlqError> {
        let bad = || DlqError::Invalid(format!("cursor {text:?} is not a cursor of this list"));
        let (position, last) = text.split_once('-').ok_or_else(bad)?;
        let cursor = Self {
            position: position.parse().map_err(|_| bad())?,
            last: last.parse().map_err(|_| bad())?,
        };
        if cursor.position > cursor.last.saturating_add(1) {
            return Err(bad());
        }
        Ok(cursor)
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.position, self.last)
    }
}

/// Dead letters read by [`scan`], and the cursor of what is left (`None`: done).
pub struct Scan {
    pub letters: Vec<StoredDeadLetter>,
    pub next: Option<Cursor>,
}

/// The dead letters one replay or purge call works on.
pub struct Picked {
    /// In sequence order.
    pub letters: Vec<StoredDeadLetter>,
    /// Where the next call goes on (filters only).
    pub next: Option<Cursor>,
    /// Listed ids that are not (or no longer) dead letters, or another tenant's.
    pub not_found: Vec<u64>,
}

/// The dead letters of this call: the listed ids (in sequence order, missing ones noted),
/// or the next page of the filter, oldest first. `tenant` (a tenant key's scope) narrows
/// either, whatever the filter said.
pub async fn pick(
    broker: &Broker,
    target: &Target,
    tenant: Option<&TenantId>,
    cursor: Option<Cursor>,
    limit: usize,
) -> Result<Picked, DlqError> {
    match target {
        Target::Ids(ids) => {
            let mut ids = ids.clone();
            ids.sort_unstable();
            ids.dedup();
            let read: Vec<Result<Option<StoredDeadLetter>, DlqError>> =
                futures::stream::iter(ids.iter().copied())
                    .map(|id| letter::get(broker, id))
                    .buffered(32)
                    .collect()
                    .await;
            let mut picked = Picked {
                letters: Vec::with_capacity(ids.len()),
                next: None,
                not_found: Vec::new(),
            };
            for (id, letter) in ids.into_iter().zip(read) {
                match letter? {
                    Some(l) if tenant.is_none_or(|t| t.as_str() == l.tenant) => {
                        picked.letters.push(l)
                    }
                    _ => picked.not_found.push(id),
                }
            }
            Ok(picked)
        }
        Target::Filter(filter) => {
            let filter = filter.scoped_to(tenant);
            let budget = limit.saturating_mul(SCAN_FACTOR).max(10_000);
            let scan = scan(broker, &filter, Order::Oldest, cursor, limit, budget).await?;
            Ok(Picked {
                letters: scan.letters,
                next: scan.next,
                not_found: Vec::new(),
            })
        }
    }
}

/// Up to `want` dead letters of `selection` in `order` after `cursor`, looking at no more
/// than `budget` messages.
pub async fn scan(
    broker: &Broker,
    selection: &DeadLetterFilter,
    order: Order,
    cursor: Option<Cursor>,
    want: usize,
    budget: usize,
) -> Result<Scan, DlqError> {
    let filter = selection.filter_subject(broker);
    let info = broker
        .dlq
        .get_info()
        .await
        .map_err(|e| BrokerError::new("reading the dead-letter stream", e))?;
    let last = cursor.map_or(info.state.last_sequence, |c| c.last);
    let mut lo = info.state.first_sequence.max(1);
    let mut hi = last.min(info.state.last_sequence);
    match (order, cursor) {
        (Order::Oldest, Some(c)) => lo = lo.max(c.position.saturating_add(1)),
        (Order::Newest, Some(c)) => hi = hi.min(c.position.saturating_sub(1)),
        (_, None) => {}
    }
    if info.state.messages == 0 || lo > hi {
        return Ok(Scan {
            letters: Vec::new(),
            next: None,
        });
    }
    if let Some(since) = selection.since {
        lo = first_position(broker, &filter, lo, hi, |t| t < since).await?;
    }
    if let Some(until) = selection.until {
        hi = first_position(broker, &filter, lo, hi, |t| t <= until)
            .await?
            .saturating_sub(1);
    }
    let mut reader = Reader {
        broker,
        selection,
        filter,
        looked_at: 0,
        budget: budget.max(1),
    };
    let (letters, covered) = if lo > hi {
        (Vec::new(), None)
    } else {
        match order {
            Order::Oldest => reader.forward(lo, hi, want).await?,
            Order::Newest => reader.backward(lo, hi, want).await?,
        }
    };
    Ok(Scan {
        letters,
        next: covered.map(|position| Cursor { position, last }),
    })
}

struct Reader<'a> {
    broker: &'a Broker,
    selection: &'a DeadLetterFilter,
    filter: String,
    looked_at: usize,
    budget: usize,
}

impl Reader<'_> {
    /// Oldest first in `lo..=hi`. Returns the letters and, when more may follow, the last
    /// sequence covered.
    async fn forward(
        &mut self,
        lo: u64,
        hi: u64,
        want: usize,
    ) -> Result<(Vec<StoredDeadLetter>, Option<u64>), DlqError> {
        let want = want.max(1);
        let mut out = Vec::new();
        let mut next = lo;
        while next <= hi && out.len() < want && self.looked_at < self.budget {
            let Some(message) = next_at_or_after(self.broker, &self.filter, next, hi).await? else {
                next = hi.saturating_add(1);
                break;
            };
            self.looked_at += 1;
            next = message.sequence + 1;
            if let Some(letter) = self.letter(message) {
                out.push(letter);
            }
        }
        let more = next <= hi;
        Ok((out, more.then(|| next - 1)))
    }

    /// Newest first in `lo..=hi`: windows of sequences from the top down, each read
    /// forwards and then reversed. Returns the letters and, when more may follow, the
    /// lowest sequence covered.
    async fn backward(
        &mut self,
        lo: u64,
        hi: u64,
        want: usize,
    ) -> Result<(Vec<StoredDeadLetter>, Option<u64>), DlqError> {
        let want = want.max(1);
        let mut out = Vec::new();
        let mut top = hi;
        let mut width = (want as u64).max(16);
        loop {
            let room = (self.budget - self.looked_at) as u64;
            let bottom = top.saturating_sub(width.min(room).max(1) - 1).max(lo);
            let mut window = Vec::new();
            let mut next = bottom;
            while next <= top {
                let Some(message) = next_at_or_after(self.broker, &self.filter, next, top).await?
                else {
                    break;
                };
                self.looked_at += 1;
                next = message.sequence + 1;
                window.push(message);
            }
            // Newest first. `covered`: the lowest sequence looked at so far.
            let mut covered = top;
            let mut full = false;
            for message in window.into_iter().rev() {
                if out.len() == want {
                    full = true;
                    break;
                }
                covered = message.sequence;
                if let Some(letter) = self.letter(message) {
                    out.push(letter);
                }
            }
            if full {
                // Part of this window is left: go on below the last one taken.
                return Ok((out, Some(covered)));
            }
            if out.len() == want || bottom <= lo || self.looked_at >= self.budget {
                return Ok((out, (bottom > lo).then_some(bottom)));
            }
            top = bottom - 1;
            width = width.saturating_mul(2);
        }
    }

    fn letter(&self, message: StreamMessage) -> Option<StoredDeadLetter> {
        StoredDeadLetter::from_message(&self.broker.subjects, message)
            .filter(|l| self.selection.matches(l))
    }
}

/// The first message on `filter` at or after `seq`, if there is one at or below `hi`.
async fn next_at_or_after(
    broker: &Broker,
    filter: &str,
    seq: u64,
    hi: u64,
) -> Result<Option<StreamMessage>, DlqError> {
    match broker
        .dlq
        .direct_get_next_for_subject(filter, Some(seq.max(1)))
        .await
    {
        Ok(message) if message.sequence <= hi => Ok(Some(message)),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == DirectGetErrorKind::NotFound => Ok(None),
        Err(e) => Err(BrokerError::new("reading dead letters", e).into()),
    }
}

/// The first position in `lo..=hi + 1` from which the next dead letter on `filter` does
/// not satisfy `before` (was stored later), by binary search: stored times grow with the
/// sequence. `hi + 1` when every dead letter in range is `before`.
async fn first_position(
    broker: &Broker,
    filter: &str,
    lo: u64,
    hi: u64,
    before: impl Fn(DateTime<Utc>) -> bool,
) -> Result<u64, DlqError> {
    let (mut a, mut b) = (lo, hi.saturating_add(1));
    while a < b {
        let mid = a + (b - a) / 2;
        match next_at_or_after(broker, filter, mid, hi).await? {
            // Everything up to this message is before the bound.
            Some(message) if before(stored_at(&message)) => a = message.sequence + 1,
            _ => b = mid,
        }
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_rejects_garbage() {
        let c = Cursor {
            position: 17,
            last: 500,
        };
        assert_eq!(Cursor::parse(&c.to_string()).unwrap(), c);
        for bad in ["", "17", "a-b", "17-", "-5", "600-500", "1.5-9"] {
            assert!(Cursor::parse(bad).is_err(), "{bad}");
        }
    }
}
