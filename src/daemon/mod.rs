//! **daemon**: `trapline run` — a source → pipeline → actions, until told to stop.
//!
//! The reading thread owns the [`Source`] (the file tailer, or standard input), the
//! [`Pipeline`] and the [`Actions`]; background
//! work (XDR delivery, the HTTP server, the NATS publisher) runs on one tokio
//! runtime; one [`Shutdown`] stops all of it. Between lines the loop reloads rules and
//! templates when they changed (or on SIGHUP), lets actions notice a rotated output, and
//! refreshes the status file.
//!
//! Durability contract: a line's detections are handed to the actions before the next line
//! is read; a transient action failure (disk full) pauses reading and is retried until it
//! clears; checkpoints are written only after every action made its effects durable, and
//! carry the actions' marks, so after a crash a replayed line is recognised and not acted on
//! twice.

pub mod reload;
mod state;
pub mod status;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::action::{Actions, Marks};
use crate::config;
use crate::engine::SourceInfo;
use crate::event::Event;
use crate::pipeline::{Pipeline, setup};
use crate::rollup::Rollups;
use crate::shutdown::Shutdown;
use crate::source::Mark;
use crate::source::stdin::StdinSource;
use crate::source::tail::{StartAt, TailConfig, TailSource, Tailer};
use crate::source::{EventSink, Source, Whence};
use reload::Reloader;
use status::Status;

/// How often the status file is refreshed while running.
const STATUS_EVERY: Duration = Duration::from_secs(5);
/// ... and with the dashboard served, whose health line reads it.
const STATUS_EVERY_SERVED: Duration = Duration::from_secs(1);
/// How often the served metrics take in the counters. `tick` runs at every wake of the
/// tailer — thousands of times a second when lines arrive one write at a time — and a
/// snapshot builds a label per rule: taken at every tick it cost more than serving the
/// dashboard did. Scrapers and the dashboard read at one-second scales.
const METRICS_EVERY: Duration = Duration::from_millis(200);

/// Runs the daemon with the config at `cfg` until `shutdown` is triggered.
pub fn run(cfg: config::Loaded, shutdown: Shutdown) -> Result<()> {
    let c = &cfg.config;
    if c.sources.is_empty() {
        bail!("{}: no sources configured", cfg.path.display());
    }
    // Before anything reads or writes state (checkpoints, outbox): a second instance on the
    // same state would double every detection. Held until `run` returns or the process dies.
    let _lock = crate::state::StateLock::acquire(&cfg.resolve(&c.state_dir))?;
    let rule_paths: Vec<PathBuf> = c.rules.iter().map(|r| cfg.resolve(r)).collect();
    let built = setup::build(Some(&cfg), &rule_paths, &[])?;
    let mut source = open_source(&cfg, &shutdown)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("trapline-rt")
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let marks = marks_of(source.mark());
    // Before anything is hashed: the saved state brings its own hash seed.
    // Only a source with checkpoints (files) can resume where the state was saved; a stream
    // (stdin) starts afresh and must not overwrite a file source's saved state.
    let mut engine_store = source.checkpoints().then(|| state::EngineStore::new(&cfg.resolve(&c.state_dir)));
    let saved = match &mut engine_store {
        Some(store) => store.load(marks.get(state::MARK))?,
        None => None,
    };
    let mut actions = Actions::from_config(&cfg, &built.rules, Some(&marks), runtime.handle(), shutdown.clone())?;
    let status_dir = cfg.resolve(&c.state_dir);
    let mut since = String::new();
    actions.on_failure(Box::new(move |failure| {
        let failure = failure.map(|(action, error)| {
            if since.is_empty() {
                since = status::now();
            }
            status::ActionFailure { action: action.to_string(), error: error.to_string(), since: since.clone() }
        });
        if failure.is_none() {
            since.clear();
        }
        if let Err(e) = status::set_action_failure(&status_dir, failure) {
            tracing::warn!(error = %e, "cannot write status file");
        }
    }));
    let (lits, always) = built.rules.prefilter_stats();
    tracing::info!(
        config = %cfg.path.display(),
        rules = built.rules.rules.len(),
        literals = lits,
        unfiltered_rules = always,
        output = %cfg.resolve(&c.actions.log.path).display(),
        "trapline running; Ctrl-C to stop"
    );
    for s in &c.sources {
        tracing::info!(source = %s.name, format = %s.format_name(), paths = ?s.paths, "watching");
    }
    let mut watched = rule_paths.clone();
    watched.push(cfg.resolve(&c.templates));
    // Templates of single rules may live anywhere: an edit there is reloaded like one in the
    // default directory.
    if let Some(x) = &c.actions.xdr {
        if let Some(t) = &x.templates {
            watched.push(cfg.resolve(t));
        }
        watched.extend(x.rules.values().filter_map(|r| r.templates.as_ref()).map(|t| cfg.resolve(t)));
    }
    watched.sort();
    watched.dedup();
    let reloader = Reloader::new(&watched);
    let mut pipeline = Pipeline::new(built, c.max_keys);
    if let Some(saved) = saved {
        let rules = pipeline.detector_mut().restore(saved);
        tracing::info!(rules, "threshold and suppression state restored");
    }
    let history = match c.history.enabled {
        true => Some(crate::history::History::open(&cfg.resolve(&c.state_dir), &c.history)?),
        false => None,
    };
    let http = crate::http::start(&c.http, &cfg, runtime.handle(), shutdown.clone())?.map(|s| s.shared);
    let mut daemon = Daemon::new(cfg, rule_paths, pipeline, actions, reloader, engine_store);
    daemon.history = history;
    if http.is_some() {
        // What each rule costs, for /metrics and the rule page (about 1 % of matching time).
        daemon.pipeline.profile_rules(64);
    }
    daemon.http = http;
    daemon.publish_rules();
    let ran = source.run(&mut daemon, shutdown.flag());
    shutdown.trigger();
    if ran.is_ok() {
        // What each attacker did during this run, complete (a restart opens new activities).
        daemon.close_rollups();
    }
    let flushed = if ran.is_ok() { daemon.actions.flush().map(|_| ()) } else { Ok(()) };
    daemon.actions.shutdown();
    if let Some(h) = &mut daemon.history {
        h.close();
    }
    daemon.summary();
    daemon.write_status();
    runtime.shutdown_timeout(Duration::from_millis(200));
    ran?;
    flushed?;
    tracing::info!("stopped");
    Ok(())
}

