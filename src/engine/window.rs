//! Cross-line state: threshold windows and suppression, per rule and group key.
//!
//! # Semantics (also in the README)
//! - **Time** is the line's event time (parsed timestamp), or its arrival time when the line has
//!   none. Both `trapline run` and `trapline scan` use the same rule, so a scan of yesterday's
//!   log gives the detections that tailing it live gave.
//! - **Sliding window**: a threshold `count: N, within: W` fires on the line that makes N
//!   matching lines (or N distinct values of `distinct`) for the key whose times lie within W
//!   of the newest time seen for that key. Lines whose time is older than that are ignored.
//! - **Reset after fire**: after firing, the key's window starts empty, so the next detection
//!   needs N new matching lines.
//! - **Suppression**: after a detection for a key, further detections for the same key within
//!   the suppression time are not emitted but counted; the count is reported on the next
//!   detection for the key and in the run summary.
//! - **Distinct values shown**: a `distinct` window also keeps the text of the first
//!   [`SHOWN`] values it counted (each cut to [`SHOWN_BYTES`], at most [`SHOWN_BUDGET`] bytes
//!   per rule), for the detection to say which users were tried. Counting uses the hashes
//!   alone, so the texts never change when a rule fires.
//! - **Memory bound**: each rule tracks at most `max_keys` keys. When full, keys whose window
//!   has expired are dropped first, then the least recently seen tenth, in one pass (see
//!   [`evict_oldest`]). A window holds at most N time stamps (or N distinct values), so memory
//!   is `O(max_keys × N)` per rule.

use std::collections::VecDeque;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

/// Keys here are already xxh3 hashes: hashing them again (SipHash) would be wasted work on a
/// path that runs for every matching line.
#[derive(Default)]
struct PreHashed(u64);

impl Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are used; fold anything else in for completeness.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type HashMap<K, V> = std::collections::HashMap<K, V, BuildHasherDefault<PreHashed>>;

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

/// How many values of a `distinct` threshold a detection shows (the count says how many
/// there were).
pub const SHOWN: usize = 20;
/// Longest text kept of one shown value, in bytes (cut on a character boundary).
pub const SHOWN_BYTES: usize = 128;
/// Most bytes of shown values one rule keeps across all its keys: past it, windows keep
/// counting but stop recording texts until some are released.
pub const SHOWN_BUDGET: usize = 16 << 20;

/// Outcome of feeding one matching line to a threshold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Not (yet) enough.
    Pending { count: u32 },
    /// The threshold is reached.
    Fire { count: u32, first_seen: Millis, last_seen: Millis },
}

/// One key's window. A rule counts either lines or distinct values, never both, so a key
/// holds only what its mode needs: the smaller the entry, the more keys share a cache line on
/// a path that runs for every matching line.
#[derive(Debug)]
struct KeyWindow {
    track: Track,
    newest: Millis,
}

#[derive(Debug)]
enum Track {
    /// Times of matching lines, ascending, with how many lines had each time, and their sum.
    /// Log time stamps mostly have one-second resolution, so a burst of lines shares a few
    /// entries: the window stays small however high `count` is.
    Lines(VecDeque<(Millis, u32)>, u32),
    /// Distinct value hash → newest time; and the texts of the first values counted, in the
    /// order they came (value hash, text), for the detection.
    Values(HashMap<u64, Millis>, Vec<(u64, Arc<str>)>),
}

impl KeyWindow {
    fn new(distinct: bool) -> KeyWindow {
        let track =
            if distinct { Track::Values(HashMap::default(), Vec::new()) } else { Track::Lines(VecDeque::new(), 0) };
        KeyWindow { track, newest: Millis::MIN }
    }

    fn count(&self) -> u32 {
        match &self.track {
            Track::Lines(_, total) => *total,
            Track::Values(v, _) => v.len() as u32,
        }
    }

