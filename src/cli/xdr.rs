//! `trapline xdr sandbox|check|purge` and `trapline render`.
//!
//! - `xdr sandbox`: the local stand-in of the XDR endpoints ([`crate::sandbox::xdr`]).
//! - `xdr check`: credentials and connectivity (a token, then a harmless count).
//! - `xdr purge`: removes what trapline created, found by `source` and external-id prefix;
//!   a dry run that counts unless `--yes`.
//! - `render`: the exact bundle a line would produce, for template work.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};

use crate::action::xdr::client::Client;
use crate::action::xdr::limiter::Budget;
use crate::action::xdr::settings::Settings;
use crate::action::xdr::{ACTION_NAME, Composer};
use crate::config;
use crate::engine::Detection;
use crate::event::{Event, Origin};
use crate::pipeline::Pipeline;
use crate::sandbox::xdr as sandbox;
use crate::state::{LockError, StateLock};

#[derive(Debug, Args)]
pub struct XdrArgs {
    #[command(subcommand)]
    pub command: XdrCommand,
}

#[derive(Debug, Subcommand)]
pub enum XdrCommand {
    /// Run a local stand-in of the XDR endpoints trapline uses (token, bundle import, search, delete).
    Sandbox(SandboxArgs),
    /// Check credentials and connectivity: get a token, then count trapline's incidents.
    Check(ConfigArg),
    /// Remove the incidents, sightings, relationships and judgements trapline created (dry run unless --yes).
    Purge(PurgeArgs),
    /// List the detections XDR refused for good (state/xdr/failed/), with the reason; --requeue
    /// puts them back in the outbox (and tells a running trapline to deliver them now).
    Failed(FailedArgs),
}

#[derive(Debug, Args)]
pub struct FailedArgs {
    /// Config file (default: ./trapline.yml, the user's, /etc/trapline/trapline.yml, else the built-in one).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Move them back to the outbox for delivery (after fixing the cause: templates, TLP, ...).
    #[arg(long)]
    pub requeue: bool,
}

#[derive(Debug, Args)]
pub struct ConfigArg {
    /// Config file (default: ./trapline.yml, the user's, /etc/trapline/trapline.yml, else the built-in one).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SandboxArgs {
    /// Address to listen on (port 0: any free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:9099")]
    pub listen: String,
    /// Lifetime of issued tokens (e.g. 10m, 5s).
    #[arg(long, default_value = "10m")]
    pub token_ttl: String,
    /// Minimum TLP accepted (CTIA's default: green).
    #[arg(long, default_value = "green")]
    pub min_tlp: String,
    /// Most entities per bundle.
    #[arg(long, default_value_t = 2000)]
    pub max_size: usize,
    /// Only accept this client id (default: any).
    #[arg(long)]
    pub client_id: Option<String>,
    /// Only accept this client secret (default: any).
    #[arg(long)]
    pub client_secret: Option<String>,
    /// Keep accepted entities in this JSON file (reloaded on start).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Scopes granted to tokens, space-separated (`private-intel` grants everything trapline
    /// uses; e.g. `private-intel:write` alone cannot PATCH incidents).
    #[arg(long, default_value = "private-intel")]
    pub scope: String,
}

#[derive(Debug, Args)]
pub struct PurgeArgs {
    /// Config file (default: ./trapline.yml, the user's, /etc/trapline/trapline.yml, else the built-in one).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Really delete (without it: count what would be deleted).
    #[arg(long)]
    pub yes: bool,
}

#[derive(Debug, Args)]
pub struct RenderArgs {
    /// Config file (default: ./trapline.yml, the user's, /etc/trapline/trapline.yml, else the built-in one).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Rule id.
    #[arg(long)]
    pub rule: String,
    /// The log line.
    #[arg(long, required_unless_present = "file", conflicts_with = "file")]
    pub line: Option<String>,
    /// A log file (`-` for standard input) run through the rules as `trapline run` would
    /// (thresholds and sequences on event time): the bundle of the rule's first detection in
    /// it, aggregated with the detections before it. For threshold and sequence rules.
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Configured source whose format parses the line (default: the first one the rule applies to).
    #[arg(long)]
    pub source: Option<String>,
}

