//! Reading one subject filter of a stream **newest first**, which JetStream has no call
//! for: windows of sequences from a top sequence down, each read forwards with batch
//! direct gets (`direct.rs`) and handed out in reverse.
//!
//! What a request costs decides the shape (measured on 1,000,000 events, ADR 0016): a
//! batch direct get first counts the filter's matches from its start sequence to the
//! end of the stream (`Nats-Num-Pending`), which for a subject filter deep in the
//! stream means matching subjects in every block above it (~2.4 ms at the middle of a
//! 1,000,000-event stream), while a single direct get (`next_by_subj`, no batch) only
//! finds the next match (~0.1 ms), and a filter of `>` is counted from block totals. So:
//! - the walker first asks one single get for the lowest match of its whole range: a
//!   filter with nothing there costs that one request, and no window goes below it;
//! - each window asks one single get for its lowest match before any batch: an empty
//!   window costs no batch;
//! - a batch asks for as many messages as the window can hold by the density seen so
//!   far, not a fixed 256 of which most may lie above the window;
//! - a window grows (at most four times) or shrinks toward a number of matches that
//!   starts at what the caller expects to take (a page) and doubles up to [`BATCH`];
//!   one holding more than [`MAX_WINDOW`] matches is cut to its upper half before it is
//!   kept, so memory stays bounded.

use super::direct::{self, StoredMessage};
use super::{Broker, BrokerError};

/// The most matches a window aims at, and messages asked for in one batch direct get.
const BATCH: usize = 256;
/// A window holding more than this many matches is cut in half before it is kept.
const MAX_WINDOW: usize = 4096;

/// One filter's messages in `lo..=hi`, newest first.
pub struct Walker {
    stream: &'static str,
    filter: String,
    lo: u64,
    /// The top of the next window; below `lo` when every window has been read.
    top: u64,
    width: u64,
    /// Matches the next window aims at: the caller's expectation first, twice as many
    /// after each window with matches (a page usually stops early), at most [`BATCH`].
    target: usize,
    /// Whether `lo` has been raised to the filter's lowest match yet.
    bounded: bool,
    /// Matches per sequence in the last window that had any: sizes the next batches.
    density: Option<f64>,
    /// The current window's messages, oldest first (handed out from the end).
    buffer: Vec<StoredMessage>,
}

impl Walker {
    /// `expected`: how many messages the caller thinks it will take, the first window's
    /// width (a page's length).
    pub fn new(stream: &'static str, filter: String, lo: u64, hi: u64, expected: usize) -> Self {
        Self {
            stream,
            filter,
            lo: lo.max(1),
            top: hi,
            width: expected.clamp(1, BATCH) as u64,
            target: expected.clamp(1, BATCH),
            bounded: false,
            density: None,
            buffer: Vec::new(),
        }
    }

    fn done(&self) -> bool {
        self.top < self.lo
    }

    /// The sequence of the newest message not handed out yet.
    pub async fn peek(&mut self, broker: &Broker) -> Result<Option<u64>, BrokerError> {
        while self.buffer.is_empty() && !self.done() {
            self.read_window(broker).await?;
        }
        Ok(self.buffer.last().map(|m| m.seq))
    }

    /// The newest message not handed out yet, taken.
    pub async fn next(&mut self, broker: &Broker) -> Result<Option<StoredMessage>, BrokerError> {
        self.peek(broker).await?;
        Ok(self.buffer.pop())
    }

    /// Takes the peeked message when it has sequence `seq`.
    pub fn take_if(&mut self, seq: u64) -> Option<StoredMessage> {
        if self.buffer.last().is_some_and(|m| m.seq == seq) {
            self.buffer.pop()
        } else {
            None
        }
    }

    /// The lowest match at or above `from`, if it is not above `top`.
    async fn first_match(
        &self,
        broker: &Broker,
        from: u64,
        top: u64,
    ) -> Result<Option<StoredMessage>, BrokerError> {
        Ok(direct::next_one(broker, self.stream, &self.filter, from)
            .await?
            .filter(|m| m.seq <= top))
    }

