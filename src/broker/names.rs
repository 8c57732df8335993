//! Every NATS name hookstream uses, spelled in one place: subjects, streams, consumers,
//! buckets and headers. Nothing outside `broker/` formats a subject.

use crate::model::{DestinationId, EventId, EventType, TenantId};

pub const EVENTS_STREAM: &str = "HS_EVENTS";
pub const DLQ_STREAM: &str = "HS_DLQ";
pub const ATTEMPTS_STREAM: &str = "HS_ATTEMPTS";
/// Delivery counters per destination (a JetStream counter stream, `Nats-Incr`).
pub const STATS_STREAM: &str = "HS_STATS";
pub const DESTINATIONS_BUCKET: &str = "hs_destinations";
pub const IDEMPOTENCY_BUCKET: &str = "hs_idempotency";
pub const RATELIMIT_BUCKET: &str = "hs_ratelimit";
pub const CIRCUIT_BUCKET: &str = "hs_circuit";
/// API keys: id → tenant, role, name and the key's SHA-256 (never the key).
pub const API_KEYS_BUCKET: &str = "hs_api_keys";

// --- Routing (docs/adr/0010): the router consumer and the delivery shards. ---
/// The one durable consumer on `HS_EVENTS` (no filter) that routes every event, acked
/// with policy *all* (docs/adr/0019).
pub const ROUTER_CONSUMER: &str = "hs_router_all";
/// The router consumer of earlier versions (explicit acks): replaced at start.
pub const LEGACY_ROUTER_CONSUMER: &str = "hs_router";
/// Its priority group: one replica is pinned (routes), the others wait on standby.
pub const ROUTER_GROUP: &str = "router";
/// `HS_DLV_<k>`: the deliveries still to make, WorkQueue, one shard of many.
pub fn delivery_stream(shard: u32) -> String {
    format!("HS_DLV_{shard}")
}
/// Stream metadata key holding the number of shards the streams were created with.
pub const SHARDS_METADATA_KEY: &str = "hs_delivery_shards";

/// The shard of a destination: FNV-1a (32 bit) of its id's bytes mod the shard count
/// (the contract's function, so that any client finds a destination's deliveries).
pub fn shard_of(destination: &str, shards: u32) -> u32 {
    let hash = destination.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    hash % shards.max(1)
}

/// `Nats-Msg-Id` of the delivery of event `seq` to `destination`: a re-routing after a
/// crash publishes the same id and JetStream drops the copy.
pub fn delivery_msg_id(seq: u64, destination: &str) -> String {
    format!("{seq}.{destination}")
}
/// The router's doorbell: a core NATS message naming the destinations that just got
/// deliveries, so that every worker pulls them at once. Under the service's own inbox
/// prefix, which only the service user may subscribe to (ADR 0007).
pub fn doorbell_subject(inbox_prefix: &str, subject_prefix: &str) -> String {
    format!("{inbox_prefix}.doorbell.{subject_prefix}")
}
// --- end routing ---

