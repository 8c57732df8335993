//! Destination state, in one home used by the API, `delivery/` and `router/` (and
//! importing neither): the `hs_destinations` bucket and its writes (`store`), the checks
//! a destination passes before it is stored (`validate`, `ssrf`), and each process's
//! in-memory view (`watch` keeps `registry` equal to the bucket; `index` answers which
//! destinations an event type wants).
//!
//! Order of writes: the bucket entry is the destination. Its consumer on its delivery
//! shard is made when deliveries wait (docs/adr/0010), so a create or update writes no
//! consumer; an update changes a consumer that exists (pause, concurrency, ack wait) after
//! the entry is written. A delete removes the entry first (the router stops routing to
//! it), then the consumer and the deliveries still waiting.

pub mod index;
pub mod registry;
pub mod ssrf;
mod store;
pub mod validate;
pub mod watch;

use bytes::Bytes;

use crate::broker::{BrokerError, BrokerErrorKind};
use crate::model::Destination;

pub use registry::Registry;
pub use store::{DestinationStore, ROTATION_GRACE, test_event};
pub use validate::{MAX_EVENT_TYPES, MAX_HEADERS, validate_retry};

#[derive(Debug, thiserror::Error)]
pub enum DestinationError {
    #[error("{0}")]
    Invalid(String),
    #[error("destination {0} not found")]
    NotFound(String),
    #[error("destination {0} already exists")]
    Exists(String),
    #[error("destination {0} was changed concurrently; retry")]
    Conflict(String),
    #[error(
        "the events stream has reached its consumer limit (events.max_consumers); no destination can be added"
    )]
    ConsumerLimit,
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

pub fn encode(d: &Destination) -> Bytes {
    serde_json::to_vec(d)
        .expect("destination serialises")
        .into()
}

pub fn decode(bytes: &[u8]) -> Result<Destination, DestinationError> {
    serde_json::from_slice(bytes).map_err(|e| {
        DestinationError::Broker(BrokerError::with_kind(
            BrokerErrorKind::Other,
            "decoding a stored destination",
            e,
        ))
    })
}
