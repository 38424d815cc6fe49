//! The status of a running `trapline run`, as a file in the state directory, and
//! `trapline status` to read it: which rules are loaded, whether the last reload worked (and
//! if not, why, with file:line:col), and the counters.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use serde::{Deserialize, Serialize};

use crate::config;

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
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join(format!(".{FILE}.tmp"));
        std::fs::write(&tmp, serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?)?;
        std::fs::rename(tmp, dir.join(FILE))
    }
}

pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Config file (default: ./trapline.yml, the user's, /etc/trapline/trapline.yml, else the built-in one).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Print the raw JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn status(a: StatusArgs) -> Result<i32> {
    let path = a.config.unwrap_or_else(super::default_config);
    let cfg = config::Loaded::from_file(&path)?;
    let file = cfg.resolve(&cfg.config.state_dir).join(FILE);
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("no status at {} (is trapline run running with this config?)", file.display()))?;
    if a.json {
        print!("{text}");
        return Ok(0);
    }
    let s: Status = serde_json::from_str(&text).with_context(|| format!("cannot read {}", file.display()))?;
    println!("pid {} since {} (updated {})", s.pid, s.started_at, s.updated_at);
    println!("rules: {} loaded at {}", s.rules, s.rules_loaded_at);
    println!("lines: {} ({} unparsed), detections written: {}", s.lines, s.unparsed, s.detections_written);
    match &s.last_reload {
        None => println!("last reload: none"),
        Some(r) if r.ok => println!("last reload: {} ok ({} rules kept their state)", r.at, r.state_kept),
        Some(r) => {
            println!("last reload: {} FAILED, previous rules still running:", r.at);
            for e in &r.errors {
                println!("  {e}");
            }
        }
    }
    Ok(if s.last_reload.as_ref().is_some_and(|r| !r.ok) { 1 } else { 0 })
}
