//! Request pacing: the organisation's budget, `Retry-After`, and backoff with jitter.
//!
//! XDR allows 8,000 requests per rolling hour per organisation, shared by every API client of
//! the organisation (`xdr-ctim.md` §10.3). Hitting the limit costs a 429 for everyone, so the
//! client keeps its own rolling-hour count ([`Budget`]) and waits rather than sends. A 429's
//! `Retry-After` pauses all requests until then. Other transient failures (network, 5xx)
//! back off exponentially with full jitter ([`Backoff`]) so that many trapline instances
//! recovering from the same outage do not retry in lockstep.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// A rolling-window request budget.
#[derive(Debug)]
pub struct Budget {
    limit: usize,
    window: Duration,
    sent: VecDeque<Instant>,
    paused_until: Option<Instant>,
}

impl Budget {
    pub fn per_hour(limit: u32) -> Budget {
        Budget::new(limit as usize, Duration::from_secs(3600))
    }

    pub fn new(limit: usize, window: Duration) -> Budget {
        Budget { limit: limit.max(1), window, sent: VecDeque::new(), paused_until: None }
    }

    /// How long to wait before the next request may go (zero: now).
    pub fn wait(&mut self, now: Instant) -> Duration {
        while self.sent.front().is_some_and(|t| now.duration_since(*t) >= self.window) {
            self.sent.pop_front();
        }
        let mut wait = Duration::ZERO;
        if let Some(p) = self.paused_until {
            if p > now {
                wait = p - now;
            } else {
                self.paused_until = None;
            }
        }
        if self.sent.len() >= self.limit
            && let Some(oldest) = self.sent.front()
        {
            wait = wait.max((*oldest + self.window).saturating_duration_since(now));
        }
        wait
    }

    /// Counts a request sent at `now`.
    pub fn record(&mut self, now: Instant) {
        self.sent.push_back(now);
    }

    /// Holds every request until `until` (a 429's `Retry-After`).
    pub fn pause_until(&mut self, until: Instant) {
        self.paused_until = Some(self.paused_until.map_or(until, |p| p.max(until)));
    }

    /// Requests counted in the current window.
    pub fn used(&self) -> usize {
        self.sent.len()
    }
}

/// Exponential backoff with full jitter: attempt n waits a random time in
/// `[d/2, d]` where `d = min(max, base · 2ⁿ)`.
#[derive(Debug)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Backoff {
        Backoff { base, max, attempt: 0 }
    }

    pub fn next_delay(&mut self) -> Duration {
        let exp = self.base.saturating_mul(1u32 << self.attempt.min(20));
        let d = exp.min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let half = d / 2;
        half + Duration::from_nanos(fastrand::u64(0..=half.as_nanos().min(u64::MAX as u128) as u64))
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

/// Parses `Retry-After` as seconds (the service sends seconds; HTTP dates are not used).
pub fn retry_after(v: Option<&str>) -> Option<Duration> {
    let s = v?.trim();
    s.parse::<f64>().ok().filter(|n| n.is_finite() && *n >= 0.0).map(|n| Duration::from_secs_f64(n.min(3600.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_waits_for_the_oldest_request_to_leave_the_window() {
        let t0 = Instant::now();
        let mut b = Budget::new(3, Duration::from_secs(10));
        for i in 0..3 {
            assert_eq!(b.wait(t0 + Duration::from_secs(i)), Duration::ZERO);
            b.record(t0 + Duration::from_secs(i));
        }
        assert_eq!(b.wait(t0 + Duration::from_secs(4)), Duration::from_secs(6));
        assert_eq!(b.wait(t0 + Duration::from_secs(10)), Duration::ZERO, "the first request left the window");
        assert_eq!(b.used(), 2);
    }

    #[test]
    fn retry_after_pauses_everything() {
        let t0 = Instant::now();
        let mut b = Budget::per_hour(8000);
        b.pause_until(t0 + Duration::from_secs(5));
        assert_eq!(b.wait(t0), Duration::from_secs(5));
        assert_eq!(b.wait(t0 + Duration::from_secs(6)), Duration::ZERO);
        assert_eq!(retry_after(Some(" 7 ")), Some(Duration::from_secs(7)));
        assert_eq!(retry_after(Some("soon")), None);
    }

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let d: Vec<Duration> = (0..8).map(|_| b.next_delay()).collect();
        assert!(d[0] >= Duration::from_millis(50) && d[0] <= Duration::from_millis(100));
        assert!(d[3] >= Duration::from_millis(400) && d[3] <= Duration::from_millis(800));
        assert!(d.iter().all(|x| *x <= Duration::from_secs(2)));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