/// Header names on messages of `HS_EVENTS` and `HS_DLQ`.
pub mod headers {
    pub const MSG_ID: &str = "Nats-Msg-Id";
    pub const EVENT_TYPE: &str = "Hs-Event-Type";
    pub const TENANT: &str = "Hs-Tenant";
    pub const TRACEPARENT: &str = "traceparent";
    pub const TRACESTATE: &str = "tracestate";
    pub const DLQ_REASON: &str = "Hs-Dlq-Reason";
    pub const ATTEMPTS: &str = "Hs-Attempts";
    pub const LAST_STATUS: &str = "Hs-Last-Status";
    pub const LAST_ERROR: &str = "Hs-Last-Error";
    pub const DESTINATION_ID: &str = "Hs-Destination-Id";
    pub const ORIGINAL_SEQ: &str = "Hs-Original-Seq";
    pub const FIRST_ATTEMPT_AT: &str = "Hs-First-Attempt-At";
    pub const LAST_ATTEMPT_AT: &str = "Hs-Last-Attempt-At";
    /// On a replayed event: the `HS_DLQ` sequence of the dead letter it replays.
    pub const REPLAY_OF: &str = "Hs-Replay-Of";
    /// On a resent event: the `HS_EVENTS` sequence of the event it sends again.
    pub const RESEND_OF: &str = "Hs-Resend-Of";
    /// Headers a dead letter adds to the original's; a replay leaves them out.
    pub const DEAD_LETTER_ONLY: [&str; 9] = [
        DLQ_REASON,
        ATTEMPTS,
        LAST_STATUS,
        LAST_ERROR,
        DESTINATION_ID,
        ORIGINAL_SEQ,
        FIRST_ATTEMPT_AT,
        LAST_ATTEMPT_AT,
        REPLAY_OF,
    ];
    /// Whether JetStream owns the header (`Nats-Msg-Id`, `Nats-Expected-*`, and what a
    /// direct get adds: `Nats-Stream`, `Nats-Sequence`, …): never copied to a new message.
    pub fn is_jetstream_header(name: &str) -> bool {
        name.len() >= 5 && name[..5].eq_ignore_ascii_case("nats-")
    }
    /// JetStream counter increment (HS_STATS).
    pub const INCR: &str = "Nats-Incr";
    /// On a delivery message (`HS_DLV_<k>`): the event's sequence on `HS_EVENTS`.
    pub const EVENT_SEQ: &str = "Hs-Event-Seq";
    /// On an event the HTTP API accepted: the API writes its `hs_idempotency` record
    /// itself, so the router does not write it again (a third of the router's publishes
    /// at fan-out 1). Dropped when a message is copied (dead letter, replay, resend).
    pub const RECORDED: &str = "Hs-Recorded";
    /// The names the routed delivery path sets and reads on every message, made once:
    /// a `&str` name is parsed (and allocated) by each insert and lookup.
    pub mod name {
        use async_nats::header::HeaderName;
        pub const MSG_ID: HeaderName = HeaderName::from_static(super::MSG_ID);
        pub const EVENT_SEQ: HeaderName = HeaderName::from_static(super::EVENT_SEQ);
        pub const RECORDED: HeaderName = HeaderName::from_static(super::RECORDED);
    }
    /// Headers that belong to one stored message and never travel with a copy of it.
    pub fn is_copy_local(name: &str) -> bool {
        name.eq_ignore_ascii_case(EVENT_SEQ) || name.eq_ignore_ascii_case(RECORDED)
    }
}

/// Subject names under the configured prefix (`hs` by default).
#[derive(Debug, Clone)]
pub struct Subjects {
    prefix: String,
}

