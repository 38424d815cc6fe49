//! Sequences: events matching each step of a rule in turn, with the same key, within a window.
//!
//! The state of one sequence rule is, per key, the event time of the latest event seen for
//! each step. A step counts only when the previous one was seen before it (on event time, see
//! [`SLACK_MS`]) and the first step is at most `within` old; the last step completing the
//! chain fires. The first step is kept after firing, so every later use of what it started
//! (each request to a planted web shell) fires again — suppression is how a rule keeps that
//! quiet — while the steps in between must happen again.
//!
//! Memory is bounded like the threshold windows: at most `max_keys` keys; when full, keys
//! whose first step is out of the window go first, then the oldest tenth.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// How much earlier than the previous step an event may be stamped and still follow it.
/// Sources stamp differently: an access log writes the second the request *started*
/// (truncated), a file change its inode change time to the nanosecond; a file created at
/// 10:00:00.700 and requested 100 ms later is logged at 10:00:00. Events are handled in the
/// order they arrive, so this only forgives the clocks, never a reversed order.
pub const SLACK_MS: i64 = 2_000;

/// Event time in milliseconds since the epoch.
type Millis = i64;

/// The state of one sequence rule.
#[derive(Debug)]
pub struct Sequences {
    steps: usize,
    within: Millis,
    max_keys: usize,
    /// Per key: the latest event time of each step (`None`: not seen since the chain reset).
    keys: HashMap<u64, Vec<Option<Millis>>>,
    /// Latest event time seen, for expiry.
    now: Millis,
}

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Advance {
    /// Recorded (or ignored: no previous step in time); nothing to report.
    Pending,
    /// The last step completed the chain: first step's time and this event's.
    Fire { first_seen: Millis, last_seen: Millis },
}

impl Sequences {
    pub fn new(steps: usize, within_ms: Millis, max_keys: usize) -> Sequences {
        Sequences { steps, within: within_ms, max_keys: max_keys.max(1), keys: HashMap::new(), now: Millis::MIN }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// An event of step `step` with key `key` at time `t`.
    pub fn step(&mut self, key: u64, step: usize, t: Millis) -> Advance {
        self.now = self.now.max(t);
        if step == 0 {
            if !self.keys.contains_key(&key) && self.keys.len() >= self.max_keys {
                self.prune();
            }
            let e = self.keys.entry(key).or_insert_with(|| vec![None; self.steps]);
            e[0] = Some(e[0].map_or(t, |old| old.max(t)));
            // Later steps seen before this new start cannot follow it.
            for s in e.iter_mut().skip(1) {
                if s.is_some_and(|s| s < t - SLACK_MS) {
                    *s = None;
                }
            }
            return Advance::Pending;
        }
        let Some(e) = self.keys.get_mut(&key) else { return Advance::Pending };
        let (Some(first), Some(prev)) = (e[0], e[step - 1]) else { return Advance::Pending };
        if t < prev - SLACK_MS || t - first > self.within {
            return Advance::Pending;
        }
        if step + 1 < self.steps {
            e[step] = Some(e[step].map_or(t, |old| old.max(t)));
            return Advance::Pending;
        }
        for s in e.iter_mut().skip(1) {
            *s = None;
        }
        Advance::Fire { first_seen: first, last_seen: t }
    }

    /// Drops keys whose first step is out of the window; if that frees too little, the
    /// oldest tenth as well.
    fn prune(&mut self) {
        let horizon = self.now.saturating_sub(self.within);
        self.keys.retain(|_, e| e[0].is_some_and(|f| f >= horizon));
        if self.keys.len() >= self.max_keys {
            let mut firsts: Vec<Millis> = self.keys.values().map(|e| e[0].unwrap_or(Millis::MIN)).collect();
            let cut = firsts.len() / 10;
            let (_, nth, _) = firsts.select_nth_unstable(cut);
            let nth = *nth;
            self.keys.retain(|_, e| e[0].unwrap_or(Millis::MIN) > nth);
        }
    }

    /// The first step's time of `key`, if it is live (for `explain`).
    pub fn started(&self, key: u64) -> Option<Millis> {
        self.keys.get(&key).and_then(|e| e[0]).filter(|f| self.now - f <= self.within)
    }

    pub fn save(&self) -> SequencesState {
        let horizon = self.now.saturating_sub(self.within);
        SequencesState {
            keys: self
                .keys
                .iter()
                .filter(|(_, e)| e[0].is_some_and(|f| f >= horizon))
                .map(|(k, e)| (*k, e.clone()))
                .collect(),
            now: self.now,
        }
    }

    pub fn restore(&mut self, state: SequencesState) {
        self.now = self.now.max(state.now);
        for (k, e) in state.keys {
            if e.len() == self.steps {
                self.keys.insert(k, e);
            }
        }
    }
}

/// The saved state of a [`Sequences`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SequencesState {
    pub keys: Vec<(u64, Vec<Option<Millis>>)>,
    pub now: Millis,
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Millis = 60_000;

    #[test]
    fn steps_in_order_with_the_same_key_fire() {
        let mut s = Sequences::new(2, 10 * MIN, 100);
        assert_eq!(s.step(1, 1, 1_000), Advance::Pending, "the second step alone is nothing");
        assert_eq!(s.step(1, 0, 2_000), Advance::Pending);
        assert_eq!(s.step(2, 1, 3_000), Advance::Pending, "another key");
        assert_eq!(s.step(1, 1, 3_000), Advance::Fire { first_seen: 2_000, last_seen: 3_000 });
        // The first step stays: a later use fires again.
        assert_eq!(s.step(1, 1, 4_000), Advance::Fire { first_seen: 2_000, last_seen: 4_000 });
        // Out of the window: no more.
        assert_eq!(s.step(1, 1, 2_000 + 10 * MIN + 1), Advance::Pending);
    }

    #[test]
    fn clocks_are_forgiven_a_little_order_is_not() {
        let mut s = Sequences::new(2, MIN, 100);
        s.step(7, 0, 10_700);
        // Stamped a second earlier (a log's truncated second): still after.
        assert!(matches!(s.step(7, 1, 10_000), Advance::Fire { .. }));
        // Far earlier: not a follow-up.
        assert_eq!(s.step(7, 1, 5_000), Advance::Pending);
    }

    #[test]
    fn middle_steps_must_happen_in_order_and_again_after_firing() {
        let mut s = Sequences::new(3, MIN, 100);
        s.step(1, 0, 1_000);
        assert_eq!(s.step(1, 2, 2_000), Advance::Pending, "step 2 before step 1");
        s.step(1, 1, 3_000);
        assert!(matches!(s.step(1, 2, 4_000), Advance::Fire { first_seen: 1_000, last_seen: 4_000 }));
        assert_eq!(s.step(1, 2, 5_000), Advance::Pending, "step 1 must happen again");
        s.step(1, 1, 6_000);
        assert!(matches!(s.step(1, 2, 7_000), Advance::Fire { .. }));
    }

    #[test]
    fn keys_are_bounded_and_state_survives_a_restart() {
        let mut s = Sequences::new(2, MIN, 100);
        for k in 0..1_000u64 {
            s.step(k, 0, k as i64);
        }
        assert!(s.len() <= 100, "{}", s.len());
        assert!(s.started(999).is_some(), "the newest keys stay");
        let saved = s.save();
        let mut r = Sequences::new(2, MIN, 100);
        r.restore(saved);
        assert!(matches!(r.step(999, 1, 1_500), Advance::Fire { first_seen: 999, .. }));
    }
}