    /// Bytes of shown texts this key holds.
    fn shown_bytes(&self) -> usize {
        match &self.track {
            Track::Values(_, shown) => shown.iter().map(|(_, t)| t.len()).sum(),
            Track::Lines(..) => 0,
        }
    }
}

/// The threshold windows of one rule.
#[derive(Debug)]
pub struct Windows {
    count: u32,
    window: Millis,
    distinct: bool,
    max_keys: usize,
    keys: HashMap<u64, KeyWindow>,
    /// Times the table was full and pruned.
    passes: u64,
    /// Bytes of shown texts held by all keys (bounded by [`SHOWN_BUDGET`]).
    shown_bytes: usize,
    /// The texts of the values counted by the last firing of a `distinct` threshold.
    fired: Vec<Arc<str>>,
}

impl Windows {
    pub fn new(count: u32, window_ms: Millis, distinct: bool, max_keys: usize) -> Windows {
        Windows {
            count: count.max(1),
            window: window_ms.max(1),
            distinct,
            max_keys: max_keys.max(1),
            keys: HashMap::default(),
            passes: 0,
            shown_bytes: 0,
            fired: Vec::new(),
        }
    }

    /// Feeds a matching line for group `key` at time `t`; `value` is the distinct-field hash.
    pub fn step(&mut self, key: u64, t: Millis, value: u64) -> Step {
        if self.keys.len() >= self.max_keys && !self.keys.contains_key(&key) {
            self.make_room(t);
        }
        let distinct = self.distinct;
        let w = self.keys.entry(key).or_insert_with(|| KeyWindow::new(distinct));
        w.newest = w.newest.max(t);
        let horizon = w.newest - self.window;
        if t <= horizon {
            // Older than the window relative to what this key has already seen.
            return Step::Pending { count: w.count() };
        }
        match &mut w.track {
            Track::Values(values, shown) => {
                let e = values.entry(value).or_insert(t);
                *e = (*e).max(t);
                // Full of texts: those of values that left the window make room for new ones
                // (at most SHOWN lookups, and only then).
                if shown.len() >= SHOWN {
                    let mut released = 0;
                    shown.retain(|(v, text)| {
                        let live = values.get(v).is_some_and(|&seen| seen > horizon);
                        released += if live { 0 } else { text.len() };
                        live
                    });
                    self.shown_bytes -= released;
                }
                // Expiry only matters when the count could reach the threshold, which also
                // keeps the map at most `count` entries large.
                if values.len() as u32 >= self.count {
                    values.retain(|_, seen| *seen > horizon);
                    let before: usize = shown.iter().map(|(_, t)| t.len()).sum();
                    shown.retain(|(v, _)| values.contains_key(v));
                    self.shown_bytes -= before - shown.iter().map(|(_, t)| t.len()).sum::<usize>();
                }
                let n = values.len() as u32;
                if n >= self.count {
                    let first = values.values().copied().min().unwrap_or(t);
                    values.clear();
                    self.fired.clear();
                    for (_, text) in shown.drain(..) {
                        self.shown_bytes -= text.len();
                        self.fired.push(text);
                    }
                    return Step::Fire { count: n, first_seen: first, last_seen: w.newest };
                }
                Step::Pending { count: n }
            }
            Track::Lines(times, total) => {
                // Insert in time order (out-of-order lines are rare; O(1) for in-order ones).
                match times.iter().rposition(|&(x, _)| x <= t) {
                    Some(p) if times[p].0 == t => times[p].1 += 1,
                    Some(p) => times.insert(p + 1, (t, 1)),
                    None => times.push_front((t, 1)),
                }
                *total += 1;
                while let Some(&(x, n)) = times.front()
                    && x <= horizon
                {
                    *total -= n;
                    times.pop_front();
                }
                let n = *total;
                if n >= self.count {
                    let first = times.front().map_or(t, |e| e.0);
                    let last = times.back().map_or(t, |e| e.0);
                    times.clear();
                    *total = 0;
                    return Step::Fire { count: n, first_seen: first, last_seen: last };
                }
                Step::Pending { count: n }
            }
        }
    }

