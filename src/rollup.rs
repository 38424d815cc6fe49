//! **rollup**: one activity record per attacker, instead of one alert per line.
//!
//! A scanner sends thousands of requests and every one may match several rules; the person
//! reading the console wants to know *who* is attacking, *how* (which classes of attack) and
//! *how bad* — once, and again only when that changes. A [`Rollups`] keeps, per group key
//! (the client IP by default), the activity since it began: first and last seen, detections
//! per rule and per class, the highest severity, distinct paths, the first few lines. It
//! emits a [`Rollup`] record when the activity **opens**, when it **escalates** (a new class
//! or a higher severity) and when it **closes** after `idle` without a detection — never once
//! per line.
//!
//! Idleness is measured in event time as detections come (so `scan` of an old log closes
//! activities as the log's clock moves), and in wall-clock time between events (so a live
//! attacker who went quiet is closed while nothing else happens).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::engine::Detection;
use crate::engine::detection::ser_time;
use crate::rule::Severity;

/// The `alerts:` section of the config.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertsDef {
    /// Fields that identify an attacker (detections without them are grouped per source).
    #[serde(default = "default_group_by")]
    pub group_by: Vec<String>,
    /// An activity closes after this long without a detection (e.g. `10m`).
    #[serde(default = "default_idle", with = "humantime_serde_compat")]
    #[schemars(with = "String")]
    pub idle: Duration,
    /// Raw lines kept in a roll-up (the first ones).
    #[serde(default = "default_samples")]
    pub samples: usize,
    /// Per-line detections in the log output: `all`, `first` (the first per rule within an
    /// activity; the rest are counted as held back) or `none` (roll-ups only).
    #[serde(default)]
    pub detections: DetectionsMode,
    /// What the console shows: `rollups` (default), `detections`, or `both`.
    #[serde(default)]
    pub console: ConsoleMode,
    /// One detection per attack class per line: when several rules of one class match the
    /// same line (a honeypot signature and a web-attack rule for the same SQL injection), the
    /// most severe one is kept and names the others in `also`. Threshold detections are
    /// never merged.
    #[serde(default = "yes")]
    pub one_per_class: bool,
    /// Also write the roll-up records to the log output (JSON objects with
    /// `"kind": "rollup"`, beside the detections).
    #[serde(default = "yes")]
    pub log_rollups: bool,
}

fn yes() -> bool {
    true
}

impl Default for AlertsDef {
    fn default() -> Self {
        AlertsDef {
            group_by: default_group_by(),
            idle: default_idle(),
            samples: default_samples(),
            detections: DetectionsMode::default(),
            console: ConsoleMode::default(),
            one_per_class: true,
            log_rollups: true,
        }
    }
}

fn default_group_by() -> Vec<String> {
    vec!["client_ip".to_string()]
}
fn default_idle() -> Duration {
    Duration::from_secs(600)
}
fn default_samples() -> usize {
    3
}

/// Durations written as `10m`, `90s`, `1h`.
mod humantime_serde_compat {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DetectionsMode {
    #[default]
    All,
    First,
    None,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ConsoleMode {
    #[default]
    Rollups,
    Detections,
    Both,
}

/// Why a roll-up record is emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Opened,
    Escalated,
    Closed,
}

/// One attacker's activity, as emitted. Every string from a log line is data (already
/// redacted in the detections it comes from).
#[derive(Debug, Clone, Serialize)]
pub struct Rollup {
    /// Always `rollup`: tells these records from detections in the same output.
    pub kind: &'static str,
    pub state: State,
    /// Stable for the activity: hash of the group and its first detection's key.
    pub id: String,
    pub group: BTreeMap<String, String>,
    #[serde(serialize_with = "ser_time")]
    pub first_seen: DateTime<Utc>,
    #[serde(serialize_with = "ser_time")]
    pub last_seen: DateTime<Utc>,
    pub severity: Severity,
    pub detections: u64,
    /// Detections not written to the log output (`alerts.detections: first | none`).
    pub held_back: u64,
    pub classes: BTreeMap<String, u64>,
    pub rules: BTreeMap<String, u64>,
    /// Distinct paths (counted up to [`MAX_PATHS`]), and the first few.
    pub paths: u64,
    pub path_samples: Vec<String>,
    /// The first lines of the activity.
    pub samples: Vec<String>,
}

/// Distinct paths counted per activity: beyond it the count stops (a bound on memory).
pub const MAX_PATHS: usize = 10_000;
const PATH_SAMPLES: usize = 5;

struct Activity {
    record: Rollup,
    paths: HashSet<u64>,
    /// Last detection, in event time and in wall-clock time.
    last_event: DateTime<Utc>,
    last_wall: Instant,
}

/// What to do with a detection besides counting it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// Write it to the log output (per `alerts.detections`).
    pub log: bool,
}

