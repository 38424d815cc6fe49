//! Exceptions (a rule's `except`, an override's, shared `exceptions:`) and the distinct values
//! of thresholds, through the real binary on real files: what is held back, what is counted
//! and where it is shown, positioned errors, `explain`, lint, the same results on 1 and 2
//! threads, and `run`'s log, status and saved state.

mod common;

use std::path::Path;
use std::time::Duration;

use common::attacks::Env;
use common::{Daemon, append, detections, trapline, wait_for};

/// Rules with every kind of exception: `web.admin` has its own `except` (the monitoring's user
/// agent), the shared `scanner-allowlist` (for `web.*` only) and the shared `health-checks`
/// (every rule); `other.admin` matches the same lines and has only `health-checks`.
const RULES: &str = "lists:
  health_checks: [/admin/healthz]
exceptions:
  - name: scanner-allowlist
    description: our own vulnerability scanner
    rules: [web.*]
    match: {field: client_ip, cidr: [192.0.2.10]}
  - name: health-checks
    match: {field: path, equals: {list: health_checks}}
rules:
  - id: web.admin
    title: admin area
    severity: high
    match: {field: path, starts_with: /admin}
    except: {field: user_agent, contains: monitor}
  - id: other.admin
    title: admin area (other pack)
    severity: low
    match: {field: path, starts_with: /admin}
";

fn line(ip: &str, sec: u32, target: &str, agent: &str) -> String {
    format!(
        "{ip} - - [10/Oct/2024:13:{:02}:{:02} +0000] \"GET {target} HTTP/1.1\" 200 12 \"-\" \"{agent}\"",
        (sec / 60) % 60,
        sec % 60
    )
}

