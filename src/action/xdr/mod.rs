//! The `xdr-incident` action: detections become Cisco XDR incidents.
//!
//! ```text
//! fire (reading thread)                        delivery (task on the daemon's tokio runtime)
//!   aggregate: window per (rule, group) ──┐
//!   render templates → validated bundle   │     outbox → per-incident bound → merge ≤ 100
//!     + the incident's PATCH (coalesced)  │     entities → budget → token → bundle import
//!   outbox: write files (atomic)  ────────┴──▶  → per-entity results → remove confirmed /
//!   channel send (never blocks)                  failed/ / retry+backoff → incident PATCH
//! ```
//!
//! - [`settings`]: the `actions.xdr` config section, regions and credentials;
//! - [`aggregate`]: incident windows and deterministic external ids;
//! - [`bundle`]: minijinja templates → JSON-safe, validated CTIM bundles;
//! - [`ctim`]: the service's validation rules (shared with the sandbox);
//! - [`outbox`]: durable, bounded queue in the state directory;
//! - [`delivery`], [`client`], [`limiter`]: background delivery, HTTP, pacing;
//!
//! A local stand-in of the XDR endpoints (`trapline xdr sandbox`) lives apart, in
//! [`crate::sandbox::xdr`].
//!
//! Nothing here knows about honeypots or web attacks: what an incident says is in the
//! templates.

pub mod aggregate;
pub mod bundle;
pub mod client;
pub mod ctim;
pub mod delivery;
pub mod limiter;
pub mod outbox;
pub mod settings;
pub mod target;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow};
use chrono::{SecondsFormat, Utc};
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};

use super::{Action, ActionError};
use crate::config::Loaded;
use crate::engine::{self, Detection, RuleSet};
use aggregate::{Hit, Windows};
use bundle::{Renderer, TemplateErrors};
use delivery::{Delivery, IncidentRate, Msg, Stats};
use outbox::{Entry, Outbox, Patch};
use settings::Settings;

/// The name rules use in `actions:`.
pub const ACTION_NAME: &str = "xdr-incident";

/// How often `fire` looks for edited templates.
const RELOAD_CHECK: Duration = Duration::from_secs(2);
/// How long shutdown waits for an in-flight request.
const SHUTDOWN_WAIT: Duration = Duration::from_millis(700);

