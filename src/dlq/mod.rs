//! Dead letters: what could not be delivered goes to `HS_DLQ`, one message per
//! (event, destination), readable by any NATS client.

pub mod publish;

pub use publish::{DeadLetter, DlqReason};
