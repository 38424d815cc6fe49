//! The cross-line stage: thresholds, suppression and the detections they let through.
//!
//! Deciding whether a matching line fires needs little: the line's event time and, per
//! matching rule, a hash of its group fields (and of the `distinct` field). Those
//! [`HitKeys`] are computed where the line was parsed ([`RuleSet::hit_keys`], on any thread);
//! [`Detector::decide`] then only steps windows, in line order, on the one thread that owns
//! them. The line is needed again only to build a detection ([`Detector::detection`]), which
//! is rare. This is what lets `scan` keep every core busy: the ordered stage does hash-map
//! steps, not parsing. [`crate::pipeline::Pipeline`] puts the pieces together for every
//! command.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};

use super::RuleSet;
use super::detection::{Detection, SequenceInfo, SourceRef, ThresholdInfo};
use super::sequence::{Advance, Sequences, SequencesState};
use super::window::{Step, Suppressor, SuppressorState, Windows, WindowsState};
use crate::event::Event;
use crate::parse::{FieldId, FieldRegistry, Parser, Record, std_fields};

/// Where a line came from, for detections and idempotency keys.
#[derive(Debug, Clone)]
pub struct SourceInfo {
    /// The machine that read the event (worker mode), else `None`.
    pub host: Option<Arc<str>>,
    pub name: Arc<str>,
    pub path: Arc<str>,
    pub format: Arc<str>,
}

/// Per-rule counters.
#[derive(Debug, Clone, Default)]
pub struct RuleStats {
    /// Lines whose condition matched.
    pub hits: u64,
    /// Detections emitted.
    pub detections: u64,
    /// Detections held back by suppression.
    pub suppressed: u64,
    /// Evaluations of the condition (the prefilter made the rule a candidate), and the
    /// estimated nanoseconds they took (sampled, see [`super::Profile`]); only counted where
    /// profiling is on (`run`).
    pub evaluations: u64,
    pub eval_nanos: u64,
    /// Lines whose condition matched but an exception held back (not in `hits`).
    pub excepted: u64,
}

/// What the cross-line stage needs about one rule matching one line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HitKeys {
    /// Hash of the threshold's group fields (a sequence step's key); `None` when one of them
    /// is absent (such a line does not count: lumping all of them under one empty key would
    /// make unrelated lines reach the threshold together). Unused without either.
    pub group: Option<u64>,
    /// Hash of the threshold's `distinct` field (0 without one).
    pub distinct: u64,
    /// Hash of the suppression's group fields. Absent fields count as empty here: suppression
    /// must never drop a detection merely because the key is incomplete.
    pub suppress: u64,
}

/// A rule that emits a detection on a line (the outcome of [`Detector::decide`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fired {
    pub rule: u32,
    /// For a threshold rule: (count, first seen, last seen), times in ms since the epoch; for
    /// the last step of a sequence: (steps, first step's time, this event's).
    pub threshold: Option<(u32, i64, i64)>,
    /// Detections of this rule and key held back by suppression since the previous one.
    pub suppressed: u64,
    /// For a `distinct` threshold: the index of the texts of the values it counted, in
    /// [`Detector`]'s list for the line being decided.
    pub shown: Option<u32>,
}

impl RuleSet {
    /// Appends to `out` the [`HitKeys`] of each rule in `hits` for this line and record.
    /// `buf` is scratch space (reused, so the hot path does not allocate).
    pub fn hit_keys(&self, line: &[u8], rec: &Record, hits: &[u32], buf: &mut Vec<u8>, out: &mut Vec<HitKeys>) {
        // Most rules group by the same fields (`client_ip`): hash each grouping once per line.
        let mut last: Option<(&[FieldId], Option<u64>)> = None;
        for &ri in hits {
            let rule = &self.rules[ri as usize];
            let mut k = HitKeys::default();
            if let Some(t) = &rule.threshold {
                k.group = memo_hash(&mut last, &t.group_by, buf, line, rec);
                k.distinct = t.distinct.map_or(0, |d| key_hash(rec.get(line, d).unwrap_or(b"")));
            } else if let Some(sq) = &rule.sequence {
                k.group = seq_key(&sq.key, buf, line, rec).then(|| key_hash(buf));
            }
            if let Some(s) = &rule.suppress {
                k.suppress = memo_hash(&mut last, &s.group_by, buf, line, rec).unwrap_or(0);
            }
            out.push(k);
        }
    }
}