    /// Loads `key`'s entry (and the newest of its line times) ahead of its
    /// [`Windows::step`]: see [`super::Detector::touch`].
    #[inline]
    pub fn touch(&self, key: u64) {
        if let Some(w) = self.keys.get(&key) {
            match &w.track {
                Track::Lines(times, _) => {
                    std::hint::black_box(times.back());
                }
                Track::Values(values, _) => {
                    std::hint::black_box(values.len());
                }
            }
        }
    }

    /// Whether the text of distinct value `value` of `key` (just counted by [`Windows::step`])
    /// should be recorded with [`Windows::show`]: it is in the window, not yet shown, and there
    /// is room. False for a window counting lines.
    pub fn wants_text(&self, key: u64, value: u64) -> bool {
        match self.keys.get(&key).map(|w| &w.track) {
            Some(Track::Values(values, shown)) => {
                shown.len() < SHOWN
                    && self.shown_bytes + SHOWN_BYTES <= SHOWN_BUDGET
                    && values.contains_key(&value)
                    && !shown.iter().any(|(v, _)| *v == value)
            }
            _ => false,
        }
    }

    /// Records the text of distinct value `value` of `key` (see [`Windows::wants_text`]).
    pub fn show(&mut self, key: u64, value: u64, text: &[u8]) {
        if !self.wants_text(key, value) {
            return;
        }
        let text = shown_text(text);
        if let Some(KeyWindow { track: Track::Values(_, shown), .. }) = self.keys.get_mut(&key) {
            self.shown_bytes += text.len();
            shown.push((value, text));
        }
    }

    /// The texts of the values counted by the last firing (in the order they came; the value
    /// of the line that fired is not among them unless it was seen before), taken.
    pub fn take_fired(&mut self) -> Vec<Arc<str>> {
        std::mem::take(&mut self.fired)
    }

    /// Number of tracked keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Current state of a key: (count within window, oldest time).
    pub fn peek(&self, key: u64) -> Option<(u32, Option<Millis>)> {
        self.peek_at(key, Millis::MIN)
    }

    /// The state of a key as a line at time `t` would find it: what has left the window by
    /// then does not count (`explain` of a line an hour after the last hits says 0, as `scan`
    /// would decide).
    pub fn peek_at(&self, key: u64, t: Millis) -> Option<(u32, Option<Millis>)> {
        let w = self.keys.get(&key)?;
        let horizon = w.newest.max(t) - self.window;
        Some(match &w.track {
            Track::Values(values, _) => {
                let live = values.values().copied().filter(|&t| t > horizon);
                (live.clone().count() as u32, live.min())
            }
            Track::Lines(times, _) => {
                let live = times.iter().filter(|&&(t, _)| t > horizon);
                (live.clone().map(|&(_, n)| n).sum(), live.map(|&(t, _)| t).next())
            }
        })
    }

    /// The recorded texts of the distinct values of `key` still in the window at `t` (at most
    /// the first [`SHOWN`] counted); empty for a window counting lines.
    pub fn peek_values(&self, key: u64, t: Millis) -> Vec<&str> {
        let Some(w) = self.keys.get(&key) else { return Vec::new() };
        let horizon = w.newest.max(t) - self.window;
        match &w.track {
            Track::Values(values, shown) => shown
                .iter()
                .filter(|(v, _)| values.get(v).is_some_and(|&seen| seen > horizon))
                .map(|(_, text)| &**text)
                .collect(),
            Track::Lines(..) => Vec::new(),
        }
    }

    pub fn window_ms(&self) -> Millis {
        self.window
    }

    fn make_room(&mut self, now: Millis) {
        let window = self.window;
        self.keys.retain(|_, w| w.newest > now - window);
        if self.keys.len() >= self.max_keys {
            evict_oldest(&mut self.keys, |w| w.newest);
        }
        if self.distinct {
            self.shown_bytes = self.keys.values().map(KeyWindow::shown_bytes).sum();
        }
        self.passes += 1;
    }