impl Subjects {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
        }
    }

    /// `hs.ev.<tenant>.<type tokens…>`: an event for every matching destination.
    pub fn event(&self, tenant: &TenantId, event_type: &EventType) -> String {
        format!("{}.ev.{tenant}.{event_type}", self.prefix)
    }

    /// `hs.to.<destination_id>.<type tokens…>`: an event (or replay) for one destination.
    pub fn directed(&self, destination: &DestinationId, event_type: &EventType) -> String {
        format!("{}.to.{destination}.{event_type}", self.prefix)
    }

    pub fn events_wildcards(&self) -> Vec<String> {
        vec![
            format!("{}.ev.>", self.prefix),
            format!("{}.to.>", self.prefix),
        ]
    }

    /// Filter subject of a destination consumer for one event-type pattern.
    pub fn event_filter(&self, tenant: &TenantId, pattern: &str) -> String {
        format!("{}.ev.{tenant}.{pattern}", self.prefix)
    }

    pub fn directed_filter(&self, destination: &DestinationId) -> String {
        format!("{}.to.{destination}.>", self.prefix)
    }

    /// Event search: `hs.ev.<tenant|*>.<pattern|>>`, tenant-wide events.
    pub fn event_search(&self, tenant: Option<&str>, pattern: Option<&str>) -> String {
        format!(
            "{}.ev.{}.{}",
            self.prefix,
            tenant.unwrap_or("*"),
            pattern.unwrap_or(">")
        )
    }

    /// Event search: `hs.to.<destination|*>.<pattern|>>`, directed events.
    pub fn directed_search(&self, destination: Option<&str>, pattern: Option<&str>) -> String {
        format!(
            "{}.to.{}.{}",
            self.prefix,
            destination.unwrap_or("*"),
            pattern.unwrap_or(">")
        )
    }

    pub fn dlq(&self, tenant: &str, destination: &str) -> String {
        format!("{}.dlq.{tenant}.{destination}", self.prefix)
    }

    pub fn dlq_wildcard(&self) -> String {
        format!("{}.dlq.>", self.prefix)
    }

    /// `hs.dlq.<tenant|*>.<destination|*>`: the dead letters of one tenant, one
    /// destination, both, or all.
    pub fn dlq_filter(&self, tenant: Option<&str>, destination: Option<&str>) -> String {
        format!(
            "{}.dlq.{}.{}",
            self.prefix,
            tenant.unwrap_or("*"),
            destination.unwrap_or("*")
        )
    }

    /// `(tenant, destination)` of a dead letter's subject.
    pub fn parse_dlq_subject<'a>(&self, subject: &'a str) -> Option<(&'a str, &'a str)> {
        let rest = subject.strip_prefix(&self.prefix)?.strip_prefix(".dlq.")?;
        let (tenant, destination) = rest.split_once('.')?;
        (!destination.contains('.')).then_some((tenant, destination))
    }

    pub fn attempt(&self, tenant: &str, event: &str, destination: &str) -> String {
        format!("{}.att.{tenant}.{event}.{destination}", self.prefix)
    }

    /// Every attempt of one event, any destination.
    pub fn attempts_of_event(&self, tenant: &str, event: &EventId) -> String {
        format!("{}.att.{tenant}.{event}.*", self.prefix)
    }

    /// Every attempt of one event when its tenant is not known.
    pub fn attempts_of_event_any_tenant(&self, event: &EventId) -> String {
        format!("{}.att.*.{event}.*", self.prefix)
    }

    pub fn attempts_wildcard(&self) -> String {
        format!("{}.att.>", self.prefix)
    }

    pub fn stat(&self, destination: &str, counter: &str) -> String {
        format!("{}.stat.{destination}.{counter}", self.prefix)
    }

    pub fn stats_of(&self, destination: &str) -> String {
        format!("{}.stat.{destination}.*", self.prefix)
    }

    pub fn stats_wildcard(&self) -> String {
        format!("{}.stat.>", self.prefix)
    }

    // --- Routing (docs/adr/0010) ---
    /// `hs.dlv.<k>.<destination_id>`: the deliveries waiting for one destination.
    pub fn delivery(&self, shard: u32, destination: &str) -> String {
        format!("{}.dlv.{shard}.{destination}", self.prefix)
    }

    /// Every delivery subject of shard `k`.
    pub fn delivery_shard_wildcard(&self, shard: u32) -> String {
        format!("{}.dlv.{shard}.>", self.prefix)
    }

    /// The destination of a delivery subject.
    pub fn parse_delivery_subject<'a>(&self, subject: &'a str) -> Option<&'a str> {
        let rest = subject.strip_prefix(&self.prefix)?.strip_prefix(".dlv.")?;
        let (_shard, destination) = rest.split_once('.')?;
        (!destination.contains('.') && !destination.is_empty()).then_some(destination)
    }
    // --- end routing ---

    /// Where an event message's subject leads: a tenant-wide event or a directed one.
    pub fn parse_event_subject<'a>(&self, subject: &'a str) -> Option<EventSubject<'a>> {
        let rest = subject.strip_prefix(&self.prefix)?.strip_prefix('.')?;
        let (kind, rest) = rest.split_once('.')?;
        let (first, event_type) = rest.split_once('.')?;
        match kind {
            "ev" => Some(EventSubject::Tenant {
                tenant: first,
                event_type,
            }),
            "to" => Some(EventSubject::Directed {
                destination: first,
                event_type,
            }),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventSubject<'a> {
    Tenant {
        tenant: &'a str,
        event_type: &'a str,
    },
    Directed {
        destination: &'a str,
        event_type: &'a str,
    },
}

/// `dest_<destination_id>`: the durable consumer of one destination.
pub fn consumer_name(destination: &DestinationId) -> String {
    consumer_name_of(destination.as_str())
}

/// The same, from an id already known to be valid (e.g. a span attribute).
pub fn consumer_name_of(destination: &str) -> String {
    format!("dest_{destination}")
}

/// The destination a consumer name belongs to, if it is one of ours.
pub fn destination_of_consumer(name: &str) -> Option<&str> {
    name.strip_prefix("dest_")
}

/// `Nats-Msg-Id` of the replay of dead letter `dlq_seq`: a second replay of the same dead
/// letter within the duplicate window is dropped by JetStream. (The event id cannot be
/// reused: the original publish holds it within the window.)
pub fn replay_msg_id(dlq_seq: u64) -> String {
    format!("replay-{dlq_seq}")
}

/// `Nats-Msg-Id` of one resend: every resend request sends again, so each is unique.
pub fn resend_msg_id() -> String {
    format!("resend-{}", ulid::Ulid::new())
}

/// The subject of a KV key of `hs_idempotency`: the router publishes the record of an
/// event it routes there, pipelined with the deliveries (docs/adr/0010).
pub fn idempotency_subject(key: &str) -> String {
    format!("$KV.{IDEMPOTENCY_BUCKET}.{key}")
}

