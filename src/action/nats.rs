//! The `nats` output: every event `run` reads, published to NATS JetStream.
//!
//! Why here, beside the actions, and not as a stage of its own: it is an output of the
//! pipeline with exactly the actions' contract. It may fail transiently (the server is
//! down) and then reading pauses and the same event is offered again; what it took must be
//! durable before a checkpoint passes it ([`crate::source::EventSink::durable`]); and after
//! a crash, what is read again must not be acted on twice. The registry ([`super::Actions`])
//! already holds that machinery (retries with backoff, the failure shown in the status, flush
//! before each checkpoint), so the output is registered there. It differs from an action in
//! what it takes: every event, before the rules, not detections.
//!
//! # What is published
//! One message per event, on subject `<subject_prefix>.<partition>`. The payload is the raw
//! line, unchanged; what a consumer needs besides is in headers, plain text only:
//! `Trapline-Host`, `Trapline-Source`, `Trapline-Format`, `Trapline-Path`,
//! `Trapline-Origin` (16 hex digits: the fingerprint of the file's content up to the line),
//! `Trapline-Offset`, `Trapline-Line`, `Trapline-Arrival` and, when the line carries one,
//! `Trapline-Time` (RFC 3339), `Trapline-Truncated: 1` for a line cut at `max_line_bytes`.
//! The partition is FNV-1a (32 bit) of the `partition_by` field's value, modulo
//! `partitions`, computed here: an IPv4 address is not one subject token, so the server's
//! own partitioning cannot split by it. Lines without the field go to partition 0.
//!
//! # Exactly once in the stream
//! `Nats-Msg-Id` is `<host>-<key>`, the key derived from the event's [`Origin`] as every
//! idempotency key is (content fingerprint and offset), hashed with the source's name. The
//! stream drops a message whose id it saw within its duplicate window. The tailer's
//! checkpoint moves only after the server acknowledged every message before it
//! ([`NatsOutput::durable`]), so a restart after a crash re-sends at most what was published
//! since the last checkpoint (about a second), and those re-sends are dropped by the server.
//! A message whose acknowledgement was lost (the server went away) is sent again with the
//! same id, and dropped when the first copy was stored.
//!
//! # Bounded memory while the server is away
//! Messages wait in a channel and in the publishing task's window, both of `max_in_flight`
//! messages. When they are full, [`NatsOutput::offer`] fails transiently: the reading thread
//! retries with backoff and reads nothing meanwhile, and the tailer keeps its file positions;
//! after the server is back, publishing resumes from where it stopped and the tailer catches
//! up.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow};
use async_nats::jetstream;
use async_nats::{HeaderMap, Subject};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ActionError;
use crate::event::{Event, Origin};

/// The name the output goes by in the status and the metrics.
pub const NAME: &str = "nats";

/// First wait after a failure of the connection or of a publish; doubled up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often a persisting failure is logged again.
const REPORT_EVERY: Duration = Duration::from_secs(30);
/// How long an acknowledgement or a JetStream API answer is waited for.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// How long [`NatsOutput::offer`] waits for room before it reports the output failing.
const OFFER_WAIT: Duration = Duration::from_secs(1);
/// How long the last checkpoint (at a stop) waits for acknowledgements.
const FINAL_WAIT: Duration = Duration::from_secs(5);