    /// Reads the window below the last one into the buffer.
    async fn read_window(&mut self, broker: &Broker) -> Result<(), BrokerError> {
        if !self.bounded {
            self.bounded = true;
            match self.first_match(broker, self.lo, self.top).await? {
                Some(first) => self.lo = first.seq,
                None => {
                    self.top = self.lo - 1;
                    return Ok(());
                }
            }
        }
        let top = self.top;
        let mut bottom = top.saturating_sub(self.width - 1).max(self.lo);
        let window = loop {
            let Some(first) = self.first_match(broker, bottom, top).await? else {
                break Vec::new();
            };
            let from = first.seq;
            match self.read_range(broker, first, top).await? {
                Some(window) => break window,
                // Too many matches: keep the upper half of what holds them only.
                None => bottom = from + (top - from) / 2 + 1,
            }
        };
        let width = top - bottom + 1;
        self.width = match window.last() {
            None => width.saturating_mul(4),
            Some(last) => {
                // The density where the walk goes on: from the bottom to the highest
                // match, so matches bunched low in the window (a stretch of other
                // subjects above them) do not make the next window too wide.
                let n = window.len() as u64;
                let span = last.seq - bottom + 1;
                self.density = Some(n as f64 / span as f64);
                let next = span.saturating_mul(self.target as u64) / n;
                self.target = (self.target * 2).min(BATCH);
                next.clamp(1, width.saturating_mul(4))
            }
        };
        self.top = bottom.saturating_sub(1);
        self.buffer = window;
        Ok(())
    }

    /// The matches in `first.seq..=top` (`first` being the lowest), oldest first, or
    /// `None` when there are more than [`MAX_WINDOW`] (and the range spans more than one
    /// sequence).
    async fn read_range(
        &self,
        broker: &Broker,
        first: StoredMessage,
        top: u64,
    ) -> Result<Option<Vec<StoredMessage>>, BrokerError> {
        let bottom = first.seq;
        let mut next = first.seq + 1;
        let mut out = vec![first];
        let mut asked = false;
        while next <= top {
            let span = top - next + 1;
            // After a batch that came back full the estimate was too low: ask for all.
            let batch = if asked {
                span.min(BATCH as u64) as usize
            } else {
                self.batch_for(span)
            };
            asked = true;
            let answer = direct::next_batch(broker, self.stream, &self.filter, next, batch).await?;
            let mut passed_top = false;
            for message in answer.messages {
                if message.seq > top {
                    passed_top = true;
                    break;
                }
                next = message.seq + 1;
                out.push(message);
            }
            if passed_top || !answer.more {
                break;
            }
            if out.len() > MAX_WINDOW && bottom < top {
                return Ok(None);
            }
        }
        Ok(Some(out))
    }

    /// Messages to ask for to cover `span` sequences: all of them until a density is
    /// known, then the expected matches with a margin.
    fn batch_for(&self, span: u64) -> usize {
        let span = usize::try_from(span).unwrap_or(usize::MAX);
        let expected = match self.density {
            Some(d) => (d * span as f64 * 1.25).ceil() as usize + 4,
            None => span,
        };
        expected.clamp(1, BATCH).min(span)
    }
}

/// The newest message left among `walkers` (the same sequence from two filters once).
pub async fn next_newest(
    broker: &Broker,
    walkers: &mut [Walker],
) -> Result<Option<StoredMessage>, BrokerError> {
    let mut best: Option<(usize, u64)> = None;
    for (i, walker) in walkers.iter_mut().enumerate() {
        if let Some(seq) = walker.peek(broker).await?
            && best.is_none_or(|(_, b)| seq > b)
        {
            best = Some((i, seq));
        }
    }
    let Some((i, seq)) = best else {
        return Ok(None);
    };
    let message = walkers[i].take_if(seq);
    for walker in walkers.iter_mut() {
        walker.take_if(seq);
    }
    Ok(message)
}
