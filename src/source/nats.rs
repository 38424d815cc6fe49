//! Worker mode: the events other machines published to NATS JetStream (their `nats` output),
//! evaluated here by the same pipeline as local lines.
//!
//! # Partitions, leases, takeover
//! The agents publish each event on `<subject_prefix>.<partition>`, the partition a hash of
//! the client address: every event of one attacker is in one partition, so one worker sees
//! all of them and its windows count them all. Each partition is owned by one worker at a
//! time, through a lease in a key-value bucket (`<stream>_leases`): key `p.<N>` created only
//! when absent (the claim), holding the worker's id, renewed every third of `worker.lease`
//! with compare-and-set on its revision. The bucket's `max_age` is the lease: a worker killed
//! with `kill -9` stops renewing, its keys expire and the others claim them. A worker also
//! keeps `w.<id>` alive the same way, so that each knows how many workers there are and
//! claims a fair share (`ceil(partitions / workers)`), releasing a partition when it holds
//! more (a worker joined).
//!
//! A partition's position is a durable pull consumer `<consumer_prefix>-p<N>` with cumulative
//! acknowledgements (`AckPolicy::All`: one per partition and batch). A message is acknowledged
//! only after the detections of the events up to it are durable (the sink's flush, then `durable`, as the tailer waits before a checkpoint):
//! a worker that dies before leaves them unacknowledged, and the next owner gets them.
//!
//! Why the consumer is created anew at a claim: messages delivered to a dead worker are
//! redelivered only after `ack_wait`, and newer ones would be delivered before them; windows
//! want stream order. So the new owner reads the consumer's acknowledgement floor, deletes
//! it and creates it again delivering from the floor on, in order, at once.
//!
//! # Windows across a takeover
//! The thresholds of a partition live in the worker that owns it (one set of windows per
//! partition: [`crate::source::EventSink::lane`]). At a claim they are restored by replaying
//! the partition from the stream with an ordered consumer, from the time the last
//! acknowledged message was stored minus the longest window of the rules, up to that message,
//! with the detections not acted upon ([`crate::source::EventSink::replaying`]). Then the
//! unacknowledged messages are evaluated normally. A count of 15 split 10/5 across a failover
//! is detected once, by the new owner. Windows run on event time (`Trapline-Time`, else the
//! line's own, else the agent's `Trapline-Arrival`), never on when a worker got the message,
//! so redelivery does not change a result.
//!
//! # Detections exactly once
//! Before any local action, each detection is published to `worker.detections_subject` with
//! `Nats-Msg-Id` = its idempotency key (rule, and the origin of the event that fired: host,
//! file content, offset). A worker that died after it published, before it acknowledged the
//! events, has its successor fire the same detection again: the server drops it as a
//! duplicate and says so, and the successor then does not act on it locally either. Every
//! detection of every host is in that one stream exactly once.
//!
//! Nothing from a message is deserialised but plain text headers and the raw line, which the
//! configured format parses like a local line.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer, kv};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{EventSink, Source, Whence};
use crate::action::nats::{Connect, NatsDef, ensure_stream, host_name, without_credentials};
use crate::config::{self, SourceKind};
use crate::event::{Event, Origin};

/// First wait after a failure; doubled up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often a persisting failure is logged again.
const REPORT_EVERY: Duration = Duration::from_secs(30);
/// How long a JetStream API answer is waited for.
const API_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a worker that found nothing waits before fetching again: from IDLE_MIN after a
/// fetch that brought messages, doubling up to IDLE_MAX while none come.
const IDLE_MIN: Duration = Duration::from_millis(1);
const IDLE_MAX: Duration = Duration::from_millis(50);
/// The sink's periodic work.
const TICK_EVERY: Duration = Duration::from_millis(250);

/// The `worker:` section of trapline.yml: how a worker (sources of `type: nats`) shares the
/// partitions with the others and where it publishes detections.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkerDef {
    /// This worker's name in the leases, unique among the workers (letters, digits, `-`, `_`);
    /// default: the host name and the process id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// How long a partition's lease lasts unless renewed (it is renewed every third of it): how
    /// soon the partitions of a worker that died are taken over, e.g. `5s`.
    #[serde(default = "default_lease")]
    pub lease: String,
    /// How long the server waits for a message's acknowledgement before delivering it again.
    #[serde(default = "default_ack_wait")]
    pub ack_wait: String,
    /// The key-value bucket of the leases; default `<stream>_leases`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    /// The durable consumers are `<consumer_prefix>-p<N>`.
    #[serde(default = "default_consumer_prefix")]
    pub consumer_prefix: String,
    /// Every detection is published here (JSON, as the log writes it), with `Nats-Msg-Id` =
    /// its idempotency key: the detections of every host, in one place, once.
    #[serde(default = "default_detections_subject")]
    pub detections_subject: String,
    /// The stream that keeps them: created (file storage) when missing.
    #[serde(default = "default_detections_stream")]
    pub detections_stream: String,
    /// That stream's duplicate window when it is created: how long a detection fired again
    /// (after a takeover) is recognised.
    #[serde(default = "default_detections_window")]
    pub detections_window: String,
    /// Messages fetched from a partition at a time.
    #[serde(default = "default_batch")]
    pub batch: usize,
}

