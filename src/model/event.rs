//! Events: the type name, the envelope that travels on `HS_EVENTS`, and the ingest request.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

use super::ids::{DestinationId, EventId, InvalidId, TenantId};

pub const MAX_TYPE_TOKENS: usize = 16;
pub const MAX_TYPE_BYTES: usize = 255;

/// `order.created`: dot-separated tokens of `[A-Za-z0-9_-]`, at most 16 tokens and 255 bytes.
/// Every token becomes a subject token, so no wildcard can sneak in.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct EventType(String);

impl EventType {
    pub fn parse(value: impl Into<String>) -> Result<Self, InvalidId> {
        let value = value.into();
        let bad = |rule| InvalidId {
            what: "event type",
            value: value.chars().take(80).collect(),
            rule,
        };
        if value.is_empty() || value.len() > MAX_TYPE_BYTES {
            return Err(bad("1 to 255 bytes"));
        }
        let mut tokens = 0;
        for token in value.split('.') {
            tokens += 1;
            if token.is_empty()
                || !token
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err(bad("dot-separated tokens of [A-Za-z0-9_-]"));
            }
        }
        if tokens > MAX_TYPE_TOKENS {
            return Err(bad("at most 16 tokens"));
        }
        Ok(Self(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for EventType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::parse(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// The body of every message on `HS_EVENTS` and, by default, of every webhook request.
/// `data` stays raw JSON: it is forwarded byte for byte and never re-serialised.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    pub id: EventId,
    pub tenant: TenantId,
    #[serde(rename = "type")]
    pub event_type: EventType,
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default, serialize_with = "super::timestamp::serialize_option")]
    pub occurred_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "super::timestamp::serialize")]
    pub received_at: DateTime<Utc>,
    pub data: Box<RawValue>,
}

impl Envelope {
    pub fn to_bytes(&self) -> bytes::Bytes {
        // Room for `data` and the fields around it: one allocation, not a doubling series.
        let mut out = Vec::with_capacity(self.data.get().len() + 256);
        // Serialising a struct of strings, dates and an already valid RawValue cannot fail.
        serde_json::to_writer(&mut out, self).expect("envelope serialises");
        out.into()
    }
}

/// What a producer sends to `POST /v1/events` (and each item of a batch).
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEvent {
    /// Optional id; a retry with the same id is answered as a duplicate for 24 h.
    #[schema(value_type = Option<String>)]
    pub id: Option<EventId>,
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub tenant: Option<TenantId>,
    #[serde(rename = "type")]
    #[schema(value_type = String, example = "order.created")]
    pub event_type: EventType,
    #[schema(value_type = Object)]
    pub data: Box<RawValue>,
    pub source: Option<String>,
    pub occurred_at: Option<DateTime<Utc>>,
    /// Send to this one destination only (it must belong to the event's tenant).
    #[schema(value_type = Option<String>)]
    pub destination_id: Option<DestinationId>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_type_rules() {
        assert!(EventType::parse("order.created").is_ok());
        assert!(EventType::parse("a-b_c.D9").is_ok());
        for bad in [
            "", "order.", ".order", "order..x", "order.*", "order.>", "a b",
        ] {
            assert!(EventType::parse(bad).is_err(), "{bad}");
        }
        assert!(EventType::parse(vec!["a"; 16].join(".")).is_ok());
        assert!(EventType::parse(vec!["a"; 17].join(".")).is_err());
        assert!(EventType::parse("a".repeat(256)).is_err());
    }

    #[test]
    fn envelope_keeps_data_bytes_verbatim() {
        let raw = r#"{"id":"e1","tenant":"default","type":"a.b","received_at":"2026-01-01T00:00:00Z","data":{"z":1,  "a":[1.50]}}"#;
        let env: Envelope = serde_json::from_str(raw).unwrap();
        assert_eq!(env.data.get(), r#"{"z":1,  "a":[1.50]}"#);
        let again: Envelope = serde_json::from_slice(&env.to_bytes()).unwrap();
        assert_eq!(again.data.get(), env.data.get());
    }
}
