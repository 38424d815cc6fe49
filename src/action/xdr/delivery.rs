//! The background delivery task: outbox → bundle imports, on the daemon's tokio runtime.
//!
//! The tailing thread only writes outbox files and sends their entries over an unbounded
//! channel (never blocks); this task owns everything that waits on the network:
//!
//! 1. take the oldest pending entries, up to 100 entities, and merge their bundles (entities
//!    shared by several entries, such as the incident of a burst, are sent once);
//! 2. an incident XDR already confirmed is not sent again: relationships point at its stored
//!    id (kept in `<state>/xdr/stored.json`); an incident not yet confirmed travels with the
//!    sighting, and a repeat gets `exists`;
//! 3. pace by the request budget, import, read the per-entity results by `original_id`;
//! 4. remove the entries whose every entity is `created`/`exists`; move entries with an
//!    `error` result to `failed/`; keep everything else and retry with backoff (honouring
//!    `Retry-After`).
//!
//! A 400 on a merged bundle is narrowed down by retrying entries one at a time, so one bad
//! entry cannot block the queue.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::{Notify, mpsc};

use super::bundle::MAX_BUNDLE_ENTITIES;
use super::client::{Client, EntityResult, Error};
use super::ctim::ENTITY_ARRAYS;
use super::limiter::Backoff;
use super::outbox::{Entry, Outbox};
use crate::state::write_atomic;

/// Most stored incident ids remembered (oldest forgotten first; a forgotten one is simply sent
/// again and answered `exists`).
const MAX_STORED: usize = 20_000;

/// Counters shared with the action (for the summary and tests).
#[derive(Debug, Default)]
pub struct Stats {
    pub delivered: AtomicU64,
    pub failed: AtomicU64,
    pub requests: AtomicU64,
    pub retries: AtomicU64,
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
    fn save(&self) {
        let list: Vec<(&String, &String)> = self.order.iter().filter_map(|k| self.map.get_key_value(k)).collect();
        if let Err(e) = write_atomic(&self.path, &serde_json::to_vec(&list).unwrap_or_default(), true) {
            tracing::warn!(error = %e, "cannot save XDR stored ids");
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
}

/// What one import did to a batch.
enum Outcome {
    Done,
    Retry(Option<Duration>),
    /// The whole body was refused: narrow down.
    Refused(String),
}

impl Delivery {
    /// Runs until `stop` is set. `initial` are the entries found on disk at start.
    pub async fn run(self, initial: Vec<Entry>, mut rx: mpsc::UnboundedReceiver<Entry>) {
        let mut queue: VecDeque<Entry> = initial.into();
        let mut stored = Stored::open(self.state_dir.join("stored.json"));
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(60));
        let mut one_at_a_time = 0usize;
        let mut last_warn: Option<Instant> = None;
        if !queue.is_empty() {
            tracing::info!(pending = queue.len(), "resuming XDR deliveries from the outbox");
        }
        loop {
            while let Ok(e) = rx.try_recv() {
                push(&mut queue, e);
            }
            if self.stop.load(Ordering::Relaxed) {
                break;
            }
            if queue.is_empty() {
                tokio::select! {
                    e = rx.recv() => match e { Some(e) => push(&mut queue, e), None => break },
                    _ = self.wake.notified() => {}
                }
                continue;
            }
            let max_entries = if one_at_a_time > 0 { 1 } else { usize::MAX };
            let batch = take_batch(&queue, &stored, max_entries);
            let bundle = merge(&queue, &batch, &stored);
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
            let outcome = tokio::select! {
                r = self.client.import(&bundle) => self.apply(r, &mut queue, &batch, &mut stored),
                _ = self.wake.notified() => continue,
            };
            match outcome {
                Outcome::Done => {
                    backoff.reset();
                    one_at_a_time = one_at_a_time.saturating_sub(1);
                }
                Outcome::Retry(after) => {
                    self.stats.retries.fetch_add(1, Ordering::Relaxed);
                    // A `Retry-After` is honoured as given (plus a little jitter) and does not
                    // grow the backoff; other failures back off exponentially.
                    let delay = match after {
                        Some(a) => a + Duration::from_millis(fastrand::u64(0..250)),
                        None => backoff.next_delay(),
                    };
                    if let Some(a) = after {
                        self.client.budget.lock().await.pause_until(Instant::now() + a);
                    }
                    if last_warn.is_none_or(|t| t.elapsed() > Duration::from_secs(30)) {
                        tracing::warn!(pending = queue.len(), retry_in = ?delay, "XDR delivery will be retried");
                        last_warn = Some(Instant::now());
                    }
                    self.sleep(delay).await;
                }
                Outcome::Refused(msg) => {
                    if batch.len() > 1 {
                        tracing::warn!(
                            entries = batch.len(),
                            "XDR refused a merged bundle; retrying its entries one by one"
                        );
                        one_at_a_time = batch.len();
                    } else if let Some(e) = queue.iter().position(|e| e.id == batch[0]).and_then(|i| queue.remove(i)) {
                        tracing::error!(rule = %e.rule, error = %msg, "XDR refused a bundle; moved to the outbox's failed/ directory");
                        self.outbox.fail(&e, &msg);
                        self.stats.failed.fetch_add(1, Ordering::Relaxed);
                        one_at_a_time = one_at_a_time.saturating_sub(1);
                    }
                }
            }
        }
        tracing::debug!(pending = queue.len(), "XDR delivery stopped");
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
                self.outbox.fail(&e, &msg);
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
            } else if missing {
                incomplete = true;
            } else {
                let e = queue.remove(pos).expect("present");
                self.outbox.remove(&e.id);
                self.stats.delivered.fetch_add(1, Ordering::Relaxed);
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

/// The oldest entries whose merged bundle stays within the entity limit (at least one).
fn take_batch(queue: &VecDeque<Entry>, stored: &Stored, max_entries: usize) -> Vec<String> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for e in queue {
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

/// One bundle for the batch: entities de-duplicated by id, confirmed incidents replaced by
/// their stored ids.
fn merge(queue: &VecDeque<Entry>, batch: &[String], stored: &Stored) -> Value {
    let mut arrays: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    let mut seen = HashSet::new();
    let mut top = serde_json::Map::new();
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
                if (*ty == "incident" && stored.map.contains_key(&eid)) || !seen.insert(eid) {
                    continue;
                }
                let mut ent = ent.clone();
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
        let batch = take_batch(&q, &stored, usize::MAX);
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
        let batch = take_batch(&q, &stored, usize::MAX);
        assert_eq!(batch.len(), 33, "3 entities each, at most 100");
        assert_eq!(take_batch(&q, &stored, 1).len(), 1);
    }
}
