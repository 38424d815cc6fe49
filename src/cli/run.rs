//! `trapline run`: tail the configured sources and fire actions until told to stop.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;

use super::reload::Reloader;
use super::setup::{self, Setup};
use super::status::{self, Status};
use crate::action::Action;
use crate::action::console::Console;
use crate::action::log::LogAction;
use crate::config;
use crate::engine::{Detection, Detector, Scratch, SourceInfo};
use crate::source::LinePos;
use crate::source::tail::{FileInfo, LineSink, StartAt, TailConfig, TailSource, Tailer};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Config file (default: ./trapline.yml, else the shipped one).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
}

pub fn run(a: RunArgs) -> Result<i32> {
    let path = match a.config.or_else(super::default_config) {
        Some(p) => p,
        None => bail!("no config: pass --config FILE or create ./trapline.yml"),
    };
    let cfg = config::Loaded::from_file(&path)?;
    let c = &cfg.config;
    if c.sources.is_empty() {
        bail!("{}: no sources configured", path.display());
    }
    // Before anything reads or writes state (checkpoints, outbox): a second instance on the
    // same state would double every detection. Held until `run` returns or the process dies.
    let _lock = crate::state::StateLock::acquire(&cfg.resolve(&c.state_dir))?;
    let rule_paths: Vec<PathBuf> = c.rules.iter().map(|r| cfg.resolve(r)).collect();
    let setup = setup::build(Some(&cfg), &rule_paths, &[])?;
    let tail = TailConfig {
        sources: c
            .sources
            .iter()
            .map(|s| TailSource {
                name: s.name.clone(),
                patterns: s.paths.iter().map(|p| cfg.resolve_pattern(p)).collect(),
                start: match s.start {
                    config::Start::End => StartAt::End,
                    config::Start::Beginning => StartAt::Beginning,
                },
            })
            .collect(),
        state_dir: cfg.resolve(&c.state_dir),
        max_line_bytes: c.max_line_bytes,
        ..TailConfig::default()
    };
    let mut tailer = Tailer::new(tail)?;
    let log_path = cfg.resolve(&c.actions.log.path);
    let log = LogAction::open(&log_path, c.actions.log.format, tailer.sink_mark())?;
    let extra: Vec<Box<dyn Action>> = crate::action::xdr::extra_actions(&cfg, &setup.rules)?;
    let (lits, always) = setup.rules.prefilter_stats();
    tracing::info!(
        config = %path.display(),
        rules = setup.rules.rules.len(),
        literals = lits,
        unfiltered_rules = always,
        output = %log_path.display(),
        "trapline running; Ctrl-C to stop"
    );
    for s in &c.sources {
        tracing::info!(source = %s.name, format = %s.format, paths = ?s.paths, "watching");
    }
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).context("cannot install signal handler")?;
    }
    let mut watched = rule_paths.clone();
    watched.push(cfg.resolve(&c.templates));
    let reload = Reload { reloader: Reloader::new(&watched), cfg: cfg.clone(), rule_paths };
    let mut sink =
        Pipeline::new(setup, log, extra, c.actions.log.console.then(Console::for_stdout), c.max_keys, reload);
    let ran = tailer.run(&mut sink, &stop);
    let flushed = sink.flush();
    for a in &mut sink.actions {
        a.shutdown();
    }
    sink.summary();
    sink.write_status();
    ran?;
    flushed?;
    if stop.load(Ordering::Relaxed) {
        tracing::info!("stopped");
    }
    Ok(0)
}

/// The per-line path of `run`: match, apply thresholds, fire actions.
struct Pipeline {
    setup: Setup,
    detector: Detector,
    scratch: Scratch,
    log: LogAction,
    /// Every other configured action.
    actions: Vec<Box<dyn Action>>,
    console: Option<Console>,
    out: Vec<Detection>,
    infos: Vec<(PathBuf, SourceInfo)>,
    lines: u64,
    unparsed: u64,
    errors: u64,
    max_keys: usize,
    reload: Reload,
    status: Status,
    status_dir: PathBuf,
    status_written: Instant,
}

/// What a reload needs: where the rules are and how to build them.
struct Reload {
    reloader: Reloader,
    cfg: config::Loaded,
    rule_paths: Vec<PathBuf>,
}

/// How often the status file is refreshed while running.
const STATUS_EVERY: Duration = Duration::from_secs(5);

impl Pipeline {
    fn new(
        setup: Setup,
        log: LogAction,
        actions: Vec<Box<dyn Action>>,
        console: Option<Console>,
        max_keys: usize,
        reload: Reload,
    ) -> Pipeline {
        let detector = Detector::new(Arc::clone(&setup.rules), max_keys);
        let scratch = setup.rules.scratch();
        let now = status::now();
        let status = Status {
            pid: std::process::id(),
            started_at: now.clone(),
            rules: setup.rules.rules.len(),
            rules_loaded_at: now,
            ..Status::default()
        };
        let status_dir = reload.cfg.resolve(&reload.cfg.config.state_dir);
        let mut p = Pipeline {
            setup,
            detector,
            scratch,
            log,
            actions,
            console,
            out: Vec::new(),
            infos: Vec::new(),
            lines: 0,
            unparsed: 0,
            errors: 0,
            max_keys,
            reload,
            status,
            status_dir,
            status_written: Instant::now(),
        };
        p.write_status();
        p
    }