/// The source of `run`: standard input when the one configured source reads `-`, else the
/// file tailer over every configured source.
fn open_source(cfg: &config::Loaded, shutdown: &Shutdown) -> Result<Box<dyn Source>> {
    let c = &cfg.config;
    if c.worker_mode() {
        return Ok(Box::new(crate::source::nats::NatsSource::open(cfg, shutdown.clone())?));
    }
    let web = crate::source::webroot::configured(cfg);
    let logs: Vec<usize> = (0..c.sources.len()).filter(|i| !web.contains(i)).collect();
    if !web.is_empty() {
        let w = crate::source::webroot::WebrootSource::open(cfg, &web)?;
        if logs.is_empty() {
            return Ok(Box::new(w));
        }
        if logs.iter().any(|&i| c.sources[i].paths.iter().any(|p| p == "-")) {
            bail!("{}: standard input cannot be read beside a web root", cfg.path.display());
        }
        let tail = tail_config(cfg, &logs);
        return Ok(Box::new(crate::source::webroot::WithLogs { logs: Tailer::new(tail)?, web: w }));
    }
    let stdin: Vec<usize> = (0..c.sources.len()).filter(|&i| c.sources[i].paths.iter().any(|p| p == "-")).collect();
    if let Some(&i) = stdin.first() {
        if c.sources.len() > 1 || c.sources[i].paths.len() > 1 {
            bail!(
                "{}: standard input (`-`) must be the only path of the only source: a stream cannot be read beside files",
                cfg.position(&format!("sources[{i}].paths"))
            );
        }
        return Ok(Box::new(StdinSource::new(i, c.max_line_bytes)));
    }
    Ok(Box::new(Tailer::new(tail_config(cfg, &(0..c.sources.len()).collect::<Vec<_>>()))?))
}

