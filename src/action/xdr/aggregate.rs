//! Incident aggregation: one incident per group key (the attacker) per window — or, for rules
//! set to `incident: rule`, per (rule, group key) per window.
//!
//! The old script created an incident for every hit. Here the first hit of a group (by default
//! the attacker's `client_ip`) opens a window of `window` (default 1 h) starting at its event
//! time; later hits of the same group inside the window become sightings of that incident,
//! whichever rule they come from. The window counts detections per rule and per class.
//!
//! # Deterministic ids
//! External ids are `<prefix>-<type>-<sha256>`:
//! - incident (and judgement): hash of (scope, group key, window start), the scope being empty
//!   for an attacker's incident and the rule id for a rule's own;
//! - sighting: hash of the detection's idempotency key (file identity, offset, rule);
//! - relationship: hash of (sighting id, incident id).
//!
//! So a detection replayed after a crash (the tailer re-reads lines past the last checkpoint)
//! or a bundle re-sent after a lost answer carries the same ids, and the service answers
//! `exists` instead of creating a duplicate. The windows are saved in the state directory on
//! every flush (i.e. before every checkpoint), so a replay finds the window its first run
//! opened: the window start, and with it the incident id, is the same.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::bundle::Ids;

/// Most windows kept; the least recently hit go first.
const MAX_WINDOWS: usize = 50_000;
/// Sample lines kept per window (each cut to 2 KiB).
const MAX_SAMPLES: usize = 5;
const MAX_SAMPLE_BYTES: usize = 2048;

pub fn sha256_hex(b: &[u8]) -> String {
    let d = Sha256::digest(b);
    d.iter().map(|x| format!("{x:02x}")).collect()
}

fn hash_parts(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    h.finalize().iter().map(|x| format!("{x:02x}")).collect()
}

/// One incident window.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Window {
    /// The rule of a rule-scoped incident; empty for an attacker's incident.
    pub rule: String,
    pub group: BTreeMap<String, String>,
    pub start: DateTime<Utc>,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub count: u64,
    pub samples: Vec<String>,
    /// The incident's external id.
    pub incident: String,
    /// The judgement's external id.
    pub judgement: String,
    #[serde(default)]
    pub window_secs: u64,
    /// Detections per rule and per class in this incident.
    #[serde(default)]
    pub rules: BTreeMap<String, u64>,
    #[serde(default)]
    pub classes: BTreeMap<String, u64>,
    /// The highest rule severity among the detections (`info` … `critical`).
    #[serde(default)]
    pub severity: String,
    /// The rules' tags (ATT&CK ids and others), in order of first appearance.
    #[serde(default)]
    pub tags: Vec<String>,
    /// The severity of the detection that opened the window (what the incident was created
    /// with).
    #[serde(default)]
    pub opened_severity: String,
}

impl Window {
    /// True once a detection of higher severity than the first one joined: only then does an
    /// update carry the severity (an analyst's own choice is otherwise left alone).
    pub fn severity_raised(&self) -> bool {
        severity_rank(&self.severity) > severity_rank(&self.opened_severity)
    }
}

/// Most distinct tags kept per window.
const MAX_TAGS: usize = 64;

/// Rank of a rule severity; unknown names rank lowest.
pub fn severity_rank(s: &str) -> u8 {
    match s {
        "low" => 1,
        "medium" => 2,
        "high" => 3,
        "critical" => 4,
        _ => 0,
    }
}

/// What the aggregate needs to know about the rule of a hit.
#[derive(Debug, Clone, Copy)]
pub struct RuleFacts<'a> {
    pub id: &'a str,
    /// Attack class (`other` when the rule names none).
    pub class: &'a str,
    pub severity: &'a str,
    pub tags: &'a [String],
}

/// What a hit got: the window (after the hit) and whether it opened it.
#[derive(Debug, Clone)]
pub struct Hit {
    pub window: Window,
    pub new_incident: bool,
    pub xids: Ids,
}

/// The windows, persisted in `<state>/xdr/windows.json`.
pub struct Windows {
    path: Option<PathBuf>,
    map: HashMap<String, Window>,
    dirty: bool,
    prefix: String,
}

impl Windows {
    /// Loads the saved windows (if `path` is given and exists).
    pub fn open(path: Option<&Path>, prefix: &str) -> std::io::Result<Windows> {
        let map = match path {
            Some(p) if p.exists() => {
                let text = std::fs::read_to_string(p)?;
                serde_json::from_str::<Vec<Window>>(&text)
                    .map(|v| v.into_iter().map(|w| (key_of(&w.rule, &w.group), w)).collect())
                    .unwrap_or_else(|e| {
                        tracing::warn!(path = %p.display(), error = %e, "ignoring unreadable XDR window state");
                        HashMap::new()
                    })
            }
            _ => HashMap::new(),
        };
        Ok(Windows { path: path.map(Path::to_path_buf), map, dirty: false, prefix: prefix.to_string() })
    }

