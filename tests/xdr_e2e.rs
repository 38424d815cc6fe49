//! The XDR incident action end to end: the real `trapline run` tails a real file, attack lines
//! are appended, and the real `trapline xdr sandbox` (a child process on loopback) must end up
//! holding every incident exactly once, whatever faults it injects on the way: an outage,
//! a 429 storm, 5xx answers, answers lost after processing, tokens expiring, and trapline
//! killed with deliveries pending.

mod common;
#[path = "common/xdr.rs"]
mod xdr_common;

use std::time::{Duration, Instant};

use common::{Daemon, append, wait_for};
use serde_json::json;
use xdr_common::{Sandbox, XdrEnv, assert_exactly_once, attack, free_port, wait_delivered};

const T: Duration = Duration::from_secs(30);

#[test]
fn attacks_become_one_incident_per_attacker_with_a_sighting_per_hit() {
    let dir = tempfile::tempdir().unwrap();
    let sb = Sandbox::start("127.0.0.1:0", &dir.path().join("sb.json"), &[]);
    let env = XdrEnv::new(&sb.url(), "");
    let mut d = Daemon::start(&env.config());

    // Latency: from the write of one attack line to the sandbox having accepted its incident.
    let start = Instant::now();
    append(&env.log(), &[attack("203.0.113.7", 0)]);
    assert!(wait_for(T, || !sb.entities("incidents").is_empty()), "{}", d.stderr());
    let latency = start.elapsed();
    eprintln!("line → incident accepted by the sandbox: {latency:?}");
    assert!(latency < Duration::from_secs(1), "took {latency:?}");

    append(&env.log(), &[attack("203.0.113.7", 1), attack("198.51.100.9", 2), attack("203.0.113.7", 3)]);
    append(&env.log(), &[common::access_line("192.0.2.1", 4, "/index.html", 200)]);
    assert!(wait_delivered(&sb, 2, 4, T), "{}", d.stderr());
    std::thread::sleep(Duration::from_millis(300));
    d.signal("TERM");
    assert_exactly_once(&sb, 2, 4);
    assert_eq!(env.pending(), 0);

    let incidents = sb.entities("incidents");
    let mut titles: Vec<&str> = incidents.iter().map(|i| i["title"].as_str().unwrap()).collect();
    titles.sort();
    assert_eq!(
        titles,
        ["Attack from 198.51.100.9: phpMyAdmin login attempt", "Attack from 203.0.113.7: phpMyAdmin login attempt"]
    );
    for i in &incidents {
        assert_eq!(i["status"], "New");
        assert_eq!(i["tlp"], "amber");
        assert_eq!(i["confidence"], "High");
        assert_eq!(i["techniques"], json!(["T1110"]));
        assert_eq!(i["tactics"], json!(["TA0006"]));
        assert_eq!(i["incident_time"]["opened"].as_str().unwrap().len(), 24, "UTC with ms and Z");
    }
    // The three hits of 203.0.113.7 are sightings of the same incident.
    let inc_a = incidents.iter().find(|i| i["title"].as_str().unwrap().contains("203.0.113.7")).unwrap();
    let members = sb.entities("relationships").iter().filter(|r| r["target_ref"] == inc_a["id"]).count();
    assert_eq!(members, 3);
    let s = &sb.entities("sightings")[0];
    assert_eq!(s["observed_time"]["start_time"].as_str().unwrap().len(), 24);
    assert!(s["observed_time"]["start_time"].as_str().unwrap().starts_with("2024-10-10T13:00:0"));
    let target = &s["targets"][0];
    assert_eq!(
        target["observables"],
        json!([{"type": "hostname", "value": "honeypot-1"}, {"type": "ip", "value": "10.0.0.5"}, {"type": "mac_address", "value": "00:11:22:33:44:55"}])
    );
    assert_eq!(s["relations"][0]["relation"], "Connected_To");
    assert!(s["data"]["rows"][0][0].as_str().unwrap().contains("pma_password="));
    // The secret never reaches trapline's own log.
    assert!(!d.stderr().contains("s3cret-value"));
}