fn default_lease() -> String {
    "5s".into()
}
fn default_ack_wait() -> String {
    "30s".into()
}
fn default_consumer_prefix() -> String {
    "trapline".into()
}
fn default_detections_subject() -> String {
    "trapline.detections".into()
}
fn default_detections_stream() -> String {
    "TRAPLINE_DETECTIONS".into()
}
fn default_detections_window() -> String {
    "1h".into()
}
fn default_batch() -> usize {
    256
}

impl Default for WorkerDef {
    fn default() -> WorkerDef {
        WorkerDef {
            id: None,
            lease: default_lease(),
            ack_wait: default_ack_wait(),
            bucket: None,
            consumer_prefix: default_consumer_prefix(),
            detections_subject: default_detections_subject(),
            detections_stream: default_detections_stream(),
            detections_window: default_detections_window(),
            batch: default_batch(),
        }
    }
}

/// A name the server takes as one token of a subject, a key or a consumer name.
fn plain_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl WorkerDef {
    /// Checks what serde cannot. The error names the key (under `worker.`) it is about.
    pub fn validate(&self) -> std::result::Result<(), (&'static str, String)> {
        if let Some(id) = &self.id
            && !plain_name(id)
        {
            return Err(("id", format!("{id:?}: only letters, digits, `-` and `_`")));
        }
        let lease = humantime::parse_duration(&self.lease).map_err(|e| ("lease", e.to_string()))?;
        if lease < Duration::from_secs(1) {
            return Err(("lease", "must be at least 1s".into()));
        }
        let ack = humantime::parse_duration(&self.ack_wait).map_err(|e| ("ack_wait", e.to_string()))?;
        if ack < Duration::from_secs(1) {
            return Err(("ack_wait", "must be at least 1s".into()));
        }
        humantime::parse_duration(&self.detections_window).map_err(|e| ("detections_window", e.to_string()))?;
        if let Some(b) = &self.bucket
            && !plain_name(b)
        {
            return Err(("bucket", format!("{b:?}: only letters, digits, `-` and `_`")));
        }
        if !plain_name(&self.consumer_prefix) {
            return Err(("consumer_prefix", format!("{:?}: only letters, digits, `-` and `_`", self.consumer_prefix)));
        }
        if !plain_name(&self.detections_stream) {
            return Err((
                "detections_stream",
                format!("{:?}: only letters, digits, `-` and `_`", self.detections_stream),
            ));
        }
        let token_ok = |t: &str| !t.is_empty() && !t.contains(['*', '>', ' ', '\t', '\r', '\n']);
        if !self.detections_subject.split('.').all(token_ok) {
            return Err(("detections_subject", format!("{:?} is not a subject", self.detections_subject)));
        }
        if !(1..=10_000).contains(&self.batch) {
            return Err(("batch", format!("{} is not between 1 and 10000", self.batch)));
        }
        Ok(())
    }
}

/// The settings of a worker, resolved.
struct Settings {
    connect: Connect,
    id: String,
    stream: String,
    subject_prefix: String,
    partitions: u32,
    bucket: String,
    lease: Duration,
    ack_wait: Duration,
    consumer_prefix: String,
    detections_subject: String,
    detections_stream: String,
    detections_window: Duration,
    batch: usize,
}

/// The `nats` sources of a worker.
pub struct NatsSource {
    s: Settings,
    /// Source index by name (the `Trapline-Source` a message names), and the first one's.
    by_name: HashMap<String, usize>,
    first: usize,
    /// Format names of the sources, to tell once when a message names another.
    formats: Vec<String>,
    /// Ends the retries of a detection's publication when the daemon stops.
    shutdown: crate::shutdown::Shutdown,
    /// Events replayed at takeovers, and detections fired again that the server recognised.
    replayed: std::cell::Cell<u64>,
    refired: Arc<std::sync::atomic::AtomicU64>,
}