/// The event time of a line, remembering the last timestamp text parsed: consecutive lines
/// mostly share their second, and calendar parsing is the costly part.
#[derive(Debug, Default)]
pub struct TimeCache {
    parser: usize,
    raw: Vec<u8>,
    time: Option<DateTime<Utc>>,
}

impl TimeCache {
    pub fn event_time(&mut self, parser: &Parser, line: &[u8], rec: &Record) -> Option<DateTime<Utc>> {
        let raw = rec.get(line, std_fields::TIME)?;
        let id = parser as *const Parser as usize;
        if self.parser != id || self.raw != raw {
            self.time = parser.event_time(line, rec);
            self.parser = id;
            self.raw.clear();
            self.raw.extend_from_slice(raw);
        }
        self.time
    }
}

/// Cross-line state (thresholds, suppression) and counters, owned by one thread.
#[derive(Debug)]
pub struct Detector {
    rules: Arc<RuleSet>,
    windows: Vec<Option<Windows>>,
    suppress: Vec<Option<Suppressor>>,
    /// Per rule: for a sequence step, (index of the first step's rule, step).
    seq_at: Vec<Option<(usize, usize)>>,
    /// The state of each sequence, on its first step's rule.
    sequences: Vec<Option<Sequences>>,
    pub stats: Vec<RuleStats>,
    /// Per exception name ([`RuleSet::exception_names`]): events it held back.
    pub excepted: Vec<u64>,
    key_buf: Vec<u8>,
    /// Distinct values of the line being decided whose text a window wants: (rule, group key,
    /// value hash). See [`Detector::record_values`].
    want: Vec<(u32, u64, u64)>,
    /// The texts of the values counted by each `distinct` threshold that fired on the line
    /// being decided ([`Fired::shown`]).
    shown: Vec<Vec<Arc<str>>>,
}

/// Default bound on tracked keys per rule.
pub const DEFAULT_MAX_KEYS: usize = 100_000;

impl Detector {
    pub fn new(rules: Arc<RuleSet>, max_keys: usize) -> Detector {
        let windows = rules
            .rules
            .iter()
            .map(|r| {
                r.threshold
                    .as_ref()
                    .map(|t| Windows::new(t.count, t.window.as_millis() as i64, t.distinct.is_some(), max_keys))
            })
            .collect();
        let suppress = rules
            .rules
            .iter()
            .map(|r| r.suppress.as_ref().map(|s| Suppressor::new(s.duration.as_millis() as i64, max_keys)))
            .collect();
        let seq_at =
            rules.rules.iter().enumerate().map(|(i, r)| r.sequence.as_ref().map(|s| (i - s.step, s.step))).collect();
        let sequences = rules
            .rules
            .iter()
            .map(|r| {
                r.sequence
                    .as_ref()
                    .filter(|s| s.step == 0)
                    .map(|s| Sequences::new(s.steps, s.within.as_millis() as i64, max_keys))
            })
            .collect();
        let stats = vec![RuleStats::default(); rules.rules.len()];
        let excepted = vec![0; rules.exception_names.len()];
        Detector {
            rules,
            windows,
            suppress,
            seq_at,
            sequences,
            stats,
            excepted,
            key_buf: Vec::new(),
            want: Vec::new(),
            shown: Vec::new(),
        }
    }

    pub fn rules(&self) -> &Arc<RuleSet> {
        &self.rules
    }

