//! **action**: what happens to a detection.
//!
//! - [`log`]: append detections to a file (`logs/out.txt`), one JSON object (or short text
//!   line) each, durably and exactly once across restarts.
//! - [`console`]: one readable, coloured line per detection, with attacker-controlled text
//!   escaped so it cannot drive the terminal.
//! - [`xdr`]: the `xdr-incident` action (Cisco XDR incidents from templates, via a durable
//!   outbox).
//! - [`nats`]: not an action of rules but an output of every event (the `nats:` section):
//!   published to NATS JetStream, under the same failure and checkpoint contract.
//!
//! Every action is an [`Action`] registered under its name in [`Actions`], which builds them
//! from their config sections and hands each detection to the actions its rule names. The
//! engine knows no action by name: the names a rule may use are [`NAMES`], so a typo is a
//! load error.
//!
//! # Failures
//! An action that cannot do its work says whether trying again can help
//! ([`ActionError::Transient`]: disk full, EIO, a lock) or not ([`ActionError::Permanent`]:
//! a template that does not render). [`Actions::dispatch`] retries transient failures with
//! backoff, loudly, for as long as it takes, and only returns an error when told to shut
//! down meanwhile: the caller then stops *without* moving its checkpoint past the event, so
//! nothing is lost and the event is handled again after the restart.

pub mod console;
pub mod log;
pub mod nats;
pub mod xdr;

use std::time::{Duration, Instant};

use anyhow::Result;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::config;
use crate::engine::{Detection, RuleSet};
use crate::rollup::Rollup;
use crate::shutdown::Shutdown;

/// Every action a rule may name.
pub const NAMES: &[&str] = &[log::NAME, console::NAME, xdr::ACTION_NAME];

/// Why an action failed, and so what its caller does about it.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    /// The cause may go away (disk full, I/O error): try the same detection again later.
    #[error("{0:#}")]
    Transient(anyhow::Error),
    /// Trying again cannot help (the detection cannot be rendered): report and go on.
    #[error("{0:#}")]
    Permanent(anyhow::Error),
}

impl From<std::io::Error> for ActionError {
    fn from(e: std::io::Error) -> Self {
        ActionError::Transient(e.into())
    }
}