impl NatsSource {
    pub fn open(cfg: &config::Loaded, shutdown: crate::shutdown::Shutdown) -> Result<NatsSource> {
        let c = &cfg.config;
        let def: &NatsDef = c.nats.as_ref().ok_or_else(|| anyhow!("a `nats` source needs the nats: section"))?;
        let w = &c.worker;
        let id = w.id.clone().unwrap_or_else(|| {
            let host: String = host_name(def)
                .chars()
                .map(|ch| if ch.is_ascii_alphanumeric() || ch == '-' { ch } else { '_' })
                .collect();
            format!("{host}-{}", std::process::id())
        });
        let dur = |t: &str| humantime::parse_duration(t).unwrap_or(Duration::from_secs(5));
        let s = Settings {
            connect: Connect::resolve(def, &|p| cfg.resolve(p), format!("trapline worker {id}"))?,
            bucket: w.bucket.clone().unwrap_or_else(|| format!("{}_leases", def.stream)),
            stream: def.stream.clone(),
            subject_prefix: def.subject_prefix.clone(),
            partitions: def.partitions,
            lease: dur(&w.lease),
            ack_wait: dur(&w.ack_wait),
            consumer_prefix: w.consumer_prefix.clone(),
            detections_subject: w.detections_subject.clone(),
            detections_stream: w.detections_stream.clone(),
            detections_window: dur(&w.detections_window),
            batch: w.batch,
            id,
        };
        let mut by_name = HashMap::new();
        let mut first = None;
        let mut formats = Vec::new();
        for (i, src) in c.sources.iter().enumerate() {
            formats.push(src.format_name().to_string());
            if src.kind == SourceKind::Nats {
                by_name.insert(src.name.clone(), i);
                first.get_or_insert(i);
            }
        }
        let first = first.ok_or_else(|| anyhow!("no `nats` source"))?;
        Ok(NatsSource {
            s,
            by_name,
            first,
            formats,
            shutdown,
            replayed: Default::default(),
            refired: Default::default(),
        })
    }
}

/// Leases held, shared by the reading thread and the renewing task.
#[derive(Default)]
struct Leases {
    /// Partition → revision of its key, and when the server last confirmed it.
    held: BTreeMap<u32, (u64, Instant)>,
    /// Partitions whose lease another worker took (or that expired): to give up.
    lost: Vec<u32>,
    /// Revision of this worker's `w.<id>` key, when it exists.
    alive: Option<u64>,
}

/// A partition this worker owns.
struct Part {
    consumer: consumer::PullConsumer,
    /// The stream sequence of the last message evaluated (a redelivered one is acknowledged
    /// without being evaluated again).
    last: u64,
    /// The newest message evaluated and not acknowledged yet (waiting for the sink's flush to
    /// be durable), with its stream sequence. The consumer acknowledges cumulatively
    /// (`AckPolicy::All`): acknowledging it acknowledges every earlier message of the
    /// partition, so one acknowledgement per partition and batch instead of one per message.
    /// Cumulative acknowledgement goes by stream sequence, so a redelivered older message
    /// must not take the place of a newer one.
    unacked: Option<(u64, jetstream::Message)>,
}

impl Part {
    fn keep_unacked(&mut self, seq: u64, m: jetstream::Message) {
        if self.unacked.as_ref().is_none_or(|(s, _)| seq >= *s) {
            self.unacked = Some((seq, m));
        }
    }
}

/// Logs a failure once when it starts and every [`REPORT_EVERY`] while it lasts.
#[derive(Default)]
struct Failing(Option<(Instant, Instant)>);

impl Failing {
    fn fail(&mut self, what: &str, e: &anyhow::Error) {
        match &mut self.0 {
            None => {
                tracing::error!(error = format!("{e:#}"), "worker: {what}; retrying");
                self.0 = Some((Instant::now(), Instant::now()));
            }
            Some((_, logged)) if logged.elapsed() >= REPORT_EVERY => {
                tracing::error!(error = format!("{e:#}"), "worker: {what}; still retrying");
                *logged = Instant::now();
            }
            Some(_) => {}
        }
    }

    fn ok(&mut self) {
        if let Some((since, _)) = self.0.take() {
            tracing::warn!(after = ?since.elapsed(), "worker: NATS reachable again");
        }
    }

    fn backoff(&self) -> Duration {
        match self.0 {
            None => FIRST_BACKOFF,
            Some((since, _)) => (FIRST_BACKOFF * 2u32.pow((since.elapsed().as_secs() as u32).min(5))).min(MAX_BACKOFF),
        }
    }
}

/// The connection of a running worker.
struct Worker {
    js: jetstream::Context,
    stream: jetstream::stream::Stream,
    kv: kv::Store,
    leases: Arc<Mutex<Leases>>,
    parts: BTreeMap<u32, Part>,
}

impl Source for NatsSource {
    fn run(&mut self, sink: &mut dyn EventSink, stop: &AtomicBool) -> Result<()> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("trapline-worker")
            .enable_all()
            .build()
            .context("cannot start the worker's async runtime")?;
        // Timeouts are created on this thread, outside `block_on`: they need the runtime's timer.
        let _entered = rt.enter();
        let s = &self.s;
        tracing::info!(url = %without_credentials(&s.connect.url), stream = %s.stream, partitions = s.partitions, id = %s.id, bucket = %s.bucket, "worker starting");
        // The server may not be up yet: wait for it, saying why.
        let mut failing = Failing::default();
        let mut w = loop {
            if stop.load(Relaxed) {
                return Ok(());
            }
            match rt.block_on(connect(s)) {
                Ok(w) => break w,
                Err(e) => {
                    failing.fail("cannot start against the NATS server", &e);
                    std::thread::sleep(failing.backoff());
                }
            }
        };
        failing.ok();
        tracing::info!(id = %s.id, "worker connected");
        rt.spawn(renew(w.kv.clone(), Arc::clone(&w.leases), s.id.clone(), s.lease));
        sink.gate(detection_gate(
            rt.handle().clone(),
            w.js.clone(),
            s.detections_subject.clone(),
            self.shutdown.clone(),
            Arc::clone(&self.refired),
        ));
        let result = self.work(&rt, &mut w, sink, stop);
        // Leaving: what was evaluated is acknowledged once durable, and the leases are
        // released so that the others take the partitions over at once.
        let done = self.settle(&rt, &mut w, sink);
        let held: Vec<(u32, u64)> =
            w.leases.lock().unwrap_or_else(|e| e.into_inner()).held.iter().map(|(p, (r, _))| (*p, *r)).collect();
        if done.is_ok() {
            for (p, rev) in held {
                let _ = rt.block_on(tokio::time::timeout(
                    API_TIMEOUT,
                    w.kv.delete_expect_revision(format!("p.{p}"), Some(rev)),
                ));
            }
        }
        rt.shutdown_timeout(Duration::from_millis(200));
        result.and(done)
    }
}

