//! What the router does with one event message: which destinations get a delivery, or
//! which get a dead letter because the message cannot be delivered as it stands. Pure:
//! the registry is read, nothing is written.

use std::sync::Arc;

use async_nats::HeaderMap;

use crate::broker::names::{EventSubject, Subjects, headers as h};
use crate::destinations::Registry;
use crate::dlq::DlqReason;
use crate::model::{Envelope, EventType};

/// The router's verdict on one message.
#[derive(Debug, PartialEq)]
pub enum Decision {
    /// One delivery per destination; the envelope's id and type are kept for the
    /// event's lookup record.
    Deliver {
        destinations: Vec<Arc<str>>,
        tenant: String,
        event_id: String,
        event_type: String,
    },
    /// The message cannot be delivered as it stands: one dead letter per destination it
    /// was meant for (so that it can be replayed to that destination once fixed).
    DeadLetter {
        destinations: Vec<(Arc<str>, String)>,
        reason: DlqReason,
        why: String,
    },
    /// Nobody wants it (no matching destination, or aimed at an unknown one).
    Nobody,
}

pub fn decide(
    subjects: &Subjects,
    registry: &Registry,
    subject: &str,
    headers: Option<&HeaderMap>,
    payload: &[u8],
) -> Decision {
    let Some(parsed) = subjects.parse_event_subject(subject) else {
        return Decision::Nobody;
    };
    // Who the message is for, and the tenant it must belong to.
    let (targets, tenant, subject_type): (Vec<(Arc<str>, String)>, String, &str) = match parsed {
        EventSubject::Tenant { tenant, event_type } => (
            registry
                .matching(tenant, event_type)
                .into_iter()
                .map(|id| (id, tenant.to_string()))
                .collect(),
            tenant.to_string(),
            event_type,
        ),
        EventSubject::Directed {
            destination,
            event_type,
        } => match registry.get(destination) {
            Some(d) => (
                vec![(Arc::from(destination), d.tenant.to_string())],
                d.tenant.to_string(),
                event_type,
            ),
            None => return Decision::Nobody,
        },
    };
    if targets.is_empty() {
        return Decision::Nobody;
    }
    let refuse = |reason, why: String| Decision::DeadLetter {
        destinations: targets.clone(),
        reason,
        why,
    };
    let envelope: Envelope = match serde_json::from_slice(payload) {
        Ok(e) => e,
        Err(e) => {
            return refuse(
                DlqReason::MalformedEvent,
                format!("body is not an event envelope: {e}"),
            );
        }
    };
    // The subject's tenant (or the directed destination's) is authoritative.
    if envelope.tenant.as_str() != tenant {
        return refuse(
            DlqReason::TenantMismatch,
            format!(
                "envelope tenant {} differs from tenant {tenant}",
                envelope.tenant
            ),
        );
    }
    let header_tenant = headers.and_then(|hs| hs.get(h::TENANT)).map(|v| v.as_str());
    if let Some(other) = header_tenant.filter(|t| *t != tenant) {
        return refuse(
            DlqReason::TenantMismatch,
            format!("{} {other} differs from tenant {tenant}", h::TENANT),
        );
    }
    if EventType::parse(subject_type).ok().as_ref() != Some(&envelope.event_type) {
        return refuse(
            DlqReason::MalformedEvent,
            format!(
                "envelope type {} differs from subject type {subject_type}",
                envelope.event_type
            ),
        );
    }
    Decision::Deliver {
        destinations: targets.into_iter().map(|(id, _)| id).collect(),
        tenant,
        event_id: envelope.id.to_string(),
        event_type: envelope.event_type.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn registry() -> Registry {
        let registry = Registry::default();
        for (id, tenant, patterns) in [("d1", "acme", vec!["order.*"]), ("d2", "other", vec![">"])]
        {
            let destination = serde_json::from_value(json!({
                "id": id, "tenant": tenant, "url": "http://example.com/", "method": "POST",
                "event_types": patterns, "body": "envelope", "headers": {},
                "rate_limit": null, "max_in_flight": 1, "timeout_ms": 1000,
                "retry": {"schedule_ms": [], "max_attempts": 1}, "ordered": false,
                "enabled": true, "secrets": [],
                "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
            }))
            .expect("destination");
            registry.upsert(destination, 1);
        }
        registry
    }

    fn envelope(tenant: &str, event_type: &str) -> Vec<u8> {
        json!({"id": "e1", "tenant": tenant, "type": event_type,
            "received_at": "2026-01-01T00:00:00Z", "data": {}})
        .to_string()
        .into_bytes()
    }

    fn run(subject: &str, payload: &[u8]) -> Decision {
        decide(&Subjects::new("hs"), &registry(), subject, None, payload)
    }

    fn reason(d: Decision) -> Option<DlqReason> {
        match d {
            Decision::DeadLetter { reason, .. } => Some(reason),
            _ => None,
        }
    }

    #[test]
    fn a_matching_event_goes_to_its_destinations_only() {
        match run(
            "hs.ev.acme.order.created",
            &envelope("acme", "order.created"),
        ) {
            Decision::Deliver { destinations, .. } => {
                assert_eq!(destinations, vec![Arc::<str>::from("d1")])
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            run("hs.ev.acme.invoice.paid", &envelope("acme", "invoice.paid")),
            Decision::Nobody
        );
        assert_eq!(
            run("hs.to.nope.order.x", &envelope("acme", "order.x")),
            Decision::Nobody
        );
    }

    #[test]
    fn bad_messages_are_dead_lettered_with_their_reason() {
        assert_eq!(
            reason(run("hs.ev.acme.order.created", b"not json")),
            Some(DlqReason::MalformedEvent)
        );
        assert_eq!(
            reason(run(
                "hs.ev.acme.order.created",
                &envelope("other", "order.created")
            )),
            Some(DlqReason::TenantMismatch)
        );
        assert_eq!(
            reason(run(
                "hs.ev.acme.order.created",
                &envelope("acme", "order.deleted")
            )),
            Some(DlqReason::MalformedEvent)
        );
        // Aimed at a destination of another tenant.
        assert_eq!(
            reason(run(
                "hs.to.d2.order.created",
                &envelope("acme", "order.created")
            )),
            Some(DlqReason::TenantMismatch)
        );
    }
}