/// Something a detection can trigger.
///
/// `fire` runs on the thread that reads the sources: it must not wait on the network. An
/// action that delivers remotely persists the detection (e.g. to an outbox) and delivers in
/// the background.
pub trait Action: Send {
    /// The name rules use in `actions:`.
    fn name(&self) -> &str;
    /// Whether this action takes every detection, whatever its rule names (the console).
    fn takes_all(&self) -> bool {
        false
    }
    /// Handles one detection. On a transient error nothing of it may stay half-done: the same
    /// detection is fired again.
    fn fire(&mut self, d: &Detection) -> Result<(), ActionError>;
    /// Handles a roll-up record (an attacker's activity opened, escalated or closed). Most
    /// actions ignore them.
    fn rollup(&mut self, _r: &Rollup) -> Result<(), ActionError> {
        Ok(())
    }
    /// Makes every fired detection durable; called before each checkpoint. Returns the
    /// action's mark (what it needs after a crash to recognise detections already handled),
    /// stored with the checkpoint.
    fn flush(&mut self) -> std::io::Result<Option<serde_json::Value>> {
        Ok(None)
    }
    /// Whether what the last [`Action::flush`] covers is durable yet (an action may finish
    /// it in the background); with `wait`, blocks until it is. The checkpoint carrying the
    /// flush's mark is written only after this says yes.
    fn durable(&mut self, _wait: bool) -> std::io::Result<bool> {
        Ok(true)
    }
    /// Re-reads what the action loads from disk (templates) and reopens its outputs (after
    /// log rotation). Must be all-or-nothing: on an error the action keeps what it had and
    /// returns the error (with file:line).
    fn reload(&mut self) -> Result<()> {
        Ok(())
    }
    /// The rule set that is about to run (after a reload), before [`Action::reload`]: what an
    /// action checks against the rules (the XDR templates, rendered with detections shaped
    /// like each rule's) follows it.
    fn rules_changed(&mut self, _rules: &RuleSet) {}
    /// Periodic work between events (e.g. noticing a renamed output file).
    fn tick(&mut self) {}
    /// Stops background work, after a last flush.
    fn shutdown(&mut self) {}
    /// What the action counts, by name, as totals since start (for metrics).
    fn counters(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
    /// How much waits in the action's queue now, if it has one (the XDR outbox).
    fn queued(&self) -> Option<u64> {
        None
    }
}

/// Told when an action starts failing transiently (and again while it goes on), with the
/// action's name and the error, and with `None` when it recovered.
pub type FailureHook = Box<dyn FnMut(Option<(&str, &str)>) + Send>;

/// The configured actions, by name.
pub struct Actions {
    list: Vec<Box<dyn Action>>,
    /// The `nats` output, when configured: every event, before the rules.
    events: Option<nats::NatsOutput>,
    shutdown: Shutdown,
    on_failure: Option<FailureHook>,
    /// Detections no action could handle for good (permanent failures), and transient
    /// failures retried.
    pub permanent_errors: u64,
    pub retries: u64,
}

impl Actions {
    /// Every action's counters: (action, counter, total).
    pub fn counters(&self) -> Vec<(String, &'static str, u64)> {
        let mut all: Vec<(String, &'static str, u64)> = self
            .list
            .iter()
            .flat_map(|a| a.counters().into_iter().map(|(k, v)| (a.name().to_string(), k, v)))
            .collect();
        if let Some(n) = &self.events {
            all.extend(n.counters().into_iter().map(|(k, v)| (nats::NAME.to_string(), k, v)));
        }
        all
    }

    /// Every queue's length: (action, waiting).
    pub fn queues(&self) -> Vec<(String, u64)> {
        let mut all: Vec<(String, u64)> =
            self.list.iter().filter_map(|a| Some((a.name().to_string(), a.queued()?))).collect();
        if let Some(n) = &self.events {
            all.push((nats::NAME.to_string(), n.waiting()));
        }
        all
    }
}

/// The `actions:` section of the config: each action's own settings, validated by the
/// action that owns them.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ActionsDef {
    #[serde(default)]
    pub log: log::LogDef,
    /// The `xdr-incident` action (Cisco XDR incidents); absent: not configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xdr: Option<xdr::settings::XdrDef>,
}

/// What [`Actions::retrying`] retries: an action of the list, or the `nats` output.
#[derive(Clone, Copy)]
enum Target {
    Action(usize),
    Events,
}

/// The target of one attempt, borrowed for it.
enum Attempt<'a> {
    Action(&'a mut dyn Action),
    Events(&'a mut nats::NatsOutput),
}

/// The name of what failed, for the messages of [`Actions::retrying`].
struct Named<'a>(&'a str);

impl Named<'_> {
    fn name(&self) -> &str {
        self.0
    }
}

/// Marks of the actions, by action name, as stored with a checkpoint.
pub type Marks = serde_json::Map<String, serde_json::Value>;

/// First wait after a transient failure; doubled up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often a persisting failure is reported again.
const REPORT_EVERY: Duration = Duration::from_secs(30);

impl Actions {
    pub fn new(list: Vec<Box<dyn Action>>, shutdown: Shutdown) -> Actions {
        Actions { list, events: None, shutdown, on_failure: None, permanent_errors: 0, retries: 0 }
    }

    /// Sets what is told about transient failures while they are retried (the status file).
    pub fn on_failure(&mut self, hook: FailureHook) {
        self.on_failure = Some(hook);
    }

