//! Sequence rules through the real binary: steps in order with the same key within the
//! window, `scan` with any thread count, fixtures of `trapline test`, and positioned errors.
//! (A sequence across a web root and an access log, live, is in tests/webroot.rs.)

mod common;

use common::{access_line, trapline};

const RULE: &str = "rules:
  - id: t.abc
    title: a, then b, then c
    severity: high
    class: recon
    sequence:
      within: 1m
      steps:
        - {formats: [combined], match: {field: path, equals: /a}, key: client_ip}
        - {formats: [combined], match: {field: path, equals: /b}, key: client_ip}
        - {formats: [combined], match: {field: path, equals: /c}, key: [client_ip]}
";

fn rules_dir(text: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("r.yml"), text).unwrap();
    d
}

/// (line number, client_ip, first_seen) of every detection of `scan --json`.
fn scan(rules: &std::path::Path, log: &std::path::Path, threads: &str) -> Vec<(u64, String, String)> {
    let out =
        trapline(&["scan", "--json", "--threads", threads, "--rules", rules.to_str().unwrap(), log.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|d| {
            assert_eq!(d["rule"]["id"], "t.abc");
            assert_eq!(d["sequence"]["steps"], 3);
            (
                d["source"]["line_number"].as_u64().unwrap(),
                d["fields"]["client_ip"].as_str().unwrap().to_string(),
                d["sequence"]["first_seen"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn steps_in_order_with_one_key_within_the_window_fire_whatever_the_thread_count() {
    let rules = rules_dir(RULE);
    let dir = tempfile::tempdir().unwrap();
    let mut lines = vec![
        access_line("192.0.2.1", 0, "/a", 200),   // 1
        access_line("192.0.2.2", 1, "/a", 200),   // 2  another key: its b never comes
        access_line("192.0.2.1", 2, "/b", 200),   // 3
        access_line("192.0.2.1", 3, "/c", 200),   // 4  fires
        access_line("192.0.2.3", 10, "/b", 200),  // 5  b long before a: no
        access_line("192.0.2.3", 20, "/a", 200),  // 6
        access_line("192.0.2.3", 21, "/c", 200),  // 7
        access_line("192.0.2.1", 25, "/c", 200),  // 8  b must happen again
        access_line("192.0.2.1", 26, "/b", 200),  // 9
        access_line("192.0.2.1", 27, "/c", 200),  // 10 fires (a of line 1 still in the window)
        access_line("192.0.2.4", 100, "/a", 200), // 11
        access_line("192.0.2.4", 130, "/b", 200), // 12
        access_line("192.0.2.4", 170, "/c", 200), // 13 70 s after a: out of the window
    ];
    // Enough unrelated lines that `scan` splits the input into several blocks.
    for i in 0..40_000 {
        lines.push(access_line("198.51.100.9", 200 + (i / 1000), "/index.html", 200));
    }
    lines.push(access_line("192.0.2.5", 300, "/a", 200));
    lines.push(access_line("192.0.2.5", 301, "/b", 200));
    lines.push(access_line("192.0.2.5", 302, "/c", 200));
    let log = dir.path().join("access.log");
    std::fs::write(&log, lines.join("\n") + "\n").unwrap();
    let one = scan(rules.path(), &log, "1");
    let last = lines.len() as u64;
    assert_eq!(
        one,
        [
            (4, "192.0.2.1".to_string(), "2024-10-10T13:00:00.000Z".to_string()),
            (10, "192.0.2.1".to_string(), "2024-10-10T13:00:00.000Z".to_string()),
            (last, "192.0.2.5".to_string(), "2024-10-10T13:05:00.000Z".to_string()),
        ]
    );
    assert_eq!(scan(rules.path(), &log, "2"), one, "the same with two threads");
}

/// `tests/abc.log` under `rules`: a, b, c from one address. Returns the `tests` directory.
fn abc_log(rules: &std::path::Path) -> std::path::PathBuf {
    let tests = rules.join("tests");
    std::fs::create_dir(&tests).unwrap();
    let log = [
        access_line("192.0.2.1", 0, "/a", 200),
        access_line("192.0.2.1", 1, "/b", 200),
        access_line("192.0.2.1", 2, "/c", 200),
    ]
    .join("\n");
    std::fs::write(tests.join("abc.log"), log + "\n").unwrap();
    tests
}

#[test]
fn a_fixture_tests_a_sequence_rule() {
    let rules = rules_dir(RULE);
    let tests = abc_log(rules.path());
    std::fs::write(tests.join("abc.test.yml"), "format: combined\nlog: abc.log\nexpect:\n  - {rule: t.abc, line: 3}\n")
        .unwrap();
    let out = trapline(&["test", rules.path().to_str().unwrap()]);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{text}");
    // The same fixture expecting the wrong line fails.
    std::fs::write(tests.join("abc.test.yml"), "format: combined\nlog: abc.log\nexpect:\n  - {rule: t.abc, line: 2}\n")
        .unwrap();
    let out = trapline(&["test", rules.path().to_str().unwrap()]);
    assert_ne!(out.status.code(), Some(0));
}

#[test]
fn mistakes_in_a_sequence_are_refused_with_their_position() {
    let cases: [(&str, &str, &str); 5] = [
        (
            "    sequence:\n      within: 1m\n      steps:\n        - {match: {field: path, equals: /a}, key: client_ip}\n",
            "r.yml:8:9",
            "2 to 8 steps",
        ),
        (
            "    formats: [combined]\n    sequence:\n      within: 1m\n      steps:\n        - {match: {field: path, equals: /a}, key: client_ip}\n        - {match: {field: path, equals: /b}, key: client_ip}\n",
            "r.yml:5:14",
            "give `formats` in each step",
        ),
        (
            "    sequence:\n      within: 1m\n      steps:\n        - {match: {field: path, equals: /a}, key: client_ip}\n        - {match: {field: path, equals: /b}, key: {field: path, transforms: [lower]}}\n",
            // The schema check comes first and points into the key: at the unknown transform.
            "r.yml:9:78",
            "unknown value \"lower\" (did you mean `lowercase`?)",
        ),
        (
            "    sequence:\n      within: 1m\n      steps:\n        - {match: {field: path, equals: /a}, key: client_ip}\n        - {match: {field: path, regex: '(' }, key: client_ip}\n",
            "r.yml:9:40",
            "unclosed group",
        ),
        (
            "    match: {field: path, equals: /a}\n    sequence:\n      within: 1m\n      steps:\n        - {match: {field: path, equals: /a}, key: client_ip}\n        - {match: {field: path, equals: /b}, key: 'bad name'}\n",
            "r.yml:",
            "one of `match` (events), `sequence` (events in order) or `content`",
        ),
    ];
    for (body, at, says) in cases {
        let text = format!("rules:\n  - id: t.bad\n    title: t\n    severity: low\n{body}");
        let rules = rules_dir(&text);
        let out = trapline(&["lint", rules.path().to_str().unwrap()]);
        let err = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.status.code(), Some(1), "{text}\n{err}");
        assert!(err.contains(at) && err.contains(says), "expected {at}… {says:?} for\n{text}\ngot:\n{err}");
    }
}

/// The open chains survive a restart (saved state) and a reload that leaves the rule as it
/// was; a reload that changes the rule starts it afresh.
#[test]
fn open_chains_survive_a_restart_and_an_unchanged_reload() {
    use trapline::event::{Event, Origin};
    use trapline::pipeline::{AdHoc, Pipeline, setup};
    let rules = rules_dir(RULE);
    let adhoc = [AdHoc { name: "web", format: "combined", timezone: None }];
    let build = || setup::build(None, &[rules.path().to_path_buf()], &adhoc).unwrap();
    let feed = |p: &mut Pipeline, n: u64, path: &str| -> usize {
        let line = access_line("192.0.2.1", n as u32, path, 200);
        let info = p.sources()[0].info("access.log");
        let ev = Event::line(
            line.as_bytes(),
            Origin::Line { content: 1, offset: n * 100, line_number: n },
            chrono::Utc::now(),
            false,
        );
        let mut fired = 0;
        p.process(0, &info, &ev, &mut |_d: trapline::engine::Detection| {
            fired += 1;
            Ok(())
        })
        .unwrap();
        fired
    };
    let mut p = Pipeline::new(build(), 100);
    assert_eq!(feed(&mut p, 1, "/a") + feed(&mut p, 2, "/b"), 0);
    // Restart: a new pipeline restores the saved state.
    let saved = p.detector().save();
    let mut q = Pipeline::new(build(), 100);
    assert!(q.detector_mut().restore(saved) >= 1);
    assert_eq!(feed(&mut q, 3, "/c"), 1, "the chain opened before the restart completes");
    // Reload with the same rule: the first step is kept.
    q.replace(build());
    assert_eq!(feed(&mut q, 4, "/b") + feed(&mut q, 5, "/c"), 1);
    // Reload with a changed rule: no chain is open any more.
    std::fs::write(rules.path().join("r.yml"), RULE.replace("within: 1m", "within: 2m")).unwrap();
    q.replace(build());
    assert_eq!(feed(&mut q, 6, "/b") + feed(&mut q, 7, "/c"), 0);
}

/// `rules:` (formerly `only:`) restricts a fixture to some rules: the others' detections are
/// not "unexpected".
#[test]
fn a_fixture_can_check_only_some_rules() {
    let rules = rules_dir(RULE);
    std::fs::write(
        rules.path().join("noisy.yml"),
        "rules:\n  - id: t.noisy\n    title: every request\n    severity: info\n    match: {field: method, equals: GET}\n",
    )
    .unwrap();
    let tests = abc_log(rules.path());
    let fixture = |only: &str| format!("format: combined\nlog: abc.log\n{only}expect:\n  - {{rule: t.abc, line: 3}}\n");
    let run = || trapline(&["test", rules.path().to_str().unwrap()]);
    std::fs::write(tests.join("abc.test.yml"), fixture("")).unwrap();
    let out = run();
    assert_ne!(out.status.code(), Some(0), "t.noisy's detections are unexpected");
    assert!(String::from_utf8_lossy(&out.stdout).contains("unexpected: t.noisy"));
    std::fs::write(tests.join("abc.test.yml"), fixture("rules: [t.abc]\n")).unwrap();
    assert_eq!(run().status.code(), Some(0), "{}", String::from_utf8_lossy(&run().stdout));
    std::fs::write(tests.join("abc.test.yml"), fixture("only: [t.abc]\n")).unwrap();
    assert_eq!(run().status.code(), Some(0), "{}", String::from_utf8_lossy(&run().stdout));
    std::fs::write(tests.join("abc.test.yml"), fixture("rules: [\"t.*\"]\n")).unwrap();
    assert_ne!(run().status.code(), Some(0), "t.* selects t.noisy again");
}
