//! Worker mode end to end: one real nats-server with JetStream, agents (`trapline run` with the
//! `nats` output, `evaluate: false`) tailing their own access logs, and workers (`trapline run`
//! with a `type: nats` source) sharing the partitions. A threshold reached only by adding up
//! what two hosts saw is detected exactly once (in the detections stream and across the
//! workers' out.txt); and it stays so when a worker and an agent are killed with `kill -9`
//! mid-stream and the server restarts: nothing lost, nothing doubled.
//!
//! Needs nats-server >= 2.10, as tests/nats.rs (ignored without it, unless
//! TRAPLINE_E2E_REQUIRED=1: then the tests fail).

mod common;
#[path = "common/nats.rs"]
mod nats_common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use common::{Daemon, access_line, append, detections, project, wait_for};
use nats_common::{NatsServer, count, read_stream};

const STREAM: &str = "EVENTS";
const DETECTIONS: &str = "TRAPLINE_DETECTIONS";
const PARTITIONS: u32 = 4;
const RULE_ID: &str = "login-burst";

const RULE: &str = "rules:\n  - id: login-burst\n    title: many log-in attempts\n    severity: high\n    match: {field: path, equals: /login}\n    threshold: {count: 15, within: 10m, group_by: [client_ip]}\n";

fn nats_section(url: &str) -> String {
    format!(
        "nats:\n  url: \"{url}\"\n  stream: {STREAM}\n  subject_prefix: trapline.events\n  partitions: {PARTITIONS}\n"
    )
}

fn agent_config(url: &str, host: &str) -> String {
    format!(
        "rules: [rules]\nstate_dir: state\nsources:\n  - name: web\n    paths: [logs/access.log]\n    format: combined\n    start: beginning\nactions:\n  log: {{path: out.txt, console: false}}\n{}  host: {host}\n  evaluate: false\n",
        nats_section(url)
    )
}

fn worker_config(url: &str, id: &str) -> String {
    format!(
        "rules: [rules]\nstate_dir: state\nsources:\n  - name: web\n    type: nats\n    format: combined\nactions:\n  log: {{path: out.txt, console: false}}\n{}worker:\n  id: {id}\n  lease: 2s\n  ack_wait: 5s\n",
        nats_section(url)
    )
}

/// An agent or a worker: its project directory and its process.
struct Node {
    _dir: tempfile::TempDir,
    root: PathBuf,
    daemon: Option<Daemon>,
}

impl Node {
    fn new(config: &str) -> Node {
        let (dir, root) = project(Some(RULE), config);
        Node { _dir: dir, root, daemon: None }
    }

    fn start(&mut self) {
        self.daemon = Some(Daemon::start(&self.root.join("trapline.yml")));
    }

    fn log(&self) -> PathBuf {
        self.root.join("logs/access.log")
    }

    fn detections(&self) -> Vec<serde_json::Value> {
        detections(&self.root.join("out.txt"))
    }
}

/// The client IPs of the detections, with how often each was detected.
fn by_ip<'a>(dets: impl IntoIterator<Item = &'a serde_json::Value>) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for d in dets {
        assert_eq!(d["rule"]["id"], RULE_ID, "{d}");
        let ip = d["threshold"]["group"]["client_ip"].as_str().unwrap_or("?").to_string();
        *out.entry(ip).or_default() += 1;
    }
    out
}

/// The detections in the detections stream (JSON, as out.txt has them).
fn stream_detections(server: &NatsServer) -> Vec<serde_json::Value> {
    read_stream(&server.url(), DETECTIONS).iter().map(|m| serde_json::from_slice(&m.payload).unwrap()).collect()
}

fn workers_detections(workers: &[Node]) -> Vec<serde_json::Value> {
    workers.iter().flat_map(|w| w.detections()).collect()
}

/// `attempts` log-in attempts of `ip`, from second `from` on, one every `step` seconds.
fn attempts(ip: &str, n: u32, from: u32, step: u32) -> Vec<String> {
    (0..n).map(|i| access_line(ip, from + i * step, "/login", 401)).collect()
}