pub fn xdr(a: XdrArgs) -> Result<i32> {
    match a.command {
        XdrCommand::Sandbox(s) => run_sandbox(s),
        XdrCommand::Check(c) => check(c),
        XdrCommand::Purge(p) => purge(p),
        XdrCommand::Failed(f) => failed(f),
    }
}

fn load(config: Option<PathBuf>) -> Result<(config::Loaded, Settings)> {
    let path = config.unwrap_or_else(super::default_config);
    let cfg = config::Loaded::from_file(&path)?;
    let s = Settings::from_config(&cfg)?.ok_or_else(|| anyhow!("{}: actions.xdr is not configured", path.display()))?;
    Ok((cfg, s))
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start the async runtime")
}

fn client(s: &Settings) -> Client {
    Client::new(
        s.endpoints.clone(),
        s.client_id.clone(),
        s.client_secret.clone(),
        &s.prefix,
        s.timeout,
        Budget::per_hour(s.budget_per_hour),
    )
}

fn run_sandbox(a: SandboxArgs) -> Result<i32> {
    let opts = sandbox::Options {
        token_ttl: humantime::parse_duration(&a.token_ttl).map_err(|e| anyhow!("--token-ttl: {e}"))?,
        min_tlp: a.min_tlp,
        max_size: a.max_size,
        client_id: a.client_id,
        client_secret: a.client_secret,
        data: a.data,
        scope: a.scope,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let listener =
            tokio::net::TcpListener::bind(&a.listen).await.with_context(|| format!("cannot listen on {}", a.listen))?;
        let addr = listener.local_addr()?;
        // Tests and scripts read this line to learn the port.
        println!("sandbox listening on http://{addr}");
        use std::io::Write;
        std::io::stdout().flush()?;
        tracing::info!(%addr, "XDR sandbox running; Ctrl-C to stop; GET /sandbox/dump shows what it accepted");
        let stop = async {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
            }
        };
        sandbox::serve(listener, opts, stop).await?;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(0)
}

fn check(a: ConfigArg) -> Result<i32> {
    let (_cfg, s) = load(a.config)?;
    let c = client(&s);
    let rt = runtime()?;
    let query = format!("external_ids:{}-*", s.prefix);
    let r = rt.block_on(async {
        c.token(true).await.map_err(|e| anyhow!("token: {e}"))?;
        println!("token: ok ({})", s.endpoints.token_url());
        let n = c.count("incident", &query, &s.source).await.map_err(|e| anyhow!("search: {e}"))?;
        println!("search: ok ({} incidents with source {:?} on {})", n, s.source, s.endpoints.private_intel);
        Ok::<_, anyhow::Error>(())
    });
    match r {
        Ok(()) => Ok(0),
        Err(e) => {
            eprintln!("trapline: xdr check failed: {e:#}");
            Ok(1)
        }
    }
}

/// Relationships first, so nothing is left pointing at a deleted incident.
const PURGE_ORDER: &[&str] = &["relationship", "sighting", "judgement", "incident"];

fn purge(a: PurgeArgs) -> Result<i32> {
    let (cfg, s) = load(a.config)?;
    // A running trapline's in-memory incident windows and stored ids would outlive the purge:
    // new sightings would point at deleted incidents and the windows file would be written
    // back. Holding the state lock for the whole purge also keeps one from starting meanwhile.
    let _lock = if a.yes {
        match StateLock::acquire(&cfg.resolve(&cfg.config.state_dir)) {
            Ok(lock) => Some(lock),
            Err(LockError::Held { pid, .. }) => {
                let who = pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
                bail!("trapline{who} is running with this state directory; stop it, then purge");
            }
            Err(e) => return Err(e.into()),
        }
    } else {
        None
    };
    let c = client(&s);
    let rt = runtime()?;
    let query = format!("external_ids:{}-*", s.prefix);
    rt.block_on(async {
        for ty in PURGE_ORDER {
            let n = c.count(ty, &query, &s.source).await.map_err(|e| anyhow!("counting {ty}s: {e}"))?;
            if !a.yes {
                println!("{ty}s: {n} would be deleted");
                continue;
            }
            // Always take the first page again: deleting shifts later pages, so paging by
            // offset while deleting (the old script's way) skips entities.
            let mut deleted = 0u64;
            loop {
                let page = c.search(ty, &query, &s.source, 100).await.map_err(|e| anyhow!("searching {ty}s: {e}"))?;
                if page.is_empty() {
                    break;
                }
                let before = deleted;
                for e in &page {
                    if let Some(id) = e.get("id").and_then(|v| v.as_str()) {
                        c.delete(ty, id).await.map_err(|e| anyhow!("deleting {ty} {id}: {e}"))?;
                        deleted += 1;
                    }
                }
                if deleted == before {
                    bail!("search keeps returning {ty}s without ids; stopping");
                }
            }
            println!("{ty}s: {deleted} deleted");
        }
        Ok::<_, anyhow::Error>(())
    })?;
    if a.yes {
        // Incident windows and stored ids name what was just deleted.
        for f in ["windows.json", "stored.json"] {
            let _ = std::fs::remove_file(s.state_dir.join(f));
        }
        // So are pending incident updates: they would only meet a 404.
        let _ = std::fs::remove_dir_all(s.state_dir.join("patches"));
        println!("local incident state in {} cleared", s.state_dir.display());
    } else {
        println!("dry run: nothing deleted; run with --yes to delete");
    }
    Ok(0)
}

