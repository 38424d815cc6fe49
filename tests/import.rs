//! `trapline import sigma` through the real binary: Sigma rules written here (each modifier,
//! keywords, the condition forms, a rule that must be skipped, broken files) are converted,
//! the output is linted, and the converted rules are run with `trapline scan` over access-log
//! lines written here, matching and benign.
//!
//! One trial converts the 86 SigmaHQ webserver rules of the shared corpus and runs them over
//! its scanner logs; it needs the corpus (`$TRAPLINE_CORPUS`, default `../shared/corpus` beside
//! the repository) and is reported as ignored, with the reason, when it is absent.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Output;

use common::trapline;

fn main() {
    let args = libtest_mimic::Arguments::from_args();
    let mut trials: Vec<libtest_mimic::Trial> = [
        ("converted_rules_fire_on_matching_lines_only", converted_rules_fire_on_matching_lines_only as fn()),
        ("skipped_rules_are_listed_with_the_reason", skipped_rules_are_listed_with_the_reason),
        ("attribution_is_kept", attribution_is_kept),
        ("malformed_yaml_is_an_error_with_its_position", malformed_yaml_is_an_error_with_its_position),
        ("bad_condition_is_an_error_with_its_position", bad_condition_is_an_error_with_its_position),
        ("existing_files_are_not_overwritten_without_force", existing_files_are_not_overwritten_without_force),
    ]
    .into_iter()
    .map(|(name, f)| {
        libtest_mimic::Trial::test(name, move || {
            f();
            Ok(())
        })
    })
    .collect();

    // The corpus is shared data beside the repository, never part of it.
    let corpus = corpus_dir();
    if let Err(msg) = &corpus {
        eprintln!("ignored: sigma_corpus: {msg}");
    }
    let ignored = corpus.is_err();
    trials.push(
        libtest_mimic::Trial::test("sigma_corpus", move || match corpus {
            Ok(dir) => {
                sigma_corpus(&dir);
                Ok(())
            }
            Err(msg) => Err(msg.into()),
        })
        .with_ignored_flag(ignored),
    );
    libtest_mimic::run(&args, trials).exit();
}

/// `$TRAPLINE_CORPUS`, else `../shared/corpus` beside the repository.
fn corpus_dir() -> Result<PathBuf, String> {
    let dir = match std::env::var_os("TRAPLINE_CORPUS") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus"),
    };
    if dir.join("sigma-webserver/rules").is_dir() && dir.join("scanner-traffic").is_dir() {
        Ok(dir)
    } else {
        Err(format!("no Sigma corpus at {} (set TRAPLINE_CORPUS to its directory)", dir.display()))
    }
}