    /// Takes over the threshold and suppression state of `old` for every rule whose id and
    /// fingerprint (matching and grouping) are unchanged, so a reload does not reset a brute
    /// force count or re-open a suppressed key. Counters are carried over by id as well.
    /// Returns how many rules kept their state.
    pub fn carry_over(&mut self, old: Detector) -> usize {
        let mut kept = 0;
        let Detector { rules: old_rules, windows, suppress, sequences, stats, excepted, .. } = old;
        for (name, n) in old_rules.exception_names.iter().zip(excepted) {
            if let Some(i) = self.rules.exception_names.iter().position(|m| m == name) {
                self.excepted[i] = n;
            }
        }
        let mut windows: Vec<Option<Windows>> = windows;
        let mut suppress: Vec<Option<Suppressor>> = suppress;
        let mut sequences: Vec<Option<Sequences>> = sequences;
        for (i, r) in self.rules.rules.iter().enumerate() {
            // A sequence's entries are consecutive and share the id: its first entry (the
            // one `rule_index` finds) carries all of them, step k at i + k.
            if r.sequence.as_ref().is_some_and(|s| s.step > 0) {
                continue;
            }
            let Some(j) = old_rules.rule_index(&r.id) else { continue };
            let steps = r.sequence.as_ref().map_or(1, |s| s.steps);
            let same = old_rules.rules[j].fingerprint == r.fingerprint;
            for k in 0..steps {
                if old_rules.rules.get(j + k).is_some_and(|o| o.id == r.id) {
                    self.stats[i + k] = stats[j + k].clone();
                }
                if !same {
                    continue;
                }
                self.windows[i + k] = windows.get_mut(j + k).and_then(Option::take);
                self.suppress[i + k] = suppress.get_mut(j + k).and_then(Option::take);
                if self.sequences[i + k].is_some() {
                    self.sequences[i + k] = sequences.get_mut(j + k).and_then(Option::take);
                }
            }
            if same {
                kept += 1;
            }
        }
        kept
    }

    /// Counts the events exceptions held back ((rule, exception) pairs, from
    /// [`crate::engine::Scratch::held`]). They never reach the windows.
    pub fn count_held(&mut self, held: &[(u32, u32)]) {
        for &(r, e) in held {
            self.stats[r as usize].excepted += 1;
            self.excepted[self.rules.exceptions[e as usize].name as usize] += 1;
        }
    }

    /// Events held back so far, per exception name, in name order of the rule set (those
    /// that held nothing back included).
    pub fn held_back(&self) -> impl Iterator<Item = (&str, u64)> {
        self.rules.exception_names.iter().map(String::as_str).zip(self.excepted.iter().copied())
    }

    /// Touches the windows a later line will step (its `hits` and `keys`), without changing
    /// them. The ordered stage is bound by memory latency, not instructions: each step looks a
    /// key up in a table per rule, and with thousands of client addresses the entries are
    /// rarely in cache. Looking up the entries of a line a few lines ahead lets those misses
    /// overlap with the work on the current line instead of stalling it.
    pub fn touch(&self, hits: &[u32], keys: &[HitKeys]) {
        for (&ri, k) in hits.iter().zip(keys) {
            if let (Some(w), Some(group)) = (self.windows[ri as usize].as_ref(), k.group) {
                w.touch(group);
            }
        }
    }

