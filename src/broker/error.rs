//! async-nats has one error type per call; the rest of hookstream only needs to know what
//! kind of failure it was. They are classified here, once.

use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::context::{
    CreateStreamError, CreateStreamErrorKind, PublishError, PublishErrorKind,
};
use async_nats::jetstream::stream::{ConsumerError, ConsumerErrorKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerErrorKind {
    /// NATS or JetStream cannot be reached or did not answer in time: retry later (503).
    Unavailable,
    /// The stream or account is out of storage (discard new): back-pressure (503).
    StorageFull,
    /// The stream's per-subject limit refuses the message (`max_msgs_per_subject` with
    /// discard-new: a destination at `events.delivery_max_per_destination`), while the
    /// stream itself has room.
    SubjectFull,
    /// nats-server does not change a consumer's storage type in place (error 10012,
    /// "storage type can not be updated"): the consumer must be replaced.
    StorageTypeFixed,
    /// The stream refuses more consumers (`max_consumers`).
    ConsumerLimit,
    NotFound,
    /// Optimistic-concurrency conflict or a name that exists already.
    Conflict,
    Other,
}

#[derive(Debug, thiserror::Error)]
#[error("{context}: {source}")]
pub struct BrokerError {
    pub kind: BrokerErrorKind,
    pub context: &'static str,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

impl BrokerError {
    pub fn new(
        context: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        let source = source.into();
        let kind = classify(source.as_ref());
        Self {
            kind,
            context,
            source,
        }
    }

    pub fn with_kind(
        kind: BrokerErrorKind,
        context: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self {
            kind,
            context,
            source: source.into(),
        }
    }
}

/// The JetStream API error in `e`: the error itself, or the one async-nats keeps in the
/// kind (not the source) of a consumer create/update error.
fn jetstream_error(e: &(dyn std::error::Error + 'static)) -> Option<async_nats::jetstream::Error> {
    if let Some(js) = e.downcast_ref::<async_nats::jetstream::Error>() {
        return Some(js.clone());
    }
    // async-nats keeps the server's error in the kind of a consumer or stream
    // create/update error, not in its source chain.
    if let Some(create) = e.downcast_ref::<CreateStreamError>() {
        return match create.kind() {
            CreateStreamErrorKind::JetStream(js) => Some(js),
            _ => None,
        };
    }
    match e.downcast_ref::<ConsumerError>()?.kind() {
        ConsumerErrorKind::JetStream(js) => Some(js),
        _ => None,
    }
}

/// nats-server's `ErrMaxMsgsPerSubject`, sent as error 10077 "store failed".
const SUBJECT_FULL: &str = "maximum messages per subject exceeded";
/// nats-server's description of error 10012 for a storage type change.
const STORAGE_TYPE_FIXED: &str = "storage type can not be updated";

/// Walks the source chain: a JetStream API error decides by its code, anything else by
/// what the client said (timeouts, closed connections, no responders).
fn classify(err: &(dyn std::error::Error + 'static)) -> BrokerErrorKind {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(js) = jetstream_error(e) {
            // Told apart from their codes' other uses by the description only.
            let description = js.to_string();
            if description.contains(SUBJECT_FULL) {
                return BrokerErrorKind::SubjectFull;
            }
            if description.contains(STORAGE_TYPE_FIXED) {
                return BrokerErrorKind::StorageTypeFixed;
            }
            return match js.error_code() {
                ErrorCode::STREAM_STORE_FAILED
                | ErrorCode::STORAGE_RESOURCES_EXCEEDED
                | ErrorCode::INSUFFICIENT_RESOURCES
                | ErrorCode::MEMORY_RESOURCES_EXCEEDED
                | ErrorCode::ACCOUNT_RESOURCES_EXCEEDED => BrokerErrorKind::StorageFull,
                ErrorCode::MAXIMUM_CONSUMERS_LIMIT => BrokerErrorKind::ConsumerLimit,
                ErrorCode::CONSUMER_NOT_FOUND
                | ErrorCode::STREAM_NOT_FOUND
                | ErrorCode::SEQUENCE_NOT_FOUND
                | ErrorCode::CONSUMER_DOES_NOT_EXIST => BrokerErrorKind::NotFound,
                ErrorCode::STREAM_NAME_EXIST
                | ErrorCode::CONSUMER_NAME_EXIST
                | ErrorCode::CONSUMER_ALREADY_EXISTS => BrokerErrorKind::Conflict,
                // "No suitable peers for placement": a cluster that has just formed, or
                // lost a node, counts a peer as offline for a few seconds; start-up and
                // writes wait for it like for a missing leader.
                ErrorCode::CLUSTER_NO_PEERS => BrokerErrorKind::Unavailable,
                _ if js.code() == 503 => BrokerErrorKind::Unavailable,
                _ => BrokerErrorKind::Other,
            };
        }
        if let Some(publish) = e.downcast_ref::<PublishError>() {
            // A publish nobody answered: every subject hookstream publishes to belongs to a
            // stream it created at start, so this is a stream without a leader for the
            // moment (a cluster node just died), not a missing stream. Retry later.
            if publish.kind() == PublishErrorKind::StreamNotFound {
                return BrokerErrorKind::Unavailable;
            }
        }
        current = e.source();
    }
    let text = err.to_string().to_ascii_lowercase();
    if text.contains(SUBJECT_FULL) {
        BrokerErrorKind::SubjectFull
    } else if text.contains(STORAGE_TYPE_FIXED) {
        BrokerErrorKind::StorageTypeFixed
    } else if text.contains("timed out")
        || text.contains("timeout")
        || text.contains("no responders")
        || text.contains("broken pipe")
        || text.contains("disconnected")
        || text.contains("connection")
        || text.contains("jetstream not enabled")
    {
        BrokerErrorKind::Unavailable
    } else if text.contains("maximum bytes") || text.contains("resource limits") {
        BrokerErrorKind::StorageFull
    } else if text.contains("wrong last sequence") || text.contains("already exists") {
        BrokerErrorKind::Conflict
    } else if text.contains("not found") {
        BrokerErrorKind::NotFound
    } else {
        BrokerErrorKind::Other
    }
}