/// The `nats:` section of trapline.yml: publish every event read to NATS JetStream.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NatsDef {
    /// Server URL(s), comma-separated: `nats://host:4222`, `tls://host:4222`.
    #[serde(default = "default_url")]
    pub url: String,
    /// The JetStream stream: created (file storage, subjects `<subject_prefix>.>`) when
    /// missing, checked when present.
    #[serde(default = "default_stream")]
    pub stream: String,
    /// Events go to `<subject_prefix>.<partition>`.
    #[serde(default = "default_prefix")]
    pub subject_prefix: String,
    /// Number of partitions (1 to 4096).
    #[serde(default = "default_partitions")]
    pub partitions: u32,
    /// The field whose value picks the partition, so that every event of one attacker goes
    /// to the same partition.
    #[serde(default = "default_partition_by")]
    pub partition_by: String,
    /// The name this machine publishes under (`Trapline-Host`, and part of each message id);
    /// default: the host name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The stream's duplicate window when it is created (how long a re-sent event is
    /// recognised), e.g. `2m`.
    #[serde(default = "default_window")]
    pub duplicate_window: String,
    /// The age at which the stream drops events when it is created, e.g. `7d` (the stream
    /// would otherwise keep everything until the server's disk is full).
    #[serde(default = "default_max_age")]
    pub max_age: String,
    /// Messages waiting for the server's acknowledgement at most (twice this, counting the
    /// queue before the window); reading pauses while they are all taken.
    #[serde(default = "default_in_flight")]
    pub max_in_flight: usize,
    /// Also evaluate the rules here and run the actions (default). `false`: only publish.
    #[serde(default = "yes")]
    pub evaluate: bool,
    /// User name, with `password` or `password_env`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// Name of an environment variable holding the password (keeps it out of the file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// A `.creds` file (JWT and nkey seed), as `nsc` writes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creds_file: Option<PathBuf>,
    /// A file holding an nkey seed (`SU...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nkey_file: Option<PathBuf>,
    /// TLS: required when set; the CA to trust, and a client certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<NatsTls>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NatsTls {
    /// PEM file of the CA(s) that signed the server's certificate (default: the system's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate and key, when the server asks for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
}

fn default_url() -> String {
    "nats://127.0.0.1:4222".into()
}
fn default_stream() -> String {
    "TRAPLINE".into()
}
fn default_prefix() -> String {
    "trapline.events".into()
}
fn default_partitions() -> u32 {
    16
}
fn default_partition_by() -> String {
    "client_ip".into()
}
fn default_window() -> String {
    "2m".into()
}
fn default_max_age() -> String {
    "7d".into()
}
fn default_in_flight() -> usize {
    1024
}
fn yes() -> bool {
    true
}

impl NatsDef {
    /// Checks what serde cannot. The error names the key (under `nats.`) it is about.
    pub fn validate(&self) -> std::result::Result<(), (&'static str, String)> {
        let token_ok = |t: &str| !t.is_empty() && !t.contains(['*', '>', ' ', '\t', '\r', '\n']);
        if !self.subject_prefix.split('.').all(token_ok) {
            return Err((
                "subject_prefix",
                format!(
                    "{:?} is not a subject (dot-separated tokens without spaces or wildcards)",
                    self.subject_prefix
                ),
            ));
        }
        if self.stream.is_empty() || self.stream.contains(['.', '*', '>', ' ', '\t', '/', '\\']) {
            return Err((
                "stream",
                format!("{:?} is not a stream name (no dots, spaces, wildcards or slashes)", self.stream),
            ));
        }
        if !(1..=4096).contains(&self.partitions) {
            return Err(("partitions", format!("{} is not between 1 and 4096", self.partitions)));
        }
        if self.max_in_flight == 0 {
            return Err(("max_in_flight", "must be at least 1".into()));
        }
        if self.partition_by.is_empty() {
            return Err(("partition_by", "names no field".into()));
        }
        humantime::parse_duration(&self.duplicate_window).map_err(|e| ("duplicate_window", e.to_string()))?;
        humantime::parse_duration(&self.max_age).map_err(|e| ("max_age", e.to_string()))?;
        if self.password.is_some() && self.password_env.is_some() {
            return Err(("password_env", "give password or password_env, not both".into()));
        }
        if (self.password.is_some() || self.password_env.is_some()) && self.user.is_none() {
            return Err(("user", "a password needs a user".into()));
        }
        let schemes = [self.user.is_some(), self.creds_file.is_some(), self.nkey_file.is_some()];
        if schemes.iter().filter(|s| **s).count() > 1 {
            return Err(("user", "give one of user/password, creds_file or nkey_file".into()));
        }
        if let Some(t) = &self.tls
            && t.cert_file.is_some() != t.key_file.is_some()
        {
            return Err(("tls", "a client certificate needs both cert_file and key_file".into()));
        }
        Ok(())
    }