impl NatsSource {
    fn work(
        &mut self,
        rt: &tokio::runtime::Runtime,
        w: &mut Worker,
        sink: &mut dyn EventSink,
        stop: &AtomicBool,
    ) -> Result<()> {
        let mut balanced = Instant::now() - self.s.lease;
        let mut ticked = Instant::now();
        let mut failing = Failing::default();
        let mut told: Vec<(String, String)> = Vec::new();
        let mut idle = IDLE_MIN;
        while !stop.load(Relaxed) {
            let (lost, stale) = {
                let mut l = w.leases.lock().unwrap_or_else(|e| e.into_inner());
                // Not confirmed for two renewal periods: the key may expire any moment (this
                // worker was paused, or the server is away), and a successor would then share
                // the consumer with us. Given up before that, claimed again when free.
                let stale: Vec<u32> =
                    l.held.iter().filter(|(_, (_, at))| at.elapsed() > self.s.lease * 2 / 3).map(|(p, _)| *p).collect();
                for p in &stale {
                    l.held.remove(p);
                }
                (std::mem::take(&mut l.lost), stale)
            };
            for p in lost {
                if w.parts.remove(&p).is_some() {
                    tracing::warn!(partition = p, "lease lost: another worker holds the partition now");
                    sink.drop_lane(p);
                }
            }
            for p in stale {
                if w.parts.remove(&p).is_some() {
                    tracing::warn!(
                        partition = p,
                        "lease not renewed in time: partition given up (claimed again when free)"
                    );
                    sink.drop_lane(p);
                }
            }
            if balanced.elapsed() >= self.s.lease / 3 {
                balanced = Instant::now();
                if let Err(e) = self.balance(rt, w, sink) {
                    failing.fail("cannot share the partitions", &e);
                }
                sink.measure(self.first, "worker_partitions", w.parts.len() as f64);
                sink.measure(self.first, "worker_replayed", self.replayed.get() as f64);
                sink.measure(self.first, "worker_refired", self.refired.load(Relaxed) as f64);
            }
            let mut got = 0;
            let owned: Vec<u32> = w.parts.keys().copied().collect();
            // Every owned partition's batch is asked for at once: one round trip to the server
            // for all of them instead of one after another (with 16 partitions, the sequential
            // fetches left the worker waiting most of the time). They are evaluated in
            // partition order, each partition's messages in stream order.
            let all = rt.block_on(futures_util::future::join_all(
                owned.iter().map(|p| fetch(&w.parts[p].consumer, self.s.batch)),
            ));
            for (p, fetched) in owned.into_iter().zip(all) {
                let messages = match fetched {
                    Ok(m) => {
                        failing.ok();
                        m
                    }
                    Err(e) => {
                        failing.fail(&format!("cannot fetch from partition {p}"), &e);
                        continue;
                    }
                };
                got += messages.len();
                for m in messages {
                    self.evaluate(p, w, m, sink, false, &mut told)?;
                }
            }
            if w.parts.values().any(|p| p.unacked.is_some()) {
                self.settle(rt, w, sink)?;
            }
            if ticked.elapsed() >= TICK_EVERY {
                sink.tick();
                ticked = Instant::now();
            }
            if got == 0 {
                std::thread::sleep(if failing.0.is_some() { failing.backoff() } else { idle });
                // Right after traffic, the next message is likely near: look again soon (a
                // line's detection waits at most this long). Quiet for longer: back off to
                // IDLE_MAX, so that an idle worker asks the server 20 times a second.
                idle = (idle * 2).min(IDLE_MAX);
            } else {
                idle = IDLE_MIN;
            }
        }
        Ok(())
    }

