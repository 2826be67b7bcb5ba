//! When to send a failed request to the homeserver again, and after how long.
//!
//! Transient failures ([`MatrixError::is_transient`]) are retried with exponential backoff and full jitter — the
//! delay before retry *n* is uniform in `[0, min(cap, base·2ⁿ⁻¹)]` — so that many ghosts hitting the same rate
//! limit do not come back in lockstep. When the homeserver says how long to wait (`retry_after_ms` or `Retry-After`
//! on `M_LIMIT_EXCEEDED`), that wait is honoured exactly, plus at most [`RETRY_AFTER_JITTER`]. Permanent failures
//! are returned at once.
//!
//! [`RetryPolicy::delay`] is a pure function of the attempt, the error and a random sample, so the arithmetic is
//! tested without sleeping.

use std::time::Duration;

use super::error::MatrixError;

/// The most added on top of a homeserver-provided `retry_after`, so that callers told the same wait spread out a
/// little.
pub const RETRY_AFTER_JITTER: Duration = Duration::from_millis(50);

/// How a failed request is retried.
///
/// The defaults: base 200 ms, cap 30 s, 8 attempts in all (the first try included), and a homeserver-provided wait
/// of more than 5 minutes is not slept through but returned to the caller as the error.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// The backoff ceiling before the first retry; it doubles with each further retry.
    pub base: Duration,
    /// The backoff ceiling never exceeds this.
    pub cap: Duration,
    /// How many times a request is sent at most, the first try included; `1` means no retry.
    pub max_attempts: u32,
    /// A homeserver-provided wait longer than this is not slept through: the error goes back to the caller, who can
    /// reschedule the work instead of holding a queue for that long.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(200),
            cap: Duration::from_secs(30),
            max_attempts: 8,
            max_retry_after: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// A policy that sends each request once and never retries.
    pub fn never() -> Self {
        Self { max_attempts: 1, ..Self::default() }
    }

    /// This policy with at most `max_attempts` sends per request (the first try included; `0` is treated as `1`).
    pub fn with_max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = max_attempts.max(1);
        self
    }

    /// The wait before sending a request again after its `attempt`-th send (1-based) failed with `error`, or `None`
    /// to give up and return the error.
    ///
    /// `sample` is a random number in `[0, 1)` (values outside are clamped) that picks the point within the jitter
    /// range; pass `rand::random()`.
    pub fn delay(&self, attempt: u32, error: &MatrixError, sample: f64) -> Option<Duration> {
        if !error.is_transient() || attempt >= self.max_attempts {
            return None;
        }
        match error.retry_after() {
            Some(wait) if wait > self.max_retry_after => None,
            Some(wait) => Some(wait + RETRY_AFTER_JITTER.mul_f64(clamp_sample(sample))),
            None => Some(self.backoff(attempt, sample)),
        }
    }

    /// The full-jitter backoff after the `attempt`-th send (1-based) failed: uniform in
    /// `[0, min(cap, base·2^(attempt−1))]`, at the point `sample ∈ [0, 1)`.
    pub fn backoff(&self, attempt: u32, sample: f64) -> Duration {
        self.ceiling(attempt).mul_f64(clamp_sample(sample))
    }

    /// `min(cap, base·2^(attempt−1))`, without overflowing for large attempts.
    fn ceiling(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(31);
        self.base.checked_mul(1 << exponent).map_or(self.cap, |ceiling| ceiling.min(self.cap))
    }
}

fn clamp_sample(sample: f64) -> f64 {
    if sample.is_nan() { 0.0 } else { sample.clamp(0.0, 1.0) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limited(retry_after_ms: Option<u64>) -> MatrixError {
        MatrixError::Api {
            status: 429,
            errcode: "M_LIMIT_EXCEEDED".into(),
            message: "Too many requests".into(),
            retry_after: retry_after_ms.map(Duration::from_millis),
        }
    }

    fn server_error() -> MatrixError {
        MatrixError::from_response(502, None, b"Bad Gateway")
    }

    fn forbidden() -> MatrixError {
        MatrixError::from_response(403, None, br#"{"errcode":"M_FORBIDDEN","error":"not invited"}"#)
    }

    #[test]
    fn ceiling_doubles_from_base_up_to_cap() {
        let policy = RetryPolicy::default();
        let ms = |attempt| policy.backoff(attempt, 1.0).as_millis();
        // (attempt, ceiling in ms)
        let cases =
            [(1, 200), (2, 400), (3, 800), (4, 1_600), (8, 25_600), (9, 30_000), (40, 30_000), (u32::MAX, 30_000)];
        for (attempt, ceiling) in cases {
            assert_eq!(ms(attempt), ceiling, "attempt {attempt}");
        }
    }

    #[test]
    fn full_jitter_spans_zero_to_ceiling() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.backoff(3, 0.0), Duration::ZERO);
        assert_eq!(policy.backoff(3, 0.5), Duration::from_millis(400));
        assert_eq!(policy.backoff(3, 1.0), Duration::from_millis(800));
        // Out-of-range samples are clamped rather than trusted.
        assert_eq!(policy.backoff(3, -1.0), Duration::ZERO);
        assert_eq!(policy.backoff(3, 7.0), Duration::from_millis(800));
        assert_eq!(policy.backoff(3, f64::NAN), Duration::ZERO);
    }

    #[test]
    fn transient_errors_retry_until_max_attempts() {
        let policy = RetryPolicy::default();
        for attempt in 1..8 {
            assert!(policy.delay(attempt, &server_error(), 0.5).is_some(), "attempt {attempt}");
        }
        assert_eq!(policy.delay(8, &server_error(), 0.5), None);
        assert_eq!(RetryPolicy::never().delay(1, &server_error(), 0.5), None);
        assert_eq!(RetryPolicy::default().with_max_attempts(0).max_attempts, 1);
    }

    #[test]
    fn permanent_errors_are_not_retried() {
        assert_eq!(RetryPolicy::default().delay(1, &forbidden(), 0.5), None);
    }

    #[test]
    fn retry_after_is_honoured_exactly_plus_a_little_jitter() {
        let policy = RetryPolicy::default();
        let wait = Duration::from_millis(2_000);
        assert_eq!(policy.delay(1, &limited(Some(2_000)), 0.0), Some(wait));
        assert_eq!(policy.delay(1, &limited(Some(2_000)), 1.0), Some(wait + RETRY_AFTER_JITTER));
        // Independent of the attempt number: the homeserver knows best.
        assert_eq!(policy.delay(6, &limited(Some(2_000)), 0.0), Some(wait));
        // Without a hint, M_LIMIT_EXCEEDED falls back to backoff.
        assert_eq!(policy.delay(2, &limited(None), 1.0), Some(Duration::from_millis(400)));
    }

    #[test]
    fn a_very_long_retry_after_goes_back_to_the_caller() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.delay(1, &limited(Some(600_000)), 0.0), None);
        assert!(policy.delay(1, &limited(Some(300_000)), 0.0).is_some());
    }
}
