//! The lookup record of an accepted event in `hs_idempotency`: event id → tenant,
//! `HS_EVENTS` sequence and type. It answers retries after JetStream's duplicate window
//! and it is how `GET /v1/events/{id}`, `/attempts` and the console find an event.
//!
//! An event whose id the API drew itself has its record written behind the 202: sent
//! before the answer, its PubAck awaited (and a failure retried) by a task of its own.
//! Its reader tolerates the moment in between (docs/adr/0020). Every other record is
//! awaited before the answer, as ADR 0017 decided.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio_util::task::TaskTracker;
use tracing::warn;

use crate::broker::names;
use crate::broker::{Broker, BrokerError, BrokerErrorKind};
use crate::model::EventId;
use crate::telemetry::metrics as m;

/// What `hs_idempotency` stores for an accepted event id.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AcceptedRecord {
    pub tenant: String,
    pub seq: u64,
    #[serde(rename = "type")]
    pub event_type: String,
}

/// How long after its id was drawn a missing record may still be on its way. The write
/// leaves before the 202 and is stored within a round trip; the bound also covers a
/// retried write and some clock difference between replicas.
const RECORD_ON_ITS_WAY: Duration = Duration::from_secs(2);

/// The pauses between reads of a record that may be on its way (1.6 s in all).
const REREAD_PAUSES_MS: [u64; 9] = [2, 5, 10, 20, 50, 100, 200, 400, 800];

/// Retries of a record write that failed behind the 202, with the pause before each
/// (about 30 s in all: longer than a NATS leader election).
const REWRITE_PAUSES_S: [u64; 6] = [1, 2, 4, 8, 8, 8];

/// Writes lookup records; the writes behind the 202 are tracked so that a stopping
/// service waits for them.
#[derive(Clone)]
pub struct Recorder {
    broker: Broker,
    behind: TaskTracker,
}

impl Recorder {
    pub fn new(broker: Broker) -> Self {
        Self {
            broker,
            behind: TaskTracker::new(),
        }
    }

    /// Writes and waits for the stream's ack. A failure is logged, not returned: the
    /// event is stored all the same, and JetStream still catches a retry inside the
    /// duplicate window.
    pub async fn write(&self, key: &str, record: &AcceptedRecord) {
        if let Err(e) = self.broker.idempotency.put(key, encode(record)).await {
            metrics::counter!(m::IDEMPOTENCY_RECORDS_FAILED).increment(1);
            warn!(key, error = %e, "idempotency record not stored");
        }
    }

    /// Sends the record and returns before its ack; a task of its own awaits the ack and
    /// writes the record again while it fails.
    pub async fn write_behind(&self, key: String, record: &AcceptedRecord) {
        let value = encode(record);
        let sent = self
            .broker
            .js
            .publish(names::idempotency_subject(&key), value.clone())
            .await;
        let broker = self.broker.clone();
        self.behind.spawn(async move {
            let first = match sent {
                Ok(ack) => ack.await.map(drop),
                Err(e) => Err(e),
            };
            let Err(mut error) = first.map_err(|e| BrokerError::new("storing record", e)) else {
                return;
            };
            for pause in REWRITE_PAUSES_S {
                tokio::time::sleep(Duration::from_secs(pause)).await;
                match broker.idempotency.put(&key, value.clone()).await {
                    Ok(_) => return,
                    Err(e) => error = BrokerError::new("storing record", e),
                }
            }
            metrics::counter!(m::IDEMPOTENCY_RECORDS_FAILED).increment(1);
            warn!(key, error = %error, "idempotency record not stored");
        });
    }

    /// Waits (at most `within`) for the writes behind the 202 to end; false if some are
    /// still going. Called once, when the service stops.
    pub async fn settled(&self, within: Duration) -> bool {
        self.behind.close();
        tokio::time::timeout(within, self.behind.wait())
            .await
            .is_ok()
    }
}

fn encode(record: &AcceptedRecord) -> Bytes {
    serde_json::to_vec(record)
        .expect("record serialises")
        .into()
}

/// The record under `key`, as stored now.
pub async fn read(broker: &Broker, key: &str) -> Result<Option<AcceptedRecord>, BrokerError> {
    match broker.idempotency.get(key).await {
        Ok(Some(bytes)) => Ok(serde_json::from_slice(&bytes).ok()),
        Ok(None) => Ok(None),
        Err(e) => Err(BrokerError::new("reading idempotency record", e)),
    }
}

/// Where an accepted event is, if hookstream knows: its tenant and stream sequence. A
/// miss for an id drawn in the last moments is read again for a while: its record may
/// be on its way behind the 202 (docs/adr/0020).
pub async fn locate(broker: &Broker, id: &EventId) -> Result<Option<AcceptedRecord>, BrokerError> {
    let key = names::idempotency_key(id);
    let drawn = id.drawn_at();
    let mut pauses = REREAD_PAUSES_MS.iter();
    loop {
        match read(broker, &key).await {
            Ok(Some(record)) => return Ok(Some(record)),
            Ok(None) => {}
            Err(e) if e.kind == BrokerErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        match pauses.next() {
            Some(&ms) if drawn.is_some_and(may_be_on_its_way) => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            _ => return Ok(None),
        }
    }
}

/// Whether a record of an id drawn at `drawn` may still be on its way (on either side
/// of this replica's clock).
fn may_be_on_its_way(drawn: SystemTime) -> bool {
    match SystemTime::now().duration_since(drawn) {
        Ok(age) => age < RECORD_ON_ITS_WAY,
        Err(ahead) => ahead.duration() < RECORD_ON_ITS_WAY,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_recent_draw_may_be_on_its_way() {
        let now = SystemTime::now();
        assert!(may_be_on_its_way(now));
        assert!(may_be_on_its_way(now - Duration::from_millis(1500)));
        assert!(may_be_on_its_way(now + Duration::from_millis(500)));
        assert!(!may_be_on_its_way(now - Duration::from_secs(3)));
        assert!(!may_be_on_its_way(now + Duration::from_secs(3)));
    }

    #[test]
    fn the_rereads_stay_inside_the_time_a_record_may_take() {
        let total: u64 = REREAD_PAUSES_MS.iter().sum();
        assert!(Duration::from_millis(total) < RECORD_ON_ITS_WAY);
    }
}