/// The five kinds of line, at second `sec`: an attack both rules fire on; the scanner (held
/// back from `web.admin` only); the monitoring (held back by `web.admin`'s own `except`); a
/// health check (held back from both); a line no rule matches (never counted).
fn five(sec: u32) -> [String; 5] {
    [
        line("203.0.113.7", sec, "/admin/a", "Mozilla/5.0"),
        line("192.0.2.10", sec, "/admin/b", "Mozilla/5.0"),
        line("203.0.113.7", sec, "/admin/c", "monitor/1.0"),
        line("203.0.113.8", sec, "/admin/healthz", "Mozilla/5.0"),
        line("192.0.2.10", sec, "/index.html", "Mozilla/5.0"),
    ]
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

fn json_lines(stdout: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn ids(dets: &[serde_json::Value]) -> Vec<(String, String)> {
    dets.iter()
        .map(|d| (d["rule"]["id"].as_str().unwrap().to_string(), d["fields"]["path"].as_str().unwrap().to_string()))
        .collect()
}

#[test]
fn exceptions_hold_back_and_count_per_name() {
    let dir = tempfile::tempdir().unwrap();
    let rules = write(dir.path(), "r.yml", RULES);
    let log = write(dir.path(), "a.log", &(five(0).join("\n") + "\n"));
    let out = trapline(&["scan", "--json", "--rules", &rules, &log]);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let got = ids(&json_lines(&out.stdout));
    let want: Vec<(String, String)> = [
        ("web.admin", "/admin/a"),
        ("other.admin", "/admin/a"),
        ("other.admin", "/admin/b"),
        ("other.admin", "/admin/c"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(got, want, "{stderr}");
    // Counted under the exception's name (the rule's id for its own `except`), only for lines
    // the rule's condition matched: the last line of the scanner counts nowhere.
    assert!(stderr.contains("held back by exceptions: web.admin 1, scanner-allowlist 1, health-checks 2"), "{stderr}");
    let row = |id: &str| -> Vec<String> {
        let l = stderr.lines().find(|l| l.starts_with(&format!("{id} "))).unwrap_or_else(|| panic!("{stderr}"));
        l.split_whitespace().skip(1).map(String::from).collect()
    };
    // hits, detected, suppressed, excepted
    assert_eq!(row("web.admin"), ["1", "1", "0", "3"], "{stderr}");
    assert_eq!(row("other.admin"), ["3", "3", "0", "1"], "{stderr}");
}

/// `explain` says which exception holds a line back, for every rule and for one rule.
#[test]
fn explain_names_the_exception_that_holds_a_line_back() {
    let dir = tempfile::tempdir().unwrap();
    let rules = write(dir.path(), "r.yml", RULES);
    let [_, scanner, monitor, ..] = five(0);
    let out = trapline(&["explain", "--rules", &rules, "--line", &scanner]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("matches other.admin"), "{text}");
    assert!(
        text.contains(
            "held back web.admin: the condition matches, but exception scanner-allowlist holds the line back"
        ),
        "{text}"
    );
    let out = trapline(&["explain", "--rules", &rules, "--rule", "web.admin", "--line", &monitor]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("rule web.admin: the condition matches, but the rule's `except` holds the line back"),
        "{text}"
    );
    let out = trapline(&["explain", "--rules", &rules, "--rule", "other.admin", "--line", &monitor]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
}

/// An override's `except` is the same mechanism: kept apart from the condition, counted under
/// the override's id.
#[test]
fn an_overrides_except_is_counted_under_its_id() {
    let dir = tempfile::tempdir().unwrap();
    let rules = write(dir.path(), "r.yml", RULES);
    let site = write(
        dir.path(),
        "site.yml",
        "overrides:\n  - id: other.*\n    except: {field: client_ip, cidr: [203.0.113.0/24]}\n",
    );
    let log = write(dir.path(), "a.log", &(five(0).join("\n") + "\n"));
    let out = trapline(&["scan", "--json", "--rules", &rules, "--rules", &site, &log]);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let got = ids(&json_lines(&out.stdout));
    assert_eq!(got, [("web.admin".to_string(), "/admin/a".to_string()), ("other.admin".into(), "/admin/b".into())]);
    // The override's exception comes before the shared ones of the rule: it takes the health
    // check of 203.0.113.8 too.
    assert!(
        stderr.contains("held back by exceptions: web.admin 1, other.* 3, scanner-allowlist 1, health-checks 1"),
        "{stderr}"
    );
}

/// A rule (or pattern) that selects no rule is an error at its position, as for overrides; so
/// is a name given twice. Lint reports an exception that can never match, and a field no
/// format of its rules produces.
#[test]
fn bad_exceptions_are_positioned_errors_and_lint_findings() {
    let dir = tempfile::tempdir().unwrap();
    let bad = RULES.replace("rules: [web.*]", "rules: [web.*, wbe.admin]");
    let rules = write(dir.path(), "r.yml", &bad);
    let log = write(dir.path(), "a.log", &five(0).join("\n"));
    let out = trapline(&["scan", "--rules", &rules, &log]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("r.yml:6:20: no rule has the id \"wbe.admin\""), "{err}");

    let twice = RULES.replace("name: health-checks", "name: scanner-allowlist");
    let rules = write(dir.path(), "r.yml", &twice);
    let out = trapline(&["scan", "--rules", &rules, &log]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("r.yml:8:11: exception \"scanner-allowlist\" is defined twice"), "{err}");

    // A bad condition inside an exception is positioned there and names the exception.
    let broken = RULES.replace("cidr: [192.0.2.10]", "cidr: [192.0.2.300]");
    let rules = write(dir.path(), "r.yml", &broken);
    let out = trapline(&["scan", "--rules", &rules, &log]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("r.yml:7:38: exception \"scanner-allowlist\": \"192.0.2.300\" is not an IP network"), "{err}");

    let lint =
        RULES.replace("{field: client_ip, cidr: [192.0.2.10]}", "{field: clientip, cidr: [192.0.2.10]}").replace(
            "{field: path, equals: {list: health_checks}}",
            "{all: [{field: path, equals: {list: health_checks}}, {field: status, gt: 500}, {field: status, lt: 200}]}",
        );
    let rules = write(dir.path(), "r.yml", &lint);
    let out = trapline(&["lint", &rules]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("r.yml:7:20: warning[TL106] exception \"scanner-allowlist\""), "{text}");
    assert!(text.contains("(did you mean \"client_ip\"?)"), "{text}");
    assert!(
        text.contains("r.yml:9:") && text.contains("error[TL010] exception \"health-checks\" can never match"),
        "{text}"
    );

    // An exception true on every line silences its rule.
    let always = RULES.replace("except: {field: user_agent, contains: monitor}", "except: {exists: true}");
    let rules = write(dir.path(), "r.yml", &always);
    let out = trapline(&["lint", &rules]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("r.yml:15:13: error[TL010] rule \"web.admin\": exception \"web.admin\" holds back every event"),
        "{text}"
    );
}

/// A rule's inline examples see its own `except`: a `match` example it holds back fails.
#[test]
fn examples_see_the_rules_own_except() {
    let dir = tempfile::tempdir().unwrap();
    let [attack, _, monitor, ..] = five(0);
    let rules = format!(
        "rules:\n  - id: web.admin\n    title: admin\n    severity: high\n    match: {{field: path, starts_with: /admin}}\n    except: {{field: user_agent, contains: monitor}}\n    examples:\n      match: ['{attack}']\n      no_match: ['{monitor}']\n"
    );
    let file = write(dir.path(), "r.yml", &rules);
    let out = trapline(&["test", &file]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    let swapped = rules.replace(&format!("match: ['{attack}']"), &format!("match: ['{monitor}']"));
    let file = write(dir.path(), "r.yml", &swapped);
    let out = trapline(&["test", &file]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("r.yml:8:") && text.contains("the rule's `except` holds it back"), "{text}");
}

/// For a sequence, the exception applies to the last step's event: the chain stays open, and
/// the next last-step event that is not held back fires.
#[test]
fn a_sequences_except_holds_back_its_last_step() {
    let dir = tempfile::tempdir().unwrap();
    let rules = write(
        dir.path(),
        "r.yml",
        "rules:
  - id: seq.upload-then-call
    title: uploaded, then requested
    severity: high
    sequence:
      within: 10m
      steps:
        - match: {field: path, equals: /upload}
          key: client_ip
        - match: {field: path, equals: /x.php}
          key: client_ip
    except: {field: user_agent, contains: monitor}
",
    );
    let lines = [
        line("203.0.113.7", 0, "/upload", "monitor/1.0"),
        line("203.0.113.7", 1, "/x.php", "monitor/1.0"),
        line("203.0.113.7", 2, "/x.php", "Mozilla/5.0"),
    ];
    let log = write(dir.path(), "a.log", &lines.join("\n"));
    let out = trapline(&["scan", "--json", "--rules", &rules, &log]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let dets = json_lines(&out.stdout);
    assert_eq!(dets.len(), 1, "{stderr}");
    assert_eq!(dets[0]["source"]["line_number"], 3);
    assert!(stderr.contains("held back by exceptions: seq.upload-then-call 1"), "{stderr}");
}

/// Password spraying: one address, many user names. The detection carries the names it
/// counted (the first 20; `count` says how many), in the JSON and on the console.
#[test]
fn distinct_thresholds_carry_the_values_they_counted() {
    let dir = tempfile::tempdir().unwrap();
    let rules = write(
        dir.path(),
        "r.yml",
        "rules:
  - id: auth.spray
    title: password spraying
    severity: high
    formats: [json]
    match: {field: outcome, equals: failure}
    threshold: {count: 25, within: 10m, group_by: [client_ip], distinct: user}
",
    );
    let mut lines = Vec::new();
    for i in 0..60u32 {
        // Two addresses interleaved; the first tries each name twice.
        let (ip, user) =
            if i % 2 == 0 { ("198.51.100.1", format!("u{:02}", i / 4)) } else { ("198.51.100.2", format!("v{i:02}")) };
        lines.push(format!(
            "{{\"time\": \"2024-10-10T13:{:02}:{:02}Z\", \"client_ip\": \"{ip}\", \"user\": \"{user}\", \"outcome\": \"failure\"}}",
            i / 60,
            i % 60
        ));
    }
    let log = write(dir.path(), "auth.log", &(lines.join("\n") + "\n"));
    let out = trapline(&["scan", "--json", "--format", "json", "--rules", &rules, &log]);
    let dets = json_lines(&out.stdout);
    assert_eq!(dets.len(), 1, "{}", String::from_utf8_lossy(&out.stderr));
    let t = &dets[0]["threshold"];
    assert_eq!((t["count"].as_u64(), t["distinct"].as_str()), (Some(25), Some("user")));
    let shown: Vec<&str> = t["distinct_values"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    let want: Vec<String> = (0..20).map(|i| format!("v{:02}", 2 * i + 1)).collect();
    assert_eq!(shown, want, "the first 20 names in the order they came");
    let out = trapline(&["scan", "--format", "json", "--rules", &rules, &log]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("count=25 within=600s user=[v01,v03,v05,v07,v09 +20]"), "{text}");
}

/// Matching runs on any number of threads; holding back, counting and the values shown do not
/// depend on it (a log of several blocks).
#[test]
fn one_and_two_threads_give_the_same_results() {
    let dir = tempfile::tempdir().unwrap();
    let rules = RULES.to_string()
        + "  - id: web.probe
    title: many paths per client
    severity: medium
    match: {field: status, equals: \"404\"}
    threshold: {count: 30, within: 1m, group_by: [client_ip], distinct: path}
    except: {field: client_ip, cidr: [203.0.113.9]}
";
    let rules = write(dir.path(), "r.yml", &rules);
    let mut lines = Vec::new();
    for s in 0..4000u32 {
        lines.extend(five(s / 10));
        for ip in ["198.51.100.4", "203.0.113.9"] {
            lines.push(common::access_line(ip, s / 10, &format!("/p{}", s % 97), 404));
        }
    }
    let log = write(dir.path(), "big.log", &(lines.join("\n") + "\n"));
    assert!(std::fs::metadata(&log).unwrap().len() > 1 << 20, "several blocks");
    let run = |threads: &str| {
        let out = trapline(&["scan", "--json", "--threads", threads, "--rules", &rules, &log]);
        assert_eq!(out.status.code(), Some(0));
        let mut dets = json_lines(&out.stdout);
        for d in &mut dets {
            d.as_object_mut().unwrap().remove("detected_at");
        }
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        let summary: Vec<String> =
            stderr.lines().filter(|l| !l.contains(" lines/s")).map(String::from).collect::<Vec<_>>();
        (dets, summary)
    };
    let (one, two) = (run("1"), run("2"));
    assert_eq!(one.0.len(), two.0.len());
    assert!(one.0 == two.0, "detections differ between 1 and 2 threads");
    assert_eq!(one.1, two.1);
    let probes: Vec<&serde_json::Value> = one.0.iter().filter(|d| d["rule"]["id"] == "web.probe").collect();
    assert!(!probes.is_empty());
    assert!(probes.iter().all(|d| d["fields"]["client_ip"] == "198.51.100.4"));
    assert!(probes.iter().all(|d| d["threshold"]["distinct_values"].as_array().unwrap().len() == 20));
    let held = one.1.iter().find(|l| l.starts_with("held back by exceptions:")).unwrap();
    assert!(held.contains("web.probe "), "{held}");
}

/// `run`: the log has the values a spraying detection counted, even across a restart (they are
/// saved with the window); `trapline status` shows what the exceptions held back.
#[test]
fn run_logs_distinct_values_across_restarts_and_status_counts_exceptions() {
    let rules = "exceptions:
  - name: scanner-allowlist
    rules: [t.spray]
    match: {field: client_ip, cidr: [192.0.2.10]}
rules:
  - id: t.spray
    title: basic-auth spraying
    severity: high
    match: {field: status, equals: \"401\"}
    threshold: {count: 5, within: 1h, group_by: [client_ip], distinct: user}
  - id: t.mark
    title: marks how far trapline has read
    severity: info
    match: {field: uri, contains: MARK-}
";
    let env = Env::with_rules("beginning", rules);
    let config = env.config();
    let count = |id: &str| detections(&env.out()).iter().filter(|d| d["rule"]["id"] == id).count();
    let try_user = |ip: &str, sec: u32, user: &str| {
        format!("{ip} - {user} [10/Oct/2024:13:00:{sec:02} +0000] \"GET /admin HTTP/1.1\" 401 12 \"-\" \"curl/8\"")
    };
    let feed = |lines: Vec<String>, n: usize| {
        let mut all = lines;
        all.push(common::access_line("192.0.2.1", 0, &format!("/MARK-{n}"), 200));
        append(&env.log(), &all);
        assert!(wait_for(Duration::from_secs(15), || count("t.mark") == n), "marker {n} not detected");
    };
    let mut d = Daemon::start(&config);
    feed(
        vec![
            try_user("203.0.113.7", 1, "alice"),
            try_user("192.0.2.10", 2, "root"),
            try_user("203.0.113.7", 3, "bob"),
            try_user("192.0.2.10", 4, "admin"),
            try_user("203.0.113.7", 5, "carol"),
        ],
        1,
    );
    let status = || {
        let out = trapline(&["status", "--config", config.to_str().unwrap()]);
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert!(
        wait_for(Duration::from_secs(15), || status().contains("held back by exceptions: scanner-allowlist 2")),
        "{}",
        status()
    );
    d.signal("TERM");

    let mut d = Daemon::start(&config);
    feed(vec![try_user("203.0.113.7", 6, "dave"), try_user("203.0.113.7", 7, "erin")], 2);
    d.signal("TERM");
    let spray: Vec<serde_json::Value> =
        detections(&env.out()).into_iter().filter(|d| d["rule"]["id"] == "t.spray").collect();
    assert_eq!(spray.len(), 1, "{spray:#?}");
    let t = &spray[0]["threshold"];
    assert_eq!(t["count"], 5);
    assert_eq!(t["distinct_values"], serde_json::json!(["alice", "bob", "carol", "dave", "erin"]));
    assert_eq!(spray[0]["fields"]["client_ip"], "203.0.113.7");
}
