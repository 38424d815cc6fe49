//! **history**: every detection of `trapline run`, kept in SQLite (`state_dir/history.sqlite`,
//! WAL) for `trapline history` and the dashboard's queries.
//!
//! Writes never hold up the reading thread: [`History::record`] hands a detection to a
//! thread of its own through a bounded queue and returns; that thread writes them in
//! batches (one transaction per batch) and applies retention (age, then row count). When the
//! queue is full — the disk cannot keep up with a flood — detections are counted as dropped
//! from the history (they still reach every action), never waited for. A detection's
//! idempotency key is unique in the table, so the replay after a crash does not add it twice.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use rusqlite::{Connection, OpenFlags, params};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::engine::Detection;

/// The database file in the state directory.
pub const FILE: &str = "history.sqlite";

/// Detections waiting to be written, at most.
const QUEUE: usize = 16_384;
/// Detections per transaction, at most.
const BATCH: usize = 2_000;
/// How long a batch may wait to fill.
const LINGER: Duration = Duration::from_millis(200);
/// How often retention runs.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// `history:` in trapline.yml.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HistoryDef {
    /// Keep a history of detections (default true).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Detections older than this (event time) are deleted. Default `30d`.
    #[serde(default = "default_age")]
    pub max_age: crate::rule::model::DurationText,
    /// At most this many detections are kept (the oldest go first). Default 1,000,000.
    #[serde(default = "default_rows")]
    pub max_rows: u64,
}

fn yes() -> bool {
    true
}
fn default_age() -> crate::rule::model::DurationText {
    crate::rule::model::DurationText(Duration::from_secs(30 * 86_400), "30d".into())
}
fn default_rows() -> u64 {
    1_000_000
}

impl Default for HistoryDef {
    fn default() -> Self {
        HistoryDef { enabled: true, max_age: default_age(), max_rows: default_rows() }
    }
}

/// The writing side, owned by the daemon.
pub struct History {
    tx: Option<Sender<Detection>>,
    worker: Option<std::thread::JoinHandle<()>>,
    /// Detections not written because the queue was full.
    pub dropped: Arc<AtomicU64>,
    /// Detections written so far.
    pub written: Arc<AtomicU64>,
}

impl History {
    /// Opens (creating) the history in `state_dir` and starts its writer.
    pub fn open(state_dir: &Path, def: &HistoryDef) -> Result<History> {
        let path = state_dir.join(FILE);
        let conn = open_rw(&path)?;
        let (tx, rx) = crossbeam_channel::bounded(QUEUE);
        let written = Arc::new(AtomicU64::new(0));
        let w = Arc::clone(&written);
        let def = def.clone();
        let worker = std::thread::Builder::new()
            .name("trapline-history".into())
            .spawn(move || writer(conn, rx, def, w))
            .context("cannot start the history writer")?;
        Ok(History { tx: Some(tx), worker: Some(worker), dropped: Arc::new(AtomicU64::new(0)), written })
    }

    /// Queues a detection for the history; never blocks.
    pub fn record(&self, d: &Detection) {
        let Some(tx) = &self.tx else { return };
        if let Err(TrySendError::Full(_)) = tx.try_send(d.clone()) {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed);
            if n.is_power_of_two() {
                tracing::warn!(
                    dropped = n + 1,
                    "history: the writer cannot keep up; detections left out of the history (the actions still got them)"
                );
            }
        }
    }

    /// Writes what is queued and stops the writer.
    pub fn close(&mut self) {
        self.tx.take();
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

impl Drop for History {
    fn drop(&mut self) {
        self.close();
    }
}

fn open_rw(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // A batch is one transaction; a crash loses at most the last one, which the replay of
    // the unacknowledged lines writes again.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS detections (
            id INTEGER PRIMARY KEY,
            key TEXT NOT NULL UNIQUE,
            event_ms INTEGER NOT NULL,
            rule TEXT NOT NULL,
            severity INTEGER NOT NULL,
            class TEXT NOT NULL,
            source TEXT NOT NULL,
            client_ip TEXT,
            path TEXT,
            json TEXT NOT NULL
        );
        CREATE INDEX IF NOT EXISTS detections_time ON detections(event_ms);
        CREATE INDEX IF NOT EXISTS detections_ip ON detections(client_ip, event_ms);
        CREATE INDEX IF NOT EXISTS detections_rule ON detections(rule, event_ms);",
    )?;
    Ok(conn)
}