    fn max_age(&self) -> Duration {
        humantime::parse_duration(&self.max_age).unwrap_or(Duration::from_secs(7 * 86400))
    }

    fn window(&self) -> Duration {
        humantime::parse_duration(&self.duplicate_window).unwrap_or(Duration::from_secs(120))
    }
}

/// The partition of an event whose `partition_by` value is `key` (FNV-1a, 32 bit, modulo
/// `n`); 0 without one.
pub fn partition(key: Option<&[u8]>, n: u32) -> u32 {
    let Some(key) = key else { return 0 };
    let mut h: u32 = 0x811c_9dc5;
    for b in key {
        h ^= *b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    h % n.max(1)
}

/// What the reading thread knows about an event besides the event itself.
pub struct EventMeta<'a> {
    pub source: &'a str,
    pub format: &'a str,
    pub path: &'a Path,
    /// The value of the `partition_by` field, when the line has one.
    pub key: Option<&'a [u8]>,
    /// The event time read from the line, if any.
    pub time: Option<DateTime<Utc>>,
}

/// One message on its way: `seq` counts the messages handed to the publishing task.
pub struct Pending {
    seq: u64,
    subject: Subject,
    headers: HeaderMap,
    payload: Bytes,
}

/// What the publishing task and the reading thread share.
#[derive(Default)]
struct Shared {
    /// Every message up to this `seq` is acknowledged by the server.
    acked: AtomicU64,
    /// Messages sent, re-sends included.
    sent: AtomicU64,
    /// Messages sent again after a failure.
    resent: AtomicU64,
    /// Acknowledgements saying the server had the message already (a re-send dropped).
    duplicates: AtomicU64,
    /// Times the connection or a publish failed.
    failures: AtomicU64,
    /// The failure going on now: (error, since RFC 3339, last logged).
    failing: Mutex<Option<(String, String, Instant)>>,
}

impl Shared {
    fn fail(&self, error: String) {
        let mut f = self.failing.lock().unwrap_or_else(|e| e.into_inner());
        self.failures.fetch_add(1, Relaxed);
        match &mut *f {
            None => {
                tracing::error!(output = NAME, error = %error, "NATS output failing; events are kept (the file positions do not move) and sent when the server is back");
                *f = Some((error, crate::daemon::status::now(), Instant::now()));
            }
            Some((e, _, logged)) => {
                if logged.elapsed() >= REPORT_EVERY {
                    tracing::error!(output = NAME, error = %error, "NATS output still failing; retrying");
                    *logged = Instant::now();
                }
                *e = error;
            }
        }
    }

    fn ok(&self) {
        let mut f = self.failing.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, since, _)) = f.take() {
            tracing::warn!(output = NAME, failing_since = %since, "NATS output recovered; nothing was lost");
        }
    }

    fn failure(&self) -> Option<(String, String)> {
        let f = self.failing.lock().unwrap_or_else(|e| e.into_inner());
        f.as_ref().map(|(e, since, _)| (e.clone(), since.clone()))
    }
}

/// The settings a client connects with (resolved on the reading thread, so that a missing
/// file or variable is an error at start). Shared by the output and the workers
/// ([`crate::source::nats`]): one place reads credentials and sets up TLS.
pub struct Connect {
    pub url: String,
    name: String,
    pub stream: String,
    /// `<subject_prefix>.>`
    subjects: String,
    window: Duration,
    max_age: Duration,
    user: Option<(String, String)>,
    creds: Option<String>,
    nkey: Option<String>,
    tls: Option<NatsTls>,
}

/// The name this machine publishes (or works) under: `nats.host`, else the host name.
pub fn host_name(def: &NatsDef) -> String {
    match &def.host {
        Some(h) => h.clone(),
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .or_else(|_| std::fs::read_to_string("/etc/hostname"))
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "unknown".into()),
    }
}