    /// Makes what was evaluated durable, then acknowledges it.
    fn settle(&self, rt: &tokio::runtime::Runtime, w: &mut Worker, sink: &mut dyn EventSink) -> Result<()> {
        if w.parts.values().all(|p| p.unacked.is_none()) {
            return Ok(());
        }
        sink.flush().context("cannot make the detections durable")?;
        sink.durable(true).context("cannot make the detections durable")?;
        let unacked: Vec<jetstream::Message> =
            w.parts.values_mut().filter_map(|p| p.unacked.take().map(|(_, m)| m)).collect();
        let n = unacked.len();
        rt.block_on(async {
            for (i, m) in unacked.into_iter().enumerate() {
                // The last one waits for the server's word: it handles a connection's messages
                // in order, so the others are then in too, and a partition released next is
                // handed over with its acknowledgements recorded. A lost acknowledgement means
                // a redelivery: recognised by its sequence here, by the detection's id at
                // another worker.
                let acked = if i + 1 == n {
                    tokio::time::timeout(API_TIMEOUT, m.double_ack()).await.unwrap_or_else(|_| Err("no answer".into()))
                } else {
                    m.ack().await
                };
                if let Err(e) = acked {
                    tracing::debug!(error = %e, "acknowledgement not confirmed");
                }
            }
        });
        Ok(())
    }

    /// Hands one message of partition `p` to the sink (or, when `replay`, to its windows only).
    fn evaluate(
        &self,
        p: u32,
        w: &mut Worker,
        m: jetstream::Message,
        sink: &mut dyn EventSink,
        replay: bool,
        told: &mut Vec<(String, String)>,
    ) -> Result<()> {
        let seq = match m.info() {
            Ok(i) => i.stream_sequence,
            Err(_) => return Ok(()), // not a JetStream message: nothing of ours
        };
        if !replay
            && let Some(part) = w.parts.get_mut(&p)
            && seq <= part.last
        {
            // Delivered again (an acknowledgement got lost): already evaluated here.
            part.keep_unacked(seq, m);
            return Ok(());
        }
        let h = Headers(m.headers.as_ref());
        let host = h.get("Trapline-Host").unwrap_or("unknown");
        let source_name = h.get("Trapline-Source").unwrap_or("");
        let source = self.by_name.get(source_name).copied().unwrap_or(self.first);
        if let Some(format) = h.get("Trapline-Format")
            && format != self.formats[source]
            && told.len() < 64
            && !told.iter().any(|(s, f)| s == source_name && f == format)
        {
            tracing::warn!(source = source_name, format, parsed_as = %self.formats[source], "events of this source are in another format than the worker's source parses: name a `nats` source after it with its format");
            told.push((source_name.to_string(), format.to_string()));
        }
        let origin = match h.get("Trapline-Origin").and_then(|o| u64::from_str_radix(o, 16).ok()) {
            // The file's content fingerprint is per machine: the host joins it, so that two
            // machines' identical files give different keys.
            Some(content) => Origin::Line {
                content: xxhash_rust::xxh3::xxh3_64_with_seed(
                    &content.to_le_bytes(),
                    xxhash_rust::xxh3::xxh3_64(host.as_bytes()),
                ),
                offset: h.get("Trapline-Offset").and_then(|o| o.parse().ok()).unwrap_or(0),
                line_number: h.get("Trapline-Line").and_then(|o| o.parse().ok()).unwrap_or(0),
            },
            None => Origin::Message { stream: xxhash_rust::xxh3::xxh3_64(self.s.stream.as_bytes()), sequence: seq },
        };
        let time =
            |name: &str| h.get(name).and_then(|t| DateTime::parse_from_rfc3339(t).ok()).map(|t| t.with_timezone(&Utc));
        let ev = Event {
            origin,
            raw: &m.payload,
            fields: &[],
            time: time("Trapline-Time"),
            arrival: time("Trapline-Arrival").unwrap_or_else(Utc::now),
            truncated: h.get("Trapline-Truncated") == Some("1"),
        };
        let path = h.get("Trapline-Path").unwrap_or("-");
        sink.lane(p, false);
        sink.event(&Whence { source, path: Path::new(path), host: Some(host) }, &ev)?;
        if !replay && let Some(part) = w.parts.get_mut(&p) {
            part.last = seq;
            part.keep_unacked(seq, m);
        }
        Ok(())
    }

