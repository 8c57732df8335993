//! hookstream's integration tests: one test binary (faster to link than one per file),
//! each module a feature area. Every test starts its own nats-server and app through
//! the fixtures in `common`; nothing needs to be started by hand beyond `make tools`.

mod common;

mod access;
mod bad_input;
mod cluster;
mod console;
mod console_browser;
mod crash;
mod delivery;
mod destinations;
mod dlq;
mod dlq_replay;
mod events_search;
mod files;
mod flow;
mod ingest;
mod logs;
mod metrics;
mod openapi;
mod operations;
mod replicas;
mod retry;
mod routing;
mod scale;
mod sender;
mod smoke;
mod tracing;