impl Connect {
    /// Reads the credentials `def` names (paths resolved with `base`); `name` is the client
    /// name the server shows.
    pub fn resolve(def: &NatsDef, base: &dyn Fn(&Path) -> PathBuf, name: String) -> Result<Connect> {
        let password = match (&def.password, &def.password_env) {
            (Some(p), _) => Some(p.clone()),
            (None, Some(var)) => Some(
                std::env::var(var)
                    .with_context(|| format!("nats.password_env: environment variable {var} is not set"))?,
            ),
            (None, None) => None,
        };
        let read = |p: &PathBuf, what: &str| {
            let p = base(p);
            std::fs::read_to_string(&p).with_context(|| format!("nats.{what}: cannot read {}", p.display()))
        };
        let creds = def.creds_file.as_ref().map(|p| read(p, "creds_file")).transpose()?;
        let nkey = def.nkey_file.as_ref().map(|p| read(p, "nkey_file").map(|s| s.trim().to_string())).transpose()?;
        let tls = def.tls.as_ref().map(|t| NatsTls {
            ca_file: t.ca_file.as_ref().map(|p| base(p)),
            cert_file: t.cert_file.as_ref().map(|p| base(p)),
            key_file: t.key_file.as_ref().map(|p| base(p)),
        });
        Ok(Connect {
            url: def.url.clone(),
            name,
            stream: def.stream.clone(),
            subjects: format!("{}.>", def.subject_prefix),
            window: def.window(),
            max_age: def.max_age(),
            user: def.user.clone().map(|u| (u, password.unwrap_or_default())),
            creds,
            nkey,
            tls,
        })
    }

    /// Connects once (the client reconnects by itself afterwards) with the credentials and
    /// TLS settings; `on_event` sees the connection's events (disconnected, connected...).
    pub async fn client<F>(&self, on_event: F) -> Result<async_nats::Client>
    where
        F: Fn(async_nats::Event) + Send + Sync + 'static,
    {
        let on_event = Arc::new(on_event);
        let mut opts = async_nats::ConnectOptions::new()
            .name(&self.name)
            .connection_timeout(ACK_TIMEOUT)
            .max_reconnects(None)
            .event_callback(move |ev| {
                let on_event = Arc::clone(&on_event);
                async move { on_event(ev) }
            });
        if let Some((u, p)) = &self.user {
            opts = opts.user_and_password(u.clone(), p.clone());
        }
        if let Some(creds) = &self.creds {
            opts = opts.credentials(creds).context("nats.creds_file is not a credentials file")?;
        }
        if let Some(seed) = &self.nkey {
            opts = opts.nkey(seed.clone());
        }
        if let Some(t) = &self.tls {
            opts = opts.require_tls(true);
            if let Some(ca) = &t.ca_file {
                opts = opts.add_root_certificates(ca.clone());
            }
            if let (Some(cert), Some(key)) = (&t.cert_file, &t.key_file) {
                opts = opts.add_client_certificate(cert.clone(), key.clone());
            }
        }
        opts.connect(self.url.as_str())
            .await
            .with_context(|| format!("cannot connect to {}", without_credentials(&self.url)))
    }
}

/// The `nats` output, owned by the reading thread.
pub struct NatsOutput {
    tx: tokio::sync::mpsc::Sender<Pending>,
    shared: Arc<Shared>,
    subjects: Vec<Subject>,
    host: String,
    partitions: u32,
    /// The `partition_by` field's name.
    pub partition_by: String,
    /// Whether the rules run here too.
    pub evaluate: bool,
    /// Messages handed to the task (the last `seq`).
    handed: u64,
    /// `handed` at the last flush: what the checkpoint being written covers.
    flushed: u64,
}

