//! `trapline lint` through the real binary: codes, positions, output formats, exit codes.

use std::path::Path;
use std::process::{Command, Output};

const SHIPPED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/rules");

/// A combined-format line that the example rules match.
const LINE: &str = r#"203.0.113.7 - - [10/Oct/2024:13:00:00 +0000] "GET /admin.php HTTP/1.1" 404 12 "-" "curl/8""#;

fn lint(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_trapline"))
        .arg("lint")
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .output()
        .expect("run trapline")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A temp dir with `rules/<name>` holding `text`.
fn rules_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join("rules").join(name), text).unwrap();
    }
    dir
}

/// A clean rule with examples, then one whose regex does not compile: the bad value sits on
/// line 14, column 14 (`regex: '(a'` starts with the quote).
const BROKEN: &str = "\
rules:
  - id: ok.admin
    title: Admin probe
    severity: low
    match: {field: path, contains: admin.php}
    examples:
      match:
        - '203.0.113.7 - - [10/Oct/2024:13:00:00 +0000] \"GET /admin.php HTTP/1.1\" 404 12 \"-\" \"curl/8\"'
  - id: bad.regex
    title: Broken
    severity: high
    match:
      field: uri
      regex: '(admin'
    examples: {match: ['x']}
";

#[test]
fn shipped_rules_have_no_errors() {
    let out = lint(Path::new(env!("CARGO_MANIFEST_DIR")), &[SHIPPED]);
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
    assert!(stdout(&out).contains("0 errors, 0 warnings"), "{}", stdout(&out));
    // With the shipped config too: only notes (sshd rules while the demo tails a web log).
    let out = lint(Path::new(env!("CARGO_MANIFEST_DIR")), &["--config", "trapline.yml", "--deny-warnings"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
}

#[test]
fn default_path_is_rules_dir() {
    let dir = rules_dir(&[("a.yml", BROKEN)]);
    let out = lint(dir.path(), &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("rules/a.yml:14:14: error[TL003] rule \"bad.regex\""), "{}", stdout(&out));
}

#[test]
fn broken_regex_human() {
    let dir = rules_dir(&[("a.yml", BROKEN)]);
    let out = lint(dir.path(), &["rules"]);
    assert_eq!(out.status.code(), Some(1));
    let s = stdout(&out);
    let lines: Vec<&str> = s.lines().collect();
    let i =
        lines.iter().position(|l| l.starts_with("rules/a.yml:14:14: error[TL003] rule \"bad.regex\": invalid regex"));
    let i = i.unwrap_or_else(|| panic!("{s}"));
    assert_eq!(lines[i + 1], "14 |       regex: '(admin'");
    assert_eq!(lines[i + 2], "   |              ^");
    assert_eq!(lines.last(), Some(&"1 error, 0 warnings"), "{s}");
    assert!(!s.contains('\x1b'), "no colour when not a terminal");
}

#[test]
fn broken_regex_json() {
    let dir = rules_dir(&[("a.yml", BROKEN)]);
    let out = lint(dir.path(), &["--format", "json", "rules"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let all = v.as_array().unwrap();
    assert_eq!(all.len(), 1, "{v:#}");
    let f = &all[0];
    assert_eq!(f["code"], "TL003");
    assert_eq!(f["severity"], "error");
    assert_eq!(f["file"], "rules/a.yml");
    assert_eq!((f["line"].as_u64(), f["col"].as_u64()), (Some(14), Some(14)));
    assert_eq!(f["rule"], "bad.regex");
    assert!(f["message"].as_str().unwrap().starts_with("invalid regex"), "{f}");
}

#[test]
fn broken_regex_github() {
    let dir = rules_dir(&[("a.yml", BROKEN)]);
    let out = lint(dir.path(), &["--format", "github", "rules"]);
    assert_eq!(out.status.code(), Some(1));
    let s = stdout(&out);
    assert!(
        s.lines().any(|l| l.starts_with("::error file=rules/a.yml,line=14,col=14,title=TL003::rule \"bad.regex\"")),
        "{s}"
    );
}

#[test]
fn broken_regex_sarif() {
    let dir = rules_dir(&[("a.yml", BROKEN)]);
    let out = lint(dir.path(), &["--format", "sarif", "rules"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["version"], "2.1.0");
    let run = &v["runs"][0];
    assert_eq!(run["tool"]["driver"]["name"], "trapline");
    let rules = run["tool"]["driver"]["rules"].as_array().unwrap();
    assert!(rules.iter().any(|r| r["id"] == "TL003"));
    let r = &run["results"][0];
    assert_eq!(r["ruleId"], "TL003");
    assert_eq!(r["level"], "error");
    assert_eq!(rules[r["ruleIndex"].as_u64().unwrap() as usize]["id"], "TL003");
    assert!(r["message"]["text"].as_str().unwrap().contains("invalid regex"));
    let loc = &r["locations"][0]["physicalLocation"];
    assert_eq!(loc["artifactLocation"]["uri"], "rules/a.yml");
    assert_eq!(loc["region"]["startLine"], 14);
    assert_eq!(loc["region"]["startColumn"], 14);
}

#[test]
fn deny_warnings_turns_warning_into_failure() {
    // Valid, but without examples: TL101 only.
    let text = "rules:\n  - id: w.noex\n    title: No examples\n    severity: low\n    match: {contains: wp-login}\n";
    let dir = rules_dir(&[("w.yml", text)]);
    let out = lint(dir.path(), &["rules"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("rules/w.yml:2:9: warning[TL101] rule \"w.noex\""), "{}", stdout(&out));
    assert!(stdout(&out).ends_with("0 errors, 1 warning\n"), "{}", stdout(&out));
    let out = lint(dir.path(), &["--deny-warnings", "rules"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn duplicate_ids_across_files_and_other_files_still_checked() {
    let a = format!(
        "rules:\n  - id: dup.x\n    title: A\n    severity: low\n    match: {{contains: admin}}\n    examples: {{match: ['{}']}}\n",
        LINE.replace('\'', "''")
    );
    // b.yml repeats the id and also has an unknown list: both are reported in one run.
    let b = "rules:\n  - id: dup.x\n    title: B\n    severity: low\n    match: {contains: y}\n    examples: {match: [y]}\n  - id: b.list\n    title: L\n    severity: low\n    match: {contains: {list: nope}}\n    examples: {match: [y]}\n";
    let dir = rules_dir(&[("a.yml", &a), ("b.yml", b)]);
    let out = lint(dir.path(), &["--format", "json", "rules"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let codes: Vec<(&str, &str, u64)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["code"].as_str().unwrap(), f["file"].as_str().unwrap(), f["line"].as_u64().unwrap()))
        .collect();
    assert!(codes.contains(&("TL002", "rules/b.yml", 2)), "{codes:?}");
    assert!(codes.contains(&("TL004", "rules/b.yml", 10)), "{codes:?}");
    let dup = v.as_array().unwrap().iter().find(|f| f["code"] == "TL002").unwrap();
    assert!(dup["message"].as_str().unwrap().contains("rules/a.yml:2"), "{dup}");
}

#[test]
fn failing_example_is_positioned_at_the_example() {
    let text = "rules:\n  - id: ex.fail\n    title: F\n    severity: low\n    match: {field: path, contains: wp-login}\n    examples:\n      match:\n        - 'this line has nothing'\n";
    let dir = rules_dir(&[("e.yml", text)]);
    let out = lint(dir.path(), &["--format", "json", "rules"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let f = v.as_array().unwrap().iter().find(|f| f["code"] == "TL005").unwrap_or_else(|| panic!("{v:#}"));
    assert_eq!(f["rule"], "ex.fail");
    assert_eq!((f["line"].as_u64(), f["col"].as_u64()), (Some(8), Some(11)));
    assert!(f["message"].as_str().unwrap().contains("examples.match[0]"), "{f}");
}

#[test]
fn greedy_raw_regex_and_always_evaluated_rule_warn() {
    let line = LINE.replace('\'', "''");
    let text = format!(
        "rules:\n  - id: g.greedy\n    title: G\n    severity: low\n    match: {{regex: 'GET .*admin'}}\n    examples: {{match: ['{line}']}}\n  - id: g.always\n    title: A\n    severity: low\n    match: {{field: status, gte: 400}}\n    examples: {{match: ['{line}']}}\n"
    );
    let dir = rules_dir(&[("g.yml", &text)]);
    let out = lint(dir.path(), &["rules"]);
    let s = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{s}");
    assert!(s.contains("rules/g.yml:5:20: warning[TL103] rule \"g.greedy\""), "{s}");
    assert!(s.contains("rules/g.yml:10:12: warning[TL102] rule \"g.always\""), "{s}");
}

#[test]
fn usage_errors_exit_2() {
    let dir = rules_dir(&[]);
    assert_eq!(lint(dir.path(), &["missing-dir"]).status.code(), Some(2));
    assert_eq!(lint(dir.path(), &["--format", "xml", "rules"]).status.code(), Some(2));
    assert_eq!(lint(dir.path(), &["--config", "nope.yml"]).status.code(), Some(2));
}

#[test]
fn broken_config_is_a_finding() {
    let dir = rules_dir(&[]);
    std::fs::write(dir.path().join("trapline.yml"), "rules: [rules]\nsourcez: []\n").unwrap();
    let out = lint(dir.path(), &["--config", "trapline.yml", "--format", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let f = &v[0];
    assert_eq!(f["code"], "TL007", "{v:#}");
    assert_eq!(f["file"], "trapline.yml");
    assert_eq!(f["line"], 2, "{v:#}");
}

/// The JSON Schema check reports every violation of a file, each at its own position, where
/// deserialisation alone would stop at the first.
#[test]
fn schema_violations_are_all_reported() {
    let dir = rules_dir(&[(
        "s.yml",
        "rules:\n  - id: s.one\n    title: T\n    severity: severe\n    match: {contians: x}\n    enabled: maybe\n",
    )]);
    let out = lint(dir.path(), &["--format", "json", "rules"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let found: Vec<(String, u64, u64)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["code"].as_str().unwrap().to_string(), f["line"].as_u64().unwrap(), f["col"].as_u64().unwrap()))
        .collect();
    // Each at the offending value: an unknown key at its own value, not at the mapping.
    assert_eq!(found, vec![("TL008".into(), 4, 15), ("TL008".into(), 5, 23), ("TL008".into(), 6, 14)], "{v}");
    assert!(v[0]["rule"] == "s.one" && v[0]["message"].as_str().unwrap().contains("severe"), "{v}");
    // What was meant, where it can be guessed.
    let msg = |i: usize| v[i]["message"].as_str().unwrap().to_string();
    assert!(msg(0).contains("one of: info, low, medium, high, critical"), "{v}");
    assert!(msg(1).contains("unknown key `contians` (did you mean `contains`?)"), "{v}");
}

/// With a config that configures XDR, the templates are loaded and rendered against sample
/// detections: a template producing an invalid incident is an error at its file:line.
#[test]
fn broken_xdr_template_is_a_finding() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    for d in ["rules", "templates", "templates/xdr", "rules/tests"] {
        std::fs::create_dir_all(dir.path().join(d)).unwrap();
    }
    for sub in ["rules", "templates/xdr", "rules/tests"] {
        for e in std::fs::read_dir(repo.join(sub)).unwrap().flatten() {
            if e.path().is_file() {
                std::fs::copy(e.path(), dir.path().join(sub).join(e.file_name())).unwrap();
            }
        }
    }
    std::fs::copy(repo.join("trapline.yml"), dir.path().join("trapline.yml")).unwrap();
    let clean = lint(dir.path(), &["--config", "trapline.yml"]);
    assert_eq!(clean.status.code(), Some(0), "{}", stdout(&clean));

    let incident = dir.path().join("templates/xdr/incident.json.j2");
    let text = std::fs::read_to_string(&incident).unwrap();
    std::fs::write(&incident, text.replacen("\"status\"", "\"statuz\"", 1)).unwrap();
    let out = lint(dir.path(), &["--config", "trapline.yml", "--format", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let f = v
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["code"] == "TL009" && f["message"].as_str().unwrap().contains("statuz"))
        .unwrap_or_else(|| panic!("no TL009 about the bad key: {v}"));
    assert!(f["file"].as_str().unwrap().ends_with("incident.json.j2"), "{v}");
    assert!(f["line"].as_u64().unwrap() > 1, "{v}");
}

/// A syslog source with no `timezone` anywhere gets a warning at its `format:`.
#[test]
fn zoneless_source_without_timezone_warns() {
    let dir = rules_dir(&[]);
    std::fs::write(
        dir.path().join("c.yml"),
        "rules: [rules]\nsources:\n  - name: ssh\n    paths: [auth.log]\n    format: syslog\n",
    )
    .unwrap();
    let out = lint(dir.path(), &["--config", "c.yml", "--format", "github"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("::warning file=c.yml,line=5,col=13,title=TL105::"), "{}", stdout(&out));
    let out = lint(dir.path(), &["--config", "c.yml", "--deny-warnings"]);
    assert_eq!(out.status.code(), Some(1));
    std::fs::write(
        dir.path().join("c.yml"),
        "rules: [rules]\ntimezone: Europe/Paris\nsources:\n  - name: ssh\n    paths: [auth.log]\n    format: syslog\n",
    )
    .unwrap();
    assert_eq!(lint(dir.path(), &["--config", "c.yml", "--deny-warnings"]).status.code(), Some(0));
}

/// Findings of a JSON lint run as (code, line, col, rule).
fn findings(out: &Output) -> Vec<(String, u64, u64, String)> {
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", stdout(out)));
    v.as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["code"].as_str().unwrap().to_string(),
                f["line"].as_u64().unwrap(),
                f["col"].as_u64().unwrap(),
                f["rule"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[test]
fn rules_that_can_never_match_are_errors() {
    // Line numbers matter: each finding must point at the offending member.
    let text = "\
rules:
  - id: never.method
    title: GET and POST at once
    severity: low
    match:
      all:
        - {field: method, equals: GET}
        - {field: status, gte: 400}
        - {field: method, regex: '^P'}
  - id: never.case
    title: capitals on a lowercased view
    severity: low
    match: {field: uri, transforms: [lowercase], case_sensitive: true, contains: UNION}
  - id: dead.alt
    title: one impossible alternative
    severity: low
    match:
      any:
        - {field: path, contains: admin}
        - all:
            - {field: status, gt: 499}
            - {field: status, lt: 400}
    examples: {match: ['203.0.113.7 - - [10/Oct/2024:13:00:00 +0000] \"GET /admin.php HTTP/1.1\" 404 12 \"-\" \"c\"']}
";
    let dir = rules_dir(&[("n.yml", text)]);
    let out = lint(dir.path(), &["--format", "json", "rules"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let f = findings(&out);
    assert!(f.contains(&("TL010".into(), 9, 11, "never.method".into())), "{f:?}");
    assert!(f.contains(&("TL010".into(), 13, 12, "never.case".into())), "{f:?}");
    // The dead alternative is reported at the member that contradicts the rest.
    assert!(f.contains(&("TL108".into(), 22, 15, "dead.alt".into())), "{f:?}");
    assert!(!f.iter().any(|x| x.0 == "TL010" && x.3 == "dead.alt"), "{f:?}");
    let human = stdout(&lint(dir.path(), &["rules"]));
    assert!(human.contains("rule \"never.method\": the rule can never match: every value match.all[0] can take (\"GET\") rejects here (match.all[2])"), "{human}");
}

#[test]
fn fields_no_format_produces_are_flagged_with_a_suggestion() {
    let line = LINE.replace('\'', "''");
    let text = format!(
        "rules:
  - id: typo.field
    title: T
    severity: low
    formats: [combined]
    match: {{all: [{{field: path, contains: admin}}, {{field: useragent, contains: curl}}]}}
    threshold: {{count: 2, within: 1m, group_by: [clientip]}}
  - id: json.ok
    title: J
    severity: low
    formats: [json]
    match: {{field: anything.at.all, contains: x}}
    examples: {{match: ['{{\"anything\": {{\"at\": {{\"all\": \"x\"}}}}}}']}}
  - id: syslog.ua
    title: U
    severity: low
    match: {{field: user_agent, contains: curl}}
    examples: {{match: ['{line}']}}
  - id: unscoped.typo
    title: U
    severity: low
    match: {{field: stauts, equals: '404'}}
"
    );
    let dir = rules_dir(&[("f.yml", &text)]);
    let out = lint(dir.path(), &["--format", "json", "rules"]);
    let f = findings(&out);
    assert!(!f.iter().any(|x| x.0 == "TL005"), "the JSON example must pass: {f:?}");
    let tl106: Vec<_> = f.iter().filter(|x| x.0 == "TL106").map(|x| (x.1, x.3.as_str())).collect();
    assert_eq!(tl106, [(6, "typo.field"), (22, "unscoped.typo")], "{f:?}");
    // A grouping field that is never there is an error of its own (TL012).
    assert!(f.contains(&("TL012".into(), 7, 50, "typo.field".into())), "{f:?}");
    let human = stdout(&lint(dir.path(), &["rules"]));
    assert!(human.contains("produces field \"useragent\" (did you mean \"user_agent\"?)"), "{human}");
    assert!(human.contains("produces field \"clientip\" (did you mean \"client_ip\"?)"), "{human}");
    assert!(human.contains("produces field \"stauts\" (did you mean \"status\"?)"), "{human}");

    // With a config, the formats of its sources decide; custom formats bring their captures.
    std::fs::write(
        dir.path().join("c.yml"),
        "rules: [rules]\ntimezone: UTC\nformats:\n  app:\n    regex: '^(?P<client_ip>\\S+) (?P<stauts>\\d+)'\nsources:\n  - {name: web, paths: [a.log], format: combined}\n  - {name: app, paths: [b.log], format: app}\n",
    )
    .unwrap();
    let out = lint(dir.path(), &["--config", "c.yml", "--format", "json"]);
    let f = findings(&out);
    // `stauts` is a capture of the custom format now; `syslog.ua` is fine for combined lines.
    let tl106: Vec<_> = f.iter().filter(|x| x.0 == "TL106" || x.0 == "TL012").map(|x| x.3.as_str()).collect();
    assert_eq!(tl106, ["typo.field", "typo.field"], "{f:?}");
}

#[test]
fn rules_outside_the_configs_sources_are_reported() {
    let dir = rules_dir(&[(
        "s.yml",
        "rules:
  - id: ssh.only
    title: S
    severity: low
    formats: [syslog]
    match: {field: program, equals: sshd}
    examples: {format: syslog, match: ['Oct 11 22:14:15 h sshd[1]: x']}
  - id: wrong.source
    title: W
    severity: low
    sources: [web, webb]
    match: {field: path, contains: admin}
",
    )]);
    std::fs::write(
        dir.path().join("c.yml"),
        "rules: [rules]\nsources:\n  - {name: web, paths: [a.log], format: combined}\n",
    )
    .unwrap();
    let out = lint(dir.path(), &["--config", "c.yml", "--format", "json"]);
    let f = findings(&out);
    assert!(f.contains(&("TL109".into(), 5, 14, "ssh.only".into())), "{f:?}");
    assert!(f.contains(&("TL107".into(), 11, 20, "wrong.source".into())), "{f:?}");
    // A note never fails the run, even with --deny-warnings; the TL107 warning does.
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(lint(dir.path(), &["--config", "c.yml", "--deny-warnings"]).status.code(), Some(1));
}

#[test]
fn config_references_to_rules_and_actions_are_checked() {
    let line = LINE.replace('\'', "''");
    let rule = format!(
        "rules:\n  - id: web.admin\n    title: A\n    severity: low\n    actions: [log, xdr-incident]\n    match: {{field: path, contains: admin}}\n    examples: {{match: ['{line}']}}\n"
    );
    let dir = rules_dir(&[("a.yml", &rule)]);
    let cfg = |xdr: &str| {
        std::fs::write(
            dir.path().join("c.yml"),
            format!(
                "rules: [rules]\ntimezone: UTC\nsources:\n  - {{name: web, paths: [a.log], format: combined}}\n{xdr}"
            ),
        )
        .unwrap()
    };
    // No XDR set up: the rule's xdr-incident action would be skipped by `run`.
    cfg("");
    let f = findings(&lint(dir.path(), &["--config", "c.yml", "--format", "json"]));
    assert!(f.contains(&("TL111".into(), 5, 20, "web.admin".into())), "{f:?}");
    // XDR set up, with settings for a rule id that does not exist (a typo of web.admin).
    cfg("actions:\n  xdr:\n    client_id: a\n    client_secret: b\n    rules:\n      web.admn:\n        window: 2h\n");
    let out = lint(dir.path(), &["--config", "c.yml"]);
    let s = stdout(&out);
    assert!(
        s.contains("c.yml:10:7: warning[TL110] actions.xdr.rules names rule \"web.admn\", which no rule file defines (did you mean \"web.admin\"?)"),
        "{s}"
    );
    assert!(!s.contains("TL111"), "{s}");
}

/// Rule files and configs nested thousands of levels deep are refused with a position, before
/// the YAML parsers run (whose time and stack grow with depth).
#[test]
fn deeply_nested_yaml_is_refused_with_its_position() {
    for n in [20_000, 100_000] {
        let deep = format!("rules: {}{}\n", "[".repeat(n), "]".repeat(n));
        let dir = rules_dir(&[("deep.yml", &deep)]);
        let out = lint(dir.path(), &["rules"]);
        let s = stdout(&out);
        let head: String = s.chars().take(300).collect();
        assert_eq!(out.status.code(), Some(1), "{head}");
        // 128 levels: the root mapping, then the 127th `[` (column 8 + 126).
        assert!(
            s.contains("rules/deep.yml:1:134") && s.contains("TL001") && s.contains("nested more than 128"),
            "{head}"
        );

        let scan = Command::new(env!("CARGO_BIN_EXE_trapline"))
            .args(["scan", "--rules", "rules", "-"])
            .current_dir(dir.path())
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&scan.stderr);
        assert_eq!(scan.status.code(), Some(2), "{err}");
        assert!(err.contains("rules/deep.yml:1:134: collections nested more than 128 levels deep"), "{err}");

        let cfg = dir.path().join("trapline.yml");
        std::fs::write(&cfg, format!("variables:\n  x: {}{}\n", "{a: ".repeat(n), "}".repeat(n))).unwrap();
        let scan = Command::new(env!("CARGO_BIN_EXE_trapline"))
            .args(["scan", "--config", cfg.to_str().unwrap(), "-"])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&scan.stderr);
        assert_eq!(scan.status.code(), Some(2), "{err}");
        assert!(err.contains("trapline.yml:2:"), "{err}");
        assert!(err.contains("collections nested more than 128 levels deep"), "{err}");
    }
}

/// A rule file that is not UTF-8 is a positioned finding in lint (TL011), and a positioned
/// load error for `scan`, instead of an I/O error without a place.
#[test]
fn non_utf8_rule_file_is_positioned() {
    let dir = rules_dir(&[]);
    let mut bytes =
        b"rules:\n  - id: t.a\n    title: caf\xc3\xa9 ok\n    severity: low\n    match: {contains: \"".to_vec();
    bytes.extend_from_slice(b"\xe9t\xe9\"}\n");
    std::fs::write(dir.path().join("rules/latin1.yml"), &bytes).unwrap();
    let out = lint(dir.path(), &["rules", "--format", "json"]);
    let s = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{s}");
    let findings: serde_json::Value = serde_json::from_str(&s).unwrap();
    let f = &findings[0];
    assert_eq!((f["code"].as_str(), f["line"].as_u64(), f["col"].as_u64()), (Some("TL011"), Some(5), Some(24)), "{s}");
    assert!(f["file"].as_str().unwrap().ends_with("rules/latin1.yml"), "{s}");
    let human = stdout(&lint(dir.path(), &["rules"]));
    assert!(human.contains("rules/latin1.yml:5:24: error[TL011] not valid UTF-8: byte 0xe9"), "{human}");

    let scan = Command::new(env!("CARGO_BIN_EXE_trapline"))
        .args(["scan", "--rules", "rules", "-"])
        .current_dir(dir.path())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&scan.stderr);
    assert_eq!(scan.status.code(), Some(2), "{err}");
    assert!(err.contains("rules/latin1.yml:5:24: not valid UTF-8"), "{err}");
}

/// `--explain CODE` prints the code's level, title and explanation; an unknown code is a usage
/// error listing the valid ones.
#[test]
fn explain_prints_a_codes_explanation() {
    let dir = tempfile::tempdir().unwrap();
    let out = lint(dir.path(), &["--explain", "TL010"]);
    let s = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{s}");
    assert!(s.starts_with("TL010 (error): rule whose condition can never be true\n\n"), "{s}");
    assert!(s.contains("provably never true"), "{s}");
    assert_eq!(lint(dir.path(), &["--explain", "tl104"]).status.code(), Some(0));

    let out = lint(dir.path(), &["--explain", "TL999"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("unknown lint code \"TL999\"") && err.contains("TL001, TL002") && err.contains("TL111"),
        "{err}"
    );
}

/// A custom format whose regex does not compile is reported once, at the config, with the
/// regex error; the rules that use the format are not also told it is unknown.
#[test]
fn a_broken_custom_format_is_one_error_at_the_config() {
    let dir = rules_dir(&[(
        "m.yml",
        "rules:\n  - id: m.x\n    title: x\n    severity: low\n    formats: [maillog]\n    match: {field: host, contains: mx}\n    examples:\n      match: ['mx1 mx1 a']\n",
    )]);
    std::fs::write(
        dir.path().join("trapline.yml"),
        "rules: [rules]\nformats:\n  maillog:\n    regex: '^(?P<host>\\S+) (?P<host>\\S+) (\\w+'\nsources:\n  - name: m\n    paths: [mail.log]\n    format: maillog\n",
    )
    .unwrap();
    let out = lint(dir.path(), &["--config", "trapline.yml", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let errors: Vec<&serde_json::Value> = v.as_array().unwrap().iter().filter(|f| f["severity"] == "error").collect();
    assert_eq!(errors.len(), 1, "{v:#}");
    assert_eq!((errors[0]["code"].as_str(), errors[0]["line"].as_u64()), (Some("TL007"), Some(4)), "{v:#}");
    assert!(errors[0]["message"].as_str().unwrap().contains("duplicate capture group name"), "{v:#}");
}

/// A threshold counting everyone together, and a list left behind, are warned about where
/// they are written.
#[test]
fn global_thresholds_and_unused_lists_are_warned_about() {
    let dir = rules_dir(&[(
        "g.yml",
        "lists:\n  used: [a]\n  orphan: [b]\nrules:\n  - id: g.x\n    title: x\n    severity: low\n    match: {field: path, contains: {list: used}}\n    threshold: {count: 5, within: 1m}\n    examples:\n      match: ['1.2.3.4 - - [10/Oct/2024:13:55:36 +0000] \"GET /a HTTP/1.1\" 200 1 \"-\" \"-\"']\n      no_match: ['1.2.3.4 - - [10/Oct/2024:13:55:36 +0000] \"GET /z HTTP/1.1\" 200 1 \"-\" \"-\"']\n",
    )]);
    let out = lint(dir.path(), &["--format", "json", "rules"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let found: Vec<(String, u64)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["code"].as_str().unwrap().to_string(), f["line"].as_u64().unwrap()))
        .collect();
    assert!(found.contains(&("TL113".into(), 9)), "{v:#}");
    assert!(found.contains(&("TL114".into(), 3)), "{v:#}");
    assert!(!found.iter().any(|(c, l)| c == "TL114" && *l == 2), "a used list is fine: {v:#}");
}

/// Every independent error of a file is reported: a rule with an unknown key does not hide
/// the bad regexes of the rules after it, a rule that cannot be read at all is an error at the
/// rule, and what the file defines still counts as defined: no TL110 for the config's settings
/// of the broken rules, no TL114 for a list only they use, no unknown id for an override.
#[test]
fn all_errors_of_a_file_and_no_follow_on_findings() {
    let dir = rules_dir(&[(
        "a.yml",
        "\
lists:
  paths: [a, b]
rules:
  - id: a.one
    title: One
    severity: low
    match: {field: uri, contians: x}
  - id: a.two
    title: Two
    severity: low
    match: {field: uri, regex: '[z'}
  - id: a.three
    title: Three
    severity: low
    match: {field: uri, regex: '(z'}
  - id: a.four
    title: Four
    severity: low
    match: {field: uri, contains: {list: paths}}
    threshold: {count: 2, within: 1x, group_by: [client_ip]}
overrides:
  - id: a.one
    severity: high
",
    )]);
    std::fs::write(
        dir.path().join("c.yml"),
        "rules: [rules]\ntimezone: UTC\nsources:\n  - {name: web, paths: [a.log], format: combined}\nactions:\n  xdr:\n    client_id: a\n    client_secret: b\n    rules:\n      a.one: {window: 2h}\n      a.four: {window: 2h}\n      a.fiv: {window: 2h}\n",
    )
    .unwrap();
    let out = lint(dir.path(), &["--config", "c.yml", "--format", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let f: Vec<_> = findings(&out).into_iter().filter(|x| x.0 != "TL009" && x.0 != "TL101").collect();
    let want = [
        // Only the id that no rule file has: the settings of the broken rules are not reported.
        ("TL110", 12, 7, ""),
        ("TL008", 7, 35, "a.one"),
        ("TL003", 11, 32, "a.two"),
        ("TL003", 15, 32, "a.three"),
        ("TL001", 20, 16, "a.four"),
    ];
    let want: Vec<_> = want.iter().map(|(c, l, col, r)| (c.to_string(), *l, *col, r.to_string())).collect();
    assert_eq!(f, want, "{}", stdout(&out));
    let human = stdout(&lint(dir.path(), &["--config", "c.yml"]));
    assert!(human.contains("rule \"a.four\": rules[3].threshold: invalid duration \"1x\""), "{human}");

    // A named condition that cannot be read: the rule using it is not told it is unknown.
    let dir = rules_dir(&[(
        "c.yml",
        "conditions:\n  admin: {field: path, contians: admin}\nrules:\n  - id: c.one\n    title: One\n    severity: low\n    match: {ref: admin}\n  - id: c.two\n    title: Two\n    severity: low\n    match: {field: uri, regex: '[z'}\n",
    )]);
    let out = lint(dir.path(), &["--format", "json", "rules"]);
    let f: Vec<_> = findings(&out).into_iter().filter(|x| x.0 != "TL101").collect();
    let want = [("TL008", 2, 34, ""), ("TL003", 11, 32, "c.two")];
    let want: Vec<_> = want.iter().map(|(c, l, col, r)| (c.to_string(), *l, *col, r.to_string())).collect();
    assert_eq!(f, want, "{}", stdout(&out));
}

/// A tag starting `attack.` must have the shape of an ATT&CK id or tactic name; a case mistake
/// gets the right spelling. A technique that is well-formed but does not exist passes.
#[test]
fn malformed_attack_tags_are_warned_about_at_the_tag() {
    let line = LINE.replace('\'', "''");
    let text = format!(
        "rules:\n  - id: t.tags\n    title: T\n    severity: low\n    tags: [attack.initial-access, attack.t1190, attack.t1059.001, attack.ta0001, attack.g0016, attack.s0002, attack.t9999, cve.2021-44228]\n    match: {{field: path, contains: admin}}\n    examples: {{match: ['{line}']}}\n  - id: t.bad\n    title: B\n    severity: low\n    tags:\n      - attack.T1190\n      - attack.t190\n      - attack.t9999x\n      - attack.t1059.1\n      - attack.initial_access\n    match: {{field: path, contains: admin}}\n    examples: {{match: ['{line}']}}\n"
    );
    let dir = rules_dir(&[("t.yml", &text)]);
    let out = lint(dir.path(), &["--format", "json", "rules"]);
    assert_eq!(out.status.code(), Some(0), "a warning: {}", stdout(&out));
    let f = findings(&out);
    let tl115: Vec<_> = f.iter().filter(|x| x.0 == "TL115").map(|x| (x.1, x.2, x.3.as_str())).collect();
    assert_eq!(
        tl115,
        [(12, 9, "t.bad"), (13, 9, "t.bad"), (14, 9, "t.bad"), (15, 9, "t.bad"), (16, 9, "t.bad")],
        "{f:?}"
    );
    let human = stdout(&lint(dir.path(), &["rules"]));
    assert!(
        human.contains("rules/t.yml:12:9: warning[TL115] rule \"t.bad\": malformed ATT&CK tag \"attack.T1190\" (did you mean \"attack.t1190\"?"),
        "{human}"
    );
    assert!(human.contains("malformed ATT&CK tag \"attack.t190\": expected attack.tNNNN"), "{human}");
    assert_eq!(lint(dir.path(), &["--deny-warnings", "rules"]).status.code(), Some(1));
}

/// Grouping fields (`group_by`, `distinct`, `suppress.group_by`, a sequence step's `key`) that
/// no format of the rule produces are errors at the value, with a suggestion; a rule that may
/// see JSON lines is not flagged.
#[test]
fn unknown_grouping_fields_are_errors() {
    let text = "\
rules:
  - id: g.combined
    title: C
    severity: low
    formats: [combined]
    match: {field: status, equals: '404'}
    threshold: {count: 5, within: 1m, group_by: [clientip], distinct: pth}
    suppress: {for: 1m, group_by: [client_ip]}
  - id: g.json
    title: J
    severity: low
    formats: [json]
    match: {field: status, equals: '404'}
    threshold: {count: 5, within: 1m, group_by: [tenant.id], distinct: anything}
  - id: g.seq
    title: S
    severity: low
    sequence:
      within: 10m
      steps:
        - formats: [combined]
          match: {field: path, contains: upload}
          key: client_ip
        - formats: [combined]
          match: {field: path, contains: shell}
          key: [{field: clientip, transforms: [lowercase]}]
";
    let dir = rules_dir(&[("g.yml", text)]);
    let out = lint(dir.path(), &["--format", "json", "rules"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let f = findings(&out);
    let tl012: Vec<_> = f.iter().filter(|x| x.0 == "TL012").map(|x| (x.1, x.2, x.3.as_str())).collect();
    assert_eq!(tl012, [(7, 50, "g.combined"), (7, 71, "g.combined"), (26, 25, "g.seq")], "{f:?}");
    assert!(!f.iter().any(|x| x.3 == "g.json" && (x.0 == "TL012" || x.0 == "TL106")), "{f:?}");
    let human = stdout(&lint(dir.path(), &["rules"]));
    assert!(
        human.contains("rules/g.yml:7:50: error[TL012] rule \"g.combined\": none of the rule's formats (combined) produces field \"clientip\" (did you mean \"client_ip\"?)"),
        "{human}"
    );
    assert!(human.contains("produces field \"pth\" (did you mean \"path\"?)"), "{human}");
    assert!(
        human.contains("produces key field \"clientip\" (did you mean \"client_ip\"?): the step never joins"),
        "{human}"
    );
}

/// A mistake inside a sequence step's `key` (a field name, `{field, transforms}`, or a list of
/// them) is positioned at the offending key or value, with the valid forms listed.
#[test]
fn schema_errors_inside_a_sequence_key_are_positioned() {
    let text = "\
rules:
  - id: s.seq
    title: Seq
    severity: low
    sequence:
      within: 10m
      steps:
        - match: {field: path, contains: a}
          key: {field: client_ip, transfroms: [lowercase]}
        - match: {field: path, contains: b}
          key: [client_ip, {fild: x}]
        - match: {field: path, contains: c}
          key: 5
";
    let dir = rules_dir(&[("s.yml", text)]);
    let out = lint(dir.path(), &["--format", "json", "rules"]);
    assert_eq!(out.status.code(), Some(1));
    let f = findings(&out);
    let tl008: Vec<_> = f.iter().filter(|x| x.0 == "TL008").map(|x| (x.1, x.2)).collect();
    assert!(tl008.contains(&(9, 47)) && tl008.contains(&(11, 35)) && tl008.contains(&(13, 16)), "{f:?}");
    let human = stdout(&lint(dir.path(), &["rules"]));
    let forms = "`key` is one of: a string or {field, transforms}, or a list of (a string or {field, transforms})";
    assert!(human.contains(&format!("rules/s.yml:9:47: error[TL008] rule \"s.seq\": unknown key `transfroms` (did you mean `transforms`?); {forms}")), "{human}");
    assert!(
        human.contains(&format!(
            "rules/s.yml:11:35: error[TL008] rule \"s.seq\": unknown key `fild` (did you mean `field`?); {forms}"
        )),
        "{human}"
    );
    assert!(human.contains("rules/s.yml:13:16: error[TL008] rule \"s.seq\": `key`: expected a string or {field, transforms}, or a list of"), "{human}");
    assert!(human.contains("found a number"), "{human}");
}