fn ms(t: chrono::DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Facts about the machine trapline runs on (`host` in templates): its name and OS. No
/// address: which of its addresses was attacked cannot be known from here (see [`target`]).
pub fn host_facts() -> Value {
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    json!({"hostname": hostname, "os": std::env::consts::OS})
}

/// Detection → aggregated, rendered, validated bundle. Shared by the action and `render`.
pub struct Composer {
    pub settings: Arc<Settings>,
    renderer: Renderer,
    windows: Windows,
    base: Value,
    /// Rule id → a detection of that rule, for the load-time check of its own templates.
    shapes: BTreeMap<String, Detection>,
    /// Why the templates on disk did not load at the last attempt (the previous ones stay in
    /// use until an edit fixes them).
    pub reload_error: Option<TemplateErrors>,
    /// Check the templates again at the next reload even if no file changed (the rules did).
    recheck: bool,
    last_check: Instant,
}

/// Rule id → a detection shaped like that rule's: its facts, and threshold or sequence details
/// when it has them (values are placeholders; fields are empty).
pub fn shapes(rules: &RuleSet) -> BTreeMap<String, Detection> {
    let mut out = BTreeMap::new();
    for r in &rules.rules {
        if out.contains_key(&r.id) {
            continue; // a sequence's later steps
        }
        let mut d = bundle::generic_shape();
        d.rule = Arc::clone(&r.info);
        d.actions = r.actions.clone();
        let names = |ids: &[crate::parse::FieldId]| -> BTreeMap<String, String> {
            ids.iter().map(|f| (rules.registry.name(*f).to_string(), String::new())).collect()
        };
        d.threshold = r.threshold.as_ref().map(|t| engine::detection::ThresholdInfo {
            count: t.count,
            within_seconds: t.window.as_secs_f64(),
            group: names(&t.group_by),
            distinct: t.distinct.map(|f| rules.registry.name(f).to_string()),
            // One placeholder value, so the check renders what a template does with them.
            distinct_values: t.distinct.map(|_| vec![String::new()]).unwrap_or_default(),
            first_seen: d.event_time,
            last_seen: d.event_time,
        });
        d.sequence = r.sequence.as_ref().map(|s| engine::detection::SequenceInfo {
            steps: s.steps as u32,
            within_seconds: s.within.as_secs_f64(),
            key: String::new(),
            first_seen: d.event_time,
            last_seen: d.event_time,
        });
        out.insert(r.id.clone(), d);
    }
    out
}

impl Composer {
    /// Loads the templates (failing with file:line on any problem). `persist`: keep incident
    /// windows in the state directory (the daemon) or only in memory (`render`). `shapes`
    /// (see [`shapes`]) lets the check render each rule's own templates with detections like
    /// that rule's.
    pub fn new(settings: Arc<Settings>, persist: bool, shapes: BTreeMap<String, Detection>) -> Result<Composer> {
        let base = json!({"vars": settings.variables, "host": host_facts()});
        let renderer =
            Renderer::load_for(&settings.templates, &settings.rule_templates, &settings.source, &base, &shapes)?;
        let path = settings.state_dir.join("windows.json");
        let windows = Windows::open(persist.then_some(path.as_path()), &settings.prefix)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Ok(Composer {
            settings,
            renderer,
            windows,
            base,
            shapes,
            reload_error: None,
            recheck: false,
            last_check: Instant::now(),
        })
    }

    /// A composer whose templates are parsed but not rendered with samples (lint renders each
    /// rule's own sample through it; see [`Renderer::load_unchecked`]). Windows in memory.
    pub fn unchecked(settings: Arc<Settings>) -> Result<Composer> {
        let base = json!({"vars": settings.variables, "host": host_facts()});
        let renderer = Renderer::load_unchecked(&settings.templates, &settings.rule_templates, &settings.source)?;
        let windows = Windows::open(None, &settings.prefix).context("incident windows")?;
        Ok(Composer {
            settings,
            renderer,
            windows,
            base,
            shapes: BTreeMap::new(),
            reload_error: None,
            recheck: false,
            last_check: Instant::now(),
        })
    }

    /// Reloads edited templates; a broken edit is reported (and kept in `reload_error` until
    /// an edit fixes it) and the old templates stay. `now`: check at once, not at most every
    /// [`RELOAD_CHECK`].
    pub fn maybe_reload(&mut self, now: bool) {
        if !now && self.last_check.elapsed() < RELOAD_CHECK {
            return;
        }
        self.last_check = Instant::now();
        if !self.renderer.changed() && !std::mem::take(&mut self.recheck) {
            return;
        }
        let s = &self.settings;
        match Renderer::load_for(&s.templates, &s.rule_templates, &s.source, &self.base, &self.shapes) {
            Ok(r) => {
                self.renderer = r;
                self.reload_error = None;
                tracing::info!(dir = %s.templates.display(), "XDR templates reloaded");
            }
            Err(e) => {
                // Do not retry until the files change again.
                self.renderer.mark_seen();
                for p in &e.0 {
                    tracing::error!("XDR templates not reloaded, keeping the previous ones: {p}");
                }
                self.reload_error = Some(e);
            }
        }
    }

    /// The rules changed: a rule's own templates are checked with detections like the new
    /// rule's (a rule that became a threshold rule has `detection.threshold`) at the next
    /// reload.
    pub fn set_rules(&mut self, rules: &RuleSet) {
        self.shapes = shapes(rules);
        self.recheck = true;
    }

    /// The template context of a detection and its aggregation hit.
    pub fn context(&self, d: &Detection, hit: &Hit) -> Value {
        let w = &hit.window;
        let end = w.start + chrono::Duration::seconds(w.window_secs as i64);
        let aggregate = json!({
            "count": w.count, "first_seen": ms(w.first_seen), "last_seen": ms(w.last_seen),
            "window_start": ms(w.start), "window_end": ms(end), "samples": w.samples,
            "group": w.group, "new_incident": hit.new_incident,
            "scope": if w.rule.is_empty() { "attacker" } else { "rule" },
            "rules": w.rules, "classes": w.classes,
            "severity": if w.severity.is_empty() { d.rule.severity.as_str() } else { w.severity.as_str() },
            "tags": w.tags,
        });
        bundle::context(d, aggregate, &hit.xids, &self.base, &self.settings.source, &ms(Utc::now()))
    }

    /// Aggregates and renders one detection.
    pub fn compose(&mut self, d: &Detection) -> Result<(Hit, Value)> {
        let (hit, r) = self.compose_update(d)?;
        Ok((hit, r.bundle))
    }

    /// Aggregates and renders one detection: its bundle and its incident's PATCH.
    pub fn compose_update(&mut self, d: &Detection) -> Result<(Hit, bundle::Rendered)> {
        let g = self.settings.grouping(&d.rule.id).clone();
        let group: BTreeMap<String, String> =
            g.group_by.iter().map(|f| (f.clone(), d.fields.get(f.as_str()).cloned().unwrap_or_default())).collect();
        let scope = match g.scope {
            settings::IncidentScope::Attacker => "",
            settings::IncidentScope::Rule => d.rule.id.as_str(),
        };
        let facts = aggregate::RuleFacts {
            id: &d.rule.id,
            class: &d.rule.class,
            severity: d.rule.severity.as_str(),
            tags: &d.rule.tags,
        };
        let hit = self.windows.hit(scope, facts, group, g.window, d.event_time, &d.key, &d.line);
        let ctx = self.context(d, &hit);
        let mut r = self.renderer.render_checked(&d.rule.id, &ctx, hit.new_incident && self.settings.judgement)?;
        // Severity is updated only when it rose above what the incident was created with:
        // otherwise every update would undo an analyst's re-rating.
        if !hit.window.severity_raised()
            && let Some(o) = r.patch.as_object_mut()
        {
            o.remove("severity");
        }
        Ok((hit, r))
    }

    pub fn save(&mut self) -> std::io::Result<()> {
        self.windows.save()
    }

    /// Forgets incident windows (after a purge).
    pub fn forget(&mut self) -> std::io::Result<()> {
        self.windows.clear();
        self.windows.save()
    }
}

/// The running action.
pub struct XdrAction {
    composer: Composer,
    outbox: Arc<Outbox>,
    tx: Option<mpsc::UnboundedSender<Msg>>,
    stop: Arc<AtomicBool>,
    wake: Arc<Notify>,
    task: Option<tokio::task::JoinHandle<()>>,
    pub stats: Arc<Stats>,
    queued: u64,
    dropped: u64,
    errors: u64,
}

impl XdrAction {
    /// Loads templates and state, and starts the delivery task on `runtime`. Never waits on
    /// the network.
    pub fn start(settings: Settings, rules: &RuleSet, runtime: &tokio::runtime::Handle) -> Result<XdrAction> {
        let settings = Arc::new(settings);
        let composer = Composer::new(Arc::clone(&settings), true, shapes(rules))?;
        if settings.client_id.0.is_empty() || settings.client_secret.0.is_empty() {
            return Err(anyhow!(
                "actions.xdr: no credentials: set client_id/client_secret (e.g. ${{TRAPLINE_XDR_CLIENT_ID}}) or the TRAPLINE_XDR_CLIENT_ID and TRAPLINE_XDR_CLIENT_SECRET environment variables"
            ));
        }
        let (outbox, pending) = Outbox::open(&settings.state_dir)
            .with_context(|| format!("cannot open the XDR outbox in {}", settings.state_dir.display()))?;
        let outbox = Arc::new(outbox);
        let client = Arc::new(client::Client::new(
            settings.endpoints.clone(),
            settings.client_id.clone(),
            settings.client_secret.clone(),
            &settings.prefix,
            settings.timeout,
            limiter::Budget::per_hour(settings.budget_per_hour),
        ));
        let (tx, rx) = mpsc::unbounded_channel();
        let stop = Arc::new(AtomicBool::new(false));
        let wake = Arc::new(Notify::new());
        let stats = Arc::new(Stats::default());
        let delivery = Delivery {
            client,
            outbox: Arc::clone(&outbox),
            stats: Arc::clone(&stats),
            stop: Arc::clone(&stop),
            wake: Arc::clone(&wake),
            state_dir: settings.state_dir.clone(),
            rate: IncidentRate::new(settings.imports_per_incident, settings.incident_period),
        };
        let patches = outbox.pending_patches().context("cannot read the XDR outbox's incident updates")?;
        let task = runtime.spawn(delivery.run(pending, patches, rx));
        tracing::info!(
            import = %settings.endpoints.import_url(),
            templates = %settings.templates.display(),
            pending = outbox.pending(),
            "XDR incident action ready"
        );
        Ok(XdrAction {
            composer,
            outbox,
            tx: Some(tx),
            stop,
            wake,
            task: Some(task),
            stats,
            queued: 0,
            dropped: 0,
            errors: 0,
        })
    }
}

impl Action for XdrAction {
    fn name(&self) -> &str {
        ACTION_NAME
    }

    fn fire(&mut self, d: &Detection) -> Result<(), ActionError> {
        self.composer.maybe_reload(false);
        if self.outbox.pending() >= self.composer.settings.max_pending {
            self.dropped += 1;
            if self.dropped == 1 || self.dropped.is_multiple_of(1000) {
                tracing::warn!(
                    rule = %d.rule.id,
                    pending = self.outbox.pending(),
                    not_queued = self.dropped,
                    "XDR outbox full (max_pending): detection kept in the log output but not sent to XDR"
                );
            }
            return Ok(());
        }
        let (hit, rendered) = match self.composer.compose_update(d) {
            Ok(x) => x,
            Err(e) => {
                self.errors += 1;
                return Err(ActionError::Permanent(e.context("XDR bundle not rendered")));
            }
        };
        let entry = Entry {
            id: aggregate::sha256_hex(hit.xids.sighting.as_bytes()),
            seq: self.outbox.next_seq(),
            rule: d.rule.id.clone(),
            queued_at: ms(Utc::now()),
            bundle: rendered.bundle,
        };
        // A detection joining an existing incident changes what the incident says (counts,
        // last seen, classes, severity): its PATCH replaces the incident's pending one, and goes
        // out after the import of the sightings.
        let patch = (!hit.new_incident).then(|| Patch {
            incident: format!("transient:{}", hit.xids.incident),
            seq: entry.seq,
            rule: entry.rule.clone(),
            queued_at: entry.queued_at.clone(),
            body: rendered.patch,
            entity: entry.bundle["incidents"][0].clone(),
            source: self.composer.settings.source.clone(),
        });
        if let Some(p) = &patch {
            self.outbox.put_patch(p).context("cannot write the XDR outbox").map_err(ActionError::Transient)?;
        }
        self.outbox.put(&entry).context("cannot write the XDR outbox").map_err(ActionError::Transient)?;
        self.queued += 1;
        if let Some(tx) = &self.tx {
            let _ = tx.send(Msg { entry, patch });
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<Option<Value>> {
        self.composer.save()?;
        self.outbox.sync()?;
        Ok(None)
    }

    fn rules_changed(&mut self, rules: &RuleSet) {
        self.composer.set_rules(rules);
    }

    /// On a reload (SIGHUP, rule or template change): templates as on every detection, and
    /// entries put back into the outbox from outside (`trapline xdr failed --requeue`).
    fn reload(&mut self) -> Result<()> {
        self.composer.maybe_reload(true);
        // Until an edit fixes them, broken templates stay a failed reload (in `trapline
        // status`), whatever else reloads meanwhile.
        if let Some(e) = &self.composer.reload_error {
            return Err(anyhow!("templates not reloaded, the previous ones stay in use:\n{e}"));
        }
        let entries = self.outbox.rescan().context("cannot read the XDR outbox")?;
        if let Some(tx) = &self.tx {
            for e in entries {
                let _ = tx.send(Msg { entry: e, patch: None });
            }
        }
        self.wake.notify_one();
        Ok(())
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        let st = &self.stats;
        vec![
            ("queued", self.queued),
            ("delivered", st.delivered.load(Ordering::Relaxed)),
            ("failed", st.failed.load(Ordering::Relaxed)),
            ("requests", st.requests.load(Ordering::Relaxed)),
            ("retries", st.retries.load(Ordering::Relaxed)),
            ("imports", st.imports.load(Ordering::Relaxed)),
            ("incident_updates", st.patched.load(Ordering::Relaxed)),
            ("not_queued_outbox_full", self.dropped),
            ("render_errors", self.errors),
        ]
    }

    fn queued(&self) -> Option<u64> {
        Some(self.outbox.pending() as u64)
    }

    fn shutdown(&mut self) {
        let _ = self.flush();
        self.stop.store(true, Ordering::Relaxed);
        self.wake.notify_one();
        self.tx = None;
        if let Some(t) = self.task.take() {
            let deadline = Instant::now() + SHUTDOWN_WAIT;
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if !t.is_finished() {
                // An in-flight request: what it carried stays in the outbox for next time.
                t.abort();
            }
        }
        tracing::info!(
            queued = self.queued,
            delivered = self.stats.delivered.load(Ordering::Relaxed),
            imports = self.stats.imports.load(Ordering::Relaxed),
            incident_updates = self.stats.patched.load(Ordering::Relaxed),
            failed = self.stats.failed.load(Ordering::Relaxed),
            not_queued_outbox_full = self.dropped,
            render_errors = self.errors,
            pending = self.outbox.pending(),
            "XDR summary"
        );
    }
}

/// The `xdr-incident` action when the config sets it up (`actions.xdr`), its delivery task
/// started on `runtime`.
pub fn from_config(cfg: &Loaded, rules: &RuleSet, runtime: &tokio::runtime::Handle) -> Result<Option<Box<dyn Action>>> {
    match Settings::from_config(cfg)? {
        Some(s) => Ok(Some(Box::new(
            XdrAction::start(s, rules, runtime).map_err(|e| anyhow!("{}: {e:#}", cfg.path.display()))?,
        ))),
        None => Ok(None),
    }
}