    /// Rebuilds the complete rule set and swaps it in, or keeps the running one (and says
    /// why, with file:line:col) when anything is invalid. Runs between two lines, so every
    /// line is evaluated entirely by the old set or entirely by the new one.
    fn reload(&mut self) {
        let r = &self.reload;
        let result = setup::build(Some(&r.cfg), &r.rule_paths, &[]);
        let mut report = status::Reload { at: status::now(), ..Default::default() };
        match result {
            Ok(new) => {
                let mut errors = Vec::new();
                for a in &mut self.actions {
                    if let Err(e) = a.reload() {
                        errors.push(format!("action {}: {e:#}", a.name()));
                    }
                }
                let mut detector = Detector::new(Arc::clone(&new.rules), self.max_keys);
                let old = std::mem::replace(&mut self.detector, Detector::new(Arc::clone(&new.rules), 1));
                report.state_kept = detector.carry_over(old);
                self.detector = detector;
                self.scratch = new.rules.scratch();
                self.status.rules = new.rules.rules.len();
                self.status.rules_loaded_at = report.at.clone();
                self.setup = new;
                self.infos.clear();
                report.ok = errors.is_empty();
                report.errors = errors;
                tracing::info!(rules = self.status.rules, state_kept = report.state_kept, "rules reloaded");
            }
            Err(e) => {
                report.errors = format!("{e:#}").lines().map(str::to_string).collect();
                for line in &report.errors {
                    tracing::error!("reload rejected, previous rules keep running: {line}");
                }
            }
        }
        self.status.last_reload = Some(report);
        self.write_status();
    }

    fn write_status(&mut self) {
        self.status.updated_at = status::now();
        self.status.lines = self.lines;
        self.status.unparsed = self.unparsed;
        self.status.detections_written = self.log.written;
        if let Err(e) = self.status.write(&self.status_dir) {
            tracing::warn!(error = %e, "cannot write status file");
        }
        self.status_written = Instant::now();
    }

    fn info(&mut self, file: &FileInfo) -> SourceInfo {
        if let Some((_, i)) =
            self.infos.iter().find(|(p, i)| *p == file.path && i.name == self.setup.sources[file.source].name)
        {
            return i.clone();
        }
        let i = self.setup.sources[file.source].info(&file.path.display().to_string());
        self.infos.push((file.path.clone(), i.clone()));
        i
    }

    fn summary(&self) {
        let rules = &self.setup.rules;
        for (r, st) in rules.rules.iter().zip(&self.detector.stats) {
            if st.hits > 0 {
                tracing::info!(rule = %r.id, hits = st.hits, detections = st.detections, suppressed = st.suppressed, "rule summary");
            }
        }
        tracing::info!(
            lines = self.lines,
            unparsed = self.unparsed,
            written = self.log.written,
            replay_skipped = self.log.skipped,
            write_errors = self.errors,
            "summary"
        );
    }
}

impl LineSink for Pipeline {
    fn line(&mut self, file: &FileInfo, line: &[u8], pos: LinePos) {
        self.lines += 1;
        let src = &self.setup.sources[file.source];
        if !self.setup.rules.match_line(&src.parser, &src.applicable, line, &mut self.scratch) {
            self.unparsed += 1;
        }
        if self.scratch.hits.is_empty() {
            return;
        }
        let info = self.info(file);
        let src = &self.setup.sources[file.source];
        self.detector.on_hits(&src.parser, &info, &pos, line, &self.scratch.record, &self.scratch.hits, &mut self.out);
        for d in self.out.drain(..) {
            if let Some(c) = &self.console {
                c.print(&d);
            }
            for name in &d.actions {
                let result = if name == "log" {
                    self.log.write(&d)
                } else if let Some(a) = self.actions.iter_mut().find(|a| a.name() == name) {
                    a.fire(&d)
                } else {
                    Ok(())
                };
                if let Err(e) = result {
                    // Keep tailing: the detection is still on the console, and the error is loud.
                    self.errors += 1;
                    tracing::error!(action = %name, rule = %d.rule.id, error = %e, "action failed");
                }
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<u64> {
        for a in &mut self.actions {
            a.flush()?;
        }
        self.log.flush()
    }

    fn tick(&mut self) {
        if self.reload.reloader.due() {
            self.reload();
        } else if self.status_written.elapsed() >= STATUS_EVERY {
            self.write_status();
        }
    }
}