    /// Records a hit of `rule` for `group` at event time `t`, in the incident of `scope`
    /// (empty: the attacker's; a rule id: that rule's).
    #[allow(clippy::too_many_arguments)]
    pub fn hit(
        &mut self,
        scope: &str,
        facts: RuleFacts<'_>,
        group: BTreeMap<String, String>,
        window: Duration,
        t: DateTime<Utc>,
        detection_key: &str,
        line: &str,
    ) -> Hit {
        let key = key_of(scope, &group);
        let len = chrono::Duration::from_std(window).unwrap_or(chrono::Duration::hours(1));
        let reuse = self.map.get(&key).is_some_and(|w| t >= w.start - len && t < w.start + len);
        let new_incident = !reuse;
        if !reuse {
            let start_ms = t.timestamp_millis().to_string();
            let gk = group_string(&group);
            let h = hash_parts(&[scope, &gk, &start_ms]);
            let w = Window {
                rule: scope.to_string(),
                group: group.clone(),
                start: t,
                first_seen: t,
                last_seen: t,
                count: 0,
                samples: Vec::new(),
                incident: format!("{}-incident-{h}", self.prefix),
                judgement: format!("{}-judgement-{h}", self.prefix),
                window_secs: window.as_secs(),
                rules: BTreeMap::new(),
                classes: BTreeMap::new(),
                severity: String::new(),
                tags: Vec::new(),
                opened_severity: facts.severity.to_string(),
            };
            self.map.insert(key.clone(), w);
        }
        let w = self.map.get_mut(&key).expect("inserted");
        let rule = facts.id;
        w.count += 1;
        *w.rules.entry(rule.to_string()).or_default() += 1;
        *w.classes.entry(facts.class.to_string()).or_default() += 1;
        if w.severity.is_empty() || severity_rank(facts.severity) > severity_rank(&w.severity) {
            w.severity = facts.severity.to_string();
        }
        for t in facts.tags {
            if w.tags.len() < MAX_TAGS && !w.tags.contains(t) {
                w.tags.push(t.clone());
            }
        }
        w.first_seen = w.first_seen.min(t);
        w.last_seen = w.last_seen.max(t);
        if w.samples.len() < MAX_SAMPLES {
            let mut end = line.len().min(MAX_SAMPLE_BYTES);
            while !line.is_char_boundary(end) {
                end -= 1;
            }
            w.samples.push(line[..end].to_string());
        }
        let sighting = format!("{}-sighting-{}", self.prefix, hash_parts(&[rule, detection_key]));
        let relationship = format!("{}-relationship-{}", self.prefix, hash_parts(&[&sighting, &w.incident]));
        let xids = Ids { incident: w.incident.clone(), sighting, relationship, judgement: w.judgement.clone() };
        let hit = Hit { window: w.clone(), new_incident, xids };
        self.dirty = true;
        if self.map.len() > MAX_WINDOWS {
            self.evict();
        }
        hit
    }

    fn evict(&mut self) {
        let mut by_age: Vec<(DateTime<Utc>, String)> = self.map.iter().map(|(k, w)| (w.last_seen, k.clone())).collect();
        by_age.sort();
        for (_, k) in by_age.into_iter().take(self.map.len() - MAX_WINDOWS * 9 / 10) {
            self.map.remove(&k);
        }
    }

    /// Saves the windows if they changed (write, fsync, rename).
    pub fn save(&mut self) -> std::io::Result<()> {
        let Some(path) = &self.path else { return Ok(()) };
        if !self.dirty {
            return Ok(());
        }
        let mut v: Vec<&Window> = self.map.values().collect();
        v.sort_by(|a, b| (a.start, &a.incident).cmp(&(b.start, &b.incident)));
        crate::state::write_atomic(path, &serde_json::to_vec(&v)?, true)?;
        self.dirty = false;
        Ok(())
    }

    /// Forgets every window (after `xdr purge`).
    pub fn clear(&mut self) {
        self.map.clear();
        self.dirty = true;
    }
}

fn group_string(group: &BTreeMap<String, String>) -> String {
    group.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("\u{1f}")
}