/// The open activities, by group key.
pub struct Rollups {
    def: AlertsDef,
    max_keys: usize,
    open: HashMap<String, Activity>,
    /// Lower bounds of the open activities' last event time and last wall-clock time: until
    /// `idle` has passed since them no activity can be idle, and the table (up to `max_keys`
    /// attackers) is not scanned. Without them every detection and every turn of the
    /// daemon's loop walked the whole table.
    oldest_event: Option<DateTime<Utc>>,
    oldest_wall: Option<Instant>,
}

impl Rollups {
    pub fn new(def: AlertsDef, max_keys: usize) -> Rollups {
        Rollups { def, max_keys: max_keys.max(1), open: HashMap::new(), oldest_event: None, oldest_wall: None }
    }

    /// Counts `d` into its attacker's activity; appends the records it causes (closing idle
    /// activities first, then opening or escalating this one) to `out`.
    pub fn add(&mut self, d: &Detection, out: &mut Vec<Rollup>) -> Verdict {
        let t = d.event_time;
        let idle = chrono::Duration::from_std(self.def.idle).unwrap_or(chrono::Duration::MAX);
        if self.oldest_event.is_some_and(|o| t - o >= idle) {
            self.close_where(|a| t - a.last_event >= idle, out);
        }
        let mut group: BTreeMap<String, String> = self
            .def
            .group_by
            .iter()
            .map(|f| (f.clone(), d.fields.get(f.as_str()).cloned().unwrap_or_default()))
            .collect();
        // Detections without the group fields (file changes under a web root have no
        // client address) share one activity per source, and say so instead of printing an
        // empty `client_ip=`.
        let key = if group.values().all(|v| v.is_empty()) {
            group = BTreeMap::from([("source".to_string(), d.source.name.to_string())]);
            format!("source:{}", d.source.name)
        } else {
            serde_json::to_string(&group).unwrap_or_default()
        };
        if !self.open.contains_key(&key) && self.open.len() >= self.max_keys {
            // Full: the tenth idle the longest is closed (and reported) in one pass, so a flood
            // of new addresses costs one scan per max_keys/10 of them, not one per address.
            let n = (self.open.len() / 10).max(1);
            let mut ages: Vec<Instant> = self.open.values().map(|a| a.last_wall).collect();
            let cutoff = *ages.select_nth_unstable(n - 1).1;
            let mut left = n;
            self.close_where(
                |a| {
                    let go = left > 0 && a.last_wall <= cutoff;
                    left -= usize::from(go);
                    go
                },
                out,
            );
        }
        let path = d.fields.get("path").map(String::as_str).unwrap_or("");
        let samples = self.def.samples;
        let mode = self.def.detections;
        let now = Instant::now();
        match self.open.get_mut(&key) {
            None => {
                let mut paths = HashSet::new();
                let mut record = Rollup {
                    kind: "rollup",
                    state: State::Opened,
                    id: crate::event::Origin::Object { object: xxhash_rust::xxh3::xxh3_64(key.as_bytes()), version: 0 }
                        .idempotency_key(&d.key),
                    group,
                    first_seen: t,
                    last_seen: t,
                    severity: d.rule.severity,
                    detections: 1,
                    held_back: 0,
                    classes: BTreeMap::from([(d.rule.class.clone(), 1)]),
                    rules: d.also.iter().chain([&d.rule.id]).map(|r| (r.clone(), 1)).collect(),
                    paths: 0,
                    path_samples: Vec::new(),
                    samples: Vec::new(),
                };
                count_path(&mut record, &mut paths, path);
                if samples > 0 {
                    record.samples.push(d.line.clone());
                }
                let log = mode != DetectionsMode::None;
                record.held_back = u64::from(!log);
                out.push(record.clone());
                self.open.insert(key, Activity { record, paths, last_event: t, last_wall: now });
                self.oldest_event = Some(self.oldest_event.map_or(t, |o| o.min(t)));
                self.oldest_wall = Some(self.oldest_wall.map_or(now, |o| o.min(now)));
                Verdict { log }
            }
            Some(a) => {
                let r = &mut a.record;
                r.detections += 1;
                r.last_seen = r.last_seen.max(t);
                r.first_seen = r.first_seen.min(t);
                let first_of_rule = !r.rules.contains_key(&d.rule.id);
                for id in d.also.iter().chain([&d.rule.id]) {
                    *r.rules.entry(id.clone()).or_default() += 1;
                }
                let new_class = !r.classes.contains_key(&d.rule.class);
                *r.classes.entry(d.rule.class.clone()).or_default() += 1;
                let higher = d.rule.severity > r.severity;
                r.severity = r.severity.max(d.rule.severity);
                count_path(r, &mut a.paths, path);
                // Lines, not detections: a line that fired two rules is one sample.
                if r.samples.len() < samples && r.samples.last() != Some(&d.line) {
                    r.samples.push(d.line.clone());
                }
                a.last_event = a.last_event.max(t);
                a.last_wall = now;
                let log = match mode {
                    DetectionsMode::All => true,
                    DetectionsMode::First => first_of_rule,
                    DetectionsMode::None => false,
                };
                r.held_back += u64::from(!log);
                if new_class || higher {
                    r.state = State::Escalated;
                    out.push(r.clone());
                }
                Verdict { log }
            }
        }
    }

