//! hookstream: webhook delivery on NATS JetStream.
//!
//! - [`config`]: defaults ← file ← `HOOKSTREAM_*` env, validated at start.
//! - [`model`]: the contract's nouns (event, destination, attempt) and their validation.
//! - [`broker`]: everything that knows NATS: names, streams, buckets, consumers, pulls,
//!   the embedded nats-server.
//! - [`ingest`]: validate → envelope → publish → PubAck; idempotency.
//! - [`destinations`]: destination state in one home: the bucket, validation, the SSRF
//!   check, each process's registry and subject index.
//! - [`router`]: routes every event once to its destinations' delivery shards.
//! - [`delivery`]: workers: pull only where there is work, send signed requests, retry,
//!   dead-letter.
//! - [`flow`]: rate limits, circuit breakers and tenant ingest limits, shared by all
//!   replicas through KV.
//! - [`operations`]: operational events: hookstream telling a tenant that a destination
//!   was disabled, its circuit opened or closed, an event was dead-lettered.
//! - [`dlq`]: dead letters on `HS_DLQ`: publish, browse, replay, purge; resend of events.
//! - [`files`]: files in, events out: uploads and the watched folder, one event per
//!   line through crashes.
//! - [`history`]: events and their attempt records, for the API.
//! - [`events`]: event search and delivery status per destination, for the API and the
//!   console.
//! - [`access`]: API keys, roles and the open-mode policy; checked by `api::access`.
//! - [`api`]: the HTTP API (axum), its error format in `api/error.rs`.
//! - [`console`]: the web console at `/console`, server-rendered HTML.
//! - [`telemetry`]: logs and metrics.
//! - [`app`]: builds and runs the whole, with graceful shutdown.
//! - [`cli`]: `hookstream dlq …`, a client of a running service's HTTP API.

pub mod access;
pub mod api;
pub mod app;
pub mod broker;
pub mod cli;
pub mod config;
pub mod console;
pub mod delivery;
pub mod destinations;
pub mod dlq;
pub mod events;
pub mod files;
pub mod flow;
pub mod history;
pub mod ingest;
pub mod model;
pub mod operations;
pub mod router;
pub mod telemetry;