impl NatsOutput {
    /// Reads the credentials and starts the publishing task on `runtime`. Does not wait for
    /// the server: when it is unreachable, the task says so and keeps trying.
    pub fn start(
        def: &NatsDef,
        base: &dyn Fn(&Path) -> PathBuf,
        runtime: &tokio::runtime::Handle,
    ) -> Result<NatsOutput> {
        let host = host_name(def);
        let connect = Connect::resolve(def, base, format!("trapline {host}"))?;
        let subjects = (0..def.partitions).map(|p| Subject::from(format!("{}.{p}", def.subject_prefix))).collect();
        let (tx, rx) = tokio::sync::mpsc::channel(def.max_in_flight);
        let shared = Arc::new(Shared::default());
        runtime.spawn(publish_task(connect, rx, Arc::clone(&shared), def.max_in_flight));
        tracing::info!(url = %without_credentials(&def.url), stream = %def.stream, subjects = %format!("{}.>", def.subject_prefix), partitions = def.partitions, partition_by = %def.partition_by, host = %host, "publishing events to NATS JetStream");
        Ok(NatsOutput {
            tx,
            shared,
            subjects,
            host,
            partitions: def.partitions,
            partition_by: def.partition_by.clone(),
            evaluate: def.evaluate,
            handed: 0,
            flushed: 0,
        })
    }

    /// The message of one event (not yet handed over).
    pub fn prepare(&self, ev: &Event<'_>, meta: &EventMeta<'_>) -> Pending {
        let p = partition(meta.key, self.partitions);
        let mut h = HeaderMap::new();
        let origin = match ev.origin {
            Origin::Line { content, offset, line_number } => {
                h.insert("Trapline-Origin", format!("{content:016x}").as_str());
                h.insert("Trapline-Offset", offset.to_string().as_str());
                h.insert("Trapline-Line", line_number.to_string().as_str());
                ev.origin
            }
            o => o,
        };
        let id = format!("{}-{}", self.host, origin.idempotency_key(meta.source));
        h.insert("Nats-Msg-Id", id.as_str());
        h.insert("Trapline-Host", header_text(&self.host).as_str());
        h.insert("Trapline-Source", header_text(meta.source).as_str());
        h.insert("Trapline-Format", header_text(meta.format).as_str());
        h.insert("Trapline-Path", header_text(&meta.path.to_string_lossy()).as_str());
        h.insert("Trapline-Arrival", rfc3339(ev.arrival).as_str());
        if let Some(t) = ev.time.or(meta.time) {
            h.insert("Trapline-Time", rfc3339(t).as_str());
        }
        if ev.truncated {
            h.insert("Trapline-Truncated", "1");
        }
        Pending {
            seq: self.handed + 1,
            subject: self.subjects[p as usize].clone(),
            headers: h,
            payload: Bytes::copy_from_slice(ev.raw),
        }
    }