    /// How many times the table was full and had to be pruned (each prune is one pass over it).
    pub fn prune_passes(&self) -> u64 {
        self.passes
    }
}

/// What a [`Windows`] holds, for saving across restarts: per key its newest time and either
/// its (time, lines) entries or its (distinct value hash, time) pairs.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WindowsState {
    pub keys: Vec<SavedKey>,
    /// For a `distinct` threshold: per key, the shown values' (hash, text), in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shown: Vec<(u64, Vec<(u64, String)>)>,
}

/// One key of a [`WindowsState`]: (key hash, newest time, entries).
pub type SavedKey = (u64, Millis, Vec<(i64, u64)>);

/// What a [`Suppressor`] holds: per key (until, held back), and the total held back.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SuppressorState {
    pub keys: Vec<(u64, Millis, u64)>,
    pub total: u64,
}

/// A [`WindowsState`] taken without an allocation per key: flat arrays, and the shown texts
/// shared, not copied. Taken on the reading thread at every checkpoint, where building the
/// saved form directly (a vector per key, a copy of every text) stalled reading for tens of
/// milliseconds with 50,000 clients; [`WindowsSnapshot::into_state`] builds that form on the
/// thread that writes it.
#[derive(Debug, Default)]
pub struct WindowsSnapshot {
    /// (key, newest time, number of its entries in `entries`), in the table's order.
    keys: Vec<(u64, Millis, u32)>,
    /// Lines: (time, lines at it); distinct: (time, value hash).
    entries: Vec<(i64, u64)>,
    /// (key, value hash, text) of the shown values, grouped by key in order.
    shown: Vec<(u64, u64, Arc<str>)>,
}

impl WindowsSnapshot {
    pub fn into_state(self) -> WindowsState {
        let mut entries = self.entries.into_iter();
        let keys = self
            .keys
            .into_iter()
            .map(|(k, newest, n)| (k, newest, entries.by_ref().take(n as usize).collect()))
            .collect();
        let mut shown: Vec<(u64, Vec<(u64, String)>)> = Vec::new();
        for (k, v, text) in self.shown {
            match shown.last_mut() {
                Some((last, texts)) if *last == k => texts.push((v, text.to_string())),
                _ => shown.push((k, vec![(v, text.to_string())])),
            }
        }
        WindowsState { keys, shown }
    }
}

impl Windows {
    pub fn save(&self) -> WindowsState {
        self.snapshot().into_state()
    }

    /// What [`Windows::save`] gives, taken cheaply (see [`WindowsSnapshot`]).
    pub fn snapshot(&self) -> WindowsSnapshot {
        let mut snap = WindowsSnapshot { keys: Vec::with_capacity(self.keys.len()), ..Default::default() };
        for (&k, w) in &self.keys {
            let before = snap.entries.len();
            match &w.track {
                Track::Lines(times, _) => snap.entries.extend(times.iter().map(|&(t, n)| (t, u64::from(n)))),
                Track::Values(values, shown) => {
                    snap.entries.extend(values.iter().map(|(&v, &t)| (t, v)));
                    snap.shown.extend(shown.iter().map(|(v, text)| (k, *v, Arc::clone(text))));
                }
            }
            snap.keys.push((k, w.newest, (snap.entries.len() - before) as u32));
        }
        snap
    }