/// Ordinary traffic: other addresses, other pages, a few log-ins each (never 15).
fn noise(n: u32, seed: u32) -> Vec<String> {
    (0..n)
        .map(|i| {
            let ip = format!("198.51.100.{}", (i * 7 + seed) % 50);
            let path = if i % 9 == 0 { "/login".to_string() } else { format!("/page/{i}") };
            access_line(&ip, (i * 3) % 590, &path, 200)
        })
        .collect()
}

/// The worker holding partition `p`'s lease, read from the leases' bucket.
fn owner(url: &str, p: u32) -> Option<String> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let client = async_nats::connect(url).await.ok()?;
        let js = async_nats::jetstream::new(client);
        let kv = js.get_key_value(format!("{STREAM}_leases")).await.ok()?;
        let v = kv.get(format!("p.{p}")).await.ok()??;
        Some(String::from_utf8_lossy(&v).to_string())
    })
}

fn fnv_partition(key: &str, n: u32) -> u32 {
    let mut h: u32 = 2166136261;
    for b in key.bytes() {
        h ^= b as u32;
        h = h.wrapping_mul(16777619);
    }
    h % n
}

/// Waits until every partition has an owner and none holds more than its fair share of the
/// `workers` (the first to start claims them all, then gives some back as others join): from
/// then on, the owners stay.
fn wait_owned(url: &str, workers: u32) {
    let share = PARTITIONS.div_ceil(workers) as usize;
    let settled = || {
        let owners: Vec<Option<String>> = (0..PARTITIONS).map(|p| owner(url, p)).collect();
        owners.iter().all(Option::is_some) && owners.iter().all(|o| owners.iter().filter(|x| *x == o).count() <= share)
    };
    assert!(
        wait_for(Duration::from_secs(30), settled),
        "the partitions are not shared yet: {:?}",
        (0..PARTITIONS).map(|p| owner(url, p)).collect::<Vec<_>>()
    );
}

fn threshold_across_hosts_is_detected_once() {
    let server = NatsServer::start();
    let url = server.url();
    let mut workers: Vec<Node> = (1..=3).map(|i| Node::new(&worker_config(&url, &format!("w{i}")))).collect();
    for w in &mut workers {
        w.start();
    }
    wait_owned(&url, 3);
    let mut agents: Vec<Node> = ["web-a", "web-b"].iter().map(|h| Node::new(&agent_config(&url, h))).collect();
    // Ten attempts seen by each host: fifteen only together.
    let attacker = "203.0.113.7";
    let mut a = noise(60, 1);
    a.extend(attempts(attacker, 10, 100, 7));
    let mut b = noise(60, 2);
    b.extend(attempts(attacker, 10, 103, 7));
    append(&agents[0].log(), &a);
    append(&agents[1].log(), &b);
    for ag in &mut agents {
        ag.start();
    }
    let total = (a.len() + b.len()) as u64;
    assert!(
        wait_for(Duration::from_secs(30), || count(&url, STREAM) >= total),
        "{} of {total} events",
        count(&url, STREAM)
    );
    assert!(
        wait_for(Duration::from_secs(30), || count(&url, DETECTIONS) >= 1 && !workers_detections(&workers).is_empty()),
        "no detection: stream {}, workers {:?}",
        count(&url, DETECTIONS),
        workers.iter().map(|w| w.daemon.as_ref().unwrap().stderr()).collect::<Vec<_>>()
    );
    // Anything fired twice would be there by now.
    std::thread::sleep(Duration::from_secs(3));
    let in_stream = stream_detections(&server);
    assert_eq!(by_ip(&in_stream), BTreeMap::from([(attacker.to_string(), 1)]), "{in_stream:?}");
    let local = workers_detections(&workers);
    assert_eq!(by_ip(&local), BTreeMap::from([(attacker.to_string(), 1)]), "{local:?}");
    let d = &local[0];
    assert_eq!(d["threshold"]["count"], 15, "{d}");
    assert!(d["source"]["host"] == "web-a" || d["source"]["host"] == "web-b", "{d}");
    assert_eq!(d["source"]["name"], "web", "{d}");
    assert_eq!(in_stream[0]["key"], d["key"]);
    // The agents evaluated nothing.
    for ag in &agents {
        assert!(ag.detections().is_empty());
    }
    // The worker that detected it owns the attacker's partition.
    let p = fnv_partition(attacker, PARTITIONS);
    let who = owner(&url, p).unwrap();
    let detected_by: Vec<usize> = (0..3).filter(|&i| !workers[i].detections().is_empty()).collect();
    assert_eq!(detected_by, [who[1..].parse::<usize>().unwrap() - 1], "owner {who}");
    for w in &mut workers {
        w.daemon.as_mut().unwrap().signal("TERM");
    }
}

