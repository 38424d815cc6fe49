//! `trapline status`: reads the status file a running `trapline run` keeps in its state
//! directory ([`crate::daemon::status`]), and checks that its process is still trapline.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use crate::action::console::escape;
use crate::config;

pub use crate::daemon::status::{FILE, Status};

/// Exit code of `trapline status` when the daemon that wrote the status is not running.
pub const EXIT_NOT_RUNNING: i32 = 3;

/// True when `pid` is a live `trapline run`. A status file outlives its daemon (crash,
/// `kill -9`), and the system may since have given its pid to another program, so a live pid
/// alone proves nothing: the process must also be trapline's daemon, and not this process.
pub fn is_running_trapline(pid: u32) -> bool {
    if pid == 0 || pid == std::process::id() {
        return false;
    }
    process_is_trapline_run(pid)
}

#[cfg(target_os = "linux")]
fn process_is_trapline_run(pid: u32) -> bool {
    // argv as the process sees it: NUL-separated. A zombie (exited, not yet reaped) has an
    // empty one and is therefore not running.
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { return false };
    let mut args = cmdline.split(|&b| b == 0).filter(|a| !a.is_empty());
    let Some(argv0) = args.next() else { return false };
    // The executable's name, from /proc/<pid>/exe when readable (same user), else argv[0].
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
    let named_trapline = |name: &[u8]| name.starts_with(b"trapline");
    let exe_ok = match &exe {
        Some(p) => p.file_name().is_some_and(|n| named_trapline(n.as_encoded_bytes())),
        None => false,
    };
    let argv0_ok = named_trapline(argv0.rsplit(|&b| b == b'/').next().unwrap_or(argv0));
    (exe_ok || argv0_ok) && args.any(|a| a == b"run")
}

#[cfg(all(unix, not(target_os = "linux")))]
fn process_is_trapline_run(pid: u32) -> bool {
    // Without /proc, only liveness can be checked: signal 0 tests for existence.
    let Ok(pid) = libc::pid_t::try_from(pid) else { return false };
    // SAFETY: kill(2) with signal 0 sends nothing and has no memory-safety requirements.
    unsafe { libc::kill(pid, 0) == 0 }
}

#[cfg(not(unix))]
fn process_is_trapline_run(_pid: u32) -> bool {
    false
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
    let s: Status = serde_json::from_str(&text).with_context(|| format!("cannot read {}", file.display()))?;
    let running = is_running_trapline(s.pid);
    if a.json {
        print!("{text}");
        return Ok(if running { 0 } else { EXIT_NOT_RUNNING });
    }
    if !running {
        println!("not running: last run pid {} ended; last update at {}", s.pid, s.updated_at);
        return Ok(EXIT_NOT_RUNNING);
    }
    println!("pid {} since {} (updated {})", s.pid, s.started_at, s.updated_at);
    println!("rules: {} loaded at {}", s.rules, s.rules_loaded_at);
    println!("lines: {} ({} unparsed), detections written: {}", s.lines, s.unparsed, s.detections_written);
    for src in &s.sources {
        println!(
            "  source {}: {} lines ({} unparsed), last at {}",
            escape(&src.name),
            src.lines,
            src.unparsed,
            src.last_event_at.as_deref().unwrap_or("-")
        );
    }
    for a in &s.actions {
        let counters: Vec<String> = a.counters.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let queued = a.queued.map(|q| format!("{q} queued; ")).unwrap_or_default();
        println!("  action {}: {queued}{}", escape(&a.action), counters.join(", "));
    }
    if !s.held_back.is_empty() {
        let held: Vec<String> = s.held_back.iter().map(|(n, c)| format!("{} {c}", escape(n))).collect();
        println!("held back by exceptions: {}", held.join(", "));
    }
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
    if let Some(f) = &s.action_failure {
        println!(
            "action {} FAILING since {}, reading paused, retrying: {}",
            escape(&f.action),
            f.since,
            escape(&f.error)
        );
    }
    Ok(if s.last_reload.as_ref().is_some_and(|r| !r.ok) || s.action_failure.is_some() { 1 } else { 0 })
}
