//! What an attempt's answer leads to, decided without side effects: delivered (2xx), dead
//! letter at once (`410 Gone`), retry after a delay (the policy's, or a longer
//! `Retry-After` on 429/503, capped), or dead letter after the last attempt.

use std::time::Duration;

use super::retry::{self, Next};
use super::sender::Response;
use crate::dlq::DlqReason;
use crate::model::RetryPolicy;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    GiveUp(DlqReason),
    RetryIn(Duration),
}

pub fn after_attempt(
    response: &Response,
    policy: &RetryPolicy,
    number: u32,
    retry_after_cap: Duration,
) -> Outcome {
    if response.is_success() {
        return Outcome::Delivered;
    }
    if response.status == Some(410) {
        return Outcome::GiveUp(DlqReason::Gone);
    }
    // Retry-After means "not before" only on 429 and 503 (RFC 9110).
    let retry_after = response
        .retry_after
        .filter(|_| matches!(response.status, Some(429 | 503)));
    match retry::after_failure(policy, number, retry_after, retry_after_cap) {
        Next::GiveUp => Outcome::GiveUp(DlqReason::MaxAttempts),
        Next::RetryAfter(delay) => Outcome::RetryIn(delay),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: Option<u16>, retry_after: Option<u64>) -> Response {
        Response {
            status,
            body: None,
            error: status.is_none().then(|| "connection refused".to_string()),
            retry_after: retry_after.map(Duration::from_secs),
            duration: Duration::ZERO,
        }
    }

    fn policy() -> RetryPolicy {
        RetryPolicy {
            schedule_ms: Some(vec![1_000, 2_000]),
            backoff: None,
            max_attempts: 3,
        }
    }

    const CAP: Duration = Duration::from_secs(60);

    #[test]
    fn each_answer_leads_where_the_contract_says() {
        let p = policy();
        assert_eq!(
            after_attempt(&answer(Some(204), None), &p, 1, CAP),
            Outcome::Delivered
        );
        assert_eq!(
            after_attempt(&answer(Some(410), None), &p, 1, CAP),
            Outcome::GiveUp(DlqReason::Gone)
        );
        assert_eq!(
            after_attempt(&answer(Some(500), None), &p, 1, CAP),
            Outcome::RetryIn(Duration::from_secs(1))
        );
        assert_eq!(
            after_attempt(&answer(None, None), &p, 2, CAP),
            Outcome::RetryIn(Duration::from_secs(2))
        );
        assert_eq!(
            after_attempt(&answer(Some(500), None), &p, 3, CAP),
            Outcome::GiveUp(DlqReason::MaxAttempts)
        );
    }

    #[test]
    fn retry_after_counts_on_429_and_503_only_and_is_capped() {
        let p = policy();
        assert_eq!(
            after_attempt(&answer(Some(429), Some(30)), &p, 1, CAP),
            Outcome::RetryIn(Duration::from_secs(30))
        );
        assert_eq!(
            after_attempt(&answer(Some(503), Some(3_600)), &p, 1, CAP),
            Outcome::RetryIn(CAP)
        );
        assert_eq!(
            after_attempt(&answer(Some(500), Some(30)), &p, 1, CAP),
            Outcome::RetryIn(Duration::from_secs(1))
        );
    }
}