    /// Takes over a saved state (of a rule with the same threshold), within this table's
    /// key bound.
    pub fn restore(&mut self, state: WindowsState) {
        let mut shown: std::collections::HashMap<u64, Vec<(u64, String)>> = state.shown.into_iter().collect();
        for (k, newest, entries) in state.keys.into_iter().take(self.max_keys) {
            let track = if self.distinct {
                let values: HashMap<u64, Millis> = entries.into_iter().map(|(t, v)| (v, t)).collect();
                // Only texts of values still counted, within the same bounds as when recorded.
                let mut texts = Vec::new();
                for (v, text) in shown.remove(&k).unwrap_or_default() {
                    let text = shown_text(text.as_bytes());
                    if texts.len() < SHOWN
                        && self.shown_bytes + SHOWN_BYTES <= SHOWN_BUDGET
                        && values.contains_key(&v)
                        && !texts.iter().any(|(w, _)| *w == v)
                    {
                        self.shown_bytes += text.len();
                        texts.push((v, text));
                    }
                }
                Track::Values(values, texts)
            } else {
                let mut times: Vec<(Millis, u32)> =
                    entries.into_iter().map(|(t, n)| (t, u32::try_from(n).unwrap_or(u32::MAX))).collect();
                times.sort_unstable();
                let total = times.iter().map(|e| e.1).fold(0u32, u32::saturating_add);
                Track::Lines(times.into(), total)
            };
            self.keys.insert(k, KeyWindow { track, newest });
        }
    }
}

impl Suppressor {
    pub fn save(&self) -> SuppressorState {
        SuppressorState { keys: self.keys.iter().map(|(&k, &(u, h))| (k, u, h)).collect(), total: self.total }
    }

    pub fn restore(&mut self, state: SuppressorState) {
        for (k, until, held) in state.keys.into_iter().take(self.max_keys) {
            self.keys.insert(k, (until, held));
        }
        self.total = state.total;
    }
}

/// A shown value: at most [`SHOWN_BYTES`] bytes of it, cut on a character boundary, invalid
/// UTF-8 replaced.
pub(crate) fn shown_text(v: &[u8]) -> Arc<str> {
    let s = String::from_utf8_lossy(v);
    let mut end = s.len().min(SHOWN_BYTES);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].into()
}

/// Removes about a tenth of `map`'s entries, those with the smallest `age` (at least one).
/// A full table thus pays one O(n) pass per n/10 new keys rather than one per key: a flood of
/// new addresses (a botnet, rotating IPv6 sources, all inside the window) cannot turn every
/// line into a scan of the whole table.
fn evict_oldest<V>(map: &mut HashMap<u64, V>, age: impl Fn(&V) -> Millis) {
    let k = (map.len() / 10).max(1);
    let mut ages: Vec<Millis> = map.values().map(&age).collect();
    if ages.is_empty() {
        return;
    }
    let cutoff = *ages.select_nth_unstable(k - 1).1;
    let mut removed = 0;
    map.retain(|_, v| {
        let evict = removed < k && age(v) <= cutoff;
        removed += usize::from(evict);
        !evict
    });
}

/// Suppression state of one rule.
#[derive(Debug)]
pub struct Suppressor {
    duration: Millis,
    max_keys: usize,
    keys: HashMap<u64, (Millis, u64)>,
    /// Detections held back since start.
    pub total: u64,
    /// Times the table was full and pruned.
    passes: u64,
}

impl Suppressor {
    pub fn new(duration_ms: Millis, max_keys: usize) -> Suppressor {
        Suppressor {
            duration: duration_ms.max(1),
            max_keys: max_keys.max(1),
            keys: HashMap::default(),
            total: 0,
            passes: 0,
        }
    }

    /// Decides whether a detection for `key` at `t` is emitted. `Some(n)`: emit it, `n`
    /// detections were suppressed for this key since the previous one. `None`: suppressed.
    pub fn admit(&mut self, key: u64, t: Millis) -> Option<u64> {
        if let Some((until, held)) = self.keys.get_mut(&key) {
            if t < *until {
                *held += 1;
                self.total += 1;
                return None;
            }
            let n = *held;
            *until = t + self.duration;
            *held = 0;
            return Some(n);
        }
        if self.keys.len() >= self.max_keys {
            // Expired entries first (their held counts are zero or already stale), then those
            // that expire soonest.
            self.keys.retain(|_, (until, held)| *until > t || *held > 0);
            if self.keys.len() >= self.max_keys {
                evict_oldest(&mut self.keys, |(until, _)| *until);
            }
            self.passes += 1;
        }
        self.keys.insert(key, (t + self.duration, 0));
        Some(0)
    }