pub fn render(a: RenderArgs) -> Result<i32> {
    let path = a.config.unwrap_or_else(super::default_config);
    let cfg = config::Loaded::from_file(&path)?;
    let settings =
        Settings::from_config(&cfg)?.ok_or_else(|| anyhow!("{}: actions.xdr is not configured", path.display()))?;
    let rule_paths: Vec<PathBuf> = cfg.config.rules.iter().map(|r| cfg.resolve(r)).collect();
    let setup = super::setup::build(Some(&cfg), &rule_paths, &[])?;
    let rules = &setup.rules;
    let idx = rules.rules.iter().position(|r| r.id == a.rule).ok_or_else(|| anyhow!("no rule {:?}", a.rule))?;
    if !rules.rules[idx].actions.iter().any(|x| x == ACTION_NAME) {
        eprintln!("note: rule {:?} does not name the {ACTION_NAME} action; rendering anyway", a.rule);
    }
    let candidates: Vec<usize> = match &a.source {
        Some(n) => (0..setup.sources.len()).filter(|&i| &setup.sources[i].name == n).collect(),
        None => (0..setup.sources.len()).filter(|&i| setup.sources[i].applicable.get(idx)).collect(),
    };
    if candidates.is_empty() {
        match &a.source {
            Some(n) => bail!("no configured source {n:?}"),
            None => bail!("rule {:?} applies to no configured source", a.rule),
        }
    }
    let shapes = crate::action::xdr::shapes(rules);
    let infos: Vec<_> = setup.sources.iter().map(|s| s.info("(render)")).collect();
    let is_threshold = rules.rules[idx].threshold.is_some() || rules.rules[idx].sequence.is_some();
    let data = match (&a.line, &a.file) {
        (Some(line), _) => line.trim_end_matches(['\r', '\n']).as_bytes().to_vec(),
        (None, Some(file)) => read_all(file)?,
        (None, None) => bail!("--line or --file is required"),
    };
    let mut setup = Some(setup);
    for i in candidates {
        // A fresh pipeline and composer per source: threshold windows and incidents of one
        // attempt do not leak into the next.
        let setup = match setup.take() {
            Some(s) => s,
            None => super::setup::build(Some(&cfg), &rule_paths, &[])?,
        };
        let mut pipeline = Pipeline::new(setup, crate::engine::DEFAULT_MAX_KEYS);
        let mut composer = Composer::new(Arc::new(settings.clone()), false, shapes.clone())?;
        let mut found = None;
        let mut offset = 0u64;
        for (n, line) in data.split(|&b| b == b'\n').enumerate() {
            let origin = Origin::Line { content: 0, offset, line_number: n as u64 + 1 };
            offset += line.len() as u64 + 1;
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                continue;
            }
            let ev = Event::line(line, origin, chrono::Utc::now(), false);
            let mut err = None;
            pipeline.process(i, &infos[i], &ev, &mut |d: Detection| {
                if found.is_some() || err.is_some() {
                    return Ok(());
                }
                // Incidents aggregate what `run` would send: the detections of rules naming
                // the action, up to and including the rule's own first one.
                let ours = d.rule.id == a.rule || d.also.contains(&a.rule);
                if ours && d.rule.id != a.rule {
                    eprintln!(
                        "note: rule {:?} fired in the detection of {:?} (one detection per class and line), \
                         whose templates render it",
                        a.rule, d.rule.id
                    );
                }
                if ours || d.actions.iter().any(|x| x == ACTION_NAME) {
                    match composer.compose(&d) {
                        Ok((_, bundle)) if ours => found = Some(bundle),
                        Ok(_) => {}
                        Err(e) => err = Some(e),
                    }
                }
                Ok(())
            })?;
            if let Some(e) = err {
                return Err(e);
            }
            if found.is_some() {
                break;
            }
        }
        if let Some(bundle) = found {
            println!("{}", serde_json::to_string_pretty(&bundle)?);
            return Ok(0);
        }
    }
    let why = match (&a.file, is_threshold) {
        (Some(f), _) => format!("no line of {} fires it", f.display()),
        (None, true) => "a threshold or sequence rule does not fire on a single line: give a log that fires it \
                         with --file"
            .to_string(),
        (None, false) => "it does not match this line".to_string(),
    };
    eprintln!("trapline: rule {:?}, in every configured source it applies to: {why}", a.rule);
    Ok(1)
}

