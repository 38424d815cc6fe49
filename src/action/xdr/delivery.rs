//! The background delivery task: outbox → bundle imports and incident PATCHes, on the
//! daemon's tokio runtime.
//!
//! The tailing thread only writes outbox files and sends them over an unbounded channel
//! (never blocks); this task owns everything that waits on the network:
//!
//! 1. take the oldest pending entries whose incident may be imported now (at most
//!    `max_imports_per_incident_per_minute` imports per incident: see [`IncidentRate`]), up to
//!    100 entities, and merge their bundles (entities shared by several entries, such as the
//!    incident of a burst, are sent once, as the newest entry rendered it);
//! 2. an incident XDR already confirmed is not sent again: relationships point at its stored
//!    id (kept in `<state>/xdr/stored.json`); an incident not yet confirmed travels with the
//!    sighting, and a repeat gets `exists`;
//! 3. pace by the request budget, import, read the per-entity results by `original_id`;
//! 4. remove the entries whose every entity is `created`/`exists`; move entries with an
//!    `error` result to `failed/`; keep everything else and retry with backoff (honouring
//!    `Retry-After`);
//! 5. after an import, bring each of its incidents up to date with one PATCH: the incident's
//!    pending [`Patch`], which every later detection replaces, so it carries the newest
//!    aggregate however many detections arrived. A PATCH left over (a crash after the import,
//!    a failed PATCH) goes out once its incident has no sighting waiting; if the incident's
//!    stored id is unknown, the incident is imported alone first (answered `exists` with it).
//!
//! A 400 on a merged bundle is narrowed down by retrying entries one at a time, so one bad
//! entry cannot block the queue.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};

use super::bundle::MAX_BUNDLE_ENTITIES;
use super::client::{Client, EntityResult, Error};
use super::ctim::ENTITY_ARRAYS;
use super::limiter::Backoff;
use super::outbox::{Entry, Outbox, Patch};
use crate::state::write_atomic;

/// Most stored incident ids remembered (oldest forgotten first; a forgotten one is simply sent
/// again and answered `exists`).
const MAX_STORED: usize = 20_000;
/// Id prefix of the imports that only look up an incident's stored id (no outbox file).
const RESOLVE: &str = "resolve-";

/// Counters shared with the action (for the summary and tests).
#[derive(Debug, Default)]
pub struct Stats {
    pub delivered: AtomicU64,
    pub failed: AtomicU64,
    pub requests: AtomicU64,
    pub retries: AtomicU64,
    pub imports: AtomicU64,
    pub patched: AtomicU64,
}

/// What the reading thread hands to the delivery task: a queued detection and, when it joined
/// an existing incident, the incident's new PATCH. They travel together so that the task never
/// sees the PATCH of a detection whose sighting it has not queued yet.
#[derive(Debug, Clone)]
pub struct Msg {
    pub entry: Entry,
    pub patch: Option<Patch>,
}

/// Incident transient id → stored long id, persisted.
struct Stored {
    path: PathBuf,
    map: HashMap<String, String>,
    order: VecDeque<String>,
}

impl Stored {
    fn open(path: PathBuf) -> Stored {
        let list: Vec<(String, String)> =
            std::fs::read(&path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
        let order = list.iter().map(|(k, _)| k.clone()).collect();
        Stored { path, map: list.into_iter().collect(), order }
    }
    fn insert(&mut self, tid: &str, id: &str) -> bool {
        if self.map.get(tid).map(String::as_str) == Some(id) {
            return false;
        }
        if self.map.insert(tid.to_string(), id.to_string()).is_none() {
            self.order.push_back(tid.to_string());
        }
        while self.order.len() > MAX_STORED {
            if let Some(k) = self.order.pop_front() {
                self.map.remove(&k);
            }
        }
        true
    }
    /// Forgets an incident XDR no longer has (deleted): it will be imported afresh.
    fn remove(&mut self, tid: &str) {
        if self.map.remove(tid).is_some() {
            self.order.retain(|k| k != tid);
            self.save();
        }
    }
    fn save(&self) {
        let list: Vec<(&String, &String)> = self.order.iter().filter_map(|k| self.map.get_key_value(k)).collect();
        if let Err(e) = write_atomic(&self.path, &serde_json::to_vec(&list).unwrap_or_default(), true) {
            tracing::warn!(error = %e, "cannot save XDR stored ids");
        }
    }
}

/// The per-incident import bound: at most `limit` imports of one incident per `period`,
/// enforced as spacing. An incident's first import goes at once (the alert is not delayed);
/// each further one waits until `period / limit` has passed since the previous one, so no
/// `period` ever holds more than `limit`. Detections arriving meanwhile wait in the queue and
/// go together in the next allowed import, instead of one import (and one PATCH) each.
/// Spacing rather than a rolling count: a rolling count would spend the whole allowance on
/// the first detections of a burst and then hold the rest for a full period.
pub struct IncidentRate {
    interval: Duration,
    last: HashMap<String, Instant>,
}

impl IncidentRate {
    pub fn new(limit: u32, period: Duration) -> IncidentRate {
        IncidentRate { interval: period / limit.max(1), last: HashMap::new() }
    }

