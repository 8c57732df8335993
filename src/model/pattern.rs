//! Event-type patterns of destinations (`order.created`, `order.*`, `order.>`, `*`, `>`),
//! and how a set of them becomes the filter subjects of a JetStream consumer.

use serde::{Deserialize, Deserializer, Serialize};

use super::ids::InvalidId;

/// One subscription pattern, NATS wildcard semantics over event-type tokens.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct EventPattern(String);

impl EventPattern {
    pub fn parse(value: impl Into<String>) -> Result<Self, InvalidId> {
        let value = value.into();
        let bad = |rule| InvalidId {
            what: "event type pattern",
            value: value.chars().take(80).collect(),
            rule,
        };
        if value.is_empty() || value.len() > super::event::MAX_TYPE_BYTES {
            return Err(bad("1 to 255 bytes"));
        }
        let tokens: Vec<&str> = value.split('.').collect();
        if tokens.len() > super::event::MAX_TYPE_TOKENS {
            return Err(bad("at most 16 tokens"));
        }
        for (i, token) in tokens.iter().enumerate() {
            let ok = match *token {
                "*" => true,
                ">" => i == tokens.len() - 1,
                t => {
                    !t.is_empty()
                        && t.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                }
            };
            if !ok {
                return Err(bad(
                    "dot-separated tokens of [A-Za-z0-9_-], `*` for one token, `>` last for the rest",
                ));
            }
        }
        Ok(Self(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// NATS matching, for filters (dead letters, event search).
    pub fn matches(&self, event_type: &str) -> bool {
        subject_matches(&self.0, event_type)
    }

    /// Whether a destination with this pattern wants events of `event_type`: as
    /// [`EventPattern::matches`], except that hookstream's own types (first token
    /// [`RESERVED`]) are only for patterns that name it (`hookstream.>`), not `>` or `*…`.
    pub fn subscribes_to(&self, event_type: &str) -> bool {
        subscribes(&self.0, event_type)
    }
}

/// The first token of hookstream's own event types (operational events, docs/adr/0013):
/// a catch-all destination (`>`) does not get them unless it asks by name, so that adding
/// them changed nothing for the destinations that existed before.
pub const RESERVED: &str = "hookstream";

/// [`EventPattern::subscribes_to`] on plain strings (the subject index agrees with it).
pub fn subscribes(pattern: &str, event_type: &str) -> bool {
    fn first(s: &str) -> &str {
        s.split('.').next().unwrap_or_default()
    }
    if first(event_type) == RESERVED && first(pattern) != RESERVED {
        return false;
    }
    subject_matches(pattern, event_type)
}

impl<'de> Deserialize<'de> for EventPattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::parse(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// NATS matching of a concrete subject against a pattern with `*` and `>`.
pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut subject_tokens = subject.split('.');
    for p in pattern.split('.') {
        match (p, subject_tokens.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (p, Some(s)) if p == s => {}
            _ => return false,
        }
    }
    subject_tokens.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching_follows_nats_wildcards() {
        assert!(subject_matches("order.created", "order.created"));
        assert!(subject_matches("order.*", "order.created"));
        assert!(!subject_matches("order.*", "order.created.v2"));
        assert!(subject_matches("order.>", "order.created.v2"));
        assert!(!subject_matches("order.>", "order"));
        assert!(subject_matches(">", "a"));
        assert!(subject_matches("*", "a"));
        assert!(!subject_matches("*", "a.b"));
        assert!(!subject_matches("order.created", "order"));
    }

    #[test]
    fn hookstream_types_are_only_for_patterns_that_name_them() {
        for pattern in [">", "*.>", "*.destination.*"] {
            assert!(subject_matches(pattern, "hookstream.destination.disabled"));
            assert!(
                !subscribes(pattern, "hookstream.destination.disabled"),
                "{pattern}"
            );
        }
        assert!(subscribes(
            "hookstream.>",
            "hookstream.destination.disabled"
        ));
        assert!(subscribes(
            "hookstream.destination.*",
            "hookstream.destination.disabled"
        ));
        assert!(!subscribes(
            "hookstream.event.*",
            "hookstream.destination.disabled"
        ));
        assert!(subscribes(">", "order.created"));
    }

    #[test]
    fn pattern_validation() {
        assert!(EventPattern::parse("order.>").is_ok());
        assert!(EventPattern::parse(">.x").is_err());
        assert!(EventPattern::parse("or*der").is_err());
        assert!(EventPattern::parse("").is_err());
    }
}
