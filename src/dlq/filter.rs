//! Which dead letters a request means: the one filter type of `dlq/`, shared as it is by
//! the API (query of `GET /v1/dlq`, bodies of replay and purge, flattened into each), the
//! CLI (`hookstream dlq … --tenant --destination --type --since --until`) and the scan in
//! `select.rs`. Its fields are parsed once, at the edge that reads them (serde or clap),
//! so a bad id or pattern is refused before anything is read.
//!
//! Also the [`Target`] of a replay or purge: listed ids, or a filter.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::DlqError;
use super::letter::StoredDeadLetter;
use crate::broker::Broker;
use crate::model::{DestinationId, EventPattern, TenantId};

/// The filters of a list, replay or purge. Every field narrows; none means all.
#[derive(
    Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema, IntoParams, clap::Args,
)]
#[into_params(parameter_in = Query)]
pub struct DeadLetterFilter {
    /// Only this tenant's dead letters.
    #[arg(long, value_parser = |s: &str| TenantId::parse(s))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    #[param(value_type = Option<String>)]
    pub tenant: Option<TenantId>,
    /// Only this destination's dead letters.
    #[arg(long = "destination", value_parser = |s: &str| DestinationId::parse(s))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    #[param(value_type = Option<String>)]
    pub destination_id: Option<DestinationId>,
    /// Only this event type, or pattern (`order.created`, `order.*`, `order.>`).
    #[arg(long = "type", value_parser = |s: &str| EventPattern::parse(s))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    #[param(value_type = Option<String>)]
    pub event_type: Option<EventPattern>,
    /// Dead-lettered at or after this time (RFC 3339, e.g. 2026-01-31T08:00:00Z).
    #[arg(long)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<DateTime<Utc>>,
    /// Dead-lettered at or before this time (RFC 3339).
    #[arg(long)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
}

impl DeadLetterFilter {
    /// The checks that take more than one field.
    pub fn validate(&self) -> Result<(), DlqError> {
        if let (Some(a), Some(b)) = (self.since, self.until)
            && a > b
        {
            return Err(DlqError::Invalid("since is after until".into()));
        }
        Ok(())
    }

    /// Whether no filter is set.
    pub fn is_everything(&self) -> bool {
        self == &Self::default()
    }

    /// Whether the subject alone decides (no event type, no time range).
    pub fn is_by_subject_only(&self) -> bool {
        self.event_type.is_none() && self.since.is_none() && self.until.is_none()
    }

    /// The same filter held to `tenant` (a tenant key's scope), whatever it said.
    pub fn scoped_to(&self, tenant: Option<&TenantId>) -> Self {
        match tenant {
            Some(t) => Self {
                tenant: Some(t.clone()),
                ..self.clone()
            },
            None => self.clone(),
        }
    }

    pub fn filter_subject(&self, broker: &Broker) -> String {
        broker.subjects.dlq_filter(
            self.tenant.as_ref().map(TenantId::as_str),
            self.destination_id.as_ref().map(DestinationId::as_str),
        )
    }

    /// The checks the subject cannot make. Tenant and destination are checked again so
    /// that a dead letter read by id is held to the same filters.
    pub fn matches(&self, letter: &StoredDeadLetter) -> bool {
        self.tenant
            .as_ref()
            .is_none_or(|t| t.as_str() == letter.tenant)
            && self
                .destination_id
                .as_ref()
                .is_none_or(|d| d.as_str() == letter.destination_id)
            && self
                .event_type
                .as_ref()
                .is_none_or(|p| letter.event_type.as_deref().is_some_and(|t| p.matches(t)))
            && self.since.is_none_or(|t| letter.dead_lettered_at >= t)
            && self.until.is_none_or(|t| letter.dead_lettered_at <= t)
    }
}

/// What a replay or purge works on: listed ids, or a filter.
#[derive(Debug, Clone)]
pub enum Target {
    Ids(Vec<u64>),
    Filter(DeadLetterFilter),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_checks_what_the_subject_cannot() {
        let letter = |event_type: Option<&str>, secs: i64| StoredDeadLetter {
            seq: 1,
            tenant: "acme".into(),
            destination_id: "d1".into(),
            event_id: None,
            event_type: event_type.map(String::from),
            reason: None,
            attempts: None,
            last_status: None,
            last_error: None,
            first_attempt_at: None,
            last_attempt_at: None,
            dead_lettered_at: DateTime::from_timestamp(secs, 0).unwrap(),
            original_seq: None,
            replay_of: None,
            headers: Default::default(),
            body: Default::default(),
        };
        let by_type = DeadLetterFilter {
            event_type: Some(EventPattern::parse("order.*").unwrap()),
            ..Default::default()
        };
        assert!(by_type.matches(&letter(Some("order.created"), 10)));
        assert!(!by_type.matches(&letter(Some("user.created"), 10)));
        assert!(
            !by_type.matches(&letter(None, 10)),
            "no type never matches a type"
        );
        let by_time = DeadLetterFilter {
            since: DateTime::from_timestamp(10, 0),
            until: DateTime::from_timestamp(20, 0),
            ..Default::default()
        };
        assert!(by_time.matches(&letter(None, 10)));
        assert!(by_time.matches(&letter(None, 20)));
        assert!(!by_time.matches(&letter(None, 9)));
        assert!(!by_time.matches(&letter(None, 21)));
        let other_tenant = DeadLetterFilter {
            tenant: Some(TenantId::parse("other").unwrap()),
            ..Default::default()
        };
        assert!(!other_tenant.matches(&letter(None, 10)));
        assert!(DeadLetterFilter::default().is_everything());
    }

    #[test]
    fn the_filter_reads_and_writes_the_api_spelling() {
        let filter: DeadLetterFilter = serde_json::from_str(
            r#"{"tenant":"acme","destination_id":"d1","event_type":"order.*","since":"1970-01-01T00:00:00Z"}"#,
        )
        .unwrap();
        assert_eq!(
            filter.destination_id.as_ref().map(|d| d.as_str()),
            Some("d1")
        );
        let back = serde_json::to_value(&filter).unwrap();
        assert_eq!(back["event_type"], "order.*");
        assert!(back.get("until").is_none(), "unset fields are left out");
        assert!(serde_json::from_str::<DeadLetterFilter>(r#"{"event_type":"a..b"}"#).is_err());
        let reversed = DeadLetterFilter {
            since: DateTime::from_timestamp(20, 0),
            until: DateTime::from_timestamp(10, 0),
            ..Default::default()
        };
        assert!(reversed.validate().is_err());
    }
}