    /// Builds every action the config sets up: `log` (always; its console echo when
    /// `actions.log.console`), and `xdr-incident` when `actions.xdr` is configured. `marks`
    /// are the marks of the last checkpoint. A rule naming an action that is not configured
    /// gets a warning here, and that action is skipped for it.
    pub fn from_config(
        cfg: &config::Loaded,
        rules: &RuleSet,
        marks: Option<&Marks>,
        runtime: &tokio::runtime::Handle,
        shutdown: Shutdown,
    ) -> Result<Actions> {
        let c = &cfg.config;
        let mut list: Vec<Box<dyn Action>> = Vec::new();
        let log_path = cfg.resolve(&c.actions.log.path);
        let mark = marks.and_then(|m| m.get(log::NAME));
        let mut log = log::LogAction::open(&log_path, c.actions.log.format, mark)?;
        log.rollups = c.alerts.log_rollups;
        list.push(Box::new(log));
        if c.actions.log.console {
            list.push(Box::new(console::Console::for_stdout().showing(c.alerts.console)));
        }
        list.extend(xdr::from_config(cfg, rules, runtime)?);
        let configured: Vec<&str> = list.iter().map(|a| a.name()).collect();
        let mut unconfigured: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
        for r in &rules.rules {
            for a in r.actions.iter().filter(|a| !configured.contains(&a.as_str())) {
                unconfigured.entry(a.as_str()).or_default().push(r.id.as_str());
            }
        }
        for (action, rules) in unconfigured {
            tracing::warn!(
                action,
                ?rules,
                "rules name an action the config does not set up (see its actions: section): it is skipped for them"
            );
        }
        let mut actions = Actions::new(list, shutdown);
        // A worker consumes the stream: it does not publish what it reads back into it.
        if let Some(def) = c.nats.as_ref().filter(|_| !c.worker_mode()) {
            actions.events = Some(nats::NatsOutput::start(def, &|p| cfg.resolve(p), runtime)?);
        }
        Ok(actions)
    }

    /// The `nats` output, when configured.
    pub fn events(&self) -> Option<&nats::NatsOutput> {
        self.events.as_ref()
    }

    /// Publishes one event through the `nats` output (when configured), with the same
    /// retries as [`Actions::dispatch`]: while the output cannot take it, reading pauses.
    pub fn publish(&mut self, ev: &crate::event::Event<'_>, meta: &nats::EventMeta<'_>) -> Result<()> {
        let Some(n) = &self.events else { return Ok(()) };
        let mut msg = Some(n.prepare(ev, meta));
        self.retrying(Target::Events, "event", "", |a| match a {
            Attempt::Events(n) => n.offer(&mut msg),
            Attempt::Action(_) => Ok(()),
        })
    }

    /// The `nats` output's failure going on now, if any: (output, error, since).
    pub fn output_failure(&self) -> Option<(&'static str, String, String)> {
        let (e, since) = self.events.as_ref()?.failure()?;
        Some((nats::NAME, e, since))
    }

    /// Whether what the last [`Actions::flush`] covers is durable (the `nats` output's
    /// acknowledgements, the log's fsync); see [`crate::source::EventSink::durable`].
    pub fn durable(&mut self, wait: bool) -> std::io::Result<bool> {
        let mut all = match &mut self.events {
            Some(n) => n.durable(wait)?,
            None => true,
        };
        for a in &mut self.list {
            all &= a.durable(wait)?;
        }
        Ok(all)
    }

    /// Hands `d` to every action its rule names (and to those that take all), but to the
    /// log output only when `log` (roll-ups may hold per-line detections back). Transient
    /// failures are retried with backoff until they clear; an error is returned only when
    /// shutdown was requested while one persisted (the detection is not done: do not
    /// checkpoint past it).
    pub fn dispatch(&mut self, d: &Detection, log: bool) -> Result<()> {
        for i in 0..self.list.len() {
            let a = &self.list[i];
            if !(a.takes_all() || d.actions.iter().any(|n| n == a.name())) || (!log && a.name() == log::NAME) {
                continue;
            }
            self.retrying(Target::Action(i), &d.rule.id, &d.key, |a| match a {
                Attempt::Action(a) => a.fire(d),
                Attempt::Events(_) => Ok(()),
            })?;
        }
        Ok(())
    }

