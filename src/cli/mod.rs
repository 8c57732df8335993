//! Command-line clients of a running hookstream service. They talk to its HTTP API
//! (`--url`, or `HOOKSTREAM_API_URL`), never to NATS, so they need no credentials
//! beyond what the API asks for and work against any replica.

pub mod api;
pub mod dlq;
pub mod upload;