fn failover_loses_and_doubles_nothing() {
    let mut server = NatsServer::start();
    let url = server.url();
    let mut workers: Vec<Node> = (1..=3).map(|i| Node::new(&worker_config(&url, &format!("w{i}")))).collect();
    for w in &mut workers {
        w.start();
    }
    wait_owned(&url, 3);
    let mut agents: Vec<Node> = ["web-a", "web-b"].iter().map(|h| Node::new(&agent_config(&url, h))).collect();
    for ag in &mut agents {
        ag.start();
    }
    // Attackers 1..=8 make 10 attempts on each host (detected once each); 9..=12 make 7 on
    // each (never detected). Written a few lines at a time, interleaved with ordinary traffic.
    let attackers: Vec<String> = (1..=12).map(|i| format!("203.0.113.{i}")).collect();
    let mut per_host: [Vec<String>; 2] = [noise(200, 1), noise(200, 2)];
    for (h, lines) in per_host.iter_mut().enumerate() {
        let mut extra = Vec::new();
        for (i, ip) in attackers.iter().enumerate() {
            let n = if i < 8 { 10 } else { 7 };
            extra.push(attempts(ip, n, 60 + i as u32 * 11 + h as u32 * 3, 13));
        }
        // Interleave: round-robin over the attackers' lists and the noise.
        let mut mixed = Vec::new();
        let mut noise_it = std::mem::take(lines).into_iter();
        for round in 0..10 {
            for list in &extra {
                if let Some(l) = list.get(round) {
                    mixed.push(l.clone());
                }
            }
            mixed.extend(noise_it.by_ref().take(20));
        }
        mixed.extend(noise_it);
        *lines = mixed;
    }
    let total: usize = per_host.iter().map(Vec::len).sum();
    let chunks = 20;
    let chunk = |h: usize, i: usize| {
        let n = per_host[h].len().div_ceil(chunks);
        per_host[h][(i * n).min(per_host[h].len())..((i + 1) * n).min(per_host[h].len())].to_vec()
    };
    let pause = || std::thread::sleep(Duration::from_millis(150));
    let mut victim_worker = None;
    for i in 0..chunks {
        append(&agents[0].log(), &chunk(0, i));
        append(&agents[1].log(), &chunk(1, i));
        pause();
        if i == 6 {
            // The worker owning the first attacker's partition, in the middle of its count.
            let who = owner(&url, fnv_partition(&attackers[0], PARTITIONS)).expect("an owner");
            let w: usize = who[1..].parse::<usize>().unwrap() - 1;
            workers[w].daemon.as_mut().unwrap().signal("KILL");
            victim_worker = Some(w);
        }
        if i == 9 {
            agents[0].daemon.as_mut().unwrap().signal("KILL");
        }
        if i == 11 {
            agents[0].start();
        }
        if i == 14 {
            server.stop();
            std::thread::sleep(Duration::from_secs(1));
            server.start_again();
        }
    }
    assert!(
        wait_for(Duration::from_secs(60), || count(&url, STREAM) >= total as u64),
        "{} of {total} events in the stream",
        count(&url, STREAM)
    );
    let expected: BTreeMap<String, usize> = attackers[..8].iter().map(|ip| (ip.clone(), 1)).collect();
    wait_for(Duration::from_secs(60), || by_ip(&stream_detections(&server)).len() >= 8);
    // Whatever would fire twice has had time to.
    std::thread::sleep(Duration::from_secs(5));
    let in_stream = stream_detections(&server);
    assert_eq!(by_ip(&in_stream), expected, "detections stream");
    let local = workers_detections(&workers);
    assert_eq!(by_ip(&local), expected, "the workers' out.txt");
    let v = victim_worker.unwrap();
    // The survivors restored the windows of the partitions they took over from the stream.
    let logs: Vec<String> = (0..3).filter(|&i| i != v).map(|i| workers[i].daemon.as_ref().unwrap().stderr()).collect();
    let replayed: u64 = logs
        .iter()
        .flat_map(|l| l.lines())
        .filter(|l| l.contains("partition taken over"))
        .filter_map(|l| l.split("replayed=").nth(1)?.split(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(replayed > 0, "no takeover replayed anything:\n{}", logs.join("\n"));
    let again = logs.iter().map(|l| l.matches("detection fired again after a takeover").count()).sum::<usize>();
    eprintln!(
        "killed worker w{} had written {} detections; survivors wrote {}; {replayed} events replayed at takeovers; {again} detections fired again and dropped",
        v + 1,
        workers[v].detections().len(),
        local.len() - workers[v].detections().len()
    );
    for (i, w) in workers.iter_mut().enumerate() {
        if i != v {
            w.daemon.as_mut().unwrap().signal("TERM");
        }
    }
}

/// A server unreachable when a worker starts: a clear error, retried until it is there.
fn worker_waits_for_an_unreachable_server() {
    let mut server = NatsServer::start();
    server.stop();
    let url = server.url();
    let mut w = Node::new(&worker_config(&url, "w1"));
    w.start();
    let d = w.daemon.as_mut().unwrap();
    assert!(
        wait_for(Duration::from_secs(15), || d.stderr().contains("cannot start against the NATS server")
            && d.stderr().contains("cannot connect to")),
        "no clear error while the server is unreachable:\n{}",
        d.stderr()
    );
    assert!(d.child.as_mut().unwrap().try_wait().unwrap().is_none(), "the worker exited");
    server.start_again();
    wait_owned(&url, 1);
    let mut agent = Node::new(&agent_config(&url, "web-a"));
    append(&agent.log(), &attempts("203.0.113.50", 15, 0, 5));
    agent.start();
    assert!(wait_for(Duration::from_secs(30), || w.detections().len() == 1), "{}", w.daemon.as_ref().unwrap().stderr());
    w.daemon.as_mut().unwrap().signal("TERM");
    // Stopped: its partitions are released at once, not left to expire.
    assert!(
        (0..PARTITIONS).all(|p| owner(&url, p).is_none()),
        "{:?}",
        (0..PARTITIONS).map(|p| owner(&url, p)).collect::<Vec<_>>()
    );
}

/// A worker that published a detection but whose acknowledgements never reached the server
/// (killed in between): its successor evaluates the same events again and fires the same
/// detection, which the server recognises by its id; the successor then does not act on it.
fn a_detection_fired_again_is_not_acted_upon_twice() {
    let server = NatsServer::start();
    let url = server.url();
    let mut w1 = Node::new(&worker_config(&url, "w1"));
    w1.start();
    wait_owned(&url, 1);
    let mut agent = Node::new(&agent_config(&url, "web-a"));
    append(&agent.log(), &attempts("203.0.113.60", 15, 0, 5));
    agent.start();
    assert!(wait_for(Duration::from_secs(30), || w1.detections().len() == 1 && count(&url, DETECTIONS) == 1));
    w1.daemon.as_mut().unwrap().signal("TERM");
    // As if none of its acknowledgements had arrived: the partitions start over.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let js = async_nats::jetstream::new(async_nats::connect(&url).await.unwrap());
        let stream = js.get_stream(STREAM).await.unwrap();
        for p in 0..PARTITIONS {
            stream.delete_consumer(&format!("trapline-p{p}")).await.unwrap();
        }
    });
    let mut w2 = Node::new(&worker_config(&url, "w2"));
    w2.start();
    let d = w2.daemon.as_ref().unwrap();
    assert!(
        wait_for(Duration::from_secs(30), || d.stderr().contains("detection fired again after a takeover")),
        "{}",
        d.stderr()
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(count(&url, DETECTIONS), 1);
    assert!(w2.detections().is_empty(), "{:?}", w2.detections());
    w2.daemon.as_mut().unwrap().signal("TERM");
}

/// A worker paused (SIGSTOP) longer than its lease: another takes its partition over, and the
/// paused one, resumed, gives the partition up instead of pulling from it beside the new
/// owner. Ten attempts before the pause and five after are one detection.
fn a_paused_worker_gives_its_partition_up() {
    let server = NatsServer::start();
    let url = server.url();
    let mut workers: Vec<Node> = (1..=2).map(|i| Node::new(&worker_config(&url, &format!("w{i}")))).collect();
    for w in &mut workers {
        w.start();
    }
    // Each worker its fair share (two of four partitions) before the test goes on.
    assert!(wait_for(Duration::from_secs(30), || {
        let owners: Vec<Option<String>> = (0..PARTITIONS).map(|p| owner(&url, p)).collect();
        owners.iter().filter(|o| o.as_deref() == Some("w1")).count() == 2
            && owners.iter().filter(|o| o.as_deref() == Some("w2")).count() == 2
    }));
    let attacker = "203.0.113.80";
    let p = fnv_partition(attacker, PARTITIONS);
    let first = owner(&url, p).unwrap();
    let (paused, other) = if first == "w1" { (0, 1) } else { (1, 0) };
    let mut agent = Node::new(&agent_config(&url, "web-a"));
    append(&agent.log(), &attempts(attacker, 10, 0, 5));
    agent.start();
    // Evaluated and acknowledged by the owner.
    assert!(wait_for(Duration::from_secs(30), || {
        let st = std::fs::read_to_string(workers[paused].root.join("state/status.json")).unwrap_or_default();
        serde_json::from_str::<serde_json::Value>(&st).is_ok_and(|s| s["sources"][0]["lines"] == 10)
    }));
    std::thread::sleep(Duration::from_secs(1));
    let pid = workers[paused].daemon.as_ref().unwrap().pid().to_string();
    assert!(std::process::Command::new("kill").args(["-STOP", &pid]).status().unwrap().success());
    assert!(
        wait_for(Duration::from_secs(30), || owner(&url, p).as_deref() == Some(&format!("w{}", other + 1))),
        "partition {p} not taken over: {:?}",
        owner(&url, p)
    );
    append(&agent.log(), &attempts(attacker, 5, 100, 5));
    assert!(wait_for(Duration::from_secs(30), || workers[other].detections().len() == 1));
    assert!(std::process::Command::new("kill").args(["-CONT", &pid]).status().unwrap().success());
    let d = workers[paused].daemon.as_ref().unwrap();
    assert!(
        wait_for(Duration::from_secs(15), || d.stderr().contains("lease not renewed in time")
            || d.stderr().contains("lease lost")),
        "{}",
        d.stderr()
    );
    append(&agent.log(), &attempts(attacker, 5, 200, 5));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(by_ip(&stream_detections(&server)), BTreeMap::from([(attacker.to_string(), 1)]));
    assert_eq!(by_ip(&workers_detections(&workers)), BTreeMap::from([(attacker.to_string(), 1)]));
    assert!(workers[paused].detections().is_empty());
    for w in &mut workers {
        w.daemon.as_mut().unwrap().signal("TERM");
    }
}

/// Rules reloaded while a worker holds the windows of several partitions: every partition's
/// windows are carried over (the rule did not change), the one in use and the parked ones.
fn a_reload_keeps_every_partitions_windows() {
    let server = NatsServer::start();
    let url = server.url();
    let mut w = Node::new(&worker_config(&url, "w1"));
    w.start();
    wait_owned(&url, 1);
    let attacker = "203.0.113.100";
    let p = fnv_partition(attacker, PARTITIONS);
    // Then lines of the other partitions, so that the attacker's windows are parked.
    let others: Vec<String> = (0..40)
        .map(|i| format!("198.51.100.{i}"))
        .filter(|ip| fnv_partition(ip, PARTITIONS) != p)
        .map(|ip| access_line(&ip, 300, "/login", 401))
        .collect();
    let mut agent = Node::new(&agent_config(&url, "web-a"));
    append(&agent.log(), &attempts(attacker, 10, 0, 5));
    append(&agent.log(), &others);
    agent.start();
    let lines = 10 + others.len();
    let status = |root: &std::path::Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(root.join("state/status.json")).unwrap_or_default())
            .unwrap_or_default()
    };
    assert!(wait_for(Duration::from_secs(30), || status(&w.root)["sources"][0]["lines"] == lines));
    // Another rule file: the login rule itself is unchanged.
    std::fs::write(
        w.root.join("rules/more.yml"),
        "rules:\n  - id: admin-probe\n    title: admin\n    severity: low\n    match: {field: path, contains: /admin}\n",
    )
    .unwrap();
    let d = w.daemon.as_ref().unwrap();
    assert!(wait_for(Duration::from_secs(15), || d.stderr().contains("rules reloaded")), "{}", d.stderr());
    append(&agent.log(), &attempts(attacker, 5, 100, 5));
    assert!(wait_for(Duration::from_secs(30), || w.detections().len() == 1), "{}", w.daemon.as_ref().unwrap().stderr());
    assert_eq!(w.detections()[0]["threshold"]["count"], 15);
    w.daemon.as_mut().unwrap().signal("TERM");
}