/// A whole input (`-`: standard input; `.gz` decompressed), for `render --file`.
fn read_all(path: &std::path::Path) -> Result<Vec<u8>> {
    let mut r =
        crate::source::read::BlockReader::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut all = Vec::new();
    while let Some(b) = r.next_block(1 << 20)? {
        all.extend_from_slice(&b.data);
    }
    Ok(all)
}

/// `trapline xdr failed [--requeue]`. Exit 0; 1 when some `failed/` file cannot be read.
fn failed(a: FailedArgs) -> Result<i32> {
    use crate::action::console::escape;
    use crate::action::xdr::outbox;
    let (cfg, s) = load(a.config)?;
    let list = outbox::failed(&s.state_dir)
        .with_context(|| format!("cannot read {}", s.state_dir.join("failed").display()))?;
    if list.is_empty() {
        println!("no failed XDR deliveries in {}", s.state_dir.join("failed").display());
        return Ok(0);
    }
    let (mut requeued, mut unreadable) = (0usize, 0usize);
    for (path, f) in &list {
        let f = match f {
            Ok(f) => f,
            Err(e) => {
                unreadable += 1;
                println!("unreadable {}: {}", escape(&path.display().to_string()), escape(e));
                continue;
            }
        };
        // Everything here is read back from a file and the reason is the service's text: all
        // of it is escaped before it reaches the terminal.
        println!(
            "{}  {}  queued {}: {}",
            escape(&f.entry.id),
            escape(&f.entry.rule),
            escape(&f.entry.queued_at),
            escape(&f.reason)
        );
        if a.requeue {
            outbox::requeue(&s.state_dir, path, f).with_context(|| format!("cannot requeue {}", path.display()))?;
            requeued += 1;
        }
    }
    if a.requeue {
        match running_trapline(&cfg) {
            Some(pid) if signal_reload(pid) => {
                println!("{requeued} requeued; trapline (pid {pid}) told to deliver them now (SIGHUP)")
            }
            _ => println!("{requeued} requeued; they are delivered when `trapline run` starts"),
        }
    } else {
        println!("{} failed; `trapline xdr failed --requeue` puts them back in the outbox", list.len());
    }
    Ok(i32::from(unreadable > 0))
}

/// The pid of a `trapline run` using this config's state directory, if one is alive.
fn running_trapline(cfg: &crate::config::Loaded) -> Option<u32> {
    let file = cfg.resolve(&cfg.config.state_dir).join(super::status::FILE);
    let status: super::status::Status = serde_json::from_str(&std::fs::read_to_string(file).ok()?).ok()?;
    // A stale status file can name a pid the system has since given to another program.
    super::status::is_running_trapline(status.pid).then_some(status.pid)
}

#[cfg(unix)]
fn signal_reload(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else { return false };
    // SAFETY: kill(2) with a valid signal number has no memory-safety requirements.
    unsafe { libc::kill(pid, libc::SIGHUP) == 0 }
}

#[cfg(not(unix))]
fn signal_reload(_pid: u32) -> bool {
    false
}