fn writer(mut conn: Connection, rx: Receiver<Detection>, def: HistoryDef, written: Arc<AtomicU64>) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut last_prune = Instant::now() - PRUNE_EVERY;
    loop {
        let open = match rx.recv_timeout(LINGER) {
            Ok(d) => {
                batch.push(d);
                let until = Instant::now() + LINGER;
                while batch.len() < BATCH {
                    match rx.recv_deadline(until) {
                        Ok(d) => batch.push(d),
                        Err(_) => break,
                    }
                }
                true
            }
            Err(RecvTimeoutError::Timeout) => true,
            Err(RecvTimeoutError::Disconnected) => false,
        };
        if !batch.is_empty() {
            match write(&mut conn, &batch) {
                Ok(n) => {
                    written.fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(e) => tracing::error!(error = format!("{e:#}"), lost = batch.len(), "history: cannot write"),
            }
            batch.clear();
        }
        if last_prune.elapsed() >= PRUNE_EVERY || !open {
            if let Err(e) = prune(&conn, &def) {
                tracing::warn!(error = format!("{e:#}"), "history: retention failed");
            }
            last_prune = Instant::now();
        }
        if !open {
            return;
        }
    }
}

fn write(conn: &mut Connection, batch: &[Detection]) -> Result<usize> {
    let tx = conn.transaction()?;
    let mut n = 0;
    {
        let mut st = tx.prepare_cached(
            "INSERT OR IGNORE INTO detections (key, event_ms, rule, severity, class, source, client_ip, path, json)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?;
        for d in batch {
            let json = serde_json::to_string(d)?;
            n += st.execute(params![
                d.key,
                d.event_time.timestamp_millis(),
                d.rule.id,
                d.rule.severity as i64,
                d.rule.class,
                d.source.name.as_ref(),
                d.fields.get("client_ip"),
                d.fields.get("path"),
                json
            ])?;
        }
    }
    tx.commit()?;
    Ok(n)
}

/// Deletes detections older than `max_age` (relative to the newest), then the oldest beyond
/// `max_rows`.
fn prune(conn: &Connection, def: &HistoryDef) -> Result<()> {
    let newest: Option<i64> = conn.query_row("SELECT max(event_ms) FROM detections", [], |r| r.get(0))?;
    let Some(newest) = newest else { return Ok(()) };
    let now = chrono::Utc::now().timestamp_millis().max(newest);
    conn.execute("DELETE FROM detections WHERE event_ms < ?1", [now - def.max_age.0.as_millis() as i64])?;
    conn.execute(
        "DELETE FROM detections WHERE id <= (SELECT id FROM detections ORDER BY id DESC LIMIT 1 OFFSET ?1)",
        [def.max_rows as i64],
    )?;
    Ok(())
}

/// What to read back.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub ip: Option<String>,
    pub rule: Option<String>,
    /// One detection by its idempotency key (unique in the table).
    pub key: Option<String>,
    /// Event time at or after this (ms since the epoch).
    pub since_ms: Option<i64>,
    pub limit: usize,
}

/// Detections by address, rule and time (`?5`, the key, is NULL).
const FILTERED: &str = "SELECT json FROM detections
     WHERE (?1 IS NULL OR client_ip = ?1) AND (?2 IS NULL OR rule = ?2) AND event_ms >= ?3 AND ?5 IS NULL
     ORDER BY event_ms DESC, id DESC LIMIT ?4";
/// The same with a key.
const BY_KEY: &str = "SELECT json FROM detections
     WHERE key = ?5 AND (?1 IS NULL OR client_ip = ?1) AND (?2 IS NULL OR rule = ?2) AND event_ms >= ?3
     ORDER BY event_ms DESC, id DESC LIMIT ?4";