    /// Hands a roll-up record to every action (each decides what to do with it), with the
    /// same retries as [`Actions::dispatch`].
    pub fn dispatch_rollup(&mut self, r: &Rollup) -> Result<()> {
        for i in 0..self.list.len() {
            self.retrying(Target::Action(i), "rollup", &r.id, |a| match a {
                Attempt::Action(a) => a.rollup(r),
                Attempt::Events(_) => Ok(()),
            })?;
        }
        Ok(())
    }

    /// Runs `f` on action `i` until it succeeds, fails for good, or shutdown is requested
    /// while it fails transiently (then the error is returned).
    fn retrying(
        &mut self,
        target: Target,
        what: &str,
        key: &str,
        mut f: impl FnMut(Attempt<'_>) -> Result<(), ActionError>,
    ) -> Result<()> {
        let mut backoff = FIRST_BACKOFF;
        let mut failing_since: Option<(Instant, Instant)> = None;
        loop {
            let (a, result) = match target {
                Target::Action(i) => {
                    let a = &mut *self.list[i];
                    let r = f(Attempt::Action(&mut *a));
                    (Named(a.name()), r)
                }
                Target::Events => match &mut self.events {
                    Some(n) => (Named(nats::NAME), f(Attempt::Events(n))),
                    None => return Ok(()),
                },
            };
            match result {
                Ok(()) => {
                    if let Some((since, _)) = failing_since {
                        tracing::warn!(action = %a.name(), after = ?since.elapsed(), "action recovered; nothing was lost");
                        if let Some(hook) = &mut self.on_failure {
                            hook(None);
                        }
                    }
                    return Ok(());
                }
                Err(ActionError::Permanent(e)) => {
                    self.permanent_errors += 1;
                    tracing::error!(action = %a.name(), rule = %what, key = %key, error = format!("{e:#}"), "action failed for this detection");
                    return Ok(());
                }
                Err(ActionError::Transient(e)) => {
                    self.retries += 1;
                    let now = Instant::now();
                    let report = match &mut failing_since {
                        None => {
                            failing_since = Some((now, now));
                            tracing::error!(action = %a.name(), error = format!("{e:#}"), "action failed; reading is paused and it is retried until it succeeds");
                            true
                        }
                        Some((since, reported)) if now.duration_since(*reported) >= REPORT_EVERY => {
                            *reported = now;
                            tracing::error!(action = %a.name(), error = format!("{e:#}"), failing_for = ?since.elapsed(), "action still failing; still retrying");
                            true
                        }
                        Some(_) => false,
                    };
                    let name = a.name().to_string();
                    if report && let Some(hook) = &mut self.on_failure {
                        hook(Some((&name, &format!("{e:#}"))));
                    }
                    if self.shutdown.wait_timeout(backoff) {
                        return Err(anyhow::anyhow!(
                            "stopped while the {name} action was failing ({e:#}); the detection is handled again after a restart"
                        ));
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Flushes every action; their marks, by name.
    pub fn flush(&mut self) -> std::io::Result<Marks> {
        if let Some(n) = &mut self.events {
            n.flush();
        }
        let mut marks = Marks::new();
        for a in &mut self.list {
            if let Some(m) = a.flush()? {
                marks.insert(a.name().to_string(), m);
            }
        }
        Ok(marks)
    }

    /// Reloads every action for the rule set `rules` that is about to run; the errors, one
    /// per problem.
    pub fn reload(&mut self, rules: &RuleSet) -> Vec<String> {
        let mut errors = Vec::new();
        for a in &mut self.list {
            a.rules_changed(rules);
            if let Err(e) = a.reload() {
                // One entry per problem (each with its file:line), as `trapline status` lists them.
                let msg = format!("{e:#}");
                errors.extend(msg.lines().map(|l| format!("action {}: {l}", a.name())));
            }
        }
        errors
    }

    pub fn tick(&mut self) {
        for a in &mut self.list {
            a.tick();
        }
    }

    pub fn shutdown(&mut self) {
        for a in &mut self.list {
            a.shutdown();
        }
    }
}