/// A server that wants a user and password: agents and workers take the same settings (one
/// piece of code reads them); a wrong password is a clear error, retried.
fn credentials_are_the_outputs_settings() {
    let server = NatsServer::start_with(&["--user", "trap", "--pass", "s3cret-pw"]);
    let url = server.url();
    let creds = "  user: trap\n  password: s3cret-pw\n";
    let with = |config: String| config.replace("  partitions: 4\n", &format!("  partitions: 4\n{creds}"));
    let mut w = Node::new(&with(worker_config(&url, "w1")));
    w.start();
    let mut agent = Node::new(&with(agent_config(&url, "web-a")));
    append(&agent.log(), &attempts("203.0.113.70", 15, 0, 5));
    agent.start();
    assert!(wait_for(Duration::from_secs(30), || w.detections().len() == 1), "{}", w.daemon.as_ref().unwrap().stderr());
    assert!(!w.daemon.as_ref().unwrap().stderr().contains("s3cret-pw"));
    w.daemon.as_mut().unwrap().signal("TERM");
    // The wrong password: said, retried, and the password never logged.
    let mut bad = Node::new(&with(worker_config(&url, "w2")).replace("password: s3cret-pw", "password: wrong-pw"));
    bad.start();
    let d = bad.daemon.as_ref().unwrap();
    assert!(
        wait_for(Duration::from_secs(15), || d.stderr().contains("cannot start against the NATS server")),
        "{}",
        d.stderr()
    );
    assert!(d.stderr().to_lowercase().contains("authorization"), "{}", d.stderr());
    assert!(!d.stderr().contains("wrong-pw"), "{}", d.stderr());
    bad.daemon.as_mut().unwrap().signal("TERM");
}

