//! When the next attempt happens: an explicit schedule, or exponential backoff with cap
//! and jitter; a receiver's `Retry-After` can only push it later, up to a cap.

use std::time::Duration;

use rand::Rng;

use crate::model::RetryPolicy;

/// What to do after failed attempt number `attempt` (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    RetryAfter(Duration),
    GiveUp,
}

pub fn after_failure(
    policy: &RetryPolicy,
    attempt: u32,
    retry_after: Option<Duration>,
    retry_after_cap: Duration,
) -> Next {
    if attempt >= policy.max_attempts {
        return Next::GiveUp;
    }
    let planned = planned_delay(policy, attempt, &mut rand::rng());
    let delay = match retry_after {
        Some(asked) => planned.max(asked.min(retry_after_cap)),
        None => planned,
    };
    Next::RetryAfter(delay)
}

/// The policy's delay before attempt `attempt + 1`.
pub fn planned_delay(policy: &RetryPolicy, attempt: u32, rng: &mut impl Rng) -> Duration {
    if let Some(schedule) = &policy.schedule_ms {
        // A schedule shorter than max_attempts repeats its last delay.
        let index = (attempt as usize).saturating_sub(1);
        let ms = schedule
            .get(index)
            .or(schedule.last())
            .copied()
            .unwrap_or(0);
        return Duration::from_millis(ms);
    }
    let Some(b) = policy.backoff else {
        return Duration::ZERO;
    };
    let exp = b.factor.powi(attempt.saturating_sub(1).min(64) as i32);
    let raw = (b.base_ms as f64 * exp).min(b.max_ms as f64);
    let spread = if b.jitter > 0.0 {
        rng.random_range(-b.jitter..=b.jitter)
    } else {
        0.0
    };
    let ms = (raw * (1.0 + spread)).clamp(0.0, b.max_ms as f64);
    Duration::from_millis(ms as u64)
}

/// `Retry-After` as seconds or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let ms = (when.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_milliseconds();
    Some(Duration::from_millis(ms.max(0) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Backoff;

    fn schedule(ms: &[u64], max: u32) -> RetryPolicy {
        RetryPolicy {
            schedule_ms: Some(ms.to_vec()),
            backoff: None,
            max_attempts: max,
        }
    }

    const CAP: Duration = Duration::from_secs(3600);

    #[test]
    fn schedule_is_followed_then_gives_up() {
        let p = schedule(&[100, 200, 300], 4);
        assert_eq!(
            after_failure(&p, 1, None, CAP),
            Next::RetryAfter(Duration::from_millis(100))
        );
        assert_eq!(
            after_failure(&p, 3, None, CAP),
            Next::RetryAfter(Duration::from_millis(300))
        );
        assert_eq!(after_failure(&p, 4, None, CAP), Next::GiveUp);
        let short = schedule(&[50], 5);
        assert_eq!(
            after_failure(&short, 3, None, CAP),
            Next::RetryAfter(Duration::from_millis(50))
        );
    }

    #[test]
    fn backoff_grows_caps_and_jitters_within_bounds() {
        let p = RetryPolicy {
            schedule_ms: None,
            backoff: Some(Backoff {
                base_ms: 100,
                factor: 2.0,
                max_ms: 1000,
                jitter: 0.2,
            }),
            max_attempts: 50,
        };
        let mut rng = rand::rng();
        for _ in 0..200 {
            let d1 = planned_delay(&p, 1, &mut rng).as_millis();
            assert!((80..=120).contains(&d1), "{d1}");
            let d3 = planned_delay(&p, 3, &mut rng).as_millis();
            assert!((320..=480).contains(&d3), "{d3}");
            let d20 = planned_delay(&p, 20, &mut rng).as_millis();
            assert!((800..=1000).contains(&d20), "{d20}");
        }
    }

    #[test]
    fn retry_after_only_delays_and_is_capped() {
        let p = schedule(&[1000], 3);
        let later = after_failure(&p, 1, Some(Duration::from_secs(5)), CAP);
        assert_eq!(later, Next::RetryAfter(Duration::from_secs(5)));
        let sooner = after_failure(&p, 1, Some(Duration::from_millis(10)), CAP);
        assert_eq!(sooner, Next::RetryAfter(Duration::from_millis(1000)));
        let capped = after_failure(
            &p,
            1,
            Some(Duration::from_secs(99999)),
            Duration::from_secs(60),
        );
        assert_eq!(capped, Next::RetryAfter(Duration::from_secs(60)));
    }

    #[test]
    fn retry_after_formats() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT").is_some());
        assert_eq!(parse_retry_after("soon"), None);
    }
}