fn text(o: &Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

/// Writes `rules` (file name, Sigma YAML) into `dir/sigma/` and imports them into `dir/out`.
fn import(dir: &Path, rules: &[(&str, &str)], extra: &[&str]) -> Output {
    let src = dir.join("sigma");
    std::fs::create_dir_all(&src).unwrap();
    for (name, body) in rules {
        std::fs::write(src.join(name), body).unwrap();
    }
    let out = dir.join("out");
    let mut args = vec!["import", "sigma", src.to_str().unwrap(), "--out", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    trapline(&args)
}

/// `trapline lint DIR` with the default config (run where no config is found).
fn lint_clean(dir: &Path) {
    let o = std::process::Command::new(common::bin())
        .args(["lint", dir.to_str().unwrap()])
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env("HOME", dir)
        .env("TRAPLINE_SYSTEM_CONFIG", dir.join("none.yml"))
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "lint failed:\n{out}{err}");
    assert!(format!("{out}{err}").contains("0 errors, 0 warnings"), "lint not clean:\n{out}{err}");
}

/// Rule ids fired per line number of `log` (merged ones too), scanning with the rules in `rules` only.
fn fired(rules: &Path, log: &Path) -> BTreeMap<u64, BTreeSet<String>> {
    fired_in(rules, &[log.to_path_buf()]).into_iter().map(|((_, n), ids)| (n, ids)).collect()
}

/// Rule ids fired per (file, line number) of `logs`, in one scan.
fn fired_in(rules: &Path, logs: &[PathBuf]) -> BTreeMap<(String, u64), BTreeSet<String>> {
    let mut args = vec!["scan", "--json", "--rules", rules.to_str().unwrap()];
    args.extend(logs.iter().map(|l| l.to_str().unwrap()));
    let o = trapline(&args);
    let (out, err) = text(&o);
    assert!(o.status.success(), "scan failed: {err}");
    let mut m: BTreeMap<(String, u64), BTreeSet<String>> = BTreeMap::new();
    for l in out.lines().filter(|l| l.starts_with('{')) {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        let at = (v["source"]["path"].as_str().unwrap().to_string(), v["source"]["line_number"].as_u64().unwrap());
        let ids = m.entry(at).or_default();
        ids.insert(v["rule"]["id"].as_str().unwrap().to_string());
        // Detections of one class on one line are merged: the others are named in `also`.
        ids.extend(v["also"].as_array().into_iter().flatten().filter_map(|x| x.as_str()).map(str::to_string));
    }
    m
}

fn line(ip: &str, method: &str, target: &str, status: u16, referer: &str, ua: &str) -> String {
    format!("{ip} - - [10/Oct/2024:13:55:36 +0000] \"{method} {target} HTTP/1.1\" {status} 512 \"{referer}\" \"{ua}\"")
}

const BROWSER: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";

/// `contains|all` with a filter under `not`.
const CONTAINS_ALL: &str = r#"
title: Admin Command Probe
id: 11111111-1111-4111-8111-111111111111
status: test
description: Admin command requests.
author: Test Author
date: 2024-01-01
tags: [attack.initial-access, attack.t1190]
logsource:
    category: webserver
detection:
    selection:
        cs-method: GET
        cs-uri-query|contains|all:
            - '/admin/'
            - 'cmd='
    filter:
        sc-status: 404
    condition: selection and not filter
level: high
"#;

/// `startswith`, `endswith`, `re`, `1 of selection_*`.
const ONE_OF: &str = r#"
title: Edges And Regex
id: 22222222-2222-4222-8222-222222222222
author: Test Author
logsource:
    category: webserver
detection:
    selection_start:
        cs-uri-stem|startswith: '/cgi-bin/'
    selection_end:
        cs-uri-query|endswith:
            - '/.env'
            - '/.git/config'
    selection_re:
        cs-user-agent|re: '^sqlmap/\d'
    condition: 1 of selection_*
level: medium
"#;

/// Keywords (one with a wildcard), parentheses, a plain value with a wildcard, `cased`, null.
const KEYWORDS: &str = r#"
title: JNDI Lookup With Odd Client
id: 33333333-3333-4333-8333-333333333333
author: Test Author
logsource:
    category: webserver
detection:
    keywords:
        - '${jndi:'
        - 'jn*di:ldap'
    referer:
        cs-referer|contains: 'evil.example'
    ua:
        cs-user-agent: 'curl/*'
    noreferer:
        cs-referer: null
    cased:
        cs-uri-stem|cased: '/CaseOnly'
    condition: (keywords and (referer or ua)) or (cased and noreferer)
level: critical
"#;

/// `all of them`, `1 of them`, a keyword map with `|all`, `informational`.
const OF_THEM: &str = r#"
title: XML-RPC Post
id: 44444444-4444-4444-8444-444444444444
author: Test Author
logsource:
    category: webserver
detection:
    sel_method:
        cs-method: POST
    sel_path:
        cs-uri-stem: '/xmlrpc.php'
    condition: all of them
level: informational
"#;

const KEYWORD_ALL: &str = r#"
title: Both Words
id: 55555555-5555-4555-8555-555555555555
author: Test Author
logsource:
    category: webserver
detection:
    words:
        '|all':
            - 'alpha'
            - 'omega'
    other:
        c-ip|cidr: '192.0.2.0/24'
        cs-uri-stem|startswith: '/wp-'
    condition: 1 of them
level: low
"#;

/// `re|i`, `gte`, `exists`.
const OTHER_MODIFIERS: &str = r#"
title: Large Backup Download
id: 77777777-7777-4777-8777-777777777777
author: Test Author
logsource:
    category: webserver
detection:
    selection:
        cs-uri-query|re|i: '/backup\.(zip|tar)$'
        sc-bytes|gte: 1000000
        cs-user-agent|exists: true
    condition: selection
level: medium
"#;

fn converted_rules_fire_on_matching_lines_only() {
    let dir = tempfile::tempdir().unwrap();
    let o = import(
        dir.path(),
        &[
            ("contains_all.yml", CONTAINS_ALL),
            ("one_of.yml", ONE_OF),
            ("keywords.yml", KEYWORDS),
            ("of_them.yml", OF_THEM),
            ("keyword_all.yml", KEYWORD_ALL),
            ("other_modifiers.yml", OTHER_MODIFIERS),
        ],
        &[],
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "import failed:\n{out}{err}");
    assert!(out.contains("converted 6 Sigma rule(s)"), "{out}");
    let outdir = dir.path().join("out");
    for id in [
        "sigma.admin-command-probe",
        "sigma.edges-and-regex",
        "sigma.jndi-lookup-with-odd-client",
        "sigma.xml-rpc-post",
        "sigma.both-words",
        "sigma.large-backup-download",
    ] {
        assert!(outdir.join(format!("{id}.yml")).is_file(), "{id} not written; {out}");
    }
    lint_clean(&outdir);
    // The examples written into the rules pass through the engine.
    let t = trapline(&["test", outdir.to_str().unwrap()]);
    assert!(t.status.success(), "trapline test failed: {:?}", text(&t));

    let cases: &[(String, &[&str])] = &[
        // 1: contains|all, both parts
        (line("203.0.113.1", "GET", "/admin/run?cmd=id", 200, "-", BROWSER), &["sigma.admin-command-probe"]),
        // 2: only one part of |all
        (line("203.0.113.1", "GET", "/admin/index", 200, "-", BROWSER), &[]),
        // 3: the filter (status 404) removes it
        (line("203.0.113.1", "GET", "/admin/run?cmd=id", 404, "-", BROWSER), &[]),
        // 4: wrong method
        (line("203.0.113.1", "POST", "/admin/run?cmd=id", 200, "-", BROWSER), &[]),
        // 5: startswith on the path
        (line("203.0.113.2", "GET", "/cgi-bin/test.cgi", 200, "-", BROWSER), &["sigma.edges-and-regex"]),
        // 6: the path does not start with it
        (line("203.0.113.2", "GET", "/x/cgi-bin/test.cgi", 200, "-", BROWSER), &[]),
        // 7: endswith on the whole target
        (line("203.0.113.2", "GET", "/app/.git/config", 200, "-", BROWSER), &["sigma.edges-and-regex"]),
        // 8: endswith does not hold with a query after it
        (line("203.0.113.2", "GET", "/app/.env?x=1", 200, "-", BROWSER), &[]),
        // 9: re (case-sensitive, as in Sigma)
        (line("203.0.113.2", "GET", "/", 200, "-", "sqlmap/1.7.2#stable"), &["sigma.edges-and-regex"]),
        // 10: re does not match the other case
        (line("203.0.113.2", "GET", "/", 200, "-", "SQLMAP/1.7.2"), &[]),
        // 11: keyword anywhere in the line + referer contains
        (
            line("203.0.113.3", "GET", "/?q=${jndi:ldap://x/a}", 200, "http://evil.example/", BROWSER),
            &["sigma.jndi-lookup-with-odd-client"],
        ),
        // 12: keyword, case-insensitive, in the user agent + the wildcard value on the user agent
        (line("203.0.113.3", "GET", "/", 200, "-", "curl/8.0 ${JNDI:dns://x}"), &["sigma.jndi-lookup-with-odd-client"]),
        // 13: keyword wildcard `jn*di:ldap`
        (line("203.0.113.3", "GET", "/?a=jnXXdi:ldap", 200, "-", "curl/8.0"), &["sigma.jndi-lookup-with-odd-client"]),
        // 14: keyword without the referer or user agent part
        (line("203.0.113.3", "GET", "/?q=${jndi:ldap://x/a}", 200, "-", BROWSER), &[]),
        // 15: cased path and no referer
        (line("203.0.113.3", "GET", "/CaseOnly", 200, "-", BROWSER), &["sigma.jndi-lookup-with-odd-client"]),
        // 16: cased: other case does not match
        (line("203.0.113.3", "GET", "/caseonly", 200, "-", BROWSER), &[]),
        // 17: cased, but a referer is present (null means absent)
        (line("203.0.113.3", "GET", "/CaseOnly", 200, "http://a/", BROWSER), &[]),
        // 18: all of them
        (line("203.0.113.4", "POST", "/xmlrpc.php", 200, "-", BROWSER), &["sigma.xml-rpc-post"]),
        // 19: equals is the whole path
        (line("203.0.113.4", "POST", "/xmlrpc.php.bak", 200, "-", BROWSER), &[]),
        // 20: keyword |all: both words
        (line("203.0.113.5", "GET", "/?a=alpha&b=omega", 200, "-", BROWSER), &["sigma.both-words"]),
        // 21: one word only
        (line("203.0.113.5", "GET", "/?a=alpha", 200, "-", BROWSER), &[]),
        // 22: 1 of them: the cidr alternative
        (line("192.0.2.9", "GET", "/wp-login.php", 200, "-", BROWSER), &["sigma.both-words"]),
        // 23: the path, from another network
        (line("198.51.100.9", "GET", "/wp-login.php", 200, "-", BROWSER), &[]),
        // 24: benign
        (line("198.51.100.20", "GET", "/index.html", 200, "https://www.example.org/", BROWSER), &[]),
        // 25: re|i (case-insensitive), gte on the size, a user agent present
        (
            line("203.0.113.6", "GET", "/site/BACKUP.ZIP", 200, "-", BROWSER).replace(" 512 ", " 2000000 "),
            &["sigma.large-backup-download"],
        ),
        // 26: too small
        (line("203.0.113.6", "GET", "/site/backup.zip", 200, "-", BROWSER), &[]),
        // 27: no user agent
        (line("203.0.113.6", "GET", "/site/backup.tar", 200, "-", "-").replace(" 512 ", " 2000000 "), &[]),
    ];
    let log = dir.path().join("access.log");
    let body: String = cases.iter().map(|(l, _)| format!("{l}\n")).collect();
    std::fs::write(&log, body).unwrap();
    let got = fired(&outdir, &log);
    for (i, (l, want)) in cases.iter().enumerate() {
        let n = i as u64 + 1;
        let have: Vec<&str> = got.get(&n).map(|s| s.iter().map(String::as_str).collect()).unwrap_or_default();
        assert_eq!(have, *want, "line {n}: {l}");
    }

    // Severity and class come from the Sigma level and tags.
    let rule = std::fs::read_to_string(outdir.join("sigma.admin-command-probe.yml")).unwrap();
    assert!(rule.contains("severity: high"), "{rule}");
    assert!(rule.contains("class: exploit"), "{rule}");
    assert!(rule.contains("- attack.t1190"), "{rule}");
    let info = std::fs::read_to_string(outdir.join("sigma.xml-rpc-post.yml")).unwrap();
    assert!(info.contains("severity: info"), "{info}");
}

fn skipped_rules_are_listed_with_the_reason() {
    let body = r#"
title: Needs The Body
id: 66666666-6666-4666-8666-666666666666
author: Test Author
logsource:
    category: webserver
    definition: 'Requirements: The POST request body data must be collected'
detection:
    selection:
        cs-method: POST
    condition: selection
level: high
"#;
    let host = r#"
title: Host Header
logsource:
    category: webserver
detection:
    selection:
        cs-host|re: '^evil'
    condition: selection
"#;
    let base64 = r#"
title: Encoded
logsource:
    category: webserver
detection:
    selection:
        cs-uri-query|base64offset|contains: 'whoami'
    condition: selection
"#;
    let process = r#"
title: Not A Web Rule
logsource:
    category: process_creation
    product: windows
detection:
    selection:
        Image|endswith: '\cmd.exe'
    condition: selection
"#;
    let count = r#"
title: Counted
logsource:
    category: webserver
detection:
    selection:
        sc-status: 404
    condition: selection | count() by c-ip > 10
"#;
    let dir = tempfile::tempdir().unwrap();
    let o = import(
        dir.path(),
        &[
            ("body.yml", body),
            ("host.yml", host),
            ("base64.yml", base64),
            ("process.yml", process),
            ("count.yml", count),
            ("pipeline.yml", "name: a processing pipeline\npriority: 10\ntransformations: []\n"),
            ("ok.yml", OF_THEM),
        ],
        &[],
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "a skipped rule is not an error:\n{out}{err}");
    assert!(out.contains("converted 1 Sigma rule(s)") && out.contains("skipped 6"), "{out}");
    for (file, reason) in [
        ("body.yml", "needs POST request bodies"),
        ("host.yml", "the field `cs-host`"),
        ("base64.yml", "the modifier `base64offset`"),
        ("process.yml", "logsource category `process_creation`, not webserver"),
        ("count.yml", "an aggregation in the condition"),
        ("pipeline.yml", "not a Sigma rule"),
    ] {
        let line = err.lines().find(|l| l.starts_with("skipped ") && l.contains(file));
        let line = line.unwrap_or_else(|| panic!("{file} not listed as skipped:\n{err}"));
        assert!(line.contains(reason), "{file}: {line}");
    }
    let written: Vec<_> = std::fs::read_dir(dir.path().join("out")).unwrap().collect();
    assert_eq!(written.len(), 1, "only the converted rule is written");
}

fn attribution_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let o = import(
        dir.path(),
        &[("contains_all.yml", CONTAINS_ALL)],
        &["--source-url", "https://github.com/example/sigma/blob/main/rules/web/"],
    );
    assert!(o.status.success(), "{:?}", text(&o));
    let rule = std::fs::read_to_string(dir.path().join("out/sigma.admin-command-probe.yml")).unwrap();
    for want in [
        "by Test Author",
        "id 11111111-1111-4111-8111-111111111111",
        "Source: https://github.com/example/sigma/blob/main/rules/web/contains_all.yml",
    ] {
        assert!(rule.contains(want), "{want:?} missing from:\n{rule}");
    }
}

