//! The contract's nouns: tenants, events, destinations, attempts. Pure data and
//! validation; nothing here talks to NATS or HTTP.

pub mod attempt;
pub mod circuit;
pub mod destination;
pub mod event;
pub mod ids;
pub mod pattern;
pub mod secret;
pub mod timestamp;
pub mod webhook;

pub use attempt::{AttemptOutcome, AttemptRecord, DeliveryStatus};
pub use destination::{
    Backoff, BodyMode, Destination, DestinationInput, DestinationPatch, DestinationView,
    HttpMethod, RateLimit, RetryPolicy,
};
pub use event::{Envelope, EventType, NewEvent};
pub use ids::{DestinationId, EventId, InvalidId, TenantId};
pub use pattern::EventPattern;
pub use secret::{SecretKey, SigningSecret};