    /// The ordered, cross-line decision for one line: steps the threshold and suppression of
    /// every rule in `hits` (with its `keys`, same order) at the line's event time (`event`,
    /// ms since the epoch; the `arrival` time when the line had none), updates the counters,
    /// and sets `out` to the rules that emit a detection.
    pub fn decide(
        &mut self,
        event: Option<i64>,
        arrival: DateTime<Utc>,
        hits: &[u32],
        keys: &[HitKeys],
        out: &mut Vec<Fired>,
    ) {
        out.clear();
        self.want.clear();
        self.shown.clear();
        let t = event.unwrap_or_else(|| arrival.timestamp_millis());
        for (&ri, k) in hits.iter().zip(keys) {
            let r = ri as usize;
            self.stats[r].hits += 1;
            let mut threshold = None;
            let mut shown = None;
            if let Some(w) = self.windows[r].as_mut() {
                let Some(group) = k.group else { continue };
                match w.step(group, t, k.distinct) {
                    Step::Pending { .. } => {
                        if w.wants_text(group, k.distinct) {
                            self.want.push((ri, group, k.distinct));
                        }
                        continue;
                    }
                    Step::Fire { count, first_seen, last_seen } => {
                        threshold = Some((count, first_seen, last_seen));
                        if self.rules.rules[r].threshold.as_ref().is_some_and(|t| t.distinct.is_some()) {
                            shown = Some(self.shown.len() as u32);
                            self.shown.push(w.take_fired());
                        }
                    }
                }
            } else if let Some((first, step)) = self.seq_at[r] {
                let (Some(key), Some(sq)) = (k.group, self.sequences[first].as_mut()) else { continue };
                match sq.step(key, step, t) {
                    Advance::Pending => continue,
                    Advance::Fire { first_seen, last_seen } => {
                        threshold = Some((sq_steps(&self.rules, r), first_seen, last_seen))
                    }
                }
            }
            let mut suppressed = 0;
            if let Some(s) = self.suppress[r].as_mut() {
                match s.admit(k.suppress, t) {
                    Some(n) => suppressed = n,
                    None => {
                        self.stats[r].suppressed += 1;
                        continue;
                    }
                }
            }
            self.stats[r].detections += 1;
            out.push(Fired { rule: ri, threshold, suppressed, shown });
        }
    }

    /// Whether the line just decided brought distinct values whose text a window wants: then
    /// the caller hands its parsed record to [`Detector::record_values`] (it has it at hand, or
    /// parses the line again, as for a detection; this happens only for the first values of
    /// each key).
    pub fn wants_values(&self) -> bool {
        !self.want.is_empty()
    }

    /// Records the texts [`Detector::wants_values`] asked for, from the line just decided.
    pub fn record_values(&mut self, line: &[u8], rec: &Record) {
        for &(ri, group, value) in &self.want {
            let r = ri as usize;
            let (Some(w), Some(field)) =
                (self.windows[r].as_mut(), self.rules.rules[r].threshold.as_ref().and_then(|t| t.distinct))
            else {
                continue;
            };
            w.show(group, value, rec.get(line, field).unwrap_or(b""));
        }
        self.want.clear();
    }