/// A server that speaks TLS only: agents and workers trust its CA through the same `tls:`
/// settings.
fn tls_is_the_outputs_settings() {
    let certs = tempfile::tempdir().unwrap();
    let made = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-addext", "basicConstraints=critical,CA:FALSE"])
        .args(["-addext", "extendedKeyUsage=serverAuth", "-keyout", "key.pem", "-out", "cert.pem"])
        .current_dir(certs.path())
        .output()
        .expect("openssl");
    assert!(made.status.success(), "openssl: {}", String::from_utf8_lossy(&made.stderr));
    let (cert, key) = (certs.path().join("cert.pem"), certs.path().join("key.pem"));
    let server =
        NatsServer::start_with(&["--tls", "--tlscert", cert.to_str().unwrap(), "--tlskey", key.to_str().unwrap()]);
    let url = format!("tls://localhost:{}", server.port);
    let tls = format!("  tls: {{ca_file: \"{}\"}}\n", cert.display());
    let with = |config: String| config.replace("  partitions: 4\n", &format!("  partitions: 4\n{tls}"));
    let mut w = Node::new(&with(worker_config(&url, "w1")));
    w.start();
    let mut agent = Node::new(&with(agent_config(&url, "web-a")));
    append(&agent.log(), &attempts("203.0.113.90", 15, 0, 5));
    agent.start();
    assert!(
        wait_for(Duration::from_secs(30), || w.detections().len() == 1),
        "{}\n{}",
        w.daemon.as_ref().unwrap().stderr(),
        agent.daemon.as_ref().unwrap().stderr()
    );
    w.daemon.as_mut().unwrap().signal("TERM");
    // Without the CA, the server is not trusted: said, and retried.
    let mut untrusting = Node::new(&worker_config(&url, "w2"));
    untrusting.start();
    let d = untrusting.daemon.as_ref().unwrap();
    assert!(
        wait_for(Duration::from_secs(15), || d.stderr().contains("cannot start against the NATS server")),
        "{}",
        d.stderr()
    );
    assert!(d.stderr().contains("invalid peer certificate"), "{}", d.stderr());
    untrusting.daemon.as_mut().unwrap().signal("TERM");
}

