//! `trapline test` and `trapline explain` through the real binary.

mod common;

use common::{access_line, trapline};

const SHIPPED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/rules");

#[test]
fn test_command_passes_on_shipped_rules_and_reports_failures() {
    let out = trapline(&["test", SHIPPED]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.lines().last().unwrap().ends_with(" 0 failed"), "{stdout}");

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("r.yml"),
        "rules:\n  - id: t.x\n    title: x\n    severity: low\n    match: {field: uri, contains: [/admin, /manager]}\n    threshold: {count: 2, within: 1m, group_by: [client_ip]}\n    examples:\n      match: ['1.2.3.4 - - [10/Oct/2024:13:55:36 +0000] \"GET /index.html HTTP/1.1\" 200 1 \"-\" \"-\"']\n",
    )
    .unwrap();
    let log: Vec<String> = (0..3).map(|s| access_line("192.0.2.1", s, "/admin", 404)).collect();
    std::fs::write(dir.path().join("a.log"), log.join("\n")).unwrap();
    std::fs::write(dir.path().join("a.test.yml"), "log: a.log\nexpect:\n  - {rule: t.x, line: 3}\n").unwrap();
    let out = trapline(&["test", "--coverage", dir.path().to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("FAIL  t.x") && stdout.contains("r.yml:8:") && stdout.contains("did not match"),
        "{stdout}"
    );
    assert!(
        stdout.contains("- missing:    t.x at line 3") && stdout.contains("+ unexpected: t.x at line 2"),
        "{stdout}"
    );
    assert!(
        stdout.contains("value \"/manager\" (") && stdout.contains("r.yml:5:35) is exercised by no `match` example"),
        "{stdout}"
    );
    assert!(stdout.contains("0 passed, 2 failed"), "{stdout}");
}