    /// Closes the activities without a detection for `idle` of wall-clock time.
    pub fn tick(&mut self, now: Instant, out: &mut Vec<Rollup>) {
        let idle = self.def.idle;
        if self.oldest_wall.is_some_and(|o| now.saturating_duration_since(o) >= idle) {
            self.close_where(|a| now.saturating_duration_since(a.last_wall) >= idle, out);
        }
    }

    /// Closes every activity (the end of a `scan`).
    pub fn close_all(&mut self, out: &mut Vec<Rollup>) {
        self.close_where(|_| true, out);
    }

    /// Activities open now.
    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    fn close_where(&mut self, mut done: impl FnMut(&Activity) -> bool, out: &mut Vec<Rollup>) {
        if self.open.is_empty() {
            return;
        }
        let keys: Vec<String> = self.open.iter().filter(|(_, a)| done(a)).map(|(k, _)| k.clone()).collect();
        let mut closed: Vec<Rollup> = keys.into_iter().filter_map(|k| self.open.remove(&k)).map(close).collect();
        self.oldest_event = self.open.values().map(|a| a.last_event).min();
        self.oldest_wall = self.open.values().map(|a| a.last_wall).min();
        // In the order the activities began: the output reads like a timeline.
        closed.sort_by(|a, b| (a.first_seen, &a.id).cmp(&(b.first_seen, &b.id)));
        out.extend(closed);
    }
}

fn close(a: Activity) -> Rollup {
    let mut r = a.record;
    r.state = State::Closed;
    r
}

