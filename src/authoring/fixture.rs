//! The model of a test fixture (`NAME.test.yml` next to the rules): a log and the detections
//! it must produce. `trapline test` runs it; `trapline schema fixtures` describes it.

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A test fixture: the lines of a log (a file, or inline) and every detection they must
/// produce, run through the production engine (parsing, prefilter, thresholds, suppression and
/// sequences on event time).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Fixture {
    /// Format of the log: a built-in one (combined, common, apache_error, syslog, json, raw)
    /// or a custom format of the config. Default: `combined`. Every line must parse in it.
    #[serde(default = "combined")]
    pub format: String,
    /// The log file, relative to the fixture (`.gz` is decompressed). Instead of `lines`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<PathBuf>,
    /// The log's lines, inline. Instead of `log`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lines: Vec<String>,
    /// Every detection the log must produce (of the rules in `rules`, when set), and nothing
    /// else.
    #[serde(default)]
    pub expect: Vec<Expected>,
    /// Compare only the detections of these rules: ids, or `prefix.*` for every id under a
    /// prefix (counting rules merged into another detection of their class too). Absent: every
    /// detection must be expected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<String>>,
    /// The former name of `rules`, still accepted (not both).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub only: Option<Vec<String>>,
}

impl Fixture {
    /// The rules the fixture is restricted to (`rules`, or its former name `only`).
    pub fn selection(&self) -> Result<Option<&[String]>, &'static str> {
        match (&self.rules, &self.only) {
            (Some(_), Some(_)) => Err("`only` is the former name of `rules`: give one of them"),
            (Some(r), None) | (None, Some(r)) => Ok(Some(r)),
            (None, None) => Ok(None),
        }
    }
}

/// One expected detection.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Expected {
    /// The rule that fires.
    pub rule: String,
    /// The 1-based line of the log that fires it.
    pub line: u64,
}

fn combined() -> String {
    "combined".into()
}

/// Whether `id` is one of `patterns` (an id, or `prefix.*`).
pub fn selected(patterns: &[String], id: &str) -> bool {
    patterns.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => id.starts_with(prefix),
        None => p == id,
    })
}