fn params_of(q: &Query) -> impl rusqlite::Params + '_ {
    (q.ip.as_deref(), q.rule.as_deref(), q.since_ms.unwrap_or(i64::MIN), q.limit.max(1) as i64, q.key.as_deref())
}

/// The reading side: `trapline history`, the dashboard.
pub struct Reader {
    conn: Connection,
}

/// One attacker or rule of a top list.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Top {
    pub name: String,
    pub detections: u64,
    pub severity: crate::rule::Severity,
    pub last_ms: i64,
}

impl Reader {
    /// Opens the history of `state_dir` read-only; an error says when there is none yet.
    pub fn open(state_dir: &Path) -> Result<Reader> {
        let path: PathBuf = state_dir.join(FILE);
        if !path.exists() {
            anyhow::bail!("no history at {} yet: it is written by `trapline run`", path.display());
        }
        let conn = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .with_context(|| format!("cannot open {}", path.display()))?;
        conn.busy_timeout(Duration::from_secs(5))?;
        Ok(Reader { conn })
    }

    /// Detections matching `q`, newest first, as the JSON the log writes.
    pub fn detections(&self, q: &Query) -> Result<Vec<serde_json::Value>> {
        let mut out = Vec::new();
        for r in self.detection_texts(q)? {
            out.push(serde_json::from_str(&r)?);
        }
        Ok(out)
    }

