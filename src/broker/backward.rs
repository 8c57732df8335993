//! Reading one subject filter of a stream **newest first**, which JetStream has no call
//! for: windows of sequences from a top sequence down, each read forwards with batch
//! direct gets (`direct.rs`) and handed out in reverse.
//!
//! A window that found nothing grows four times (sparse filters cross long stretches in
//! few round trips); one that found many shrinks; one holding more than [`MAX_WINDOW`]
//! matches is cut to its upper half before it is kept, so memory stays bounded.

use super::direct::{self, StoredMessage};
use super::{Broker, BrokerError};

/// Messages per batch direct get.
const BATCH: usize = 256;
/// First window width, in sequences.
const FIRST_WIDTH: u64 = 256;
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
    /// The current window's messages, oldest first (handed out from the end).
    buffer: Vec<StoredMessage>,
}

impl Walker {
    pub fn new(stream: &'static str, filter: String, lo: u64, hi: u64) -> Self {
        Self {
            stream,
            filter,
            lo: lo.max(1),
            top: hi,
            width: FIRST_WIDTH,
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

    /// Reads the window below the last one into the buffer.
    async fn read_window(&mut self, broker: &Broker) -> Result<(), BrokerError> {
        let top = self.top;
        let mut bottom = top.saturating_sub(self.width - 1).max(self.lo);
        let window = loop {
            match self.read_range(broker, bottom, top).await? {
                Some(window) => break window,
                // Too many matches: keep the upper half of the window only.
                None => bottom = bottom + (top - bottom) / 2 + 1,
            }
        };
        self.width = match window.len() {
            0 => self.width.saturating_mul(4),
            n if n > BATCH => (top - bottom).div_ceil(2).max(FIRST_WIDTH),
            _ => top - bottom + 1,
        };
        self.top = bottom.saturating_sub(1);
        self.buffer = window;
        Ok(())
    }

    /// The matches in `bottom..=top`, oldest first, or `None` when there are more than
    /// [`MAX_WINDOW`] (and the window spans more than one sequence).
    async fn read_range(
        &self,
        broker: &Broker,
        bottom: u64,
        top: u64,
    ) -> Result<Option<Vec<StoredMessage>>, BrokerError> {
        let mut out = Vec::new();
        let mut next = bottom;
        loop {
            let batch = direct::next_batch(broker, self.stream, &self.filter, next, BATCH).await?;
            let mut passed_top = false;
            for message in batch.messages {
                if message.seq > top {
                    passed_top = true;
                    break;
                }
                next = message.seq + 1;
                out.push(message);
            }
            if passed_top || !batch.more || next > top {
                return Ok(Some(out));
            }
            if out.len() > MAX_WINDOW && bottom < top {
                return Ok(None);
            }
        }
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
