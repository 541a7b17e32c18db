//! The cadence of one feed's polls: how long its poll loop waits after each
//! poll.
//!
//! This module owns the timing policy: the fixed `interval`, the optional
//! adaptive range `interval_min`..`interval_max`, the upstream's
//! `Cache-Control: max-age` and `Retry-After`, and the back-off while the
//! upstream fails. It is pure (only the failure delays draw jitter), so each
//! rule is unit-tested with exact numbers. It must never poll, sleep, or look
//! at a body: the poller tells it what a poll found.
//!
//! The policy:
//! - The first delay is `interval`.
//! - A good poll that published changes sets the delay to `interval_min`:
//!   a feed that changes is likely to change again soon.
//! - A good poll that changed nothing (a `304`, the same body, only ignored
//!   fields) multiplies the delay by 1.5, up to `interval_max`.
//! - Without `interval_min`/`interval_max` both are `interval`, so the delay
//!   stays `interval`: the fixed cadence pollcast always had.
//! - `Cache-Control: max-age` on a good answer (`200` or `304`) lengthens
//!   that one delay to the time the answer stays fresh, never beyond
//!   `interval_max` (or `backoff_max` when `interval_max` is not set) and
//!   never shortening it; the adaptive delay itself is not changed by it.
//! - A failed poll backs off from the current delay (doubling per failure,
//!   jittered) up to `backoff_max`; one with `Retry-After` waits that long
//!   instead, never less than the current delay, never more than `backoff_max`.
//!   Failures do not change the adaptive delay: after recovery the cadence
//!   continues where it was.

use std::time::Duration;

use crate::config::FeedConfig;

/// The poll cadence of one feed instance.
#[derive(Debug, Clone)]
pub(crate) struct Cadence {
    min: Duration,
    max: Duration,
    /// Caps the failure back-off and `Retry-After`.
    backoff_max: Duration,
    /// Caps `Cache-Control: max-age`.
    fresh_cap: Duration,
    /// The adaptive delay after good polls.
    current: Duration,
}

impl Cadence {
    pub fn new(def: &FeedConfig) -> Self {
        Self {
            min: def.interval_min.unwrap_or(def.interval),
            max: def.interval_max.unwrap_or(def.interval),
            backoff_max: def.backoff_max,
            fresh_cap: def.interval_max.unwrap_or(def.backoff_max),
            current: def.interval,
        }
    }

    /// The adaptive delay as it stands (before any max-age or failure).
    #[cfg(test)]
    pub fn current(&self) -> Duration {
        self.current
    }

    /// The delay after a good poll that `changed` the list (published at
    /// least one event) or not, whose answer stays fresh for `fresh_for`
    /// (`Cache-Control: max-age` less `Age`).
    pub(crate) fn succeeded(&mut self, changed: bool, fresh_for: Option<Duration>) -> Duration {
        self.current = if changed {
            self.min
        } else {
            grow(self.current).clamp(self.min, self.max)
        };
        match fresh_for {
            Some(fresh) => self.current.max(fresh.min(self.fresh_cap)),
            None => self.current,
        }
    }

    /// The longest delay [`Cadence::succeeded`] can return now, for an answer
    /// fresh for `fresh_for`: how long a good answer may have to stand in
    /// before the next poll (see `stragglers`).
    pub(crate) fn longest_next(&self, fresh_for: Option<Duration>) -> Duration {
        let adaptive = grow(self.current).clamp(self.min, self.max);
        match fresh_for {
            Some(fresh) => adaptive.max(fresh.min(self.fresh_cap)),
            None => adaptive,
        }
    }

    /// The delay after the `failures`-th failed poll in a row, which may have
    /// carried `Retry-After`.
    pub fn failed(&self, failures: u32, retry_after: Option<Duration>) -> Duration {
        match retry_after {
            Some(after) => retry_delay(after, self.current, self.backoff_max),
            None => backoff(self.current, failures, self.backoff_max),
        }
    }
}