    /// The JSON text of the detections matching `q`, newest first.
    fn detection_texts(&self, q: &Query) -> Result<Vec<String>> {
        // With a key, a statement of its own: `key = ?` as a term of its own is what lets
        // SQLite use the key's unique index (a `?5 IS NULL OR key = ?5` would scan the table).
        let mut st = self.conn.prepare_cached(if q.key.is_some() { BY_KEY } else { FILTERED })?;
        let rows = st.query_map(params_of(q), |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// One detection by its key, as the JSON the log writes (the text as stored).
    pub fn detection(&self, key: &str) -> Result<Option<String>> {
        let q = Query { key: Some(key.to_string()), limit: 1, ..Default::default() };
        Ok(self.detection_texts(&q)?.pop())
    }

    /// The attackers (`by_ip`) or rules with the most detections since `since_ms`.
    pub fn top(&self, by_ip: bool, since_ms: i64, limit: usize) -> Result<Vec<Top>> {
        let col = if by_ip { "client_ip" } else { "rule" };
        let sql = format!(
            "SELECT {col}, count(*), max(severity), max(event_ms) FROM detections
             WHERE event_ms >= ?1 AND {col} IS NOT NULL AND {col} != ''
             GROUP BY {col} ORDER BY count(*) DESC, {col} LIMIT ?2"
        );
        let mut st = self.conn.prepare_cached(&sql)?;
        let rows = st.query_map(params![since_ms, limit as i64], top_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Detections per `bucket_ms` since `since_ms`: (bucket start, count), oldest first.
    pub fn timeline(&self, since_ms: i64, bucket_ms: i64) -> Result<Vec<(i64, u64)>> {
        let mut st = self.conn.prepare_cached(
            "SELECT (event_ms / ?2) * ?2 AS b, count(*) FROM detections WHERE event_ms >= ?1 GROUP BY b ORDER BY b",
        )?;
        let rows =
            st.query_map(params![since_ms, bucket_ms.max(1)], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

/// Counts by one column among the detections where another equals a value.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Count {
    pub name: String,
    pub detections: u64,
}

/// Everything the history holds about one address: the attacker page.
#[derive(Debug, Clone, Serialize)]
pub struct Attacker {
    pub ip: String,
    pub detections: u64,
    pub first_ms: Option<i64>,
    pub last_ms: Option<i64>,
    pub classes: Vec<Count>,
    pub rules: Vec<Top>,
    pub sources: Vec<Count>,
}

/// What the history says about one rule: the rule page.
#[derive(Debug, Clone, Serialize)]
pub struct RuleHistory {
    /// Detections in the last hour, day and week (event time).
    pub last_hour: u64,
    pub last_day: u64,
    pub last_week: u64,
    pub last_ms: Option<i64>,
    /// The addresses it detected most in the last week.
    pub attackers: Vec<Top>,
    /// Detections per hour over the last day: (bucket start, count), oldest first.
    pub timeline: Vec<(i64, u64)>,
}

impl Reader {
    /// The attacker page of `ip`.
    pub fn attacker(&self, ip: &str) -> Result<Attacker> {
        let (detections, first_ms, last_ms) = self.conn.query_row(
            "SELECT count(*), min(event_ms), max(event_ms) FROM detections WHERE client_ip = ?1",
            [ip],
            |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?, r.get(2)?)),
        )?;
        let counts = |col: &str| -> Result<Vec<Count>> {
            let mut st = self.conn.prepare_cached(&format!(
                "SELECT {col}, count(*) FROM detections WHERE client_ip = ?1 GROUP BY {col} ORDER BY count(*) DESC, {col} LIMIT 50"
            ))?;
            let rows = st.query_map([ip], |r| Ok(Count { name: r.get(0)?, detections: r.get::<_, i64>(1)? as u64 }))?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        };
        let mut st = self.conn.prepare_cached(
            "SELECT rule, count(*), max(severity), max(event_ms) FROM detections WHERE client_ip = ?1
             GROUP BY rule ORDER BY count(*) DESC, rule LIMIT 50",
        )?;
        let rules = st.query_map([ip], top_row)?.collect::<rusqlite::Result<_>>()?;
        Ok(Attacker {
            ip: ip.to_string(),
            detections,
            first_ms,
            last_ms,
            classes: counts("class")?,
            rules,
            sources: counts("source")?,
        })
    }

    /// The rule page's history of rule `id`, relative to `now_ms`.
    pub fn rule(&self, id: &str, now_ms: i64) -> Result<RuleHistory> {
        let (hour, day, week) = (now_ms - 3_600_000, now_ms - 86_400_000, now_ms - 7 * 86_400_000);
        let (last_hour, last_day, last_week, last_ms) = self.conn.query_row(
            "SELECT count(*) FILTER (WHERE event_ms >= ?2), count(*) FILTER (WHERE event_ms >= ?3), count(*), max(event_ms)
             FROM detections WHERE rule = ?1 AND event_ms >= ?4",
            params![id, hour, day, week],
            |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64, r.get::<_, i64>(2)? as u64, r.get(3)?)),
        )?;
        let mut st = self.conn.prepare_cached(
            "SELECT client_ip, count(*), max(severity), max(event_ms) FROM detections
             WHERE rule = ?1 AND event_ms >= ?2 AND client_ip IS NOT NULL AND client_ip != ''
             GROUP BY client_ip ORDER BY count(*) DESC, client_ip LIMIT 10",
        )?;
        let attackers = st.query_map(params![id, week], top_row)?.collect::<rusqlite::Result<_>>()?;
        let mut st = self.conn.prepare_cached(
            "SELECT (event_ms / 3600000) * 3600000 AS b, count(*) FROM detections
             WHERE rule = ?1 AND event_ms >= ?2 GROUP BY b ORDER BY b",
        )?;
        let timeline = st
            .query_map(params![id, day], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(RuleHistory { last_hour, last_day, last_week, last_ms, attackers, timeline })
    }
}

/// A row of (name, count, max severity, last event ms) as a [`Top`] entry.
fn top_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Top> {
    Ok(Top {
        name: r.get(0)?,
        detections: r.get::<_, i64>(1)? as u64,
        severity: severity_of(r.get(2)?),
        last_ms: r.get(3)?,
    })
}

fn severity_of(n: i64) -> crate::rule::Severity {
    use crate::rule::Severity::*;
    match n {
        0 => Info,
        1 => Low,
        2 => Medium,
        3 => High,
        _ => Critical,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rule::Severity;

    fn det(key: &str, ip: &str, rule: &str, secs_ago: i64) -> Detection {
        let t = chrono::Utc::now() - chrono::Duration::seconds(secs_ago);
        Detection::sample(key, rule, "sqli", Severity::High, t, &[("client_ip", ip)], "")
    }

    #[test]
    fn written_in_batches_queried_and_pruned_by_age_and_count() {
        let dir = tempfile::tempdir().unwrap();
        let def = HistoryDef {
            max_rows: 3,
            max_age: crate::rule::model::DurationText(Duration::from_secs(3600), "1h".into()),
            ..Default::default()
        };
        let mut h = History::open(dir.path(), &def).unwrap();
        h.record(&det("old", "192.0.2.1", "a", 7200));
        for i in 0..5 {
            h.record(&det(&format!("k{i}"), "192.0.2.2", "b", 10 - i));
        }
        // The replay of a detection already written adds nothing.
        h.record(&det("k4", "192.0.2.2", "b", 6));
        h.close();
        let r = Reader::open(dir.path()).unwrap();
        let all = r.detections(&Query { limit: 100, ..Default::default() }).unwrap();
        let keys: Vec<&str> = all.iter().map(|d| d["key"].as_str().unwrap()).collect();
        assert_eq!(keys, ["k4", "k3", "k2"], "newest first; the old one and the oldest beyond 3 are gone");
        let top = r.top(true, 0, 10).unwrap();
        assert_eq!((top[0].name.as_str(), top[0].detections), ("192.0.2.2", 3));
        assert!(
            r.detections(&Query { ip: Some("192.0.2.1".into()), limit: 10, ..Default::default() }).unwrap().is_empty()
        );
        let one = r.detection("k3").unwrap().unwrap();
        assert_eq!(serde_json::from_str::<serde_json::Value>(&one).unwrap()["key"], "k3");
        assert!(r.detection("old").unwrap().is_none(), "pruned");
        let q = Query { key: Some("k2".into()), limit: 10, ..Default::default() };
        assert_eq!(r.detections(&q).unwrap().len(), 1);
        let plan: String =
            r.conn.query_row(&format!("EXPLAIN QUERY PLAN {BY_KEY}"), params_of(&q), |row| row.get(3)).unwrap();
        assert!(plan.contains("USING INDEX"), "a key is found through its unique index: {plan}");
    }

    #[test]
    fn attacker_and_rule_pages() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = History::open(dir.path(), &HistoryDef::default()).unwrap();
        h.record(&det("a1", "192.0.2.7", "web.sqli", 30));
        h.record(&det("a2", "192.0.2.7", "web.sqli", 20));
        h.record(&det("a3", "192.0.2.7", "web.xss", 2 * 3600));
        h.record(&det("b1", "198.51.100.1", "web.sqli", 3 * 86_400));
        h.record(&det("b2", "198.51.100.1", "web.sqli", 9 * 86_400));
        h.close();
        let r = Reader::open(dir.path()).unwrap();
        let a = r.attacker("192.0.2.7").unwrap();
        assert_eq!(a.detections, 3);
        assert_eq!(
            a.rules.iter().map(|t| (t.name.as_str(), t.detections)).collect::<Vec<_>>(),
            [("web.sqli", 2), ("web.xss", 1)]
        );
        assert_eq!(a.classes, [Count { name: "sqli".into(), detections: 3 }]);
        assert!(a.first_ms < a.last_ms);
        let none = r.attacker("203.0.113.9").unwrap();
        assert_eq!((none.detections, none.first_ms), (0, None));
        let now = chrono::Utc::now().timestamp_millis();
        let rule = r.rule("web.sqli", now).unwrap();
        assert_eq!((rule.last_hour, rule.last_day, rule.last_week), (2, 2, 3), "the 9-day-old one is outside the week");
        assert_eq!(rule.attackers.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["192.0.2.7", "198.51.100.1"]);
        assert_eq!(rule.timeline.iter().map(|b| b.1).sum::<u64>(), 2);
    }
}