#[test]
fn sandbox_down_for_a_while_then_everything_is_delivered_once() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let env = XdrEnv::new(&format!("http://127.0.0.1:{port}"), "");
    let mut d = Daemon::start(&env.config());
    append(&env.log(), &(0..6).map(|n| attack(&format!("203.0.113.{}", n % 3), n)).collect::<Vec<_>>());
    assert!(wait_for(T, || env.pending() == 6), "pending {}", env.pending());
    std::thread::sleep(Duration::from_millis(1500));
    let sb = Sandbox::start(&format!("127.0.0.1:{port}"), &dir.path().join("sb.json"), &[]);
    assert!(wait_delivered(&sb, 3, 6, Duration::from_secs(60)), "{}", d.stderr());
    assert!(wait_for(T, || env.pending() == 0));
    d.signal("TERM");
    assert_exactly_once(&sb, 3, 6);
}

#[test]
fn rate_limits_server_errors_and_lost_answers_create_no_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let sb = Sandbox::start("127.0.0.1:0", &dir.path().join("sb.json"), &[]);
    sb.faults(json!({"status_429": 3, "retry_after": 1, "status_5xx": 2, "drop": 2}));
    let env = XdrEnv::new(&sb.url(), "");
    let mut d = Daemon::start(&env.config());
    for n in 0..8 {
        append(&env.log(), &[attack(&format!("198.51.100.{}", n % 4), n)]);
        std::thread::sleep(Duration::from_millis(150));
    }
    assert!(wait_delivered(&sb, 4, 8, Duration::from_secs(60)), "{}", d.stderr());
    assert!(wait_for(T, || env.pending() == 0));
    d.signal("TERM");
    assert_exactly_once(&sb, 4, 8);
    assert_eq!(sb.counter("injected_429"), 3);
    assert_eq!(sb.counter("injected_5xx"), 2);
    assert_eq!(sb.counter("dropped"), 2);
    assert!(sb.counter("exists") > 0, "re-sent after a lost answer: answered exists");
}

#[test]
fn expired_token_mid_run_is_renewed() {
    let dir = tempfile::tempdir().unwrap();
    let sb = Sandbox::start("127.0.0.1:0", &dir.path().join("sb.json"), &[]);
    let env = XdrEnv::new(&sb.url(), "");
    let mut d = Daemon::start(&env.config());
    append(&env.log(), &[attack("203.0.113.7", 0)]);
    assert!(wait_delivered(&sb, 1, 1, T), "{}", d.stderr());
    sb.expire_tokens();
    append(&env.log(), &[attack("203.0.113.7", 1), attack("203.0.113.8", 2)]);
    assert!(wait_delivered(&sb, 2, 3, T), "{}", d.stderr());
    d.signal("TERM");
    assert_exactly_once(&sb, 2, 3);
    assert!(sb.counter("unauthorized_401") >= 1);
    assert_eq!(sb.counter("token_requests"), 2);
}

#[test]
fn killed_with_deliveries_pending_resumes_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let sb = Sandbox::start("127.0.0.1:0", &dir.path().join("sb.json"), &[]);
    // Nothing gets through while trapline runs the first time.
    sb.faults(json!({"status_5xx": 100000}));
    let env = XdrEnv::new(&sb.url(), "");
    let mut d = Daemon::start(&env.config());
    append(&env.log(), &(0..10).map(|n| attack(&format!("192.0.2.{}", n % 2), n)).collect::<Vec<_>>());
    assert!(wait_for(T, || env.pending() == 10), "pending {}", env.pending());
    d.signal("KILL");
    sb.faults(json!({}));
    // Lines written while trapline is down are picked up too.
    append(&env.log(), &[attack("192.0.2.0", 10), attack("192.0.2.5", 11)]);
    let mut d = Daemon::start(&env.config());
    assert!(wait_delivered(&sb, 3, 12, T), "{}", d.stderr());
    assert!(wait_for(T, || env.pending() == 0));
    d.signal("TERM");
    assert_exactly_once(&sb, 3, 12);
    assert_eq!(env.failed(), 0);
}

