//! The HTTP headers hookstream sets on every webhook request, in one table: the request
//! builder (`delivery/request.rs`) writes them, and a destination may not set them itself
//! (`destinations/validate.rs`).

pub const ID: &str = "webhook-id";
pub const TIMESTAMP: &str = "webhook-timestamp";
pub const SIGNATURE: &str = "webhook-signature";
pub const EVENT_TYPE: &str = "hs-event-type";
pub const ATTEMPT: &str = "hs-attempt";
pub const TRACEPARENT: &str = "traceparent";

/// Headers a destination's own `headers` may not name (lower case): the ones above, and
/// those the HTTP client or the body decide.
pub const RESERVED: [&str; 10] = [
    ID,
    TIMESTAMP,
    SIGNATURE,
    "content-type",
    "content-length",
    "host",
    "user-agent",
    EVENT_TYPE,
    ATTEMPT,
    TRACEPARENT,
];