/// KV key of an accepted event in `hs_idempotency`.
pub fn idempotency_key(event: &EventId) -> String {
    format!("ev.{event}")
}

/// Files (folder watch and uploads, `src/files/`): the progress bucket and the object
/// store of uploaded files.
pub const FILES_BUCKET: &str = "hs_files";
pub const UPLOADS_STORE: &str = "hs_uploads";

/// KV key of a file's record (progress, counts, lease) in `hs_files`.
pub fn file_key(file_id: &str) -> String {
    format!("file.{file_id}")
}

/// KV key of the rejected lines kept for a file in `hs_files`.
pub fn file_errors_key(file_id: &str) -> String {
    format!("errors.{file_id}")
}

/// The file id in a `hs_files` record key, if it is one.
pub fn file_of_key(key: &str) -> Option<&str> {
    key.strip_prefix("file.")
}

/// `Nats-Msg-Id` (and event id) of the event of one line of a file: a re-publish of
/// the line after a crash is a JetStream duplicate.
pub fn file_line_event_id(file_id: &str, line: u64) -> String {
    format!("{file_id}_{line}")
}

/// The object store's chunk subject of one object version (NATS ADR-20 layout).
pub fn object_chunks_subject(store: &str, nuid: &str) -> String {
    format!("$O.{store}.C.{nuid}")
}

/// The object store's meta subject of an object: its name in URL-safe base64.
pub fn object_meta_subject(store: &str, name: &str) -> String {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::URL_SAFE.encode(name);
    format!("$O.{store}.M.{encoded}")
}

/// The stream behind an object store.
pub fn object_store_stream(store: &str) -> String {
    format!("OBJ_{store}")
}

/// Header of the object store's meta message: replace the object's previous meta.
pub const ROLLUP: &str = "Nats-Rollup";
pub const ROLLUP_SUBJECT: &str = "sub";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_subjects_parse_back() {
        let s = Subjects::new("hs");
        assert_eq!(
            s.parse_event_subject("hs.ev.acme.order.created"),
            Some(EventSubject::Tenant {
                tenant: "acme",
                event_type: "order.created"
            })
        );
        assert_eq!(
            s.parse_event_subject("hs.to.d1.a"),
            Some(EventSubject::Directed {
                destination: "d1",
                event_type: "a"
            })
        );
        assert_eq!(s.parse_event_subject("hs.ev.acme"), None);
        assert_eq!(s.parse_event_subject("other.ev.acme.x"), None);
    }

    #[test]
    fn dlq_subjects_parse_back() {
        let s = Subjects::new("hs");
        assert_eq!(s.dlq_filter(None, None), "hs.dlq.*.*");
        assert_eq!(s.dlq_filter(Some("acme"), None), "hs.dlq.acme.*");
        assert_eq!(s.dlq_filter(None, Some("d1")), "hs.dlq.*.d1");
        assert_eq!(
            s.parse_dlq_subject(&s.dlq("acme", "d1")),
            Some(("acme", "d1"))
        );
        assert_eq!(s.parse_dlq_subject("hs.dlq.acme"), None);
        assert_eq!(s.parse_dlq_subject("hs.ev.acme.d1"), None);
    }

    #[test]
    fn delivery_subjects_and_shards() {
        let s = Subjects::new("hs");
        assert_eq!(s.delivery(3, "d1"), "hs.dlv.3.d1");
        assert_eq!(s.parse_delivery_subject("hs.dlv.3.d1"), Some("d1"));
        assert_eq!(s.parse_delivery_subject("hs.dlv.3"), None);
        assert_eq!(s.parse_delivery_subject("hs.ev.3.d1"), None);
        // FNV-1a 32 of "a" is 0xe40c292c (the published test vector).
        assert_eq!(shard_of("a", 1 << 31), 0xe40c_292c % (1 << 31));
        assert!((0..1000).all(|i| shard_of(&format!("d{i}"), 16) < 16));
        assert_eq!(delivery_msg_id(42, "d1"), "42.d1");
    }

    #[test]
    fn jetstream_headers_are_recognised() {
        assert!(headers::is_jetstream_header("Nats-Msg-Id"));
        assert!(headers::is_jetstream_header("nats-sequence"));
        assert!(!headers::is_jetstream_header("Hs-Tenant"));
        assert!(!headers::is_jetstream_header("nats"));
    }
}
