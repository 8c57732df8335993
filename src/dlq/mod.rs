//! Dead letters: what could not be delivered goes to `HS_DLQ`, one message per
//! (event, destination), readable by any NATS client.
//!
//! - [`letter`]: a dead letter as `HS_DLQ` stores it, and one read by id.
//! - [`filter`]: which dead letters a request means (the one filter type of the API,
//!   the CLI, the console and the scan), and the target of a replay or purge.
//! - [`publish`]: a worker stores a dead letter (before it acks the original).
//! - [`select`]: the dead letters of a filter or of listed ids, read in order with
//!   direct gets.
//! - [`browse`]: pages of them for a listing.
//! - [`replay`]: re-publish dead letters to their destination only, then remove them.
//! - [`purge`]: remove dead letters without sending them.
//! - [`resend`]: send an event from `HS_EVENTS` again (delivered or not).
//!
//! The dead-letter id is its sequence on `HS_DLQ`. Nothing here knows HTTP: the API
//! (`api/dlq.rs`) and the CLI (`cli/dlq.rs`) are built on these functions.

pub mod browse;
pub mod filter;
pub mod letter;
pub mod publish;
pub mod purge;
pub mod replay;
pub mod resend;
pub mod select;

pub use filter::{DeadLetterFilter, Target};
pub use letter::StoredDeadLetter;
pub use publish::{DeadLetter, DlqReason};
pub use select::{Cursor, Order};

use crate::broker::BrokerError;
use crate::destinations::DestinationError;

#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    /// A replay or resend aimed at a destination that no longer exists.
    #[error("{0}")]
    DestinationDeleted(String),
    /// A replay or resend aimed at a disabled destination.
    #[error("{0}")]
    DestinationDisabled(String),
    /// The event is no longer on `HS_EVENTS` (retention removed it).
    #[error("{0}")]
    Gone(String),
    /// A request that cannot be carried out as asked (e.g. nothing to resend).
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Destination(#[from] DestinationError),
    #[error(transparent)]
    Broker(#[from] BrokerError),
}