fn malformed_yaml_is_an_error_with_its_position() {
    let broken = "title: Broken\nlogsource:\n    category: webserver\ndetection:\n    selection:\n        cs-method: [GET\n    condition: selection\n";
    let dir = tempfile::tempdir().unwrap();
    let o = import(dir.path(), &[("broken.yml", broken), ("ok.yml", OF_THEM)], &[]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}{err}");
    let file = dir.path().join("sigma/broken.yml");
    let prefix = format!("{}:", file.display());
    let msg = err.lines().find(|l| l.contains(&prefix)).unwrap_or_else(|| panic!("no position:\n{err}"));
    let pos: Vec<&str> = msg.split(&prefix).nth(1).unwrap().splitn(3, ':').collect();
    assert!(pos[0].parse::<usize>().unwrap() >= 6, "line: {msg}");
    assert!(pos[1].parse::<usize>().is_ok(), "column: {msg}");
    assert!(err.contains("nothing written"), "{err}");
    assert!(!dir.path().join("out").exists(), "nothing may be written when a file is invalid");
}

fn bad_condition_is_an_error_with_its_position() {
    let unknown = "title: Typo\nlogsource:\n    category: webserver\ndetection:\n    selection:\n        cs-method: GET\n    condition: selection and selcetion\n";
    let unbalanced = "title: Paren\nlogsource:\n    category: webserver\ndetection:\n    selection:\n        cs-method: GET\n    condition: (selection\n";
    let dir = tempfile::tempdir().unwrap();
    let o = import(dir.path(), &[("typo.yml", unknown), ("paren.yml", unbalanced)], &[]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    let typo = format!("{}:7:30: unknown search identifier `selcetion`", dir.path().join("sigma/typo.yml").display());
    assert!(err.contains(&typo), "want {typo:?} in:\n{err}");
    let paren = format!("{}:7:26: expected `)`", dir.path().join("sigma/paren.yml").display());
    assert!(err.contains(&paren), "want {paren:?} in:\n{err}");
}

fn existing_files_are_not_overwritten_without_force() {
    let dir = tempfile::tempdir().unwrap();
    assert!(import(dir.path(), &[("a.yml", OF_THEM)], &[]).status.success());
    let again = import(dir.path(), &[("a.yml", OF_THEM)], &[]);
    assert_eq!(again.status.code(), Some(2));
    assert!(text(&again).1.contains("--force"), "{:?}", text(&again));
    assert!(import(dir.path(), &[("a.yml", OF_THEM)], &["--force"]).status.success());
}

/// The 86 SigmaHQ webserver rules: how many convert, why the others do not, that the output
/// lints clean, and what fires on the real scanner logs.
fn sigma_corpus(corpus: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let src = corpus.join("sigma-webserver/rules");
    let o = trapline(&["import", "sigma", src.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stdout}{stderr}");
    let total = std::fs::read_dir(&src).unwrap().count();
    let converted = std::fs::read_dir(&out).unwrap().count();
    let skipped: Vec<&str> = stderr.lines().filter(|l| l.starts_with("skipped ")).collect();
    println!("sigma corpus: {total} rules, {converted} converted, {} skipped", skipped.len());
    for s in &skipped {
        println!("  {}", s.rsplit(": ").next().unwrap_or(s));
    }
    assert_eq!(converted + skipped.len(), total, "every rule is converted or listed as skipped");
    assert!(converted >= 80, "{converted} of {total} converted");
    lint_clean(&out);

    let mut fired_rules = BTreeSet::new();
    for name in ["dirb", "hydra-phpmyadmin", "sqlmap", "whatweb"] {
        let log = corpus.join(format!("scanner-traffic/{name}.access.log"));
        let got = fired(&out, &log);
        let rules: BTreeSet<String> = got.values().flatten().cloned().collect();
        println!("  {name}: {} lines flagged by {} rule(s): {rules:?}", got.len(), rules.len());
        fired_rules.extend(rules);
    }
    for want in ["sigma.sql-injection-strings-in-uri", "sigma.suspicious-user-agents-related-to-recon-tools"] {
        assert!(fired_rules.contains(want), "{want} did not fire on the scanner logs");
    }

    // The CrowdSec hub's access-log tests: exploits and probes, and benign `*-whitelist` apps.
    let hub = corpus.join("crowdsec-hub-tests");
    let (mut logs, mut lines, mut benign, mut benign_logs) = (Vec::new(), 0, 0, BTreeSet::new());
    for entry in std::fs::read_dir(&hub).unwrap() {
        let d = entry.unwrap().path();
        let Ok(cfg) = std::fs::read_to_string(d.join("config.yaml")) else { continue };
        if !cfg.lines().any(|l| l.trim() == "log_type: nginx" || l.trim() == "log_type: apache2") {
            continue;
        }
        let Some(file) = cfg.lines().find_map(|l| l.strip_prefix("log_file:")).map(str::trim) else { continue };
        let log = d.join(file);
        let Ok(body) = std::fs::read_to_string(&log) else { continue };
        lines += body.lines().count();
        if d.file_name().unwrap().to_string_lossy().ends_with("-whitelist") {
            benign += body.lines().count();
            benign_logs.insert(log.display().to_string());
        }
        logs.push(log);
    }
    let got = fired_in(&out, &logs);
    let flagged = got.len();
    let benign_flagged = got.keys().filter(|(path, _)| benign_logs.contains(path)).count();
    let rules: BTreeSet<String> = got.values().flatten().cloned().collect();
    println!("  crowdsec hub access logs: {flagged} of {lines} lines flagged by {} rule(s): {rules:?}", rules.len());
    println!("  of which benign (*-whitelist): {benign_flagged} of {benign} lines flagged");
    assert_eq!(benign_flagged, 0, "converted rules fire on benign application traffic");
    assert!(rules.len() >= 5, "only {rules:?} fired on the CrowdSec exploit logs");
}