#[test]
fn run_does_not_stall_without_a_sandbox_and_stops_fast() {
    let port = free_port();
    let env = XdrEnv::new(&format!("http://127.0.0.1:{port}"), "");
    let mut d = Daemon::start(&env.config());
    append(&env.log(), &[attack("203.0.113.7", 0)]);
    assert!(wait_for(T, || common::detections(&env.root.join("out/out.txt")).len() == 1));
    assert!(wait_for(T, || env.pending() == 1));
    let took = d.signal("TERM");
    assert!(took < Duration::from_secs(2), "SIGTERM took {took:?}");
    assert_eq!(env.pending(), 1, "still queued for the next start");
}

/// XDR refuses a bundle for good (here: the sandbox demands TLP red, the templates say amber),
/// so it lands in `failed/`. After the cause is fixed, `trapline xdr failed` lists it with the
/// reason and `--requeue` hands it back to the running trapline, which delivers it at once.
#[test]
fn refused_deliveries_are_listed_and_requeued_into_the_running_trapline() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let strict = Sandbox::start(&format!("127.0.0.1:{port}"), &dir.path().join("strict.json"), &["--min-tlp", "red"]);
    let env = XdrEnv::new(&strict.url(), "");
    let mut d = Daemon::start(&env.config());
    append(&env.log(), &[attack("203.0.113.7", 0)]);
    assert!(wait_for(T, || env.failed() == 1), "{}", d.stderr());
    assert!(wait_for(T, || env.pending() == 0));
    drop(strict);

    let sb = Sandbox::start(&format!("127.0.0.1:{port}"), &dir.path().join("sb.json"), &[]);
    let cfg = env.config();
    let xdr_failed = |extra: &[&str]| {
        let out = std::process::Command::new(common::bin())
            .args(["xdr", "failed", "--config", cfg.to_str().unwrap()])
            .args(extra)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let listed = xdr_failed(&[]);
    assert!(listed.contains("t.pma") && listed.to_lowercase().contains("tlp"), "{listed}");
    assert!(listed.contains("1 failed; `trapline xdr failed --requeue`"), "{listed}");

    let requeued = xdr_failed(&["--requeue"]);
    assert!(requeued.contains("1 requeued; trapline (pid"), "{requeued}");
    assert!(wait_delivered(&sb, 1, 1, T), "{}", d.stderr());
    assert!(wait_for(T, || env.pending() == 0));
    assert_eq!(env.failed(), 0);
    assert!(xdr_failed(&[]).starts_with("no failed XDR deliveries"));
    // Purging under a running trapline would leave it with windows naming deleted incidents.
    let purge = std::process::Command::new(common::bin())
        .args(["xdr", "purge", "--yes", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(purge.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&purge.stderr).contains("is running with this state directory"));
    d.signal("TERM");
    assert_exactly_once(&sb, 1, 1);
}

/// The original use case with the shipped rules: a phpMyAdmin log-in brute force (hydra POSTs
/// the guesses in the body, so only the rate is in the log) becomes one XDR incident.
#[test]
fn shipped_rules_send_a_phpmyadmin_brute_force_to_xdr() {
    let dir = tempfile::tempdir().unwrap();
    let sb = Sandbox::start("127.0.0.1:0", &dir.path().join("sb.json"), &[]);
    let (_p, root) = common::project(
        None,
        &format!(
            "rules: [\"<built-in>/rules\"]\ntemplates: \"<built-in>/templates\"\nstate_dir: state\nsources:\n  - name: web\n    paths: [logs/access.log]\n    start: beginning\nactions:\n  log: {{path: out.txt, console: false}}\n  xdr:\n    base_url: {}\n    client_id: client-test\n    client_secret: s3cret-value\n",
            sb.url()
        ),
    );
    let lines: Vec<String> = (0..8)
        .map(|n| {
            format!(
                "203.0.113.66 - - [10/Oct/2024:13:00:{n:02} +0000] \"POST /phpmyadmin/index.php?route=/ HTTP/1.1\" 200 4211 \"-\" \"Mozilla/5.0\""
            )
        })
        .collect();
    append(&root.join("logs/access.log"), &lines);
    let mut d = Daemon::start(&root.join("trapline.yml"));
    assert!(wait_for(T, || !sb.entities("incidents").is_empty()), "{}", d.stderr());
    d.signal("TERM");
    let incidents = sb.entities("incidents");
    assert_eq!(incidents.len(), 1, "{incidents:?}");
    let title = incidents[0]["title"].as_str().unwrap();
    assert!(title.starts_with("Brute-force attack from 203.0.113.66"), "{title}");
}

/// Two rules of different classes and severities, both sent to XDR.
const TWO_RULES: &str = "rules:\n  - id: t.pma\n    title: phpMyAdmin login attempt\n    severity: high\n    class: brute-force\n    tags: [attack.t1110, attack.credential-access]\n    match: {all: [{field: path, contains: /phpmyadmin}, {field: query, contains: pma_password=}]}\n    actions: [log, xdr-incident]\n  - id: t.sqli\n    title: UNION-based SQL injection\n    severity: critical\n    class: sqli\n    tags: [attack.t1190, attack.initial-access]\n    match: {field: query, contains: UNION}\n    actions: [log, xdr-incident]\n";

/// SQL injection line `n` from `ip` (second `n`).
fn sqli(ip: &str, n: u32) -> String {
    format!(
        "{ip} - - [10/Oct/2024:13:{:02}:{:02} +0000] \"GET /item.php?id=1%20UNION%20SELECT%20{n} HTTP/1.1\" 200 512 \"-\" \"sqlmap/1.7\"",
        (n / 60) % 60,
        n % 60
    )
}

/// The `at_ms` of the sandbox's log entries of kind `op` that touched `incident`.
fn log_times(sb: &Sandbox, op: &str, incident: &str) -> Vec<u64> {
    sb.dump()["log"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["op"] == op && l["incidents"].as_array().unwrap().iter().any(|i| i == incident))
        .map(|l| l["at_ms"].as_u64().unwrap())
        .collect()
}

/// One attacker keeps attacking for seconds with two kinds of attack: one incident, every
/// detection a sighting of it, and after the run the incident itself says what happened in
/// all of them (count, last seen, both classes in the title, the higher severity, both
/// techniques), while its imports stayed within `max_imports_per_incident_per_minute` (here
/// per 2 s, so the test runs in seconds) and detections arriving faster went together.
#[test]
fn an_attacker_over_time_is_one_incident_kept_current_within_the_import_bound() {
    let dir = tempfile::tempdir().unwrap();
    let sb = Sandbox::start("127.0.0.1:0", &dir.path().join("sb.json"), &[]);
    let period_ms = 2000u64;
    let env = XdrEnv::new(&sb.url(), "    max_imports_per_incident_per_minute: 2\n    incident_rate_period: 2s\n");
    std::fs::write(env.root.join("rules/t.yml"), TWO_RULES).unwrap();
    let mut d = Daemon::start(&env.config());

    let ip = "203.0.113.7";
    let (rounds, per_round) = (12u32, 3u32);
    let total = (rounds * per_round) as usize;
    for r in 0..rounds {
        let lines: Vec<String> = (0..per_round)
            .map(|k| {
                let n = r * per_round + k;
                if k == 2 { sqli(ip, n) } else { attack(ip, n) }
            })
            .collect();
        append(&env.log(), &lines);
        std::thread::sleep(Duration::from_millis(350));
    }
    let last_seen = format!("2024-10-10T13:00:{:02}.000Z", total - 1);
    let current = || {
        let inc = sb.entities("incidents");
        sb.entities("sightings").len() == total
            && inc.len() == 1
            && inc[0]["meta"]["detections"] == json!(total)
            && inc[0]["meta"]["last_seen"] == json!(last_seen)
    };
    assert!(wait_for(T, current), "{}\n{:#?}", d.stderr(), sb.entities("incidents"));
    std::thread::sleep(Duration::from_millis(300));
    d.signal("TERM");
    assert_exactly_once(&sb, 1, total);
    assert_eq!(env.pending(), 0);
    assert!(std::fs::read_dir(env.root.join("state/xdr/patches")).unwrap().next().is_none(), "no update left");

    let inc = &sb.entities("incidents")[0];
    let id = inc["id"].as_str().unwrap();
    assert_eq!(inc["title"], format!("Brute-force and sqli attacks from {ip} ({total} detections of 2 rules)"));
    assert_eq!(inc["severity"], "Critical", "the higher of high and critical");
    assert_eq!(inc["techniques"], json!(["T1110", "T1190"]));
    assert_eq!(inc["tactics"], json!(["TA0006", "TA0001"]));
    assert_eq!(inc["categories"], json!(["Unauthorized Access"]));
    assert_eq!(inc["meta"]["first_seen"], "2024-10-10T13:00:00.000Z");
    assert_eq!(inc["meta"]["classes"], "brute-force, sqli");
    assert_eq!(inc["scores"]["ttp"], 100);
    let desc = inc["description"].as_str().unwrap();
    assert!(desc.contains(&format!("**{total}** detections")) && desc.contains(&last_seen), "{desc}");
    assert!(desc.contains("brute-force: 24") && desc.contains("sqli: 12"), "{desc}");
    // What analysts own is never patched.
    assert_eq!((inc["status"].as_str(), inc["tlp"].as_str()), (Some("New"), Some("amber")));
    assert_eq!(inc["incident_time"]["opened"], "2024-10-10T13:00:00.000Z");

    let imports = log_times(&sb, "import", id);
    let patches = log_times(&sb, "patch", id);
    eprintln!(
        "{total} detections over {} ms: {} imports at {imports:?}, {} PATCHes at {patches:?}",
        rounds as u64 * 350,
        imports.len(),
        patches.len()
    );
    // Latency tolerance: times are taken when requests arrive, the bound when they leave.
    let slack = 150;
    for w in imports.windows(3) {
        assert!(w[2] - w[0] + slack >= period_ms, "3 imports within {period_ms} ms: {imports:?}");
    }
    assert!(imports.len() < total / 3, "detections arriving faster went together: {imports:?}");
    assert!(imports.len() >= 3, "{imports:?}");
    assert!(!patches.is_empty() && patches.len() <= imports.len(), "one PATCH per import at most: {patches:?}");
    // Each PATCH follows an import.
    for p in &patches {
        assert!(imports.iter().any(|i| i <= p), "{patches:?} {imports:?}");
    }
}

/// trapline is killed after the sightings' import but before the incident's PATCH got
/// through (every PATCH fails until then): the update waits in the state directory, and the
/// restarted trapline sends it, so the incident ends current.
#[test]
fn a_restart_between_import_and_patch_still_ends_with_a_current_incident() {
    let dir = tempfile::tempdir().unwrap();
    let sb = Sandbox::start("127.0.0.1:0", &dir.path().join("sb.json"), &[]);
    let env = XdrEnv::new(&sb.url(), "");
    let mut d = Daemon::start(&env.config());
    append(&env.log(), &[attack("203.0.113.7", 0)]);
    assert!(wait_delivered(&sb, 1, 1, T), "{}", d.stderr());
    // An analyst takes the incident and re-rates it.
    let short = sb.entities("incidents")[0]["id"].as_str().unwrap().rsplit('/').next().unwrap().to_string();
    let tok = xdr_common::token(&sb.addr, "client-test", "s3cret-value");
    let (s, b) = xdr_common::http_with(
        &sb.addr,
        "PATCH",
        &format!("/ctia/incident/{short}"),
        Some(&json!({"status": "Open: Investigating", "severity": "Low"}).to_string()),
        &[("Authorization", &format!("Bearer {tok}"))],
    );
    assert_eq!(s, 200, "{b}");
    sb.faults(json!({"patch_5xx": 100000}));
    append(&env.log(), &(1..5).map(|n| attack("203.0.113.7", n)).collect::<Vec<_>>());
    assert!(wait_delivered(&sb, 1, 5, T), "{}", d.stderr());
    assert!(wait_for(T, || sb.counter("injected_5xx") >= 1), "{}", d.stderr());
    let stale = &sb.entities("incidents")[0];
    assert_eq!(stale["meta"]["detections"], 1, "created from the first detection, not yet updated");
    // Let the checkpoint pass the lines, then kill.
    std::thread::sleep(Duration::from_millis(1500));
    d.signal("KILL");
    let left = std::fs::read_dir(env.root.join("state/xdr/patches")).unwrap().count();
    assert_eq!(left, 1, "the update is kept for the next start");

    sb.faults(json!({}));
    let mut d = Daemon::start(&env.config());
    let current = || sb.entities("incidents")[0]["meta"]["detections"] == 5;
    assert!(wait_for(T, current), "{}\n{:#?}", d.stderr(), sb.entities("incidents"));
    let inc = &sb.entities("incidents")[0];
    assert_eq!(inc["meta"]["last_seen"], "2024-10-10T13:00:04.000Z");
    assert_eq!(inc["title"], "Attack from 203.0.113.7: phpMyAdmin login attempt");
    assert!(inc["short_description"].as_str().unwrap().contains("5 detections"));
    // The update did not undo the analyst's work: status is never patched, and severity only
    // when a more severe detection joins (all five are of the same rule here).
    assert_eq!((inc["status"].as_str(), inc["severity"].as_str()), (Some("Open: Investigating"), Some("Low")));
    assert!(wait_for(T, || std::fs::read_dir(env.root.join("state/xdr/patches")).unwrap().count() == 0));
    d.signal("TERM");
    assert_exactly_once(&sb, 1, 5);
    assert_eq!(sb.counter("patches"), 2, "the analyst's and trapline's");
    assert_eq!(env.failed(), 0);
}

/// Detections held back by the per-incident bound (here the real one: 2 per minute, so the
/// second import waits half a minute) are in the outbox, not in memory: a shutdown keeps them,
/// and the next start delivers them, with the incident brought up to date.
#[test]
fn detections_held_back_by_the_bound_survive_a_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let sb = Sandbox::start("127.0.0.1:0", &dir.path().join("sb.json"), &[]);
    let env = XdrEnv::new(&sb.url(), "    incident_rate_period: 1m\n");
    let mut d = Daemon::start(&env.config());
    append(&env.log(), &[attack("203.0.113.7", 0)]);
    assert!(wait_delivered(&sb, 1, 1, T), "{}", d.stderr());
    append(&env.log(), &(1..4).map(|n| attack("203.0.113.7", n)).collect::<Vec<_>>());
    assert!(wait_for(T, || env.pending() == 3), "pending {}", env.pending());
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(sb.entities("sightings").len(), 1, "held back by the bound");
    let took = d.signal("TERM");
    assert!(took < Duration::from_secs(2), "SIGTERM took {took:?}");
    assert_eq!(env.pending(), 3, "kept for the next start");

    let mut d = Daemon::start(&env.config());
    assert!(wait_delivered(&sb, 1, 4, T), "{}", d.stderr());
    assert!(wait_for(T, || sb.entities("incidents")[0]["meta"]["detections"] == 4), "{}", d.stderr());
    d.signal("TERM");
    assert_exactly_once(&sb, 1, 4);
    assert_eq!(env.pending(), 0);
}