    /// Keeps this worker alive in the bucket, claims partitions up to its fair share and
    /// releases those beyond it.
    fn balance(&self, rt: &tokio::runtime::Runtime, w: &mut Worker, sink: &mut dyn EventSink) -> Result<()> {
        let s = &self.s;
        let workers = rt.block_on(live_workers(&w.kv)).context("cannot list the workers")?.max(1);
        let share = s.partitions.div_ceil(workers as u32) as usize;
        let held = w.leases.lock().unwrap_or_else(|e| e.into_inner()).held.len();
        if held < share {
            // Start at a place of this worker's own, so that workers starting together do not
            // all race for partition 0.
            let offset = (xxhash_rust::xxh3::xxh3_64(s.id.as_bytes()) % s.partitions as u64) as u32;
            let mut want = share - held;
            for i in 0..s.partitions {
                if want == 0 {
                    break;
                }
                let p = (offset + i) % s.partitions;
                if w.parts.contains_key(&p) {
                    continue;
                }
                let claimed =
                    rt.block_on(tokio::time::timeout(API_TIMEOUT, w.kv.create(format!("p.{p}"), s.id.clone().into())));
                match claimed {
                    Ok(Ok(rev)) => {
                        w.leases.lock().unwrap_or_else(|e| e.into_inner()).held.insert(p, (rev, Instant::now()));
                        if let Err(e) = self.take_over(rt, w, p, sink) {
                            // Give it back: another worker (or this one, later) tries again.
                            w.parts.remove(&p);
                            sink.drop_lane(p);
                            w.leases.lock().unwrap_or_else(|e| e.into_inner()).held.remove(&p);
                            let _ = rt.block_on(tokio::time::timeout(
                                API_TIMEOUT,
                                w.kv.delete_expect_revision(format!("p.{p}"), Some(rev)),
                            ));
                            return Err(e.context(format!("cannot take partition {p} over")));
                        }
                        want -= 1;
                    }
                    Ok(Err(e)) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
                    Ok(Err(e)) => return Err(anyhow::Error::new(e).context(format!("cannot claim partition {p}"))),
                    Err(_) => bail!("no answer claiming partition {p}"),
                }
            }
        } else if held > share {
            // A worker joined: give one partition back per round, after acknowledging it.
            let p = *w.parts.keys().next_back().expect("held > 0");
            self.settle(rt, w, sink)?;
            w.parts.remove(&p);
            sink.drop_lane(p);
            let rev = w.leases.lock().unwrap_or_else(|e| e.into_inner()).held.remove(&p);
            if let Some((rev, _)) = rev {
                let _ = rt.block_on(tokio::time::timeout(
                    API_TIMEOUT,
                    w.kv.delete_expect_revision(format!("p.{p}"), Some(rev)),
                ));
            }
            tracing::info!(partition = p, workers, share, "partition released to a worker that joined");
        }
        Ok(())
    }

    /// Takes partition `p` over (its lease is held): the durable consumer from its
    /// acknowledgement floor on, and the windows restored by a replay up to the floor.
    fn take_over(&self, rt: &tokio::runtime::Runtime, w: &mut Worker, p: u32, sink: &mut dyn EventSink) -> Result<()> {
        let s = &self.s;
        let name = format!("{}-p{p}", s.consumer_prefix);
        let filter = format!("{}.{p}", s.subject_prefix);
        let floor = rt.block_on(async {
            match w.stream.consumer_info(&name).await {
                Ok(info) => Ok(Some(info.ack_floor.stream_sequence)),
                Err(e) if consumer_missing(&e) => Ok(None),
                Err(e) => Err(anyhow::Error::new(e).context(format!("cannot read consumer {name}"))),
            }
        })?;
        let deliver_policy = match floor {
            Some(f) if f > 0 => consumer::DeliverPolicy::ByStartSequence { start_sequence: f + 1 },
            _ => consumer::DeliverPolicy::All,
        };
        let config = consumer::pull::Config {
            durable_name: Some(name.clone()),
            filter_subject: filter.clone(),
            ack_policy: consumer::AckPolicy::All,
            ack_wait: s.ack_wait,
            deliver_policy,
            max_ack_pending: (s.batch * 4) as i64,
            ..Default::default()
        };
        let consumer = rt.block_on(async {
            if floor.is_some() {
                w.stream.delete_consumer(&name).await.with_context(|| format!("cannot recreate consumer {name}"))?;
            }
            w.stream.create_consumer(config).await.with_context(|| format!("cannot create consumer {name}"))
        })?;
        let floor = floor.unwrap_or(0);
        sink.lane(p, true);
        let replayed = match floor {
            0 => 0,
            f => self.replay(rt, w, p, &filter, f, sink)?,
        };
        self.replayed.set(self.replayed.get() + replayed as u64);
        w.parts.insert(p, Part { consumer, last: floor, unacked: None });
        tracing::info!(partition = p, consumer = %name, acknowledged_up_to = floor, replayed, "partition taken over");
        Ok(())
    }

