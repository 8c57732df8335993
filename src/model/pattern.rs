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

    pub fn matches(&self, event_type: &str) -> bool {
        subject_matches(&self.0, event_type)
    }
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

/// Whether some subject matches both patterns (what nats-server calls colliding filters).
fn collide(a: &[&str], b: &[&str]) -> bool {
    for i in 0.. {
        match (a.get(i), b.get(i)) {
            (Some(&">"), Some(_)) | (Some(_), Some(&">")) => return true,
            (None, None) => return true,
            (Some(x), Some(y)) if x == y || *x == "*" || *y == "*" => {}
            _ => return false,
        }
    }
    unreachable!("the loop returns once either side runs out")
}

/// Whether every subject matching `narrow` also matches `wide`.
fn subsumes(wide: &[&str], narrow: &[&str]) -> bool {
    for i in 0.. {
        match (wide.get(i), narrow.get(i)) {
            (Some(&">"), Some(_)) => return true,
            (None, None) => return true,
            (Some(&"*"), Some(n)) if *n != ">" => {}
            (Some(w), Some(n)) if w == n => {}
            _ => return false,
        }
    }
    unreachable!("the loop returns once either side runs out")
}

/// The narrowest single pattern that covers two colliding ones.
fn generalise(a: &[&str], b: &[&str]) -> String {
    let mut out = Vec::new();
    for i in 0.. {
        match (a.get(i), b.get(i)) {
            (Some(&">"), _) | (_, Some(&">")) => {
                out.push(">");
                break;
            }
            (Some(x), Some(y)) => out.push(if x == y { x } else { "*" }),
            _ => break,
        }
    }
    out.join(".")
}

/// Filter subjects for a consumer that must see every event type matching `patterns`.
///
/// nats-server refuses a consumer whose filter subjects overlap, yet users may well
/// subscribe to `order.*` and `*.created` together. Subsumed patterns are dropped and
/// partially overlapping ones are widened to one pattern that covers both; the returned flag
/// says whether the filters are exact. When they are not, the worker checks each event
/// against the real patterns and acknowledges the extra ones without sending them.
pub fn consumer_filters(patterns: &[EventPattern]) -> (Vec<String>, bool) {
    let mut set: Vec<String> = patterns.iter().map(|p| p.0.clone()).collect();
    set.sort();
    set.dedup();
    let mut exact = true;
    'again: loop {
        for i in 0..set.len() {
            for j in 0..set.len() {
                if i == j {
                    continue;
                }
                let a: Vec<&str> = set[i].split('.').collect();
                let b: Vec<&str> = set[j].split('.').collect();
                if subsumes(&a, &b) {
                    set.remove(j);
                    continue 'again;
                }
                if collide(&a, &b) {
                    let wide = generalise(&a, &b);
                    let (hi, lo) = (i.max(j), i.min(j));
                    set.remove(hi);
                    set.remove(lo);
                    set.push(wide);
                    exact = false;
                    continue 'again;
                }
            }
        }
        break;
    }
    set.sort();
    (set, exact)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pats(v: &[&str]) -> Vec<EventPattern> {
        v.iter().map(|p| EventPattern::parse(*p).unwrap()).collect()
    }

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
    fn pattern_validation() {
        assert!(EventPattern::parse("order.>").is_ok());
        assert!(EventPattern::parse(">.x").is_err());
        assert!(EventPattern::parse("or*der").is_err());
        assert!(EventPattern::parse("").is_err());
    }

    #[test]
    fn subsumed_filters_are_dropped_exactly() {
        let (f, exact) = consumer_filters(&pats(&["order.*", "order.created", "user.>"]));
        assert_eq!(f, vec!["order.*", "user.>"]);
        assert!(exact);
        let (f, exact) = consumer_filters(&pats(&[">", "a.b"]));
        assert_eq!(f, vec![">"]);
        assert!(exact);
    }

    #[test]
    fn partial_overlaps_are_widened_and_marked_inexact() {
        let (f, exact) = consumer_filters(&pats(&["order.*", "*.created", "x.y.z"]));
        assert_eq!(f, vec!["*.*", "x.y.z"]);
        assert!(!exact);
    }

    #[test]
    fn disjoint_filters_stay() {
        let (f, exact) = consumer_filters(&pats(&["a.b", "a.c", "a.b.c"]));
        assert_eq!(f, vec!["a.b", "a.b.c", "a.c"]);
        assert!(exact);
    }
}