    /// How many times the table was full and had to be pruned.
    pub fn prune_passes(&self) -> u64 {
        self.passes
    }

    /// Suppressed and not yet reported, per key (for the summary).
    pub fn pending(&self) -> u64 {
        self.keys.values().map(|(_, h)| *h).sum()
    }

    /// Time until which `key` is suppressed, if it is.
    pub fn until(&self, key: u64) -> Option<Millis> {
        self.keys.get(&key).map(|(u, _)| *u)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_threshold_slides_and_resets() {
        let mut w = Windows::new(3, 10_000, false, 100);
        assert_eq!(w.step(1, 0, 0), Step::Pending { count: 1 });
        assert_eq!(w.step(1, 5_000, 0), Step::Pending { count: 2 });
        // t=0 falls out of the window at 10_000 (window is (newest-W, newest]).
        assert_eq!(w.step(1, 10_000, 0), Step::Pending { count: 2 });
        assert_eq!(w.step(1, 11_000, 0), Step::Fire { count: 3, first_seen: 5_000, last_seen: 11_000 });
        // Reset after fire.
        assert_eq!(w.step(1, 11_500, 0), Step::Pending { count: 1 });
        // Other keys are independent.
        assert_eq!(w.step(2, 11_500, 0), Step::Pending { count: 1 });
    }

    #[test]
    fn out_of_order_and_stale_lines() {
        let mut w = Windows::new(3, 10_000, false, 100);
        w.step(1, 20_000, 0);
        // Older than the window relative to the newest: ignored.
        assert_eq!(w.step(1, 5_000, 0), Step::Pending { count: 1 });
        // Slightly out of order but inside: counted.
        assert_eq!(w.step(1, 19_000, 0), Step::Pending { count: 2 });
        assert!(matches!(w.step(1, 20_500, 0), Step::Fire { count: 3, first_seen: 19_000, .. }));
    }

    /// Lines sharing a time stamp (one-second log resolution) are counted one by one.
    #[test]
    fn equal_times_count_each_line() {
        let mut w = Windows::new(4, 10_000, false, 100);
        assert_eq!(w.step(1, 1_000, 0), Step::Pending { count: 1 });
        assert_eq!(w.step(1, 1_000, 0), Step::Pending { count: 2 });
        assert_eq!(w.step(1, 500, 0), Step::Pending { count: 3 });
        assert_eq!(w.peek(1), Some((3, Some(500))));
        // At 11_000 the window is (1_000, 11_000]: the 500 and both 1_000 lines have left it.
        assert_eq!(w.step(1, 11_000, 0), Step::Pending { count: 1 });
        assert_eq!(w.step(1, 11_000, 0), Step::Pending { count: 2 });
        assert_eq!(w.step(1, 11_001, 0), Step::Pending { count: 3 });
        assert_eq!(w.step(1, 11_001, 0), Step::Fire { count: 4, first_seen: 11_000, last_seen: 11_001 });
    }

    #[test]
    fn distinct_counts_values() {
        let mut w = Windows::new(3, 60_000, true, 100);
        assert_eq!(w.step(1, 0, 10), Step::Pending { count: 1 });
        assert_eq!(w.step(1, 1, 10), Step::Pending { count: 1 });
        assert_eq!(w.step(1, 2, 11), Step::Pending { count: 2 });
        assert!(matches!(w.step(1, 3, 12), Step::Fire { count: 3, .. }));
    }

    /// The texts of distinct values: recorded only while asked for (new, in the window, fewer
    /// than SHOWN), released when their value expires, handed over when the rule fires, saved
    /// and restored with the window.
    #[test]
    fn distinct_texts_follow_the_window() {
        let mut w = Windows::new(3, 60_000, true, 100);
        assert_eq!(w.step(1, 0, 10), Step::Pending { count: 1 });
        assert!(w.wants_text(1, 10));
        w.show(1, 10, b"alice");
        assert!(!w.wants_text(1, 10), "recorded once");
        w.step(1, 1, 10);
        assert!(!w.wants_text(1, 10));
        w.step(1, 2, 11);
        w.show(1, 11, "b\u{e9}b".as_bytes());
        // Saved and restored into a fresh table: the same texts come out on firing.
        let saved = w.save();
        assert_eq!(saved.shown.len(), 1);
        let mut r = Windows::new(3, 60_000, true, 100);
        r.restore(saved);
        for w in [&mut w, &mut r] {
            assert!(matches!(w.step(1, 3, 12), Step::Fire { count: 3, .. }));
            assert_eq!(w.take_fired(), vec![Arc::from("alice"), Arc::from("b\u{e9}b")]);
            assert_eq!(w.shown_bytes, 0);
        }
        // A value that leaves the window takes its text along.
        let mut w = Windows::new(2, 10_000, true, 100);
        w.step(7, 0, 1);
        w.show(7, 1, b"old");
        w.step(7, 20_000, 2);
        w.show(7, 2, b"new");
        assert!(matches!(w.step(7, 20_001, 3), Step::Fire { count: 2, .. }));
        assert_eq!(w.take_fired(), vec![Arc::<str>::from("new")]);
        // At most SHOWN texts per key, each at most SHOWN_BYTES.
        let mut w = Windows::new(1000, 60_000, true, 100);
        let long = vec![b'x'; 1000];
        for v in 0..50u64 {
            w.step(9, v as i64, v);
            w.show(9, v, &long);
        }
        assert_eq!(w.shown_bytes, SHOWN * SHOWN_BYTES);
        // Once those values have left the window, their texts make room for new ones.
        w.step(9, 70_000, 100);
        assert!(w.wants_text(9, 100));
        w.show(9, 100, b"late");
        assert_eq!(w.shown_bytes, 4);
        // A window counting lines records nothing.
        let mut l = Windows::new(3, 60_000, false, 100);
        l.step(1, 0, 0);
        assert!(!l.wants_text(1, 0));
    }

    #[test]
    fn keys_are_bounded() {
        let mut w = Windows::new(5, 1_000, false, 10);
        for k in 0..1000u64 {
            w.step(k, k as i64, 0);
        }
        assert!(w.len() <= 10);
    }

    /// A flood of new keys, all live (same time), into full tables: the tables stay bounded and
    /// are pruned once per tenth of their size, not once per key (which made each line a scan
    /// of 100,000 entries under a botnet or rotating IPv6 sources).
    #[test]
    fn full_tables_prune_in_bulk() {
        let (max, n) = (1_000usize, 20_000u64);
        let mut w = Windows::new(50, 60_000, false, max);
        let mut s = Suppressor::new(60_000, max);
        for k in 0..n {
            w.step(k, 5_000, 0);
            s.admit(k, 5_000);
            assert!(w.len() <= max);
        }
        let bound = (n - max as u64) / (max as u64 / 10) + 1;
        assert!(w.prune_passes() <= bound, "{} passes for {n} keys", w.prune_passes());
        assert!(s.prune_passes() <= bound, "{} passes for {n} keys", s.prune_passes());
        // The newest keys survive; a key seen again keeps counting.
        assert_eq!(w.step(n - 1, 5_001, 0), Step::Pending { count: 2 });
        assert_eq!(s.admit(n - 1, 5_001), None);
    }

    #[test]
    fn suppression_counts_what_it_holds_back() {
        let mut s = Suppressor::new(60_000, 100);
        assert_eq!(s.admit(7, 0), Some(0));
        assert_eq!(s.admit(7, 10_000), None);
        assert_eq!(s.admit(7, 20_000), None);
        assert_eq!(s.admit(8, 20_000), Some(0));
        assert_eq!(s.admit(7, 60_000), Some(2));
        assert_eq!(s.total, 2);
    }
}
