//! The status of a running `trapline run`, as a file in the state directory
//! (`status.json`): which rules are loaded, whether the last reload worked (and if not, why,
//! with file:line:col), and the counters. `trapline status` reads it.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// File name of the status, in the state directory.
pub const FILE: &str = "status.json";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Status {
    pub pid: u32,
    pub started_at: String,
    pub updated_at: String,
    /// Rules in the running set.
    pub rules: usize,
    /// When the running set was loaded.
    pub rules_loaded_at: String,
    /// Outcome of the last reload attempt, if any.
    pub last_reload: Option<Reload>,
    pub lines: u64,
    pub unparsed: u64,
    pub detections_written: u64,
    /// Per exception (by name: an entry of `exceptions:`, an override's id, or the id of the
    /// rule whose `except` it is): events it held back since start, those of the rules loaded.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub held_back: std::collections::BTreeMap<String, u64>,
    /// An action failing right now (reading is paused until it succeeds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_failure: Option<ActionFailure>,
    /// Per configured source: what it read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<SourceStatus>,
    /// Per action with a queue (the XDR outbox): what waits, and its counters (delivered,
    /// failed, retries...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<ActionStatus>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SourceStatus {
    pub name: String,
    pub lines: u64,
    pub unparsed: u64,
    /// When its last event arrived (RFC 3339); absent before the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_event_at: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ActionStatus {
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued: Option<u64>,
    #[serde(default)]
    pub counters: std::collections::BTreeMap<String, u64>,
}

/// An action that keeps failing (disk full, ...), while the daemon retries it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionFailure {
    pub action: String,
    pub error: String,
    /// Failing since (RFC 3339).
    pub since: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Reload {
    pub at: String,
    pub ok: bool,
    /// Rules whose threshold/suppression state was kept.
    pub state_kept: usize,
    /// Problems that kept the previous rule set running (file:line:col: ...).
    pub errors: Vec<String>,
}

impl Status {
    /// Writes the status atomically (temporary file, rename), so readers never see half of it.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        // Not fsynced: the status is a view for operators, rewritten every few seconds.
        crate::state::write_atomic(&dir.join(FILE), &bytes, false)
    }
}

/// Records `failure` (or its end) in the status file in `dir`, keeping everything else: the
/// daemon's own refresh is paused while an action is retried, and an operator running
/// `trapline status` must still see why nothing moves.
pub fn set_action_failure(dir: &Path, failure: Option<ActionFailure>) -> std::io::Result<()> {
    let mut status: Status = std::fs::read(dir.join(FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| Status { pid: std::process::id(), ..Status::default() });
    status.action_failure = failure;
    status.updated_at = now();
    status.write(dir)
}

pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