    /// Steps the windows of partition `p` with its messages from (the storage time of message
    /// `floor`) − (the longest window) up to `floor`, acting on nothing. Returns how many.
    fn replay(
        &self,
        rt: &tokio::runtime::Runtime,
        w: &mut Worker,
        p: u32,
        filter: &str,
        floor: u64,
        sink: &mut dyn EventSink,
    ) -> Result<usize> {
        let window = sink.longest_window();
        if window.is_zero() {
            return Ok(0);
        }
        let stored = match rt.block_on(w.stream.get_raw_message(floor)) {
            Ok(m) => m.time,
            Err(e) => {
                tracing::warn!(partition = p, sequence = floor, error = %e, "the last acknowledged event is no longer in the stream: windows start empty");
                return Ok(0);
            }
        };
        // A second more: storage times and event times are not taken by the same clock. At most
        // a year back (a rule's window could be any length; the time type panics past its range).
        let start = stored - window.min(Duration::from_secs(365 * 86400)) - Duration::from_secs(1);
        let ordered = consumer::pull::OrderedConfig {
            filter_subject: filter.to_string(),
            deliver_policy: consumer::DeliverPolicy::ByStartTime { start_time: start },
            ..Default::default()
        };
        let mut messages = rt.block_on(async {
            let c = w.stream.create_consumer(ordered).await.context("cannot create the replay consumer")?;
            c.messages().await.context("cannot read the replay")
        })?;
        sink.replaying(true);
        let mut n = 0;
        let mut told = Vec::new();
        let result = loop {
            let next = rt.block_on(tokio::time::timeout(API_TIMEOUT, messages.next()));
            let m = match next {
                Ok(Some(Ok(m))) => m,
                Ok(Some(Err(e))) => break Err(anyhow::Error::new(e).context("replay interrupted")),
                Ok(None) | Err(_) => {
                    tracing::warn!(partition = p, replayed = n, "replay ended before the last acknowledged event");
                    break Ok(n);
                }
            };
            let seq = m.info().map(|i| i.stream_sequence).unwrap_or(u64::MAX);
            if seq > floor {
                break Ok(n);
            }
            // The replay's own messages carry nothing to acknowledge.
            self.evaluate(p, w, m, sink, true, &mut told)?;
            n += 1;
            if seq == floor {
                break Ok(n);
            }
        };
        sink.replaying(false);
        result
    }
}

/// Whether a consumer lookup failed because it does not exist.
fn consumer_missing(e: &jetstream::context::ConsumerInfoError) -> bool {
    use jetstream::context::ConsumerInfoErrorKind as K;
    match e.kind() {
        K::NotFound => true,
        K::JetStream(j) => j.error_code() == jetstream::ErrorCode::CONSUMER_NOT_FOUND,
        _ => false,
    }
}

/// Up to `batch` messages of a partition, without waiting for more than the server has.
async fn fetch(c: &consumer::PullConsumer, batch: usize) -> Result<Vec<jetstream::Message>> {
    let mut b = c.fetch().max_messages(batch).messages().await.context("fetch")?;
    let mut out = Vec::new();
    loop {
        match tokio::time::timeout(API_TIMEOUT, b.next()).await {
            Ok(Some(Ok(m))) => out.push(m),
            Ok(Some(Err(e))) => return Err(anyhow!("fetch: {e}")),
            Ok(None) => return Ok(out),
            Err(_) => return Ok(out),
        }
    }
}

/// How many workers have their `w.<id>` key alive.
async fn live_workers(kv: &kv::Store) -> Result<usize> {
    let mut keys = tokio::time::timeout(API_TIMEOUT, kv.keys()).await.map_err(|_| anyhow!("no answer"))??;
    let mut n = 0;
    while let Ok(Some(k)) = tokio::time::timeout(API_TIMEOUT, keys.next()).await {
        if k?.starts_with("w.") {
            n += 1;
        }
    }
    Ok(n)
}

/// Connects, makes sure the stream, the leases' bucket and the detections' stream exist.
async fn connect(s: &Settings) -> Result<Worker> {
    let client = s
        .connect
        .client(|ev| match ev {
            async_nats::Event::Disconnected => tracing::error!("worker: disconnected from the NATS server"),
            async_nats::Event::Connected => tracing::info!("worker: connected to the NATS server"),
            other => tracing::warn!(event = %other, "worker: NATS client event"),
        })
        .await?;
    let js = jetstream::ContextBuilder::new().timeout(API_TIMEOUT).ack_timeout(API_TIMEOUT).build(client);
    ensure_stream(&js, &s.connect).await?;
    let stream = js.get_stream(&s.stream).await.with_context(|| format!("cannot open stream {}", s.stream))?;
    let kv = match js.get_key_value(&s.bucket).await {
        Ok(kv) => kv,
        Err(_) => js
            .create_key_value(kv::Config {
                bucket: s.bucket.clone(),
                history: 1,
                max_age: s.lease,
                storage: jetstream::stream::StorageType::File,
                ..Default::default()
            })
            .await
            .with_context(|| format!("cannot create the leases' bucket {}", s.bucket))?,
    };
    let status = kv.status().await.with_context(|| format!("cannot read bucket {}", s.bucket))?;
    if status.max_age() != s.lease {
        tracing::warn!(bucket = %s.bucket, bucket_lease = ?status.max_age(), lease = ?s.lease, "the leases' bucket was created with another lease: it decides");
    }
    match js.get_stream(&s.detections_stream).await {
        Ok(_) => {}
        Err(_) => {
            let config = jetstream::stream::Config {
                name: s.detections_stream.clone(),
                subjects: vec![s.detections_subject.clone()],
                storage: jetstream::stream::StorageType::File,
                duplicate_window: s.detections_window,
                ..Default::default()
            };
            if let Err(e) = js.create_stream(config).await {
                // Another worker created it meanwhile: fine; else the error.
                js.get_stream(&s.detections_stream)
                    .await
                    .map_err(|_| anyhow::Error::new(e))
                    .with_context(|| format!("cannot create stream {}", s.detections_stream))?;
            }
        }
    }
    let leases = Arc::new(Mutex::new(Leases::default()));
    let alive = kv.put(format!("w.{}", s.id), s.id.clone().into()).await.context("cannot announce the worker")?;
    leases.lock().unwrap_or_else(|e| e.into_inner()).alive = Some(alive);
    Ok(Worker { js, stream, kv, leases, parts: BTreeMap::new() })
}