#[test]
fn explain_names_the_failing_condition_and_the_window() {
    let line = access_line("203.0.113.7", 0, "/phpmyadmin/scripts/setup.php", 404);
    let out = trapline(&["explain", "--rules", SHIPPED, "--rule", "honeypot.xss", "--line", &line]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout.contains("no match")
            && stdout.contains("uri[url_decode,html_decode] = \"/phpmyadmin/scripts/setup.php\""),
        "{stdout}"
    );

    let line = access_line("203.0.113.7", 0, "/item.php?id=1+UNION+SELECT+1", 200);
    let out = trapline(&["explain", "--rules", SHIPPED, "--line", &line]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout.contains("matches honeypot.sqli"), "{stdout}");

    let dir = tempfile::tempdir().unwrap();
    let log: Vec<String> = (0..4).map(|s| access_line("192.0.2.1", s, &format!("/nope{s}"), 404)).collect();
    let f = dir.path().join("a.log");
    std::fs::write(&f, log.join("\n")).unwrap();
    let out =
        trapline(&["explain", "--rules", SHIPPED, "--rule", "web.burst.not-found", "--file", f.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("3 of 20 matching lines within 10 s for client_ip=192.0.2.1"), "{stdout}");
}

/// Runs `trapline test --coverage` on a directory holding `rules` as `r.yml`; returns stdout
/// (the run must pass) and the directory.
fn coverage_run(rules: &str) -> (String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("r.yml"), rules).unwrap();
    let out = trapline(&["test", "--coverage", dir.path().to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    (stdout, dir)
}

#[test]
fn coverage_lists_any_alternatives_no_example_exercises() {
    let hit = access_line("192.0.2.1", 0, "/wp-login.php", 404).replace('\'', "''");
    // Three alternatives; the examples exercise the first and the nested second only.
    let (stdout, dir) = coverage_run(&format!(
        "rules:
  - id: t.any
    title: x
    severity: low
    match:
      any:
        - {{field: path, ends_with: /wp-login.php}}
        - all:
            - {{field: status, equals: '404'}}
            - any:
                - {{field: method, equals: GET}}
                - {{field: method, equals: DELETE}}
        - {{field: user_agent, contains: sqlmap}}
    examples:
      match: ['{hit}']
"
    ));
    let warned: Vec<&str> = stdout.lines().filter(|l| l.contains("made true by no `match` example")).collect();
    assert_eq!(warned.len(), 2, "{stdout}");
    assert!(warned[0].contains("match.any[1].all[1].any[1] (") && warned[0].contains("r.yml:12:19)"), "{stdout}");
    assert!(warned[1].contains("match.any[2] (") && warned[1].contains("r.yml:13:11)"), "{stdout}");
    // Without --coverage only the count is shown.
    let out = trapline(&["test", dir.path().to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("warn  2 list values or `any` alternatives"));
}

#[test]
fn coverage_of_named_list_values_sees_through_transforms() {
    // The example reaches `union select` only after URL decoding; `sleep(` is never shown.
    let hit = access_line("192.0.2.1", 0, "/item?id=1%20UNION%20SELECT%201", 200).replace('\'', "''");
    let (stdout, _dir) = coverage_run(&format!(
        "lists:
  sqli: ['union select', 'sleep(']
rules:
  - id: t.list
    title: x
    severity: low
    match: {{field: query, transforms: [url_decode], contains: {{list: sqli}}}}
    examples:
      match: ['{hit}']
"
    ));
    let warned: Vec<&str> = stdout.lines().filter(|l| l.starts_with("warn  t.list")).collect();
    assert_eq!(warned.len(), 1, "{stdout}");
    assert!(warned[0].contains("match.contains value \"sleep(\" ("), "{stdout}");
}

#[test]
fn explain_shows_every_alternative_with_its_verdict_and_position() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("r.yml"),
        "rules:
  - id: t.any
    title: x
    severity: low
    match:
      any:
        - {field: path, contains: /etc/passwd}
        - {field: path, contains: win.ini}
        - all:
            - {field: method, equals: POST}
            - {field: path, ends_with: .php}
",
    )
    .unwrap();
    let rules = dir.path().to_str().unwrap();
    // A hostile value is shown escaped: no terminal control reaches the screen.
    let line = access_line("192.0.2.1", 0, "/x/win.ini?\x1b]0;owned\x07", 200).replace("GET", "POST");
    let out = trapline(&["explain", "--rules", rules, "--rule", "t.any", "--line", &line]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("rule t.any: the condition matches, through match.any[1]"), "{stdout}");
    let conds: Vec<&str> = stdout.lines().skip_while(|l| !l.contains("conditions:")).skip(1).collect();
    assert_eq!(conds.len(), 6, "every condition, the ones after the deciding one too: {stdout}");
    let want = [
        ("true", "any", "r.yml:6:7"),
        ("false", "path contains [\"/etc/passwd\"]: path = \"/x/win.ini\"", "r.yml:7:11"),
        ("true", "path contains [\"win.ini\"]", "r.yml:8:11"),
        ("false", "all", "r.yml:9:11"),
        ("true", "method equals [\"POST\"]: method = \"POST\"", "r.yml:10:15"),
        ("false", "path ends_with [\".php\"]", "r.yml:11:15"),
    ];
    for (line, (verdict, what, at)) in conds.iter().zip(want) {
        assert!(line.trim_start().starts_with(verdict), "{line}");
        assert!(line.contains(what) && line.contains(at), "{line} should hold {what} at {at}");
    }
    assert!(!stdout.contains('\x1b') && !stdout.contains('\x07'), "{stdout:?}");
    // A miss names the failing condition, then shows them all.
    let line = access_line("192.0.2.1", 0, "/x/a.txt", 200).replace("GET", "POST");
    let out = trapline(&["explain", "--rules", rules, "--rule", "t.any", "--line", &line]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("no match: match.any[2].all[1] is false"), "{stdout}");
    assert_eq!(stdout.lines().filter(|l| l.trim_start().starts_with("false")).count(), 5, "{stdout}");
}