    /// The detection of `f` (from [`Detector::decide`]) on its event, parsed into `rec`.
    /// `event` is the event time, `None` when it had none (then arrival time is used).
    pub fn detection(
        &self,
        f: &Fired,
        event: Option<DateTime<Utc>>,
        src: &SourceInfo,
        ev: &Event<'_>,
        rec: &Record,
    ) -> Detection {
        let line = ev.raw;
        let rules = &self.rules;
        let rule = &rules.rules[f.rule as usize];
        let (event_time, time_source) = match event {
            Some(t) => (t, "event"),
            None => (ev.arrival, "arrival"),
        };
        let sequence = match (f.threshold, &rule.sequence) {
            (Some((steps, first, last)), Some(spec)) => {
                let mut buf = Vec::new();
                seq_key(&spec.key, &mut buf, line, rec);
                Some(SequenceInfo {
                    steps,
                    within_seconds: spec.within.as_secs_f64(),
                    key: shown_key(&buf),
                    first_seen: millis(first),
                    last_seen: millis(last),
                })
            }
            _ => None,
        };
        let threshold = match (f.threshold, &rule.threshold) {
            (Some((count, first, last)), Some(spec)) => Some(ThresholdInfo {
                count,
                within_seconds: spec.window.as_secs_f64(),
                group: group_map(&rules.registry, &spec.group_by, line, rec),
                distinct: spec.distinct.map(|d| rules.registry.name(d).to_string()),
                distinct_values: spec.distinct.map_or_else(Vec::new, |d| {
                    let mut shown: Vec<String> = f
                        .shown
                        .and_then(|i| self.shown.get(i as usize))
                        .map_or_else(Vec::new, |v| v.iter().map(|t| t.to_string()).collect());
                    // The value of this line completed the count: it was never recorded.
                    let own = super::window::shown_text(rec.get(line, d).unwrap_or(b""));
                    if shown.len() < super::window::SHOWN && !shown.iter().any(|t| **t == *own) {
                        shown.push(own.to_string());
                    }
                    shown
                }),
                first_seen: millis(first),
                last_seen: millis(last),
            }),
            _ => None,
        };
        Detection {
            key: ev.origin.idempotency_key(&rule.id),
            rule: Arc::clone(&rule.info),
            source: SourceRef {
                host: src.host.clone(),
                name: src.name.clone(),
                path: src.path.clone(),
                format: src.format.clone(),
                line_number: ev.origin.number(),
                offset: ev.origin.offset(),
            },
            event_time,
            time_source,
            detected_at: Utc::now(),
            fields: rec
                .iter(line)
                .filter(|(id, _)| rules.shows_field(f.rule as usize, *id))
                .map(|(id, v)| (rules.registry.shared_name(id), lossy(v)))
                .collect(),
            line: lossy(line),
            line_truncated: ev.truncated,
            threshold,
            sequence,
            suppressed: f.suppressed,
            actions: rule.actions.clone(),
            also: Vec::new(),
        }
    }

    /// Until when (ms since the epoch) detections of rule `ri` for this line's key are held back.
    pub fn suppressed_until(&mut self, ri: usize, line: &[u8], rec: &Record) -> Option<i64> {
        let spec = self.rules.rules[ri].suppress.clone()?;
        let key = group_hash(&mut self.key_buf, &spec.group_by, line, rec).unwrap_or(0);
        self.suppress[ri].as_ref()?.until(key)
    }

    /// For a step of a sequence: the key of this line (as shown in detections) and when the
    /// chain of that key started, if it is live.
    pub fn sequence_state(&mut self, ri: usize, line: &[u8], rec: &Record) -> Option<(String, Option<i64>)> {
        let spec = self.rules.rules[ri].sequence.clone()?;
        if !seq_key(&spec.key, &mut self.key_buf, line, rec) {
            return Some((String::new(), None));
        }
        let started = self.sequences[ri - spec.step].as_ref().and_then(|s| s.started(key_hash(&self.key_buf)));
        Some((shown_key(&self.key_buf), started))
    }

    /// Threshold state of rule `ri` for the key of this line: (count, oldest, window ms, the
    /// distinct values counted as far as they were recorded). `at`: the line's event time
    /// (ms), so that what has expired by then is not counted.
    pub fn window_state(
        &mut self,
        ri: usize,
        line: &[u8],
        rec: &Record,
        at: Option<i64>,
    ) -> Option<(u32, Option<i64>, i64, Vec<String>)> {
        let spec = self.rules.rules[ri].threshold.clone()?;
        let key = group_hash(&mut self.key_buf, &spec.group_by, line, rec)?;
        let w = self.windows[ri].as_ref()?;
        let t = at.unwrap_or(i64::MIN);
        let (n, oldest) = w.peek_at(key, t).unwrap_or((0, None));
        let values = w.peek_values(key, t).into_iter().map(str::to_string).collect();
        Some((n, oldest, w.window_ms(), values))
    }
}

/// [`group_hash`], reusing the previous result when `fields` is the same grouping.
fn memo_hash<'r>(
    last: &mut Option<(&'r [FieldId], Option<u64>)>,
    fields: &'r [FieldId],
    buf: &mut Vec<u8>,
    line: &[u8],
    rec: &Record,
) -> Option<u64> {
    match *last {
        Some((f, h)) if f == fields => h,
        _ => {
            let h = group_hash(buf, fields, line, rec);
            *last = Some((fields, h));
            h
        }
    }
}