    /// How long until `incident` may be imported again (zero: now).
    pub fn wait(&self, incident: &str, now: Instant) -> Duration {
        self.last.get(incident).map_or(Duration::ZERO, |t| (*t + self.interval).saturating_duration_since(now))
    }

    /// Counts an import of `incident` sent at `now`.
    pub fn record(&mut self, incident: &str, now: Instant) {
        self.last.insert(incident.to_string(), now);
        // Incidents whose spacing has passed need no memory.
        if self.last.len() > 4096 {
            let interval = self.interval;
            self.last.retain(|_, t| now.duration_since(*t) < interval);
        }
    }
}

pub struct Delivery {
    pub client: Arc<Client>,
    pub outbox: Arc<Outbox>,
    pub stats: Arc<Stats>,
    pub stop: Arc<AtomicBool>,
    pub wake: Arc<Notify>,
    pub state_dir: PathBuf,
    pub rate: IncidentRate,
}

/// What one import did to a batch.
enum Outcome {
    Done,
    Retry(Option<Duration>),
    /// The whole body was refused: narrow down.
    Refused(String),
}

/// The next PATCH step.
#[derive(Debug, PartialEq)]
enum PatchStep {
    /// Send the incident's pending PATCH to its stored id.
    Send(String, String),
    /// Its stored id is unknown: import the incident alone to learn it.
    Resolve(String),
    /// It cannot be applied (the incident never reached XDR): forget it.
    Drop(String),
}

/// The task's view of what is pending.
#[derive(Default)]
struct Pending {
    queue: VecDeque<Entry>,
    /// Incident transient id → its pending PATCH.
    patches: HashMap<String, Patch>,
    /// Incidents imported since their PATCH was last sent: it goes next.
    due: HashSet<String>,
    /// Incidents being looked up by an import of their own.
    resolving: HashSet<String>,
    /// PATCHes that failed for now, and when to try them again. Their imports go on meanwhile.
    retry_at: HashMap<String, Instant>,
}

impl Pending {
    fn accept(&mut self, m: Msg) {
        push(&mut self.queue, m.entry);
        if let Some(p) = m.patch {
            self.add_patch(p);
        }
    }

    fn add_patch(&mut self, p: Patch) {
        // The newest aggregate wins (a replay may bring an older one).
        if self.patches.get(&p.incident).is_none_or(|q| q.seq <= p.seq) {
            self.patches.insert(p.incident.clone(), p);
        }
    }

    /// How long until a PATCH waiting to be retried may go. Retry times already passed do not
    /// count: such a PATCH waits for its incident's sightings, not for the clock (counting it
    /// would turn the idle wait into a busy loop).
    fn next_retry(&self, now: Instant) -> Option<Duration> {
        self.retry_at.values().filter(|t| **t > now).map(|t| *t - now).min()
    }

    fn waiting(&self, incident: &str) -> bool {
        self.queue.iter().any(|e| incident_of(e) == Some(incident))
    }

