//! The live feed's data path: compact rows, batched once per tick for every client, and a
//! small ring of the full detections those rows stand for.
//!
//! - **Rows, not detections.** A client of `/api/events` gets, per detection, a [`Row`]: time,
//!   rule, severity, class, address, source, host, a bounded excerpt of the request (or of
//!   the line), the counts of a threshold or sequence detection and the detection's key — a
//!   few hundred bytes instead of the whole detection (fields, raw line, rule), which the
//!   page fetches from `/api/detection?id=<key>` when someone clicks the row.
//! - **Once for all clients.** [`Feed::publish`] (on the reading thread) serialises the row
//!   and the full detection once, only while someone listens, and queues the row. A task of
//!   the runtime ([`run`]) wakes at the first row, waits [`GATHER`] for more, and turns what
//!   came into one ready-made server-sent-events frame ([`Batch`]), broadcast to the clients:
//!   a client's work per tick is one reference-counted buffer to write, whatever the rate.
//! - **Lost rows are counted.** Every published detection has a sequence number and each
//!   batch says which range it covers, so a client that skipped batches (too slow: the
//!   broadcast dropped them) or a row refused at a full queue is reported as an event
//!   `lagged` with the number missed.
//! - **Recent full detections.** The history is written in batches, so the newest
//!   detections are not in SQLite yet when their row arrives: the full JSON of the last
//!   [`RING_COUNT`] (at most [`RING_BYTES`]) published detections is kept here for
//!   `/api/detection`, which falls back to the history for older ones.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::{Notify, broadcast};

use crate::engine::Detection;
use crate::rule::Severity;

/// How long the feed gathers rows after the first before it sends them.
pub const GATHER: Duration = Duration::from_millis(100);
/// Most rows in one `detections` event (a tick with more sends several events in one write).
const EVENT_ROWS: usize = 256;
/// Most rows queued for one tick; beyond that (over 10,000 detections a second) rows are
/// dropped and counted as missed: a page cannot show more, and memory stays bounded.
const TICK_ROWS: usize = 1024;
/// Batches kept for a slow client before it misses some (1.6 s of ticks).
const BACKLOG: usize = 16;
/// Bytes of the request or line a row carries, at most.
pub const EXCERPT_BYTES: usize = 200;
/// Bytes of the address or host a row carries, at most (log text: bounded like the excerpt).
const SHORT_BYTES: usize = 100;
/// Full detections kept for `/api/detection`, at most, and their JSON's total size.
pub const RING_COUNT: usize = 2_000;
pub const RING_BYTES: usize = 4 << 20;

/// One detection as the live feed carries it. Log-derived text is cut and left to serde_json
/// to escape; the page inserts it as text.
#[derive(Debug, Serialize)]
pub struct Row<'a> {
    /// The detection's idempotency key: `/api/detection?id=` returns the whole detection.
    pub key: &'a str,
    /// Event time.
    #[serde(serialize_with = "crate::engine::detection::ser_time")]
    pub time: DateTime<Utc>,
    pub rule: &'a str,
    pub severity: Severity,
    pub class: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<&'a str>,
    /// The configured source's name.
    pub source: &'a str,
    /// The `host` field (virtual host), when the line has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<&'a str>,
    /// The request, else the path, else the raw line: at most [`EXCERPT_BYTES`] bytes.
    pub excerpt: &'a str,
    /// Whether `excerpt` (or the address or host) was cut.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub cut: bool,
    /// A threshold detection: the events counted; a sequence: its steps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// Detections held back by suppression since the previous one of this key.
    #[serde(skip_serializing_if = "is_zero")]
    pub suppressed: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// At most `max` bytes of `s`, cut on a character boundary; and whether it was cut.
