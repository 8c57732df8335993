//! `Seen`: the deliveries a receiver got, counted per `webhook-id`, for tests that check
//! at-least-once over many events (every id seen, duplicates counted, not failed).

use std::collections::{HashMap, HashSet};

use super::Receiver;

#[derive(Default)]
pub struct Seen(HashMap<String, usize>);

impl Seen {
    /// Counts every request the receiver has got so far, without waiting.
    pub async fn take(&mut self, receiver: &Receiver) {
        for request in receiver.drain().await {
            let id = request
                .header("webhook-id")
                .expect("every webhook has a webhook-id");
            *self.0.entry(id.to_string()).or_default() += 1;
        }
    }

    pub fn contains(&self, id: &str) -> bool {
        self.0.contains_key(id)
    }

    /// Requests beyond the first for each id.
    pub fn duplicates(&self) -> usize {
        self.0.values().map(|n| n - 1).sum()
    }

    pub fn requests(&self) -> usize {
        self.0.values().sum()
    }

    /// Ids delivered that are not in `known` (e.g. never accepted).
    pub fn ids_not_in(&self, known: &HashSet<String>) -> Vec<String> {
        self.0
            .keys()
            .filter(|id| !known.contains(*id))
            .cloned()
            .collect()
    }
}