/// Worker settings are checked at start, each error with its position in trapline.yml.
fn bad_worker_settings_are_refused_with_their_position() {
    let check = |config: &str, expect: &str| {
        let (_d, root) = project(Some(RULE), config);
        let out = common::trapline(&["run", "--config", root.join("trapline.yml").to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{config}");
        assert!(err.contains(expect), "expected {expect:?} in:\n{err}");
    };
    let good = worker_config("nats://127.0.0.1:1", "w1");
    let lines = good.lines().count();
    check(
        &good.replace("lease: 2s", "lease: 10ms"),
        &format!("trapline.yml:{}:10: worker.lease: must be at least 1s", lines - 1),
    );
    check(&good.replace("id: w1", "id: a.b"), "worker.id: \"a.b\": only letters");
    let no_nats = "rules: [rules]\nsources:\n  - name: web\n    type: nats\n";
    check(no_nats, "trapline.yml:4:5: source \"web\": a `nats` source needs the nats: section");
    let with_paths = good.replace("    type: nats\n", "    type: nats\n    paths: [x.log]\n");
    check(&with_paths, "trapline.yml:6:12: source \"web\": a `nats` source has no paths");
    let mixed = good.replace("sources:\n", "sources:\n  - name: local\n    paths: [logs/a.log]\n");
    check(&mixed, "cannot be read beside files or web roots");
    let not_a_worker = good.replace("    type: nats\n", "    paths: [logs/a.log]\n");
    let at = not_a_worker.lines().position(|l| l == "worker:").unwrap() + 1;
    check(
        &not_a_worker,
        &format!("trapline.yml:{at}:1: worker: applies only to sources of `type: nats` (a worker reading the stream)"),
    );
}

fn main() {
    let args = libtest_mimic::Arguments::from_args();
    let required = std::env::var("TRAPLINE_E2E_REQUIRED").is_ok_and(|v| v == "1");
    // The TLS trial makes its certificate with openssl (installed by .ci/setup.sh, as for
    // tests/https.rs).
    let have_openssl = std::process::Command::new("openssl").arg("version").output().is_ok_and(|o| o.status.success());
    let missing = nats_common::server_binary()
        .err()
        .or_else(|| (!have_openssl).then(|| "no openssl command to make a test certificate".to_string()));
    let ignored = missing.is_some() && !required;
    if let Some(msg) = missing.as_ref().filter(|_| ignored) {
        eprintln!("ignored: nats_workers: {msg}");
    }
    let needs_server: Vec<(&str, fn())> = vec![
        ("a_reload_keeps_every_partitions_windows", a_reload_keeps_every_partitions_windows),
        ("tls_is_the_outputs_settings", tls_is_the_outputs_settings),
        ("a_paused_worker_gives_its_partition_up", a_paused_worker_gives_its_partition_up),
        ("credentials_are_the_outputs_settings", credentials_are_the_outputs_settings),
        ("a_detection_fired_again_is_not_acted_upon_twice", a_detection_fired_again_is_not_acted_upon_twice),
        ("threshold_across_hosts_is_detected_once", threshold_across_hosts_is_detected_once),
        ("failover_loses_and_doubles_nothing", failover_loses_and_doubles_nothing),
        ("worker_waits_for_an_unreachable_server", worker_waits_for_an_unreachable_server),
    ];
    let mut trials = nats_common::server_trials(missing, ignored, needs_server);
    trials.push(libtest_mimic::Trial::test("bad_worker_settings_are_refused_with_their_position", || {
        bad_worker_settings_are_refused_with_their_position();
        Ok(())
    }));
    libtest_mimic::run(&args, trials).exit();
}