fn count_path(r: &mut Rollup, seen: &mut HashSet<u64>, path: &str) {
    if path.is_empty() || seen.len() >= MAX_PATHS {
        return;
    }
    if seen.insert(xxhash_rust::xxh3::xxh3_64(path.as_bytes())) {
        r.paths += 1;
        if r.path_samples.len() < PATH_SAMPLES {
            r.path_samples.push(path.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(ip: &str, sec: i64, rule: &str, class: &str, severity: Severity, path: &str) -> Detection {
        let t = DateTime::from_timestamp(1_700_000_000 + sec, 0).unwrap();
        let fields = [("client_ip", ip), ("path", path)];
        Detection::sample(&format!("{ip}-{sec}-{rule}"), rule, class, severity, t, &fields, &format!("{ip} GET {path}"))
    }

    fn states(out: &[Rollup]) -> Vec<(State, String)> {
        out.iter().map(|r| (r.state, r.group["client_ip"].clone())).collect()
    }

    #[test]
    fn opens_once_escalates_on_new_class_or_severity_and_closes_when_idle() {
        let mut r = Rollups::new(AlertsDef::default(), 100);
        let mut out = Vec::new();
        for i in 0..50 {
            r.add(&det("203.0.113.7", i, "web.sqli.union", "sqli", Severity::High, &format!("/p{}", i % 7)), &mut out);
        }
        assert_eq!(states(&out), [(State::Opened, "203.0.113.7".into())], "one record for 50 detections of one class");
        out.clear();
        r.add(&det("203.0.113.7", 60, "scanner.ua", "scanner", Severity::Medium, "/p1"), &mut out);
        assert_eq!(out.len(), 1, "new class");
        assert_eq!(out[0].state, State::Escalated);
        out.clear();
        r.add(&det("203.0.113.7", 61, "web.exploit.x", "sqli", Severity::Critical, "/p1"), &mut out);
        assert_eq!(out[0].severity, Severity::Critical, "higher severity escalates");
        out.clear();
        // Another attacker 11 minutes later (event time): the first one's activity is closed.
        r.add(&det("198.51.100.2", 61 + 660, "web.xss.script", "xss", Severity::High, "/q"), &mut out);
        let closed = &out[0];
        assert_eq!((closed.state, closed.detections, closed.paths), (State::Closed, 52, 7));
        assert_eq!(closed.classes, BTreeMap::from([("scanner".into(), 1), ("sqli".into(), 51)]));
        assert_eq!(closed.samples.len(), 3);
        assert_eq!(states(&out[1..]), [(State::Opened, "198.51.100.2".into())]);
        out.clear();
        r.close_all(&mut out);
        assert_eq!(states(&out), [(State::Closed, "198.51.100.2".into())]);
        assert!(r.is_empty());
    }

    /// The table is scanned only once the oldest activity may be idle, and what a scan closes
    /// is exactly what is idle, also after the oldest one came back (a stale bound).
    #[test]
    fn idle_activities_close_in_order_when_the_oldest_came_back() {
        let mut r = Rollups::new(AlertsDef::default(), 100);
        let idle = AlertsDef::default().idle.as_secs() as i64;
        let mut out = Vec::new();
        let at = |r: &mut Rollups, out: &mut Vec<Rollup>, ip: &str, sec: i64| {
            out.clear();
            r.add(&det(ip, sec, "web.sqli.union", "sqli", Severity::High, "/p"), out);
            out.iter().filter(|x| x.state == State::Closed).map(|x| x.group["client_ip"].clone()).collect::<Vec<_>>()
        };
        assert!(at(&mut r, &mut out, "192.0.2.1", 0).is_empty());
        assert!(at(&mut r, &mut out, "192.0.2.2", 100).is_empty());
        assert!(at(&mut r, &mut out, "192.0.2.1", 200).is_empty(), "the oldest comes back");
        assert!(at(&mut r, &mut out, "192.0.2.3", idle + 50).is_empty(), "nobody idle yet");
        assert_eq!(at(&mut r, &mut out, "192.0.2.4", idle + 150), ["192.0.2.2"]);
        assert_eq!(at(&mut r, &mut out, "192.0.2.5", idle + 250), ["192.0.2.1"]);
        assert_eq!(r.len(), 3);
        // Wall-clock idleness: nothing before `idle` has passed, everything after.
        let now = Instant::now();
        out.clear();
        r.tick(now, &mut out);
        assert!(out.is_empty());
        r.tick(now + AlertsDef::default().idle + Duration::from_secs(1), &mut out);
        assert_eq!(out.len(), 3);
        assert!(r.is_empty());
    }

    #[test]
    fn detections_modes_hold_back_and_count() {
        let def = AlertsDef { detections: DetectionsMode::First, ..AlertsDef::default() };
        let mut r = Rollups::new(def, 100);
        let mut out = Vec::new();
        let logged: Vec<bool> = (0..5)
            .map(|i| {
                r.add(&det("203.0.113.7", i, if i < 3 { "a" } else { "b" }, "sqli", Severity::Low, "/"), &mut out).log
            })
            .collect();
        assert_eq!(logged, [true, false, false, true, false]);
        r.close_all(&mut out);
        assert_eq!(out.last().unwrap().held_back, 3);
        let mut none = Rollups::new(AlertsDef { detections: DetectionsMode::None, ..AlertsDef::default() }, 100);
        assert!(!none.add(&det("203.0.113.7", 0, "a", "sqli", Severity::Low, "/"), &mut out).log);
    }

    #[test]
    fn a_full_table_closes_the_longest_idle_and_keys_without_group_fields_share_their_source() {
        let mut r = Rollups::new(AlertsDef::default(), 2);
        let mut out = Vec::new();
        r.add(&det("192.0.2.1", 0, "a", "recon", Severity::Low, "/"), &mut out);
        r.add(&det("192.0.2.2", 1, "a", "recon", Severity::Low, "/"), &mut out);
        out.clear();
        r.add(&det("192.0.2.3", 2, "a", "recon", Severity::Low, "/"), &mut out);
        assert_eq!(states(&out), [(State::Closed, "192.0.2.1".into()), (State::Opened, "192.0.2.3".into())]);
        let mut d = det("", 3, "a", "recon", Severity::Low, "/");
        d.fields.remove("client_ip");
        let mut r = Rollups::new(AlertsDef::default(), 10);
        out.clear();
        r.add(&d, &mut out);
        r.add(&d, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(r.len(), 1);
        assert_eq!(out[0].group, BTreeMap::from([("source".to_string(), d.source.name.to_string())]));
    }

    #[test]
    fn a_flood_of_new_attackers_stays_bounded_and_every_eviction_is_reported() {
        let mut r = Rollups::new(AlertsDef::default(), 1000);
        let mut out = Vec::new();
        for i in 0..5000u32 {
            let ip = format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255);
            r.add(&det(&ip, 0, "a", "recon", Severity::Low, "/"), &mut out);
            assert!(r.len() <= 1000);
        }
        let opened = out.iter().filter(|x| x.state == State::Opened).count();
        let closed = out.iter().filter(|x| x.state == State::Closed).count();
        assert_eq!((opened, closed + r.len()), (5000, 5000));
    }
}
