//! `trapline history`: the detections a `trapline run` recorded, filtered, newest first.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;

use crate::action::console::escape;
use crate::config;
use crate::history::{Query, Reader};

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Only detections of this client address.
    #[arg(long)]
    pub ip: Option<String>,
    /// Only detections of this rule id.
    #[arg(long)]
    pub rule: Option<String>,
    /// Only detections of the last DURATION (event time), e.g. `1h`, `7d`.
    #[arg(long, value_name = "DURATION")]
    pub since: Option<String>,
    /// At most this many detections.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// One JSON object per line (as in the log output) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Config file (default: ./trapline.yml, the user's, /etc/trapline/trapline.yml).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
}

pub fn history(a: HistoryArgs) -> Result<i32> {
    let path = a.config.unwrap_or_else(super::default_config);
    let cfg = config::Loaded::from_file(&path)?;
    let since_ms = match &a.since {
        Some(s) => match humantime::parse_duration(s) {
            Ok(d) => Some(chrono::Utc::now().timestamp_millis() - d.as_millis() as i64),
            Err(e) => bail!("--since {s:?}: {e} (write e.g. 30m, 1h, 7d)"),
        },
        None => None,
    };
    let reader = Reader::open(&cfg.resolve(&cfg.config.state_dir))?;
    let rows = reader.detections(&Query { ip: a.ip, rule: a.rule, key: None, since_ms, limit: a.limit })?;
    for d in &rows {
        if a.json {
            println!("{d}");
            continue;
        }
        let s = |v: &serde_json::Value| escape(v.as_str().unwrap_or("-"));
        println!(
            "{}  {:<8}  {:<36}  {:<15}  {}",
            s(&d["event_time"]),
            s(&d["rule"]["severity"]),
            s(&d["rule"]["id"]),
            s(&d["fields"]["client_ip"]),
            s(&d["fields"]["path"]),
        );
    }
    eprintln!("{} detection(s)", rows.len());
    Ok(0)
}