/// The tailer's settings for the log sources `indices`. The others stay in the list without
/// paths, so that the tailer's source indices are the config's.
fn tail_config(cfg: &config::Loaded, indices: &[usize]) -> TailConfig {
    let c = &cfg.config;
    TailConfig {
        sources: c
            .sources
            .iter()
            .enumerate()
            .map(|(i, s)| TailSource {
                name: s.name.clone(),
                patterns: if indices.contains(&i) {
                    s.paths.iter().map(|p| cfg.resolve_pattern(p)).collect()
                } else {
                    Vec::new()
                },
                start: match s.start {
                    config::Start::End => StartAt::End,
                    config::Start::Beginning => StartAt::Beginning,
                },
            })
            .collect(),
        state_dir: cfg.resolve(&c.state_dir),
        max_line_bytes: c.max_line_bytes,
        ..TailConfig::default()
    }
}

/// The actions' marks from a checkpoint. Earlier versions stored the log output's length
/// alone.
fn marks_of(mark: Option<&Mark>) -> Marks {
    match mark {
        Some(Mark::Object(m)) => m.clone(),
        Some(v @ Mark::Number(_)) => Marks::from_iter([(crate::action::log::NAME.to_string(), v.clone())]),
        _ => Marks::new(),
    }
}

/// A file's modification time (RFC 3339), when it is a file on disk.
fn modified(path: &str) -> Option<String> {
    let t = std::fs::metadata(path).ok()?.modified().ok()?;
    Some(chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

/// The per-line path of `run`: the pipeline, the actions, reloads and status.
struct Daemon {
    cfg: config::Loaded,
    rule_paths: Vec<PathBuf>,
    pipeline: Pipeline,
    actions: Actions,
    /// Source descriptions by (source index, path), built once per file.
    infos: Vec<(usize, PathBuf, SourceInfo)>,
    reloader: Reloader,
    /// Saves the threshold and suppression state with each checkpoint (sources with checkpoints).
    engine_store: Option<state::EngineStore>,
    /// Attackers' activities, and the records they emit.
    rollups: Rollups,
    records: Vec<crate::rollup::Rollup>,
    status: Status,
    status_dir: PathBuf,
    status_written: Instant,
    /// When the served metrics last took in the counters ([`METRICS_EVERY`]).
    metrics_updated: Option<Instant>,
    /// Every detection, for `trapline history` and the dashboard (written off this thread).
    history: Option<crate::history::History>,
    /// The HTTP server's side: live feed and metrics.
    http: Option<std::sync::Arc<crate::http::Shared>>,
    /// Events read per source, and of those not recognised by the format.
    per_source: Vec<(u64, u64)>,
    /// When each source's last event arrived.
    last_event: Vec<Option<chrono::DateTime<chrono::Utc>>>,
    /// Reloads that worked, and that were rejected.
    reloads: (u64, u64),
    /// Sources' measurements of themselves: (source, what) → value.
    measures: std::collections::BTreeMap<(usize, &'static str), f64>,
    /// Per rule id: the fingerprint of what it matches, and since when (the rule pages).
    rule_changes: std::collections::HashMap<String, (u64, String)>,
    /// With the `nats` output: the record each line is parsed into for its partition key and
    /// event time (the pipeline parses only lines some rule may match), and the key's field.
    publish: Option<(crate::parse::Record, Option<crate::parse::FieldId>)>,
    /// Worker mode: the windows of each partition this worker holds, but the one in use
    /// (which is the pipeline's detector), and which that is.
    lanes: std::collections::HashMap<u32, crate::engine::Detector>,
    lane: Option<u32>,
    /// Worker mode: events step the windows only (a replay after a takeover).
    replaying: bool,
    /// Worker mode: what each detection passes before any action.
    gate: Option<crate::source::DetectionGate>,
}

impl Daemon {
    fn new(
        cfg: config::Loaded,
        rule_paths: Vec<PathBuf>,
        pipeline: Pipeline,
        actions: Actions,
        reloader: Reloader,
        engine_store: Option<state::EngineStore>,
    ) -> Daemon {
        let now = status::now();
        let status = Status {
            pid: std::process::id(),
            started_at: now.clone(),
            rules: pipeline.rules().rules.len(),
            rules_loaded_at: now,
            ..Status::default()
        };
        let status_dir = cfg.resolve(&cfg.config.state_dir);
        let rollups = Rollups::new(cfg.config.alerts.clone(), cfg.config.max_keys);
        let mut d = Daemon {
            cfg,
            rule_paths,
            pipeline,
            actions,
            infos: Vec::new(),
            reloader,
            engine_store,
            rollups,
            records: Vec::new(),
            status,
            status_dir,
            status_written: Instant::now(),
            metrics_updated: None,
            history: None,
            http: None,
            per_source: Vec::new(),
            last_event: Vec::new(),
            reloads: (0, 0),
            measures: Default::default(),
            rule_changes: Default::default(),
            publish: None,
            lanes: Default::default(),
            lane: None,
            replaying: false,
            gate: None,
        };
        d.publish_key();
        d.write_status();
        d
    }

    /// Rebuilds the complete rule set and swaps it in, or keeps the running one (and says
    /// why, with file:line:col) when anything is invalid. Runs between two lines, so every
    /// line is evaluated entirely by the old set or entirely by the new one.
    fn reload(&mut self) {
        let result = setup::build(Some(&self.cfg), &self.rule_paths, &[]);
        let mut report = status::Reload { at: status::now(), ..Default::default() };
        match result {
            Ok(new) => {
                let errors = self.actions.reload(&new.rules);
                report.state_kept = self.pipeline.replace(new);
                // The parked lanes keep their windows the same way as the one in use.
                for d in self.lanes.values_mut() {
                    let mut fresh =
                        crate::engine::Detector::new(Arc::clone(self.pipeline.rules()), self.cfg.config.max_keys);
                    fresh.carry_over(std::mem::replace(
                        d,
                        crate::engine::Detector::new(Arc::clone(self.pipeline.rules()), 1),
                    ));
                    *d = fresh;
                }
                if let Some(store) = &mut self.engine_store {
                    store.invalidate();
                }
                self.status.rules = self.pipeline.rules().rules.len();
                self.status.rules_loaded_at = report.at.clone();
                self.infos.clear();
                self.publish_key();
                report.ok = errors.is_empty();
                report.errors = errors;
                report.rules_reloaded = true;
                self.reloads.0 += 1;
                self.publish_rules();
                tracing::info!(rules = self.status.rules, state_kept = report.state_kept, "rules reloaded");
            }
            Err(e) => {
                self.reloads.1 += 1;
                report.errors = format!("{e:#}").lines().map(str::to_string).collect();
                for line in &report.errors {
                    tracing::error!("reload rejected, previous rules keep running: {line}");
                }
            }
        }
        self.status.last_reload = Some(report);
        self.write_status();
    }

    /// Looks up the `nats` output's partition field in the rules loaded now (a reload may
    /// number custom fields anew).
    fn publish_key(&mut self) {
        let Some(n) = self.actions.events() else { return };
        let registry = &self.pipeline.rules().registry;
        let id = registry.get(&n.partition_by);
        if id.is_none() {
            tracing::warn!(field = %n.partition_by, "nats.partition_by names no field of any format: every event goes to partition 0");
        }
        self.publish = Some((crate::parse::Record::new(registry.len()), id));
    }

    /// Hands the rules loaded now to the HTTP server's rule pages, noting which changed.
    fn publish_rules(&mut self) {
        let Some(http) = &self.http else { return };
        let rules = self.pipeline.rules();
        let first = self.rule_changes.is_empty();
        let now = status::now();
        let field = |id: &crate::parse::FieldId| rules.registry.name(*id).to_string();
        let mut docs: Vec<crate::http::RuleDoc> = Vec::new();
        for r in &rules.rules {
            if docs.last().is_some_and(|d| d.id == r.id) {
                continue; // a later step of a sequence
            }
            let changed_at = match self.rule_changes.get(&r.id) {
                Some((fp, at)) if *fp == r.fingerprint => at.clone(),
                _ => {
                    let at = if first { modified(&r.origin).unwrap_or_else(|| now.clone()) } else { now.clone() };
                    self.rule_changes.insert(r.id.clone(), (r.fingerprint, at.clone()));
                    at
                }
            };
            let by = |g: &[crate::parse::FieldId]| {
                if g.is_empty() {
                    String::new()
                } else {
                    format!(" by {}", g.iter().map(field).collect::<Vec<_>>().join(", "))
                }
            };
            docs.push(crate::http::RuleDoc {
                id: r.id.clone(),
                title: r.title.clone(),
                description: r.description.clone(),
                severity: r.severity,
                class: r.class.clone(),
                tags: r.tags.clone(),
                enabled: r.enabled,
                file: r.origin.clone(),
                kind: if r.sequence.is_some() {
                    "sequence"
                } else if r.threshold.is_some() {
                    "threshold"
                } else {
                    "match"
                },
                threshold: r.threshold.as_ref().map(|t| {
                    let distinct = t.distinct.as_ref().map(|d| format!(" (distinct {})", field(d))).unwrap_or_default();
                    format!("{} within {}{}{distinct}", t.count, humantime::format_duration(t.window), by(&t.group_by))
                }),
                suppress: r
                    .suppress
                    .as_ref()
                    .map(|s| format!("{}{}", humantime::format_duration(s.duration), by(&s.group_by))),
                actions: r.actions.clone(),
                changed_at,
            });
        }
        http.set_rules(docs);
    }

    fn write_status(&mut self) {
        self.status.updated_at = status::now();
        self.status.lines = self.pipeline.counts.events;
        self.status.unparsed = self.pipeline.counts.unparsed;
        self.status.detections_written = self.pipeline.counts.detections;
        let names = self.pipeline.sources();
        self.status.sources = names
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let (lines, unparsed) = self.per_source.get(i).copied().unwrap_or_default();
                status::SourceStatus {
                    name: s.name.clone(),
                    lines,
                    unparsed,
                    last_event_at: self
                        .last_event
                        .get(i)
                        .copied()
                        .flatten()
                        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
                }
            })
            .collect();
        let mut actions: Vec<status::ActionStatus> = Vec::new();
        for (action, waiting) in self.actions.queues() {
            actions.push(status::ActionStatus { action, queued: Some(waiting), ..Default::default() });
        }
        for (action, what, n) in self.actions.counters() {
            let i = match actions.iter().position(|a| a.action == action) {
                Some(i) => i,
                None => {
                    actions.push(status::ActionStatus { action, ..Default::default() });
                    actions.len() - 1
                }
            };
            actions[i].counters.insert(what.to_string(), n);
        }
        self.status.actions = actions;
        self.status.held_back = self.pipeline.detector().held_back().map(|(n, c)| (n.to_string(), c)).collect();
        // A failing `nats` output does not stop reading until its window is full: its state
        // is shown at every refresh. (An action failing stops reading; its hook writes the
        // status meanwhile.)
        self.status.action_failure = self
            .actions
            .output_failure()
            .map(|(action, error, since)| status::ActionFailure { action: action.to_string(), error, since });
        if let Err(e) = self.status.write(&self.status_dir) {
            tracing::warn!(error = %e, "cannot write status file");
        }
        self.status_written = Instant::now();
    }

    /// Index into `infos` of the description of this file.
    fn info(&mut self, at: &Whence<'_>) -> usize {
        if let Some(i) = self
            .infos
            .iter()
            .position(|(s, p, info)| *s == at.source && p == at.path && info.host.as_deref() == at.host)
        {
            return i;
        }
        // Events of other machines (worker mode): a few hundred files at most, but a bound
        // all the same, since the names come from the stream.
        if at.host.is_some() && self.infos.len() >= 4096 {
            self.infos.clear();
        }
        let mut info = self.pipeline.sources()[at.source].info(&at.path.display().to_string());
        info.host = at.host.map(Arc::from);
        self.infos.push((at.source, at.path.to_path_buf(), info));
        self.infos.len() - 1
    }

    /// Closes every open activity and hands the records to the actions.
    fn close_rollups(&mut self) {
        self.rollups.close_all(&mut self.records);
        for r in std::mem::take(&mut self.records) {
            if let Err(e) = self.actions.dispatch_rollup(&r) {
                tracing::warn!(error = format!("{e:#}"), "roll-up not written");
            }
        }
    }

    /// Moves the counters into the HTTP server's metrics (nothing is counted there per line).
    fn update_metrics(&mut self) {
        if self.http.is_none() || self.metrics_updated.is_some_and(|t| t.elapsed() < METRICS_EVERY) {
            return;
        }
        self.metrics_updated = Some(Instant::now());
        self.pipeline.drain_profile();
        let Some(http) = &self.http else { return };
        let rules = self.pipeline.rules();
        let stats = &self.pipeline.detector().stats;
        let names = self.pipeline.sources();
        let mut snap = crate::http::Snapshot {
            sources: self
                .per_source
                .iter()
                .enumerate()
                .filter_map(|(i, (n, u))| Some((names.get(i)?.name.clone(), *n, *u)))
                .collect(),
            action_retries: self.actions.retries,
            action_errors: self.actions.permanent_errors,
            reloads: self.reloads,
            live_clients: http.live_clients(),
            action_counters: self.actions.counters(),
            measures: self
                .measures
                .iter()
                .filter_map(|((i, what), v)| Some((names.get(*i)?.name.clone(), *what, *v)))
                .collect(),
            action_queues: self.actions.queues(),
            ..Default::default()
        };
        if let Some(h) = &self.history {
            snap.history_written = h.written.load(std::sync::atomic::Ordering::Relaxed);
            snap.history_dropped = h.dropped.load(std::sync::atomic::Ordering::Relaxed);
        }
        // The entries of a sequence share the id: the counts of all of them are the rule's.
        let mut per_rule: Vec<crate::http::RuleCounts> = Vec::new();
        for (r, st) in rules.rules.iter().zip(stats) {
            let c = match per_rule.last_mut() {
                Some(last) if last.id == r.id => last,
                _ => {
                    per_rule.push(crate::http::RuleCounts {
                        id: r.id.clone(),
                        severity: r.severity.as_str(),
                        ..Default::default()
                    });
                    per_rule.last_mut().expect("just pushed")
                }
            };
            c.hits += st.hits;
            c.detections += st.detections;
            c.suppressed += st.suppressed;
            c.evaluations += st.evaluations;
            c.eval_nanos += st.eval_nanos;
        }
        snap.rules = per_rule;
        snap.exceptions = self.pipeline.detector().held_back().map(|(n, c)| (n.to_string(), c)).collect();
        http.metrics.update(snap);
    }

    fn summary(&self) {
        let rules = self.pipeline.rules();
        for (r, st) in rules.rules.iter().zip(&self.pipeline.detector().stats) {
            if st.hits > 0 {
                tracing::info!(rule = %r.id, hits = st.hits, detections = st.detections, suppressed = st.suppressed, excepted = st.excepted, "rule summary");
            }
        }
        for (name, n) in self.pipeline.detector().held_back().filter(|(_, n)| *n > 0) {
            tracing::info!(exception = %name, held_back = n, "exception summary");
        }
        let c = self.pipeline.counts;
        tracing::info!(
            lines = c.events,
            unparsed = c.unparsed,
            detections = c.detections,
            action_retries = self.actions.retries,
            action_errors = self.actions.permanent_errors,
            "summary"
        );
    }
}

impl EventSink for Daemon {
    fn event(&mut self, at: &Whence<'_>, ev: &Event<'_>) -> Result<()> {
        let i = self.info(at);
        if self.per_source.len() <= at.source {
            self.per_source.resize(at.source + 1, (0, 0));
            self.last_event.resize(at.source + 1, None);
        }
        self.last_event[at.source] = Some(ev.arrival);
        // Lines only: a web root's changes are this machine's own business (their fields are
        // not a line a worker could parse).
        if let Some((record, key)) = self.publish.as_mut().filter(|_| ev.fields.is_empty()) {
            let source = &self.pipeline.sources()[at.source];
            let registry_len = self.pipeline.rules().registry.len();
            record.reset(registry_len);
            source.parser.parse(ev.raw, record, registry_len);
            let meta = crate::action::nats::EventMeta {
                source: &source.name,
                format: &self.infos[i].2.format,
                path: at.path,
                key: key.and_then(|k| record.get(ev.raw, k)),
                time: source.parser.event_time(ev.raw, record),
            };
            self.actions.publish(ev, &meta)?;
            if self.actions.events().is_some_and(|n| !n.evaluate) {
                self.per_source[at.source].0 += 1;
                self.pipeline.counts.events += 1;
                return Ok(());
            }
        }
        if self.replaying {
            // Restoring windows: these events were evaluated (and acted upon) before.
            let counts = self.pipeline.counts;
            let result = self.pipeline.process(at.source, &self.infos[i].2, ev, &mut crate::pipeline::CountOnly);
            self.pipeline.counts = counts;
            return result;
        }
        let (actions, rollups, records) = (&mut self.actions, &mut self.rollups, &mut self.records);
        let history = self.history.as_ref();
        let http = self.http.as_deref();
        let gate = &mut self.gate;
        let unparsed = self.pipeline.counts.unparsed;
        let result = self.pipeline.process(at.source, &self.infos[i].2, ev, &mut |d| {
            if let Some(g) = gate.as_mut()
                && !g(&d)?
            {
                return Ok(());
            }
            if let Some(h) = history {
                h.record(&d);
            }
            if let Some(h) = http {
                h.publish(&d);
            }
            let verdict = rollups.add(&d, records);
            for r in records.drain(..) {
                actions.dispatch_rollup(&r)?;
            }
            actions.dispatch(&d, verdict.log)
        });
        let c = &mut self.per_source[at.source];
        c.0 += 1;
        c.1 += self.pipeline.counts.unparsed - unparsed;
        result
    }

    fn flush(&mut self) -> std::io::Result<Mark> {
        let mut marks = self.actions.flush()?;
        if let Some(store) = &mut self.engine_store {
            marks.insert(state::MARK.to_string(), store.save(self.pipeline.detector())?);
        }
        Ok(Mark::Object(marks))
    }

    fn content_scanner(&self) -> Option<std::sync::Arc<crate::content::Scanner>> {
        self.pipeline.setup().content.clone()
    }

    fn measure(&mut self, source: usize, what: &'static str, value: f64) {
        self.measures.insert((source, what), value);
    }

    fn lane(&mut self, lane: u32, fresh: bool) {
        let max_keys = self.cfg.config.max_keys;
        let new = |rules: &Arc<crate::engine::RuleSet>| crate::engine::Detector::new(Arc::clone(rules), max_keys);
        if self.lane == Some(lane) {
            if fresh {
                let mut fresh = new(self.pipeline.rules());
                let d = self.pipeline.detector_mut();
                fresh.stats = std::mem::take(&mut d.stats);
                fresh.excepted = std::mem::take(&mut d.excepted);
                *d = fresh;
            }
            return;
        }
        let parked = if fresh { None } else { self.lanes.remove(&lane) };
        let mut next = parked.unwrap_or_else(|| new(self.pipeline.rules()));
        // The rules' and exceptions' counters follow the detector in use: they count every
        // lane. (Swapped, not taken: a parked detector keeps counters of its rules' length,
        // which a reload's carry-over indexes.)
        let current = self.pipeline.detector_mut();
        std::mem::swap(&mut next.stats, &mut current.stats);
        std::mem::swap(&mut next.excepted, &mut current.excepted);
        let previous = std::mem::replace(current, next);
        if let Some(l) = self.lane {
            self.lanes.insert(l, previous);
        }
        self.lanes.remove(&lane);
        self.lane = Some(lane);
    }

    fn drop_lane(&mut self, lane: u32) {
        if self.lane == Some(lane) {
            self.lane(lane, true);
            self.lane = None;
        } else {
            self.lanes.remove(&lane);
        }
    }

    fn replaying(&mut self, on: bool) {
        self.replaying = on;
    }

    fn longest_window(&self) -> Duration {
        self.pipeline
            .rules()
            .rules
            .iter()
            .flat_map(|r| {
                [
                    r.threshold.as_ref().map(|t| t.window),
                    r.sequence.as_ref().map(|s| s.within),
                    r.suppress.as_ref().map(|s| s.duration),
                ]
            })
            .flatten()
            .max()
            .unwrap_or(Duration::ZERO)
    }

    fn gate(&mut self, gate: crate::source::DetectionGate) {
        self.gate = Some(gate);
    }

    fn durable(&mut self, wait: bool) -> std::io::Result<bool> {
        let state = match &mut self.engine_store {
            Some(store) => store.durable(wait)?,
            None => true,
        };
        Ok(state && self.actions.durable(wait)?)
    }

    fn tick(&mut self) {
        self.update_metrics();
        self.actions.tick();
        self.rollups.tick(Instant::now(), &mut self.records);
        for r in std::mem::take(&mut self.records) {
            if let Err(e) = self.actions.dispatch_rollup(&r) {
                tracing::warn!(error = format!("{e:#}"), "roll-up not written");
            }
        }
        if self.reloader.due() {
            self.reload();
        } else if self.status_written.elapsed() >= if self.http.is_some() { STATUS_EVERY_SERVED } else { STATUS_EVERY }
        {
            self.write_status();
        }
    }
}
