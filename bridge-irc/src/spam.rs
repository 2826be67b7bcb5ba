//! Spam control for Matrix → IRC, one of Libera.Chat's conditions for bridging (its 2023 shutdown of
//! matrix-appservice-irc named spam from Matrix): a token bucket of messages per Matrix user and network, and a cap
//! on the lines of one message. A message held back is never dropped silently: the caller turns [`Held`] into a
//! permanent error, which the runtime sets aside and explains to the sender in the room.

use std::time::{Duration, Instant};

use crate::config::SpamConfig;
use dashmap::DashMap;

/// Why a message was held back; its `Display` is what the sender reads.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum Held {
    /// The sender used up their rate.
    #[error("held back as spam: you sent more than {burst} messages in a row to {network} (the limit is {per_minute} per minute); send again in {} s", retry_after.as_secs().max(1))]
    Rate { network: String, burst: u32, per_minute: f64, retry_after: Duration },
    /// The message has too many lines.
    #[error("held back as spam: it has {lines} lines and {network} takes at most {max} per message")]
    Lines { network: String, lines: usize, max: usize },
}

impl From<Held> for lattice_bridge_core::ConnectorError {
    /// Permanent: the runtime sets the message aside and tells the sender why, rather than retrying it later.
    fn from(held: Held) -> Self {
        Self::permanent(held.to_string())
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// The spam limits of one network, with every Matrix user's bucket.
#[derive(Debug)]
pub(crate) struct SpamGuard {
    config: SpamConfig,
    network: String,
    buckets: DashMap<String, Bucket>,
}

impl SpamGuard {
    /// The guard of the network called `network` (its display name, for the sender's notice).
    pub(crate) fn new(config: SpamConfig, network: &str) -> Self {
        Self { config, network: network.to_owned(), buckets: DashMap::new() }
    }

    /// Admits a message of `lines` lines from `user_id` now, or says why not. A held-back message costs nothing.
    pub(crate) fn admit(&self, user_id: &str, lines: usize) -> Result<(), Held> {
        self.admit_at(user_id, lines, Instant::now())
    }

    fn admit_at(&self, user_id: &str, lines: usize, now: Instant) -> Result<(), Held> {
        let max = self.config.max_lines_per_message;
        if max > 0 && lines > max {
            return Err(Held::Lines { network: self.network.clone(), lines, max });
        }
        let per_minute = self.config.messages_per_minute;
        if per_minute <= 0.0 {
            return Ok(());
        }
        let burst = f64::from(self.config.burst.max(1));
        let per_second = per_minute / 60.0;
        let mut bucket = self.buckets.entry(user_id.to_owned()).or_insert(Bucket { tokens: burst, last: now });
        bucket.tokens =
            (bucket.tokens + now.saturating_duration_since(bucket.last).as_secs_f64() * per_second).min(burst);
        bucket.last = now;
        if bucket.tokens < 1.0 {
            let retry_after = Duration::from_secs_f64((1.0 - bucket.tokens) / per_second);
            return Err(Held::Rate {
                network: self.network.clone(),
                burst: self.config.burst.max(1),
                per_minute,
                retry_after,
            });
        }
        bucket.tokens -= 1.0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(messages_per_minute: f64, burst: u32, max_lines_per_message: usize) -> SpamGuard {
        SpamGuard::new(SpamConfig { messages_per_minute, burst, max_lines_per_message }, "Net")
    }

    #[test]
    fn a_burst_passes_then_the_rate_holds_messages_back_until_tokens_refill() {
        let guard = guard(60.0, 3, 0);
        let start = Instant::now();
        for _ in 0..3 {
            assert_eq!(guard.admit_at("@a:x", 1, start), Ok(()));
        }
        let held = guard.admit_at("@a:x", 1, start).unwrap_err();
        assert!(matches!(held, Held::Rate { retry_after, .. } if retry_after == Duration::from_secs(1)), "{held:?}");
        assert!(held.to_string().contains("more than 3 messages"), "{held}");
        assert_eq!(guard.admit_at("@b:x", 1, start), Ok(()), "another user has a bucket of their own");
        assert_eq!(guard.admit_at("@a:x", 1, start + Duration::from_millis(1000)), Ok(()));
        assert!(guard.admit_at("@a:x", 1, start + Duration::from_millis(1500)).is_err());
    }

    #[test]
    fn too_many_lines_are_held_back_without_using_the_rate() {
        let guard = guard(60.0, 1, 3);
        let now = Instant::now();
        let held = guard.admit_at("@a:x", 4, now).unwrap_err();
        assert_eq!(held, Held::Lines { network: "Net".into(), lines: 4, max: 3 });
        assert_eq!(held.to_string(), "held back as spam: it has 4 lines and Net takes at most 3 per message");
        assert_eq!(guard.admit_at("@a:x", 3, now), Ok(()), "the long message did not use the only token");
    }

    #[test]
    fn zero_turns_each_limit_off() {
        let guard = guard(0.0, 1, 0);
        let now = Instant::now();
        for _ in 0..100 {
            assert_eq!(guard.admit_at("@a:x", 1000, now), Ok(()));
        }
    }
}