    /// Which pending PATCH to handle now, if any: those of just-imported incidents first, then
    /// any whose incident has no sighting waiting (left over from a crash or a failure).
    fn next_patch(&self, stored: &Stored, now: Instant) -> Option<PatchStep> {
        let mut order: Vec<&Patch> = self.patches.values().collect();
        order.sort_by_key(|p| (!self.due.contains(&p.incident), p.seq));
        for p in order {
            let x = &p.incident;
            if self.retry_at.get(x).is_some_and(|t| *t > now) {
                continue;
            }
            let known = stored.map.get(x);
            if self.due.contains(x)
                && let Some(long) = known
            {
                return Some(PatchStep::Send(x.clone(), long.clone()));
            }
            if self.waiting(x) {
                continue;
            }
            return Some(match known {
                Some(long) => PatchStep::Send(x.clone(), long.clone()),
                None if self.resolving.contains(x) => PatchStep::Drop(x.clone()),
                None => PatchStep::Resolve(x.clone()),
            });
        }
        None
    }
}

impl Delivery {
    /// Runs until `stop` is set. `initial` and `patches` are what was found on disk at start.
    pub async fn run(mut self, initial: Vec<Entry>, patches: Vec<Patch>, mut rx: mpsc::UnboundedReceiver<Msg>) {
        let mut p = Pending { queue: initial.into(), ..Default::default() };
        for x in patches {
            p.add_patch(x);
        }
        let mut stored = Stored::open(self.state_dir.join("stored.json"));
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(60));
        let mut patch_backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(60));
        let mut one_at_a_time = 0usize;
        let mut last_warn: Option<Instant> = None;
        if !p.queue.is_empty() || !p.patches.is_empty() {
            tracing::info!(
                pending = p.queue.len(),
                incident_updates = p.patches.len(),
                "resuming XDR deliveries from the outbox"
            );
        }
        loop {
            while let Ok(m) = rx.try_recv() {
                p.accept(m);
            }
            if self.stop.load(Ordering::Relaxed) {
                break;
            }
            // Incident updates first: each follows the import of its incident's sightings.
            if let Some(step) = p.next_patch(&stored, Instant::now()) {
                match step {
                    PatchStep::Drop(x) => {
                        if let Some(q) = p.patches.remove(&x) {
                            tracing::warn!(rule = %q.rule, "XDR incident update dropped: the incident is not in XDR");
                            self.outbox.remove_patch(&x, q.seq);
                        }
                        p.resolving.remove(&x);
                        p.due.remove(&x);
                        p.retry_at.remove(&x);
                    }
                    PatchStep::Resolve(x) => {
                        let q = &p.patches[&x];
                        p.resolving.insert(x.clone());
                        p.queue.push_front(Entry {
                            id: format!("{RESOLVE}{}", super::aggregate::sha256_hex(x.as_bytes())),
                            seq: q.seq,
                            rule: q.rule.clone(),
                            queued_at: q.queued_at.clone(),
                            bundle: json!({"type": "bundle", "source": q.source, "incidents": [q.entity]}),
                        });
                    }
                    PatchStep::Send(x, long) => {
                        let q = p.patches[&x].clone();
                        self.stats.requests.fetch_add(1, Ordering::Relaxed);
                        let r = tokio::select! {
                            r = self.client.patch_incident(&long, &q.body) => r,
                            _ = self.wake.notified() => continue,
                        };
                        p.resolving.remove(&x);
                        match r {
                            Ok(_) => {
                                patch_backoff.reset();
                                p.due.remove(&x);
                                p.retry_at.remove(&x);
                                self.stats.patched.fetch_add(1, Ordering::Relaxed);
                                self.outbox.remove_patch(&x, q.seq);
                                if p.patches.get(&x).is_some_and(|n| n.seq == q.seq) {
                                    p.patches.remove(&x);
                                }
                            }
                            Err(Error::Transient { msg, retry_after }) => {
                                // Only this update waits: imports (other incidents, and this
                                // one's next sightings) go on, and a newer PATCH replaces it.
                                tracing::debug!(error = %msg, "XDR incident update failed");
                                self.stats.retries.fetch_add(1, Ordering::Relaxed);
                                let delay = match retry_after {
                                    Some(a) => {
                                        self.client.budget.lock().await.pause_until(Instant::now() + a);
                                        a
                                    }
                                    None => patch_backoff.next_delay(),
                                };
                                p.retry_at.insert(x.clone(), Instant::now() + delay);
                                if last_warn.is_none_or(|t| t.elapsed() > Duration::from_secs(30)) {
                                    tracing::warn!(retry_in = ?delay, error = %msg, "XDR incident update will be retried");
                                    last_warn = Some(Instant::now());
                                }
                            }
                            Err(Error::Rejected { status, body }) => {
                                if status == 404 {
                                    tracing::warn!(rule = %q.rule, "XDR no longer has the incident (deleted?); update dropped, its next sightings create it again");
                                    stored.remove(&x);
                                } else {
                                    tracing::error!(rule = %q.rule, error = %format!("HTTP {status}: {body}"), "XDR refused an incident update; dropped");
                                    self.stats.failed.fetch_add(1, Ordering::Relaxed);
                                }
                                p.due.remove(&x);
                                p.retry_at.remove(&x);
                                p.patches.remove(&x);
                                self.outbox.remove_patch(&x, q.seq);
                            }
                        }
                    }
                }
                continue;
            }
            let now = Instant::now();
            let max_entries = if one_at_a_time > 0 { 1 } else { usize::MAX };
            let batch = take_batch(&p.queue, &stored, max_entries, &self.rate, now);
            if batch.is_empty() {
                // Nothing may go now: wait for news, or for the first incident whose bound frees.
                let wait = [next_allowed(&p.queue, &self.rate, now), p.next_retry(now)]
                    .into_iter()
                    .flatten()
                    .min()
                    .unwrap_or(Duration::from_secs(3600));
                tokio::select! {
                    m = rx.recv() => match m { Some(m) => p.accept(m), None => break },
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(wait) => {}
                }
                continue;
            }
            let incidents = batch_incidents(&p.queue, &batch);
            for x in incidents.keys() {
                self.rate.record(x, now);
            }
            let bundle = merge(&p.queue, &batch, &stored);
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
            self.stats.imports.fetch_add(1, Ordering::Relaxed);
            let mut created = Vec::new();
            let outcome = tokio::select! {
                r = self.client.import(&bundle) => self.apply(r, &mut p.queue, &batch, &mut stored, &mut created),
                _ = self.wake.notified() => continue,
            };
            match outcome {
                Outcome::Done => {
                    backoff.reset();
                    one_at_a_time = one_at_a_time.saturating_sub(1);
                    for (x, newest) in incidents {
                        let Some(q) = p.patches.get(&x) else { continue };
                        // An incident created by this import from a rendering at least as new
                        // as its pending PATCH is already current.
                        if created.contains(&x) && q.seq <= newest {
                            self.outbox.remove_patch(&x, q.seq);
                            p.patches.remove(&x);
                        } else {
                            p.due.insert(x);
                        }
                    }
                }
                Outcome::Retry(after) => {
                    self.retry_wait(after, &mut backoff, &mut last_warn, p.queue.len()).await;
                }
                Outcome::Refused(msg) => {
                    if batch.len() > 1 {
                        tracing::warn!(
                            entries = batch.len(),
                            "XDR refused a merged bundle; retrying its entries one by one"
                        );
                        one_at_a_time = batch.len();
                    } else if let Some(e) =
                        p.queue.iter().position(|e| e.id == batch[0]).and_then(|i| p.queue.remove(i))
                    {
                        tracing::error!(rule = %e.rule, error = %msg, "XDR refused a bundle; moved to the outbox's failed/ directory");
                        if !e.id.starts_with(RESOLVE) {
                            self.outbox.fail(&e, &msg);
                        }
                        self.stats.failed.fetch_add(1, Ordering::Relaxed);
                        one_at_a_time = one_at_a_time.saturating_sub(1);
                    }
                }
            }
        }
        tracing::debug!(pending = p.queue.len(), incident_updates = p.patches.len(), "XDR delivery stopped");
    }

    /// Waits before a retry: a `Retry-After` as given (plus a little jitter, without growing
    /// the backoff, and holding every request until then), otherwise exponential backoff.
    async fn retry_wait(
        &self,
        after: Option<Duration>,
        backoff: &mut Backoff,
        last_warn: &mut Option<Instant>,
        pending: usize,
    ) {
        self.stats.retries.fetch_add(1, Ordering::Relaxed);
        let delay = match after {
            Some(a) => a + Duration::from_millis(fastrand::u64(0..250)),
            None => backoff.next_delay(),
        };
        if let Some(a) = after {
            self.client.budget.lock().await.pause_until(Instant::now() + a);
        }
        if last_warn.is_none_or(|t| t.elapsed() > Duration::from_secs(30)) {
            tracing::warn!(pending, retry_in = ?delay, "XDR delivery will be retried");
            *last_warn = Some(Instant::now());
        }
        self.sleep(delay).await;
    }

    async fn sleep(&self, d: Duration) {
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = self.wake.notified() => {}
        }
    }

    fn apply(
        &self,
        r: Result<Vec<EntityResult>, Error>,
        queue: &mut VecDeque<Entry>,
        batch: &[String],
        stored: &mut Stored,
        created: &mut Vec<String>,
    ) -> Outcome {
        let results = match r {
            Ok(r) => r,
            Err(Error::Transient { msg, retry_after }) => {
                tracing::debug!(error = %msg, "XDR delivery failed");
                return Outcome::Retry(retry_after);
            }
            Err(Error::Rejected { body, status }) => return Outcome::Refused(format!("HTTP {status}: {body}")),
        };
        let by_id: HashMap<&str, &EntityResult> =
            results.iter().filter_map(|r| r.original_id.as_deref().map(|o| (o, r))).collect();
        let mut changed = false;
        let mut incomplete = false;
        for id in batch {
            let Some(pos) = queue.iter().position(|e| &e.id == id) else { continue };
            let entry = &queue[pos];
            let mut errors = Vec::new();
            let mut missing = false;
            for (tid, ty) in entity_ids(&entry.bundle) {
                if ty == "incident" && stored.map.contains_key(&tid) {
                    continue;
                }
                match by_id.get(tid.as_str()) {
                    Some(r) if matches!(r.result.as_str(), "created" | "exists" | "updated") => {
                        if ty == "incident"
                            && let Some(long) = &r.id
                        {
                            changed |= stored.insert(&tid, long);
                            if r.result == "created" {
                                created.push(tid.clone());
                            }
                        }
                    }
                    Some(r) => errors.push(format!(
                        "{ty} {tid}: {} {}",
                        r.error.as_ref().map(|e| e.as_str().map_or(e.to_string(), str::to_string)).unwrap_or_default(),
                        r.msg.clone().unwrap_or_default()
                    )),
                    None => missing = true,
                }
            }
            if !errors.is_empty() {
                let e = queue.remove(pos).expect("present");
                let msg = errors.join("; ");
                tracing::error!(rule = %e.rule, error = %msg, "XDR rejected entities; entry moved to the outbox's failed/ directory");
                if !e.id.starts_with(RESOLVE) {
                    self.outbox.fail(&e, &msg);
                }
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
            } else if missing {
                incomplete = true;
            } else {
                let e = queue.remove(pos).expect("present");
                if !e.id.starts_with(RESOLVE) {
                    self.outbox.remove(&e.id);
                    self.stats.delivered.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        if changed {
            stored.save();
        }
        if incomplete {
            tracing::warn!("XDR answered without a result for some entities; they will be sent again");
            return Outcome::Retry(None);
        }
        Outcome::Done
    }
}

/// A replayed entry replaces its pending twin.
fn push(queue: &mut VecDeque<Entry>, e: Entry) {
    match queue.iter_mut().find(|q| q.id == e.id) {
        Some(q) => *q = e,
        None => queue.push_back(e),
    }
}

/// The transient id of an entry's incident.
fn incident_of(e: &Entry) -> Option<&str> {
    e.bundle.get("incidents")?.get(0)?.get("id")?.as_str()
}

/// The incidents of a batch, each with the newest `seq` among its entries.
fn batch_incidents(queue: &VecDeque<Entry>, batch: &[String]) -> BTreeMap<String, u64> {
    let mut out: BTreeMap<String, u64> = BTreeMap::new();
    for e in queue.iter().filter(|e| batch.contains(&e.id)) {
        if let Some(x) = incident_of(e) {
            let s = out.entry(x.to_string()).or_default();
            *s = (*s).max(e.seq);
        }
    }
    out
}

/// `(transient id, type)` of every entity of a bundle.
fn entity_ids(bundle: &Value) -> Vec<(String, &'static str)> {
    let mut v = Vec::new();
    for (array, ty) in ENTITY_ARRAYS {
        for e in bundle.get(*array).and_then(Value::as_array).into_iter().flatten() {
            if let Some(id) = e.get("id").and_then(Value::as_str) {
                v.push((id.to_string(), *ty));
            }
        }
    }
    v
}

/// The oldest entries whose incident may be imported now and whose merged bundle stays within
/// the entity limit (at least one, unless every incident waits for its bound).
fn take_batch(
    queue: &VecDeque<Entry>,
    stored: &Stored,
    max_entries: usize,
    rate: &IncidentRate,
    now: Instant,
) -> Vec<String> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for e in queue {
        if incident_of(e).is_some_and(|x| !rate.wait(x, now).is_zero()) {
            continue;
        }
        let new: Vec<String> = entity_ids(&e.bundle)
            .into_iter()
            .filter(|(id, ty)| !(*ty == "incident" && stored.map.contains_key(id)))
            .map(|(id, _)| id)
            .filter(|id| !seen.contains(id))
            .collect();
        if !out.is_empty() && (seen.len() + new.len() > MAX_BUNDLE_ENTITIES || out.len() >= max_entries) {
            break;
        }
        seen.extend(new);
        out.push(e.id.clone());
    }
    out
}

/// How long until some queued entry's incident may be imported (`None`: nothing queued).
fn next_allowed(queue: &VecDeque<Entry>, rate: &IncidentRate, now: Instant) -> Option<Duration> {
    queue.iter().map(|e| incident_of(e).map_or(Duration::ZERO, |x| rate.wait(x, now))).min()
}

/// One bundle for the batch: entities de-duplicated by id (an incident as its newest entry
/// rendered it), confirmed incidents replaced by their stored ids.
fn merge(queue: &VecDeque<Entry>, batch: &[String], stored: &Stored) -> Value {
    let mut arrays: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    let mut seen = HashSet::new();
    let mut top = serde_json::Map::new();
    let mut newest: HashMap<&str, (u64, &Value)> = HashMap::new();
    for e in queue.iter().filter(|e| batch.contains(&e.id)) {
        for inc in e.bundle.get("incidents").and_then(Value::as_array).into_iter().flatten() {
            if let Some(x) = inc.get("id").and_then(Value::as_str)
                && newest.get(x).is_none_or(|(s, _)| *s <= e.seq)
            {
                newest.insert(x, (e.seq, inc));
            }
        }
    }
    for id in batch {
        let Some(e) = queue.iter().find(|e| &e.id == id) else { continue };
        if top.is_empty()
            && let Some(o) = e.bundle.as_object()
        {
            for (k, v) in o {
                if !ENTITY_ARRAYS.iter().any(|(a, _)| a == k) {
                    top.insert(k.clone(), v.clone());
                }
            }
        }
        for (array, ty) in ENTITY_ARRAYS {
            for ent in e.bundle.get(*array).and_then(Value::as_array).into_iter().flatten() {
                let eid = ent.get("id").and_then(Value::as_str).unwrap_or_default().to_string();
                if (*ty == "incident" && stored.map.contains_key(&eid)) || !seen.insert(eid.clone()) {
                    continue;
                }
                let mut ent = match newest.get(eid.as_str()) {
                    Some((_, inc)) if *ty == "incident" => (*inc).clone(),
                    _ => ent.clone(),
                };
                if *ty == "relationship" {
                    for k in ["source_ref", "target_ref"] {
                        if let Some(long) = ent.get(k).and_then(Value::as_str).and_then(|r| stored.map.get(r)) {
                            ent[k] = Value::String(long.clone());
                        }
                    }
                }
                arrays.entry(array).or_default().push(ent);
            }
        }
    }
    for (k, v) in arrays {
        top.insert(k.to_string(), Value::Array(v));
    }
    Value::Object(top)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn unbounded() -> IncidentRate {
        IncidentRate::new(u32::MAX, Duration::from_secs(60))
    }

    fn entry(id: &str, incident: &str, sighting: &str) -> Entry {
        Entry {
            id: id.into(),
            seq: 0,
            rule: "r".into(),
            queued_at: String::new(),
            bundle: json!({"type": "bundle", "source": "t",
                "incidents": [{"id": incident}], "sightings": [{"id": sighting}],
                "relationships": [{"id": format!("{sighting}-rel"), "source_ref": sighting, "target_ref": incident}]}),
        }
    }

    #[test]
    fn merge_sends_shared_incidents_once_and_uses_stored_ids() {
        let dir = tempfile::tempdir().unwrap();
        let mut stored = Stored::open(dir.path().join("s.json"));
        let q: VecDeque<Entry> = vec![
            entry("a", "transient:i1", "transient:s1"),
            entry("b", "transient:i1", "transient:s2"),
            entry("c", "transient:i2", "transient:s3"),
        ]
        .into();
        let batch = take_batch(&q, &stored, usize::MAX, &unbounded(), Instant::now());
        assert_eq!(batch.len(), 3);
        let b = merge(&q, &batch, &stored);
        assert_eq!(b["incidents"].as_array().unwrap().len(), 2);
        assert_eq!(b["sightings"].as_array().unwrap().len(), 3);
        let long = "http://x/ctia/incident/incident-00000000-0000-4000-8000-000000000000";
        stored.insert("transient:i1", long);
        let b = merge(&q, &batch, &stored);
        assert_eq!(b["incidents"].as_array().unwrap().len(), 1);
        assert_eq!(b["relationships"][0]["target_ref"], long);
        stored.save();
        assert_eq!(Stored::open(dir.path().join("s.json")).map.get("transient:i1").unwrap(), long);
    }

    #[test]
    fn batches_respect_the_entity_limit() {
        let dir = tempfile::tempdir().unwrap();
        let stored = Stored::open(dir.path().join("s.json"));
        let q: VecDeque<Entry> =
            (0..60).map(|i| entry(&format!("e{i}"), &format!("transient:i{i}"), &format!("transient:s{i}"))).collect();
        let batch = take_batch(&q, &stored, usize::MAX, &unbounded(), Instant::now());
        assert_eq!(batch.len(), 33, "3 entities each, at most 100");
        assert_eq!(take_batch(&q, &stored, 1, &unbounded(), Instant::now()).len(), 1);
    }

    fn seq(mut e: Entry, seq: u64) -> Entry {
        e.seq = seq;
        e
    }

    #[test]
    fn an_incident_over_its_bound_waits_and_then_goes_in_one_import() {
        let dir = tempfile::tempdir().unwrap();
        let stored = Stored::open(dir.path().join("s.json"));
        // 2 per minute: one import every 30 s at most.
        let mut rate = IncidentRate::new(2, Duration::from_secs(60));
        let t0 = Instant::now();
        let q: VecDeque<Entry> = vec![
            entry("a1", "transient:i1", "transient:s1"),
            entry("b1", "transient:i2", "transient:s2"),
            entry("a2", "transient:i1", "transient:s3"),
            entry("a3", "transient:i1", "transient:s4"),
        ]
        .into();
        assert_eq!(take_batch(&q, &stored, usize::MAX, &rate, t0).len(), 4, "first import of each: at once");
        rate.record("transient:i1", t0);
        // i1 was just imported: only i2's entry may go.
        let now = t0 + Duration::from_secs(2);
        assert_eq!(take_batch(&q, &stored, usize::MAX, &rate, now), ["b1"]);
        let q: VecDeque<Entry> = q.into_iter().filter(|e| e.id != "b1").collect();
        assert!(take_batch(&q, &stored, usize::MAX, &rate, now).is_empty());
        assert_eq!(next_allowed(&q, &rate, now), Some(Duration::from_secs(28)));
        // Half a minute after the previous import, everything waiting goes together.
        let later = t0 + Duration::from_secs(30);
        assert_eq!(take_batch(&q, &stored, usize::MAX, &rate, later), ["a1", "a2", "a3"]);
        assert_eq!(next_allowed(&VecDeque::new(), &rate, later), None);
    }

    #[test]
    fn no_minute_holds_more_imports_than_the_bound() {
        // Detections of one incident every 100 ms for 5 minutes, imported whenever allowed.
        let mut rate = IncidentRate::new(2, Duration::from_secs(60));
        let t0 = Instant::now();
        let mut sent = Vec::new();
        for i in 0..3000u64 {
            let now = t0 + Duration::from_millis(100 * i);
            if rate.wait("x", now).is_zero() {
                rate.record("x", now);
                sent.push(now);
            }
        }
        assert_eq!(sent.len(), 10, "5 minutes at 2 per minute");
        for w in sent.windows(3) {
            assert!(w[2] - w[0] >= Duration::from_secs(60), "3 imports within a minute");
        }
    }

    #[test]
    fn merge_sends_an_incident_as_its_newest_entry_rendered_it() {
        let dir = tempfile::tempdir().unwrap();
        let stored = Stored::open(dir.path().join("s.json"));
        let mut a = seq(entry("a", "transient:i1", "transient:s1"), 1);
        a.bundle["incidents"][0]["title"] = json!("1 detection");
        let mut b = seq(entry("b", "transient:i1", "transient:s2"), 2);
        b.bundle["incidents"][0]["title"] = json!("2 detections");
        let q: VecDeque<Entry> = vec![a, b].into();
        let batch = take_batch(&q, &stored, usize::MAX, &unbounded(), Instant::now());
        let m = merge(&q, &batch, &stored);
        assert_eq!(m["incidents"], json!([{"id": "transient:i1", "title": "2 detections"}]));
        assert_eq!(batch_incidents(&q, &batch), BTreeMap::from([("transient:i1".to_string(), 2)]));
    }

    fn patch(incident: &str, seq: u64) -> Patch {
        Patch {
            incident: incident.into(),
            seq,
            rule: "r".into(),
            queued_at: String::new(),
            body: json!({"meta": {"detections": seq}}),
            entity: json!({"id": incident}),
            source: "t".into(),
        }
    }

    #[test]
    fn patches_coalesce_to_the_newest_and_follow_the_sightings() {
        let dir = tempfile::tempdir().unwrap();
        let mut stored = Stored::open(dir.path().join("s.json"));
        let long = "http://x/ctia/incident/incident-00000000-0000-4000-8000-000000000000";
        let mut p = Pending::default();
        let now = Instant::now();
        for s in [3, 5, 4] {
            p.add_patch(patch("transient:i1", s));
        }
        assert_eq!(p.patches.len(), 1);
        assert_eq!(p.patches["transient:i1"].seq, 5, "many detections, one PATCH: the newest");
        // Its sightings are still waiting: no PATCH yet.
        p.accept(Msg { entry: entry("a", "transient:i1", "transient:s1"), patch: None });
        stored.insert("transient:i1", long);
        assert_eq!(p.next_patch(&stored, now), None);
        // Just imported (more sightings may still wait for the bound): the PATCH goes now.
        p.due.insert("transient:i1".into());
        assert_eq!(p.next_patch(&stored, now), Some(PatchStep::Send("transient:i1".into(), long.into())));
        // A failed one waits for its retry time; imports do not.
        p.retry_at.insert("transient:i1".into(), now + Duration::from_secs(5));
        assert_eq!(p.next_patch(&stored, now), None);
        assert_eq!(p.next_retry(now), Some(Duration::from_secs(5)));
        assert_eq!(p.next_retry(now + Duration::from_secs(6)), None, "a passed retry time is no reason to wake");
        p.retry_at.clear();
        // Left over with nothing waiting (a crash after the import): sent too.
        p.due.clear();
        p.queue.clear();
        assert_eq!(p.next_patch(&stored, now), Some(PatchStep::Send("transient:i1".into(), long.into())));
        // Stored id unknown: look it up first; if that fails, give up.
        let fresh = Stored::open(dir.path().join("other.json"));
        assert_eq!(p.next_patch(&fresh, now), Some(PatchStep::Resolve("transient:i1".into())));
        p.resolving.insert("transient:i1".into());
        assert_eq!(p.next_patch(&fresh, now), Some(PatchStep::Drop("transient:i1".into())));
    }

    #[test]
    fn incident_rate_counts_per_incident() {
        let mut r = IncidentRate::new(1, Duration::from_secs(10));
        let t0 = Instant::now();
        r.record("a", t0);
        assert_eq!(r.wait("a", t0 + Duration::from_secs(4)), Duration::from_secs(6));
        assert_eq!(r.wait("b", t0), Duration::ZERO);
        assert_eq!(r.wait("a", t0 + Duration::from_secs(10)), Duration::ZERO);
    }
}