fn key_of(rule: &str, group: &BTreeMap<String, String>) -> String {
    format!("{rule}\u{1e}{}", group_string(group))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap()
    }
    fn f<'a>(id: &'a str, class: &'a str) -> RuleFacts<'a> {
        RuleFacts { id, class, severity: "high", tags: &[] }
    }
    fn g(ip: &str) -> BTreeMap<String, String> {
        [("client_ip".to_string(), ip.to_string())].into_iter().collect()
    }

    #[test]
    fn one_incident_per_group_per_window_with_stable_ids() {
        let mut w = Windows::open(None, "trapline").unwrap();
        let hour = Duration::from_secs(3600);
        let a = w.hit("r", f("r", "sqli"), g("1.1.1.1"), hour, t(0), "k1", "l1");
        let b = w.hit("r", f("r", "sqli"), g("1.1.1.1"), hour, t(60), "k2", "l2");
        let c = w.hit("r", f("r", "sqli"), g("2.2.2.2"), hour, t(61), "k3", "l3");
        let d = w.hit("r", f("r", "sqli"), g("1.1.1.1"), hour, t(3601), "k4", "l4");
        assert!(a.new_incident && !b.new_incident && c.new_incident && d.new_incident);
        assert_eq!(a.xids.incident, b.xids.incident);
        assert_ne!(a.xids.incident, c.xids.incident);
        assert_ne!(a.xids.incident, d.xids.incident);
        assert_ne!(a.xids.sighting, b.xids.sighting);
        assert_eq!(b.window.count, 2);
        assert!(a.xids.incident.starts_with("trapline-incident-") && a.xids.incident.len() == 18 + 64);
        // The same hit computed afresh (a replay after a crash) gets the same ids.
        let mut w2 = Windows::open(None, "trapline").unwrap();
        let a2 = w2.hit("r", f("r", "sqli"), g("1.1.1.1"), hour, t(0), "k1", "l1");
        assert_eq!(a2.xids.incident, a.xids.incident);
        assert_eq!(a2.xids.sighting, a.xids.sighting);
        assert_eq!(a2.xids.relationship, a.xids.relationship);
    }

    #[test]
    fn windows_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("windows.json");
        let hour = Duration::from_secs(3600);
        let mut w = Windows::open(Some(&p), "x").unwrap();
        let a = w.hit("r", f("r", "sqli"), g("1.1.1.1"), hour, t(0), "k1", "l1");
        w.save().unwrap();
        let mut w = Windows::open(Some(&p), "x").unwrap();
        let b = w.hit("r", f("r", "sqli"), g("1.1.1.1"), hour, t(10), "k2", "l2");
        assert!(!b.new_incident);
        assert_eq!(a.xids.incident, b.xids.incident);
    }

    #[test]
    fn an_attackers_incident_gathers_every_rule_a_rule_scoped_one_only_its_own() {
        let mut w = Windows::open(None, "trapline").unwrap();
        let hour = Duration::from_secs(3600);
        let a = w.hit("", f("web.sqli.union", "sqli"), g("1.1.1.1"), hour, t(0), "k1", "l1");
        let b = w.hit("", f("scanner.ua", "scanner"), g("1.1.1.1"), hour, t(1), "k2", "l2");
        let c = w.hit("", f("web.sqli.union", "sqli"), g("1.1.1.1"), hour, t(2), "k3", "l3");
        assert!(a.new_incident && !b.new_incident && !c.new_incident);
        assert_eq!(
            (a.xids.incident.as_str(), b.xids.incident.as_str()),
            (c.xids.incident.as_str(), c.xids.incident.as_str())
        );
        assert_eq!(c.window.count, 3);
        assert_eq!(c.window.classes, BTreeMap::from([("scanner".into(), 1), ("sqli".into(), 2)]));
        assert_eq!(c.window.rules.len(), 2);
        let own = w.hit("web.bruteforce", f("web.bruteforce", "brute-force"), g("1.1.1.1"), hour, t(3), "k4", "l4");
        assert!(own.new_incident);
        assert_ne!(own.xids.incident, a.xids.incident);
    }

    #[test]
    fn the_aggregate_keeps_the_highest_severity_and_every_tag() {
        let mut w = Windows::open(None, "trapline").unwrap();
        let hour = Duration::from_secs(3600);
        let tags = |t: &[&str]| t.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (a, b) = (tags(&["attack.t1110", "x"]), tags(&["attack.t1190", "x"]));
        let r = |id, severity, tags| RuleFacts { id, class: "c", severity, tags };
        w.hit("", r("r1", "medium", &a), g("1.1.1.1"), hour, t(0), "k1", "l1");
        let h = w.hit("", r("r2", "critical", &b), g("1.1.1.1"), hour, t(1), "k2", "l2");
        assert_eq!(
            (h.window.severity.as_str(), h.window.tags.clone()),
            ("critical", tags(&["attack.t1110", "x", "attack.t1190"]))
        );
        let h = w.hit("", r("r1", "low", &a), g("1.1.1.1"), hour, t(2), "k3", "l3");
        assert_eq!(h.window.severity, "critical", "never lowered");
        assert!(h.window.severity_raised(), "opened at medium");
        assert_eq!(h.window.last_seen, t(2));
        w.hit("", r("r1", "low", &a), g("2.2.2.2"), hour, t(2), "k4", "l4");
        let other = w.hit("", r("r1", "low", &a), g("2.2.2.2"), hour, t(3), "k5", "l5").window;
        assert!(!other.severity_raised() && other.opened_severity == "low");
    }
}