pub fn cut(s: &str, max: usize) -> (&str, bool) {
    if s.len() <= max {
        return (s, false);
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    (&s[..end], true)
}

impl<'a> Row<'a> {
    pub fn of(d: &'a Detection) -> Row<'a> {
        let field = |name: &str| d.fields.get(name).map(String::as_str).filter(|v| !v.is_empty());
        let what = field("request").or_else(|| field("path")).unwrap_or(&d.line);
        let (excerpt, c1) = cut(what, EXCERPT_BYTES);
        let (client_ip, c2) = field("client_ip").map_or((None, false), |v| {
            let (v, c) = cut(v, SHORT_BYTES);
            (Some(v), c)
        });
        let (host, c3) = field("host").map_or((None, false), |v| {
            let (v, c) = cut(v, SHORT_BYTES);
            (Some(v), c)
        });
        Row {
            key: &d.key,
            time: d.event_time,
            rule: &d.rule.id,
            severity: d.rule.severity,
            class: &d.rule.class,
            client_ip,
            source: &d.source.name,
            host,
            excerpt,
            cut: c1 || c2 || c3,
            count: d.threshold.as_ref().map(|t| t.count).or(d.sequence.as_ref().map(|s| s.steps)),
            suppressed: d.suppressed,
        }
    }
}

/// What one tick sends every client: a ready `detections` frame (one or more events) and the
/// range of sequence numbers it covers, `rows` of which it carries.
#[derive(Debug, Clone)]
pub struct Batch {
    pub start: u64,
    pub end: u64,
    pub rows: u64,
    pub frame: Bytes,
}

#[derive(Default)]
struct Pending {
    /// Sequence number of the next published detection.
    next: u64,
    /// Where the previous tick ended: the next batch starts here.
    sent: u64,
    /// Serialised rows waiting for the tick.
    rows: Vec<String>,
}

#[derive(Default)]
struct Ring {
    /// (key, full JSON), oldest first.
    items: VecDeque<(Box<str>, Arc<str>)>,
    bytes: usize,
}

/// The live feed, shared by the reading thread, the batching task and the clients.
pub struct Feed {
    live: broadcast::Sender<Batch>,
    pending: Mutex<Pending>,
    /// Wakes the batching task at the first row of a tick.
    wake: Notify,
    ring: Mutex<Ring>,
}

impl Default for Feed {
    fn default() -> Self {
        Feed::new()
    }
}

impl Feed {
    pub fn new() -> Feed {
        let (live, _) = broadcast::channel(BACKLOG);
        Feed { live, pending: Mutex::default(), wake: Notify::new(), ring: Mutex::default() }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Batch> {
        self.live.subscribe()
    }

    /// Hands a detection to the feed: its row for the next tick and its full JSON for
    /// `/api/detection`. Nothing is serialised when no one listens, nor for a row that a full
    /// tick would drop.
    pub fn publish(&self, d: &Detection) {
        if self.live.receiver_count() == 0 {
            return;
        }
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        // Numbered under the lock, with the row queued under it too, so that a tick's range
        // and its rows agree: a row refused here shows up as missed, never as a false gap.
        p.next += 1;
        if p.rows.len() >= TICK_ROWS {
            return;
        }
        let Ok(row) = serde_json::to_string(&Row::of(d)) else { return };
        p.rows.push(row);
        let first = p.rows.len() == 1;
        drop(p);
        if let Ok(full) = serde_json::to_string(d) {
            self.remember(&d.key, full.into());
        }
        if first {
            self.wake.notify_one();
        }
    }

    /// Keeps a full detection for `/api/detection`, forgetting the oldest beyond the bounds.
    fn remember(&self, key: &str, json: Arc<str>) {
        if json.len() > RING_BYTES {
            return;
        }
        let mut r = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        r.bytes += json.len();
        r.items.push_back((key.into(), json));
        while r.items.len() > RING_COUNT || r.bytes > RING_BYTES {
            let Some((_, old)) = r.items.pop_front() else { break };
            r.bytes -= old.len();
        }
    }

    /// The full JSON of a recent detection of the feed.
    pub fn recent(&self, key: &str) -> Option<Arc<str>> {
        let r = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        r.items.iter().rev().find(|(k, _)| &**k == key).map(|(_, j)| Arc::clone(j))
    }

    /// The rows queued since the previous tick, as one batch (None when there are none).
    fn take(&self) -> Option<Batch> {
        let (rows, start, end) = {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            if p.rows.is_empty() {
                return None;
            }
            let end = p.next;
            (std::mem::take(&mut p.rows), std::mem::replace(&mut p.sent, end), end)
        };
        let size: usize = rows.iter().map(|r| r.len() + 1).sum::<usize>() + 32 * rows.len().div_ceil(EVENT_ROWS);
        let mut frame = String::with_capacity(size);
        for chunk in rows.chunks(EVENT_ROWS) {
            frame.push_str("event: detections\ndata: [");
            for (i, r) in chunk.iter().enumerate() {
                if i > 0 {
                    frame.push(',');
                }
                // serde_json escapes control characters: a row has no newline to break the
                // event's `data:` line.
                frame.push_str(r);
            }
            frame.push_str("]\n\n");
        }
        Some(Batch { start, end, rows: rows.len() as u64, frame: Bytes::from(frame) })
    }
}

/// The batching task: at the first row of a tick, waits [`GATHER`], then broadcasts what came
/// as one [`Batch`]. Ends with the daemon.
pub async fn run(feed: Arc<Feed>, shutdown: crate::shutdown::Shutdown) {
    let stop = shutdown.wait();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = feed.wake.notified() => {}
        }
        // Sleep rather than wait on each row: a burst becomes one write per client.
        tokio::time::sleep(GATHER).await;
        if let Some(b) = feed.take() {
            let _ = feed.live.send(b);
        }
    }
}

/// What a client writes for a batch: the `lagged` event first when rows were missed since
/// `expected` (the end of the batch it wrote before), then the batch's frame.
pub fn frame_for(b: Batch, expected: Option<u64>) -> Bytes {
    let covered = b.end.saturating_sub(expected.unwrap_or(b.start));
    let missed = covered.saturating_sub(b.rows);
    if missed == 0 {
        return b.frame;
    }
    let mut f = Vec::with_capacity(b.frame.len() + 40);
    f.extend_from_slice(format!("event: lagged\ndata: {missed}\n\n").as_bytes());
    f.extend_from_slice(&b.frame);
    Bytes::from(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(key: &str, request: &str) -> Detection {
        Detection::sample(
            key,
            "t.rule",
            "xss",
            Severity::High,
            chrono::Utc::now(),
            &[("client_ip", "192.0.2.1"), ("request", request)],
            "192.0.2.1 - - [..] \"GET / HTTP/1.1\" 200 1",
        )
    }

    #[test]
    fn rows_are_cut_on_a_character_boundary() {
        let long = "é".repeat(300);
        let d = det("k", &long);
        let r = Row::of(&d);
        assert!(r.cut);
        assert_eq!(r.excerpt.len(), EXCERPT_BYTES, "200 bytes is 100 two-byte characters");
        let three = "€".repeat(100);
        let d = det("k", &three);
        assert_eq!(Row::of(&d).excerpt.len(), 198, "cut before the character that would cross 200");
        assert!(!Row::of(&det("k", "GET / HTTP/1.1")).cut);
    }

    #[test]
    fn one_frame_per_tick_and_what_was_missed_is_counted() {
        let f = Feed::new();
        assert!(f.take().is_none());
        f.publish(&det("a", "GET /a HTTP/1.1"));
        assert!(f.take().is_none(), "no one listens: nothing serialised");
        assert!(f.recent("a").is_none());
        let _rx = f.subscribe();
        for i in 0..(TICK_ROWS + 5) {
            f.publish(&det(&format!("k{i}"), "GET /\n<script> HTTP/1.1"));
        }
        let b = f.take().unwrap();
        assert_eq!((b.start, b.end, b.rows), (0, TICK_ROWS as u64 + 5, TICK_ROWS as u64));
        let text = std::str::from_utf8(&b.frame).unwrap();
        assert_eq!(text.matches("event: detections\n").count(), TICK_ROWS.div_ceil(EVENT_ROWS));
        for ev in text.split("\n\n").filter(|e| !e.is_empty()) {
            let data = ev.strip_prefix("event: detections\ndata: ").unwrap();
            assert!(!data.contains('\n'));
            let rows: Vec<serde_json::Value> = serde_json::from_str(data).unwrap();
            assert!(rows.len() <= EVENT_ROWS);
            assert_eq!(rows[0]["excerpt"], "GET /\n<script> HTTP/1.1");
        }
        let lagged = frame_for(b.clone(), None);
        assert!(lagged.starts_with(b"event: lagged\ndata: 5\n\n"));
        f.publish(&det("z", "GET /z HTTP/1.1"));
        let b2 = f.take().unwrap();
        assert_eq!((b2.start, b2.end), (b.end, b.end + 1));
        assert_eq!(frame_for(b2.clone(), Some(b.end)), b2.frame, "nothing missed");
        assert!(frame_for(b2, Some(0)).starts_with(b"event: lagged\ndata: 1029\n\n"), "the skipped batch counted");
        assert!(f.recent("k3").unwrap().contains("\"line\""));
        assert!(f.recent(&format!("k{}", TICK_ROWS + 2)).is_none(), "a refused row is not serialised at all");
        assert!(f.recent("z").is_some());
    }

    #[test]
    fn the_ring_is_bounded_by_count_and_bytes() {
        let f = Feed::new();
        for i in 0..(RING_COUNT + 10) {
            f.remember(&format!("k{i}"), Arc::from("x"));
        }
        assert!(f.recent("k9").is_none() && f.recent("k10").is_some());
        let big: Arc<str> = Arc::from("y".repeat(RING_BYTES / 2 + 1));
        f.remember("b1", Arc::clone(&big));
        f.remember("b2", big);
        assert!(f.recent("b1").is_none() && f.recent("b2").is_some());
        let r = f.ring.lock().unwrap();
        assert!(r.bytes <= RING_BYTES && r.items.len() == 1, "{} {}", r.bytes, r.items.len());
    }
}
