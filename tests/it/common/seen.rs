//! `Seen`: the deliveries a receiver got, counted per `webhook-id`, for tests that check
//! at-least-once over many events (every id seen, duplicates counted, not failed).

use std::collections::{HashMap, HashSet};

use super::{Receiver, Request};

#[derive(Default)]
pub struct Seen(HashMap<String, usize>);

impl Seen {
    /// Counts every request the receiver has got so far, without waiting.
    pub async fn take(&mut self, receiver: &Receiver) {
        for request in receiver.drain().await {
            self.add(&request);
        }
    }

    /// Counts one request, for tests that also look at it (e.g. when it arrived).
    pub fn add(&mut self, request: &Request) {
        let id = request
            .header("webhook-id")
            .expect("every webhook has a webhook-id");
        *self.0.entry(id.to_string()).or_default() += 1;
    }

    /// Ids in `wanted` not seen yet, sorted.
    pub fn missing<'a>(&self, wanted: impl IntoIterator<Item = &'a String>) -> Vec<String> {
        let mut missing: Vec<String> = wanted
            .into_iter()
            .filter(|id| !self.0.contains_key(*id))
            .cloned()
            .collect();
        missing.sort();
        missing
    }

    /// Ids seen at least once.
    pub fn distinct(&self) -> usize {
        self.0.len()
    }

    pub fn contains(&self, id: &str) -> bool {
        self.0.contains_key(id)
    }

    /// Requests counted for this id.
    pub fn count(&self, id: &str) -> usize {
        self.0.get(id).copied().unwrap_or(0)
    }

    /// Requests beyond the first for each id.
    pub fn duplicates(&self) -> usize {
        self.0.values().map(|n| n - 1).sum()
    }

    /// Ids delivered more than once, with their counts, sorted.
    pub fn repeated(&self) -> Vec<(String, usize)> {
        let mut repeated: Vec<(String, usize)> = self
            .0
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(id, n)| (id.clone(), *n))
            .collect();
        repeated.sort();
        repeated
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