/// Renews the leases held (and the worker's own key) every third of the lease, on the
/// runtime, so that slow evaluation on the reading thread does not let them expire.
async fn renew(kv: kv::Store, leases: Arc<Mutex<Leases>>, id: String, lease: Duration) {
    let mut failing = Failing::default();
    loop {
        tokio::time::sleep(lease / 3).await;
        let held: Vec<(u32, u64)> =
            leases.lock().unwrap_or_else(|e| e.into_inner()).held.iter().map(|(p, (r, _))| (*p, *r)).collect();
        for (p, rev) in held {
            match tokio::time::timeout(API_TIMEOUT, kv.update(format!("p.{p}"), id.clone().into(), rev)).await {
                Ok(Ok(new)) => {
                    failing.ok();
                    let mut l = leases.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some(r) = l.held.get_mut(&p).filter(|r| r.0 == rev) {
                        *r = (new, Instant::now());
                    }
                }
                Ok(Err(e)) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                    let mut l = leases.lock().unwrap_or_else(|e| e.into_inner());
                    if l.held.get(&p).is_some_and(|r| r.0 == rev) {
                        l.held.remove(&p);
                        l.lost.push(p);
                    }
                }
                Ok(Err(e)) => failing.fail("cannot renew a lease", &anyhow::Error::new(e)),
                Err(_) => failing.fail("cannot renew a lease", &anyhow!("no answer")),
            }
        }
        // The worker's own key: recreated when it expired (the server was away).
        if let Err(e) = tokio::time::timeout(API_TIMEOUT, kv.put(format!("w.{id}"), id.clone().into())).await {
            failing.fail("cannot renew the worker's key", &anyhow!("{e}"));
        }
    }
}

/// The check each detection passes before any local action: published to the detections
/// subject with its idempotency key as message id. `false` when the server had it already.
/// Retried until it is published or the daemon stops (then the error leaves the events
/// unacknowledged: the next owner evaluates them again).
fn detection_gate(
    rt: tokio::runtime::Handle,
    js: jetstream::Context,
    subject: String,
    shutdown: crate::shutdown::Shutdown,
    refired: Arc<std::sync::atomic::AtomicU64>,
) -> super::DetectionGate {
    Box::new(move |d| {
        let payload: bytes::Bytes = serde_json::to_vec(d).context("cannot serialise a detection")?.into();
        let mut h = HeaderMap::new();
        h.insert("Nats-Msg-Id", d.key.as_str());
        h.insert("Trapline-Rule", d.rule.id.as_str());
        if let Some(host) = &d.source.host {
            h.insert("Trapline-Host", host.as_ref());
        }
        let mut failing = Failing::default();
        loop {
            let sent = rt.block_on(async {
                let ack = js.publish_with_headers(subject.clone(), h.clone(), payload.clone()).await?;
                anyhow::Ok(tokio::time::timeout(API_TIMEOUT, ack).await.map_err(|_| anyhow!("no acknowledgement"))??)
            });
            match sent {
                Ok(ack) if ack.duplicate => {
                    failing.ok();
                    refired.fetch_add(1, Relaxed);
                    tracing::info!(rule = %d.rule.id, key = %d.key, "detection fired again after a takeover: already published, not acted upon again");
                    return Ok(false);
                }
                Ok(_) => {
                    failing.ok();
                    return Ok(true);
                }
                Err(e) if !shutdown.is_triggered() => {
                    failing.fail(&format!("cannot publish detection {} of {}", d.key, d.rule.id), &e);
                    shutdown.wait_timeout(failing.backoff());
                }
                Err(e) => return Err(e.context(format!("cannot publish detection {} of {}", d.key, d.rule.id))),
            }
        }
    })
}

/// Header values as text (absent when not valid).
struct Headers<'a>(Option<&'a HeaderMap>);

impl Headers<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        self.0?.get(name).map(|v| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked() {
        let w: WorkerDef = serde_yaml::from_str("{}").unwrap();
        assert!(w.validate().is_ok());
        let w: WorkerDef = serde_yaml::from_str("id: 'a.b'").unwrap();
        assert_eq!(w.validate().unwrap_err().0, "id");
        let w: WorkerDef = serde_yaml::from_str("lease: 10ms").unwrap();
        assert_eq!(w.validate().unwrap_err().0, "lease");
        let w: WorkerDef = serde_yaml::from_str("detections_subject: 'a.>'").unwrap();
        assert_eq!(w.validate().unwrap_err().0, "detections_subject");
        let w: WorkerDef = serde_yaml::from_str("batch: 0").unwrap();
        assert_eq!(w.validate().unwrap_err().0, "batch");
    }
}