    /// Hands `msg` to the publishing task. While its queue stays full (the server does not
    /// acknowledge), fails transiently after a second, keeping `msg` for the next try.
    pub fn offer(&mut self, msg: &mut Option<Pending>) -> Result<(), ActionError> {
        let deadline = Instant::now() + OFFER_WAIT;
        loop {
            let Some(m) = msg.take() else { return Ok(()) };
            let seq = m.seq;
            match self.tx.try_send(m) {
                Ok(()) => {
                    self.handed = seq;
                    return Ok(());
                }
                Err(tokio::sync::mpsc::error::TrySendError::Full(m)) => *msg = Some(m),
                Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => {
                    return Err(ActionError::Transient(anyhow!("the NATS publishing task has stopped")));
                }
            }
            if Instant::now() >= deadline {
                let why = self.shared.failure().map(|(e, _)| e).unwrap_or_else(|| "no acknowledgement yet".into());
                return Err(ActionError::Transient(anyhow!(
                    "{} events wait for the NATS server's acknowledgement: {why}",
                    self.waiting()
                )));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Before a checkpoint: what it covers must be acknowledged before it is written.
    pub fn flush(&mut self) {
        self.flushed = self.handed;
    }

    /// Whether the server acknowledged everything up to the last flush. With `wait` (the
    /// checkpoint at a stop, or one that cannot be deferred), waits a few seconds, then fails:
    /// that checkpoint is not written, and what it would have covered is sent again after a
    /// restart (and dropped by the server as a duplicate when it arrived).
    pub fn durable(&mut self, wait: bool) -> std::io::Result<bool> {
        let deadline = Instant::now() + FINAL_WAIT;
        loop {
            if self.shared.acked.load(Relaxed) >= self.flushed {
                return Ok(true);
            }
            if !wait {
                return Ok(false);
            }
            if Instant::now() >= deadline {
                let why = self.shared.failure().map(|(e, _)| e).unwrap_or_else(|| "no answer".into());
                return Err(std::io::Error::other(format!(
                    "NATS has not acknowledged {} events ({why}): they are sent again after a restart",
                    self.flushed - self.shared.acked.load(Relaxed).min(self.flushed)
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Messages handed over and not acknowledged yet.
    pub fn waiting(&self) -> u64 {
        self.handed.saturating_sub(self.shared.acked.load(Relaxed))
    }

    /// The failure going on now: (error, since).
    pub fn failure(&self) -> Option<(String, String)> {
        self.shared.failure()
    }

    pub fn counters(&self) -> Vec<(&'static str, u64)> {
        let s = &self.shared;
        vec![
            ("published", s.acked.load(Relaxed)),
            ("sent", s.sent.load(Relaxed)),
            ("resent", s.resent.load(Relaxed)),
            ("duplicates", s.duplicates.load(Relaxed)),
            ("failures", s.failures.load(Relaxed)),
        ]
    }
}

/// `text` as a header value: control characters (a newline would end the header) escaped.
fn header_text(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_string();
    }
    text.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Connects (once: the client reconnects by itself afterwards), then makes sure the stream
/// exists and takes the subjects.
async fn connect(c: &Connect, shared: &Arc<Shared>) -> Result<jetstream::Context> {
    let events = Arc::clone(shared);
    let client = c
        .client(move |ev| match ev {
            async_nats::Event::Disconnected => events.fail("disconnected from the NATS server".into()),
            // Back: what waits is re-sent by the task (a failure to store it is reported
            // again from there).
            async_nats::Event::Connected => {
                tracing::info!(output = NAME, "connected to the NATS server");
                events.ok();
            }
            other => tracing::warn!(output = NAME, event = %other, "NATS client event"),
        })
        .await?;
    let js = jetstream::ContextBuilder::new().timeout(ACK_TIMEOUT).ack_timeout(ACK_TIMEOUT).build(client);
    ensure_stream(&js, c).await?;
    Ok(js)
}

/// Creates the stream when missing; when present, checks that it takes our subjects.
pub async fn ensure_stream(js: &jetstream::Context, c: &Connect) -> Result<()> {
    match js.get_stream(&c.stream).await {
        Ok(mut s) => {
            let info = s.info().await.with_context(|| format!("cannot read stream {}", c.stream))?;
            let covered = info.config.subjects.iter().any(|s| s == &c.subjects || s == ">");
            if !covered {
                anyhow::bail!(
                    "stream {} exists with subjects {:?}, which do not include {}",
                    c.stream,
                    info.config.subjects,
                    c.subjects
                );
            }
            if info.config.duplicate_window < Duration::from_secs(10) {
                tracing::warn!(stream = %c.stream, window = ?info.config.duplicate_window, "the stream's duplicate window is short: events re-sent after a restart may be stored twice");
            }
            Ok(())
        }
        Err(e)
            if matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(j)
                if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND) =>
        {
            let config = jetstream::stream::Config {
                name: c.stream.clone(),
                subjects: vec![c.subjects.clone()],
                storage: jetstream::stream::StorageType::File,
                duplicate_window: c.window,
                max_age: c.max_age,
                ..Default::default()
            };
            js.create_stream(config).await.with_context(|| format!("cannot create stream {}", c.stream))?;
            tracing::info!(stream = %c.stream, subjects = %c.subjects, "stream created");
            Ok(())
        }
        Err(e) => Err(anyhow::Error::new(e).context(format!("cannot look up stream {}", c.stream))),
    }
}

/// Sends what the reading thread hands over, in order, a window at a time; a message leaves
/// the window only once the server acknowledged it. On a failure the unacknowledged rest is
/// sent again (same message ids) after a backoff.
async fn publish_task(
    c: Connect,
    mut rx: tokio::sync::mpsc::Receiver<Pending>,
    shared: Arc<Shared>,
    window_max: usize,
) {
    let mut backoff = FIRST_BACKOFF;
    let js = loop {
        match connect(&c, &shared).await {
            Ok(js) => break js,
            Err(e) => {
                shared.fail(format!("{e:#}"));
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    };
    backoff = FIRST_BACKOFF;
    let mut window: VecDeque<Pending> = VecDeque::with_capacity(window_max);
    // The messages in the window that were sent before (a failure came between).
    let mut sent_before = 0usize;
    let mut acks = Vec::with_capacity(window_max);
    loop {
        if window.is_empty() {
            match rx.recv().await {
                Some(m) => window.push_back(m),
                None => return, // the output was dropped: `run` is over
            }
        }
        while window.len() < window_max {
            match rx.try_recv() {
                Ok(m) => window.push_back(m),
                Err(_) => break,
            }
        }
        let mut failed: Option<String> = None;
        acks.clear();
        for m in &window {
            let msg = jetstream::message::PublishMessage::build().headers(m.headers.clone()).payload(m.payload.clone());
            match js.send_publish(m.subject.clone(), msg).await {
                Ok(ack) => acks.push(ack),
                Err(e) => {
                    failed = Some(format!("publish: {e}"));
                    break;
                }
            }
        }
        shared.sent.fetch_add(acks.len() as u64, Relaxed);
        shared.resent.fetch_add(acks.len().min(sent_before) as u64, Relaxed);
        sent_before = sent_before.max(acks.len());
        let mut done = 0usize;
        for ack in acks.drain(..) {
            match ack.await {
                Ok(a) => {
                    done += 1;
                    if a.duplicate {
                        shared.duplicates.fetch_add(1, Relaxed);
                    }
                }
                Err(e) => {
                    failed.get_or_insert_with(|| format!("acknowledgement: {e}"));
                    break;
                }
            }
        }
        for _ in 0..done {
            if let Some(m) = window.pop_front() {
                shared.acked.store(m.seq, Relaxed);
            }
        }
        sent_before -= done.min(sent_before);
        match failed {
            None => {
                shared.ok();
                backoff = FIRST_BACKOFF;
            }
            Some(e) => {
                shared.fail(e);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// A server URL for the log: `nats://user:secret@host` loses its user part (credentials are
/// never logged; the config may carry them in the URL).
pub fn without_credentials(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        (None, Some(at)) => format!("***@{}", &url[at + 1..]),
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_fnv1a_and_lines_without_a_key_go_to_zero() {
        // FNV-1a 32 of "a" is 0xe40c292c.
        assert_eq!(partition(Some(b"a"), 1000), 0xe40c_292c_u32 % 1000);
        assert_eq!(partition(None, 8), 0);
        let p = partition(Some(b"192.0.2.10"), 8);
        assert!(p < 8);
        assert_eq!(p, partition(Some(b"192.0.2.10"), 8));
    }

    #[test]
    fn header_values_cannot_break_lines() {
        assert_eq!(header_text("a\r\nb"), "a\\r\\nb");
        assert_eq!(header_text("plain"), "plain");
    }

    #[test]
    fn settings_are_checked() {
        let def: NatsDef = serde_yaml::from_str("partitions: 0").unwrap();
        assert_eq!(def.validate().unwrap_err().0, "partitions");
        let def: NatsDef = serde_yaml::from_str("subject_prefix: 'a.*'").unwrap();
        assert_eq!(def.validate().unwrap_err().0, "subject_prefix");
        let def: NatsDef = serde_yaml::from_str("password: x").unwrap();
        assert_eq!(def.validate().unwrap_err().0, "user");
        let def: NatsDef = serde_yaml::from_str("{}").unwrap();
        assert!(def.validate().is_ok());
    }

    #[test]
    fn credentials_in_a_url_are_not_logged() {
        assert_eq!(without_credentials("nats://alice:s3cret@10.0.0.1:4222"), "nats://***@10.0.0.1:4222");
        assert_eq!(without_credentials("tls://h:4222"), "tls://h:4222");
        assert_eq!(without_credentials("u:p@h:4222"), "***@h:4222");
    }
}