/// x1.5, exact in nanoseconds, saturating.
fn grow(d: Duration) -> Duration {
    d.saturating_add(d / 2)
}

/// Exponential back-off from `interval`, capped, with equal jitter so many
/// feeds failing together do not poll in lockstep.
pub(crate) fn backoff(interval: Duration, failures: u32, cap: Duration) -> Duration {
    let exp = interval.saturating_mul(1u32 << failures.min(16));
    let d = exp.min(cap);
    let half = d / 2;
    half + half.mul_f64(fastrand::f64())
}

/// The delay after a failure that carried `Retry-After`: never sooner than
/// the upstream asked (nor than the interval), never later than `cap`, so a
/// huge or hostile value cannot silence a feed for longer than the operator
/// allows. A little jitter (at most 5%, at most 1s) goes on top, inside the
/// cap, so feeds told the same time do not return in lockstep.
pub(crate) fn retry_delay(after: Duration, interval: Duration, cap: Duration) -> Duration {
    let base = after.max(interval).min(cap);
    let jitter = (base / 20)
        .min(Duration::from_secs(1))
        .mul_f64(fastrand::f64());
    (base + jitter).min(cap.max(base))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn def(interval: u64, min: Option<u64>, max: Option<u64>, backoff_max: u64) -> FeedConfig {
        let mut d = FeedConfig::new("t", "/t");
        d.interval = ms(interval);
        d.interval_min = min.map(ms);
        d.interval_max = max.map(ms);
        d.backoff_max = ms(backoff_max);
        d
    }

    #[test]
    fn without_the_keys_the_interval_is_fixed() {
        let mut c = Cadence::new(&def(2000, None, None, 30_000));
        assert_eq!(c.current(), ms(2000));
        for changed in [false, false, true, false, true, true, false] {
            assert_eq!(c.succeeded(changed, None), ms(2000));
        }
    }

    #[test]
    fn longest_next_bounds_every_delay_after_a_good_poll() {
        for d in [
            def(2000, None, None, 30_000),
            def(100, Some(50), Some(1000), 30_000),
        ] {
            let mut c = Cadence::new(&d);
            for (i, fresh) in [None, Some(ms(5000)), None, Some(ms(10)), Some(ms(99_000))]
                .into_iter()
                .cycle()
                .take(20)
                .enumerate()
            {
                let bound = c.longest_next(fresh);
                let mut quiet = c.clone();
                assert_eq!(quiet.succeeded(false, fresh), bound, "{i}");
                assert!(c.succeeded(i % 3 == 0, fresh) <= bound, "{i}");
            }
        }
    }

    #[test]
    fn quiet_polls_grow_by_half_up_to_the_max() {
        let mut c = Cadence::new(&def(100, Some(50), Some(1000), 30_000));
        let delays: Vec<u64> = (0..9)
            .map(|_| c.succeeded(false, None).as_millis() as u64)
            .collect();
        assert_eq!(delays, [150, 225, 337, 506, 759, 1000, 1000, 1000, 1000]);
    }

    #[test]
    fn a_change_drops_to_the_min_at_once() {
        let mut c = Cadence::new(&def(100, Some(50), Some(1000), 30_000));
        for _ in 0..10 {
            c.succeeded(false, None);
        }
        assert_eq!(c.current(), ms(1000));
        assert_eq!(c.succeeded(true, None), ms(50));
        assert_eq!(c.succeeded(true, None), ms(50));
        assert_eq!(c.succeeded(false, None), ms(75));
        assert_eq!(c.succeeded(true, None), ms(50));
    }

    #[test]
    fn only_min_or_only_max_keep_interval_as_the_other_bound() {
        // interval_min alone: faster while changing, never slower than interval.
        let mut c = Cadence::new(&def(1000, Some(100), None, 30_000));
        assert_eq!(c.succeeded(true, None), ms(100));
        assert_eq!(c.succeeded(false, None), ms(150));
        for _ in 0..10 {
            c.succeeded(false, None);
        }
        assert_eq!(c.succeeded(false, None), ms(1000));
        // interval_max alone: slower while quiet, never faster than interval.
        let mut c = Cadence::new(&def(1000, None, Some(4000), 30_000));
        assert_eq!(c.succeeded(false, None), ms(1500));
        assert_eq!(c.succeeded(true, None), ms(1000));
        for _ in 0..10 {
            c.succeeded(false, None);
        }
        assert_eq!(c.succeeded(false, None), ms(4000));
    }

    #[test]
    fn max_age_lengthens_one_delay_within_its_cap() {
        // Fixed feed: capped by backoff_max.
        let mut c = Cadence::new(&def(100, None, None, 5000));
        assert_eq!(c.succeeded(false, Some(ms(1000))), ms(1000));
        assert_eq!(c.succeeded(true, Some(ms(3_600_000))), ms(5000));
        // Never shorter than the current delay; zero changes nothing.
        assert_eq!(c.succeeded(false, Some(ms(10))), ms(100));
        assert_eq!(c.succeeded(false, Some(Duration::ZERO)), ms(100));
        // It does not move the adaptive delay itself.
        assert_eq!(c.current(), ms(100));

        // Adaptive feed: capped by interval_max, not backoff_max.
        let mut c = Cadence::new(&def(100, Some(50), Some(2000), 30_000));
        assert_eq!(c.succeeded(true, Some(ms(3_600_000))), ms(2000));
        assert_eq!(c.current(), ms(50));
        assert_eq!(c.succeeded(true, Some(ms(700))), ms(700));
        assert_eq!(c.succeeded(false, Some(ms(10))), ms(75));
        assert_eq!(c.succeeded(false, None), Duration::from_micros(112_500));
    }

    #[test]
    fn failures_start_from_the_adaptive_delay() {
        let mut c = Cadence::new(&def(100, Some(50), Some(1000), 4000));
        for _ in 0..10 {
            c.succeeded(false, None);
        }
        for _ in 0..100 {
            // Back-off from 1s: 2s then capped at 4s, jittered in [half, full].
            let d = c.failed(1, None);
            assert!(d >= ms(1000) && d <= ms(2000), "{d:?}");
            let d = c.failed(5, None);
            assert!(d >= ms(2000) && d <= ms(4000), "{d:?}");
            // Retry-After shorter than the current delay waits the delay.
            let d = c.failed(1, Some(ms(200)));
            assert!(d >= ms(1000) && d <= ms(1050), "{d:?}");
            // Longer: as asked, capped by backoff_max.
            let d = c.failed(1, Some(ms(3000)));
            assert!(d >= ms(3000) && d <= ms(3150), "{d:?}");
            assert_eq!(c.failed(1, Some(ms(86_400_000))), ms(4000));
        }
        // Failures leave the adaptive delay alone.
        assert_eq!(c.current(), ms(1000));
        assert_eq!(c.succeeded(true, None), ms(50));
    }

    #[test]
    fn retry_after_is_honoured_within_interval_and_cap() {
        let i = ms(100);
        let cap = Duration::from_secs(30);
        for _ in 0..100 {
            let d = retry_delay(Duration::from_secs(2), i, cap);
            assert!(
                d >= Duration::from_secs(2) && d <= Duration::from_millis(2100),
                "{d:?}"
            );
            assert!(retry_delay(Duration::ZERO, i, cap) >= i);
            assert_eq!(retry_delay(Duration::from_secs(86_400), i, cap), cap);
        }
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let i = ms(100);
        let cap = Duration::from_secs(2);
        for f in 1..40 {
            let d = backoff(i, f, cap);
            let full = i.saturating_mul(1 << f.min(16)).min(cap);
            assert!(d >= full / 2 && d <= full, "{f}: {d:?}");
        }
    }
}
