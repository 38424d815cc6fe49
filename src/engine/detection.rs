//! What a detection carries, as written by the actions.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::rule::Severity;

/// One detection. Every string that came from a log line is kept as data (serialised by
/// serde_json, escaped for terminals by the console printer), never interpreted.
#[derive(Debug, Clone, Serialize)]
pub struct Detection {
    /// Idempotency key: hash of (file identity, line offset, rule id). The same line matched by
    /// the same rule always yields the same key, so a replay can be recognised.
    pub key: String,
    /// Shared by every detection of the rule (built once when the rule is compiled).
    pub rule: Arc<RuleInfo>,
    pub source: SourceRef,
    /// Event time of the line (UTC, RFC 3339 with milliseconds).
    #[serde(serialize_with = "ser_time")]
    pub event_time: DateTime<Utc>,
    /// `event` when taken from the line, `arrival` when the line had no readable timestamp.
    pub time_source: &'static str,
    #[serde(serialize_with = "ser_time")]
    pub detected_at: DateTime<Utc>,
    /// Parsed fields of the line (lossy UTF-8).
    pub fields: BTreeMap<Arc<str>, String>,
    /// The raw line (lossy UTF-8).
    pub line: String,
    /// True when the line was longer than the configured maximum and was cut.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub line_truncated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold: Option<ThresholdInfo>,
    /// For a sequence rule: the chain this event completed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sequence: Option<SequenceInfo>,
    /// Detections held back by suppression for this key since the previous one.
    pub suppressed: u64,
    pub actions: Vec<String>,
    /// Other rules of the same class that matched the same line, merged into this detection
    /// (one detection per class per line: see `alerts.one_per_class`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub also: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RuleInfo {
    pub id: String,
    pub title: String,
    pub severity: Severity,
    /// Attack class (`sqli`, `scanner`, ...; `other` when the rule names none).
    pub class: String,
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SourceRef {
    /// The machine that read the event, for events other machines published to NATS
    /// (worker mode); absent for this machine's own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<Arc<str>>,
    /// Configured source name (or `scan`).
    pub name: Arc<str>,
    pub path: Arc<str>,
    pub format: Arc<str>,
    /// 1-based line number within the file (0 when unknown).
    pub line_number: u64,
    /// Byte offset of the start of the line.
    pub offset: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ThresholdInfo {
    pub count: u32,
    pub within_seconds: f64,
    /// The group key, by field name.
    pub group: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distinct: Option<String>,
    /// With `distinct`: the values counted, in the order they came, at most
    /// [`super::window::SHOWN`] of them (`count` says how many there were), each cut to
    /// [`super::window::SHOWN_BYTES`] bytes. Attacker-chosen text, kept as data.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub distinct_values: Vec<String>,
    #[serde(serialize_with = "ser_time")]
    pub first_seen: DateTime<Utc>,
    #[serde(serialize_with = "ser_time")]
    pub last_seen: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SequenceInfo {
    /// How many steps the chain has (all of them were seen).
    pub steps: u32,
    pub within_seconds: f64,
    /// The key that joined the steps, as the last step's event has it (after the key's
    /// transforms; several fields separated by a space).
    pub key: String,
    /// When the first step's event happened.
    #[serde(serialize_with = "ser_time")]
    pub first_seen: DateTime<Utc>,
    #[serde(serialize_with = "ser_time")]
    pub last_seen: DateTime<Utc>,
}

/// Serialises a time as RFC 3339 with milliseconds, in UTC (`Z`).
pub fn ser_time<S: serde::Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Millis, true))
}

#[cfg(test)]
impl Detection {
    /// A detection of rule `rule` (of `class`, at `severity`) at time `t`, carrying `fields`
    /// and `line`, with the `log` action: what unit tests of the stages after the engine need.
    pub(crate) fn sample(
        key: &str,
        rule: &str,
        class: &str,
        severity: Severity,
        t: DateTime<Utc>,
        fields: &[(&str, &str)],
        line: &str,
    ) -> Detection {
        Detection {
            key: key.into(),
            rule: Arc::new(RuleInfo {
                id: rule.into(),
                title: rule.into(),
                severity,
                class: class.into(),
                tags: vec![],
            }),
            source: SourceRef {
                host: None,
                name: "web".into(),
                path: "/x".into(),
                format: "combined".into(),
                line_number: 1,
                offset: 0,
            },
            event_time: t,
            time_source: "event",
            detected_at: t,
            fields: fields.iter().map(|(k, v)| (Arc::from(*k), v.to_string())).collect(),
            line: line.into(),
            line_truncated: false,
            threshold: None,
            sequence: None,
            suppressed: 0,
            actions: vec!["log".into()],
            also: Vec::new(),
        }
    }
}