/// A key written by [`seq_key`] (length-prefixed for hashing) as its values alone, separated
/// by a space.
fn shown_key(buf: &[u8]) -> String {
    let mut shown = Vec::new();
    let mut rest = buf;
    while rest.len() >= 4 {
        let n = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let end = (4 + n).min(rest.len());
        shown.push(lossy(&rest[4..end]));
        rest = &rest[end..];
    }
    shown.join(" ")
}

fn sq_steps(rules: &RuleSet, r: usize) -> u32 {
    rules.rules[r].sequence.as_ref().map_or(0, |s| s.steps as u32)
}

/// Writes the sequence key of a line into `buf` (each value after its transforms, length
/// first); false when a key field is absent. Transforms run only here, for the few rules
/// that are sequence steps, with buffers kept per thread.
fn seq_key(key: &[(FieldId, Vec<crate::rule::Transform>)], buf: &mut Vec<u8>, line: &[u8], rec: &Record) -> bool {
    thread_local! {
        static TMP: std::cell::RefCell<(Vec<u8>, Vec<u8>)> = const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
    }
    buf.clear();
    for (f, chain) in key {
        let Some(v) = rec.get(line, *f) else { return false };
        if chain.is_empty() {
            buf.extend_from_slice(&(v.len() as u32).to_le_bytes());
            buf.extend_from_slice(v);
            continue;
        }
        TMP.with(|t| {
            let (out, tmp) = &mut *t.borrow_mut();
            super::transform::apply(chain, v, out, tmp);
            buf.extend_from_slice(&(out.len() as u32).to_le_bytes());
            buf.extend_from_slice(out);
        });
    }
    true
}

/// Hash of the group-key fields of a line; `None` when one of them is absent.
fn group_hash(buf: &mut Vec<u8>, fields: &[FieldId], line: &[u8], rec: &Record) -> Option<u64> {
    buf.clear();
    for f in fields {
        let v = rec.get(line, *f)?;
        buf.extend_from_slice(&(v.len() as u32).to_le_bytes());
        buf.extend_from_slice(v);
    }
    Some(key_hash(buf))
}

/// Hash of a key or distinct value for the window and suppression tables, seeded with a
/// secret chosen at start-up. The keyed values come from log lines, and some are
/// client-controlled (a `client_ip` taken from `X-Forwarded-For`, a path): with a fixed hash,
/// values crafted to collide would turn every table lookup into a long probe. The hashes live
/// only in memory, so a per-process seed costs nothing.
fn key_hash(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(bytes, seed())
}

static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();

/// The secret seed of the key hashes.
pub fn seed() -> u64 {
    *SEED.get_or_init(|| fastrand::u64(..))
}

/// Uses `seed` for the key hashes (that of a saved state, so its keys mean the same). Only
/// possible before the first hash; returns whether the seed is now `seed`.
pub fn use_seed(seed: u64) -> bool {
    let _ = SEED.set(seed);
    self::seed() == seed
}

/// The cross-line state of a [`Detector`], for saving across restarts.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct DetectorState {
    /// The key-hash seed the keys below were hashed with.
    pub seed: u64,
    pub rules: Vec<RuleState>,
}

/// A [`DetectorState`] as taken by [`Detector::snapshot`].
#[derive(Debug)]
pub struct DetectorSnapshot {
    rules: Vec<RuleSnapshot>,
}

#[derive(Debug)]
struct RuleSnapshot {
    id: String,
    fingerprint: u64,
    windows: Option<super::window::WindowsSnapshot>,
    suppress: Option<SuppressorState>,
    sequence: Option<SequencesState>,
}

impl DetectorSnapshot {
    pub fn into_state(self) -> DetectorState {
        let rules = self
            .rules
            .into_iter()
            .map(|r| RuleState {
                id: r.id,
                fingerprint: r.fingerprint,
                windows: r.windows.map(super::window::WindowsSnapshot::into_state),
                suppress: r.suppress,
                sequence: r.sequence,
            })
            .collect();
        DetectorState { seed: seed(), rules }
    }
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RuleState {
    pub id: String,
    /// The rule's fingerprint (matching and grouping): state is restored only to the same rule.
    pub fingerprint: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub windows: Option<WindowsState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suppress: Option<SuppressorState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<SequencesState>,
}

impl Detector {
    /// The threshold and suppression state of every rule that has some.
    pub fn save(&self) -> DetectorState {
        self.snapshot().into_state()
    }

    /// What [`Detector::save`] gives, in a form cheap to take (the windows as a
    /// [`WindowsSnapshot`]): the daemon takes it on the reading thread at each checkpoint and
    /// turns it into the saved form on the thread that writes it.
    pub fn snapshot(&self) -> DetectorSnapshot {
        let rules = self
            .rules
            .rules
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                let windows = self.windows[i].as_ref().filter(|w| !w.is_empty()).map(Windows::snapshot);
                let suppress = self.suppress[i].as_ref().map(Suppressor::save).filter(|s| !s.keys.is_empty());
                let sequence = self.sequences[i].as_ref().map(Sequences::save).filter(|s| !s.keys.is_empty());
                // A sequence's suppression is on its last step: saved under that entry, whose
                // id is the same; restored to the last entry of that id.
                (windows.is_some() || suppress.is_some() || sequence.is_some()).then(|| RuleSnapshot {
                    id: r.id.clone(),
                    fingerprint: r.fingerprint,
                    windows,
                    suppress,
                    sequence,
                })
            })
            .collect();
        DetectorSnapshot { rules }
    }

    /// Restores saved state into the rules with the same id and fingerprint. Returns how many
    /// rules got their state back; 0 when the state was hashed with another seed.
    pub fn restore(&mut self, state: DetectorState) -> usize {
        if state.seed != seed() {
            return 0;
        }
        let mut n = 0;
        for rs in state.rules {
            let Some(mut i) = self.rules.rule_index(&rs.id) else { continue };
            if self.rules.rules[i].fingerprint != rs.fingerprint {
                continue;
            }
            if let (Some(sq), Some(saved)) = (self.sequences[i].as_mut(), rs.sequence) {
                sq.restore(saved);
            }
            if rs.suppress.is_some()
                && let Some(s) = &self.rules.rules[i].sequence
            {
                i += s.steps - 1;
            }
            if let (Some(w), Some(saved)) = (self.windows[i].as_mut(), rs.windows) {
                w.restore(saved);
            }
            if let (Some(s), Some(saved)) = (self.suppress[i].as_mut(), rs.suppress) {
                s.restore(saved);
            }
            n += 1;
        }
        n
    }

    /// Lines that matched some rule so far: changes whenever the state may have.
    pub fn generation(&self) -> u64 {
        self.stats.iter().map(|s| s.hits).sum()
    }
}

fn group_map(reg: &FieldRegistry, fields: &[FieldId], line: &[u8], rec: &Record) -> BTreeMap<String, String> {
    fields
        .iter()
        .map(|f| {
            (
                reg.name(*f).to_string(),
                rec.get(line, *f).map(|v| String::from_utf8_lossy(v).into_owned()).unwrap_or_default(),
            )
        })
        .collect()
}

fn millis(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

/// `v` as text, invalid UTF-8 replaced. Valid input (nearly every line) takes the validator's
/// fast path instead of the chunk-by-chunk lossy decoder.
fn lossy(v: &[u8]) -> String {
    match std::str::from_utf8(v) {
        Ok(s) => s.to_owned(),
        Err(_) => String::from_utf8_lossy(v).into_owned(),
    }
}
