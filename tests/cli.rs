//! `trapline scan` through the real binary: exit codes, outputs, inputs, thresholds.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::{access_line, trapline};

const SHIPPED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/rules");

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

#[test]
fn scan_reports_attacks_and_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let log = [
        access_line("203.0.113.7", 0, "/index.html", 200),
        access_line("203.0.113.7", 1, "/item.php?id=1+UNION+SELECT+1,2", 200),
        access_line("203.0.113.8", 2, "/../../etc/passwd", 404),
        access_line("203.0.113.9", 3, "/about", 200),
    ]
    .join("\n");
    let f = write(dir.path(), "access.log", &log);
    let out = trapline(&["scan", "--json", "--rules", SHIPPED, &f]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let dets: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    // Every rule that fired: the detection's own, and those of its class merged into it.
    let ids: Vec<&str> = dets
        .iter()
        .flat_map(|d| std::iter::once(&d["rule"]["id"]).chain(d["also"].as_array().into_iter().flatten()))
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(ids.contains(&"honeypot.sqli"), "{ids:?}");
    assert!(ids.contains(&"honeypot.etc-passwd"), "{ids:?}");
    assert!(dets.iter().all(|d| d["source"]["line_number"] == 2 || d["source"]["line_number"] == 3), "{stdout}");
    let sqli = dets.iter().find(|d| d["fields"]["client_ip"] == "203.0.113.7").unwrap();
    assert_eq!(sqli["fields"]["client_ip"], "203.0.113.7");
    assert_eq!(sqli["event_time"], "2024-10-10T13:00:01.000Z");
    assert_eq!(sqli["time_source"], "event");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("4 lines") && stderr.contains("lines/s"), "{stderr}");

    let out = trapline(&["scan", "-q", "--fail-on-match", "--rules", SHIPPED, &f]);
    assert_eq!(out.status.code(), Some(1));
    let clean = write(dir.path(), "clean.log", &access_line("198.51.100.1", 0, "/index.html", 200));
    let out = trapline(&["scan", "-q", "--fail-on-match", "--rules", SHIPPED, &clean]);
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn bad_rules_and_usage_exit_2_with_position() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    write(
        &rules,
        "bad.yml",
        "rules:\n  - id: t.bad\n    title: bad\n    severity: high\n    match:\n      regex: 'a(b'\n",
    );
    let log = write(dir.path(), "a.log", "x\n");
    let out = trapline(&["scan", "--rules", rules.to_str().unwrap(), &log]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.yml:6:14") && err.contains("t.bad") && err.contains("invalid regex"), "{err}");

    let out = trapline(&["scan", "--rules", SHIPPED, "--format", "nope", &log]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown format"));
    let out = trapline(&["scan", "--frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    let out = trapline(&["scan", "--rules", SHIPPED, "/nonexistent/file.log"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn scan_reads_gzip_and_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let line = access_line("203.0.113.7", 0, "/cgi-bin/ViewLog.asp", 404);
    let gz = dir.path().join("old.log.gz");
    let mut e = flate2::write::GzEncoder::new(std::fs::File::create(&gz).unwrap(), flate2::Compression::fast());
    writeln!(e, "{line}").unwrap();
    e.finish().unwrap();
    let out = trapline(&["scan", "--json", "--rules", SHIPPED, gz.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("honeypot.zyxel"));

    let mut child = Command::new(common::bin())
        .args(["scan", "--json", "--rules", SHIPPED, "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{line}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("honeypot.zyxel"));
}

/// Thresholds run on event time: the same file gives the same detections whatever the thread
/// count, and lines spread beyond the window do not fire.
#[test]
fn scan_thresholds_use_event_time() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    write(
        &rules,
        "t.yml",
        "rules:\n  - id: t.404-burst\n    title: 404 burst\n    severity: medium\n    match: {field: status, equals: \"404\"}\n    threshold: {count: 5, within: 10s, group_by: [client_ip]}\n    suppress: {for: 1m}\n",
    );
    let mut lines = Vec::new();
    // IP A: 12 404s one second apart → fires at the 5th (t=4) and 10th (t=9, suppressed).
    for s in 0..12 {
        lines.push(access_line("192.0.2.1", s, &format!("/nope{s}"), 404));
    }
    // IP B: 404s 3 s apart → never 5 within 10 s.
    for s in 0..10 {
        lines.push(access_line("192.0.2.2", s * 3, "/x", 404));
    }
    // Lots of filler so the file spans several blocks.
    for s in 0..20000 {
        lines.push(access_line("198.51.100.3", s % 3600, "/ok", 200));
    }
    let f = write(dir.path(), "a.log", &lines.join("\n"));
    let mut results = Vec::new();
    for threads in ["1", "2"] {
        let out = trapline(&["scan", "--json", "--threads", threads, "--rules", rules.to_str().unwrap(), &f]);
        assert_eq!(out.status.code(), Some(0));
        let dets: Vec<serde_json::Value> =
            String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(dets.len(), 1, "{dets:?}");
        let d = &dets[0];
        assert_eq!(d["threshold"]["count"], 5);
        assert_eq!(d["threshold"]["group"]["client_ip"], "192.0.2.1");
        assert_eq!(d["threshold"]["first_seen"], "2024-10-10T13:00:00.000Z");
        assert_eq!(d["threshold"]["last_seen"], "2024-10-10T13:00:04.000Z");
        assert_eq!(d["source"]["line_number"], 5);
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(
            stderr.contains("t.404-burst")
                && stderr
                    .lines()
                    .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["t.404-burst", "22", "1", "1", "0"]),
            "{stderr}"
        );
        results.push(d["key"].clone());
    }
    assert_eq!(results[0], results[1]);
}

/// `scan -q` builds no detection, only counts them: its counts are those of the detections
/// printed (merged one per class per line, suppression and thresholds applied), whatever the
/// thread count.
#[test]
fn quiet_scan_counts_what_is_printed() {
    let dir = tempfile::tempdir().unwrap();
    let mut lines = Vec::new();
    for s in 0..3000u32 {
        let ip = format!("192.0.2.{}", s % 7);
        let path = match s % 10 {
            // Several rules of one class on one line (merged), and of several classes.
            0 => "/item.php?id=1+UNION+SELECT+1,2--".to_string(),
            1 => "/../../etc/passwd?x=<script>alert(1)</script>".to_string(),
            2 => format!("/nope{s}"),
            _ => format!("/page{}", s % 50),
        };
        lines.push(access_line(&ip, s / 20, &path, if s % 10 == 2 { 404 } else { 200 }));
    }
    let f = write(dir.path(), "a.log", &lines.join("\n"));
    // The rule table (hits, detected, suppressed per rule) and the number of detections.
    let summary = |stderr: &[u8]| -> (Vec<String>, usize) {
        let text = String::from_utf8_lossy(stderr).to_string();
        let table =
            text.lines().filter(|l| l.starts_with("web.") || l.starts_with("honeypot.")).map(String::from).collect();
        let last = text.lines().last().unwrap_or_default();
        let n = last.split("; ").last().and_then(|t| t.split(' ').next()).and_then(|n| n.parse().ok());
        (table, n.unwrap_or_else(|| panic!("no count in {last:?}")))
    };
    for threads in ["1", "2"] {
        let json = trapline(&["scan", "--json", "--threads", threads, "--rules", SHIPPED, &f]);
        let quiet = trapline(&["scan", "-q", "--threads", threads, "--rules", SHIPPED, &f]);
        assert!(quiet.stdout.is_empty());
        let printed = String::from_utf8(json.stdout).unwrap().lines().count();
        let (table, n) = summary(&json.stderr);
        assert_eq!(n, printed);
        // Some lines fired several rules of one class: fewer detections than rules fired.
        let fired: usize = table.iter().map(|l| l.split_whitespace().nth(2).unwrap().parse::<usize>().unwrap()).sum();
        assert!(fired > n, "{table:?}");
        assert_eq!(summary(&quiet.stderr), (table, n), "threads {threads}");
    }
}

/// Attacker-controlled bytes never reach the terminal raw.
#[test]
fn human_output_escapes_control_characters() {
    let dir = tempfile::tempdir().unwrap();
    let line = "203.0.113.7 - - [10/Oct/2024:13:55:36 +0000] \"GET /etc/passwd?\x1b]0;owned\x07\x1b[2J HTTP/1.1\" 404 1 \"-\" \"\x1b[31mred\"";
    let f = write(dir.path(), "a.log", line);
    let out = trapline(&["scan", "--rules", SHIPPED, &f]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("honeypot.etc-passwd"), "{stdout}");
    assert!(!stdout.contains('\x1b') && !stdout.contains('\x07'), "{stdout:?}");
    assert!(stdout.contains("\\u{1b}"));
}

/// Bytes that are not UTF-8, NULs and an enormous line are matched, never a crash.
#[test]
fn hostile_bytes_do_not_crash() {
    let dir = tempfile::tempdir().unwrap();
    let mut data = Vec::new();
    data.extend_from_slice(b"203.0.113.7 - - [10/Oct/2024:13:55:36 +0000] \"GET /\xff\xfe/../../etc/passwd\x00 HTTP/1.1\" 404 1 \"-\" \"\xc3\x28\"\n");
    data.extend(std::iter::repeat_n(b'A', 3 << 20));
    data.extend_from_slice(b"/etc/passwd\n\n\n");
    let p = dir.path().join("a.log");
    std::fs::write(&p, &data).unwrap();
    let out = trapline(&["scan", "--json", "--rules", SHIPPED, p.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("honeypot.traversal"), "{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("4 lines"), "{stderr}");
}

/// `trapline scan ... | head -1`: when the reader goes away the command ends quietly like any
/// Unix filter, without a panic message about a broken pipe.
#[cfg(unix)]
#[test]
fn closed_stdout_ends_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = (0..3000).map(|i| access_line("203.0.113.7", i, "/../../etc/passwd", 404)).collect();
    let f = write(dir.path(), "access.log", &lines.join("\n"));
    let mut child = Command::new(common::bin())
        .args(["scan", "--json", "--rules", SHIPPED, &f])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 1];
    std::io::Read::read_exact(child.stdout.as_mut().unwrap(), &mut first).unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.status.signal() == Some(libc_sigpipe()) || out.status.success(), "{:?} {stderr}", out.status);
}

/// SIGPIPE's number on every Unix trapline supports.
#[cfg(unix)]
fn libc_sigpipe() -> i32 {
    13
}

/// Config values that parse but are invalid (unknown source format, unknown time zone) are
/// reported at their `trapline.yml:LINE:COL` by `run`, `scan` and `lint`.
#[test]
fn config_validation_errors_carry_their_position() {
    let dir = tempfile::tempdir().unwrap();
    let rule = "rules:\n  - {id: t.a, title: A, severity: low, match: {contains: x}}\n";
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    write(&dir.path().join("rules"), "a.yml", rule);
    let log = write(dir.path(), "access.log", &access_line("192.0.2.1", 0, "/x", 200));
    let head = "rules: [rules]\nsources:\n  - name: web\n    paths: [access.log]\n";
    for (config, pos, what) in [
        (format!("{head}    format: apache_combined\n"), "5:13", "unknown format \"apache_combined\""),
        (format!("timezone: Europe/Pariss\n{head}"), "1:11", "timezone"),
        (format!("{head}    timezone: Mars/Olympus\n"), "5:15", "timezone"),
    ] {
        let cfg = write(dir.path(), "trapline.yml", &config);
        let want = format!("{cfg}:{pos}: ");
        for args in [vec!["run", "--config", &cfg], vec!["scan", "--config", &cfg, &log]] {
            let out = trapline(&args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
            assert!(stderr.contains(&want) && stderr.contains(what), "{args:?}: {stderr} (want {want})");
        }
        let out = trapline(&["lint", "--config", &cfg]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains(&format!("{cfg}:{pos}")) && stdout.contains("TL007"), "{stdout}");
    }
}

/// Invalid XDR action settings are positioned too.
#[test]
fn xdr_settings_errors_carry_their_position() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    write(&dir.path().join("rules"), "a.yml", "rules:\n  - {id: t.a, title: A, severity: low, match: {contains: x}}\n");
    let head = "rules: [rules]\nstate_dir: state\nsources:\n  - name: web\n    paths: [access.log]\nactions:\n  xdr:\n";
    for (xdr, pos, what) in [
        ("    window: soon\n", "8:13", "xdr.window"),
        ("    max_pending: 0\n", "8:18", "xdr.max_pending"),
        ("    rules:\n      web.x: {window: 5 parsecs}\n", "9:23", "xdr.rules.web.x.window"),
    ] {
        let cfg = write(dir.path(), "trapline.yml", &format!("{head}{xdr}"));
        let out = trapline(&["run", "--config", &cfg]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(&format!("{cfg}:{pos}: actions.{what}")), "{stderr}");
    }
}

/// `scan --json` masks a guessed password in the detection (line and fields) with the default
/// redaction, without a config.
#[test]
fn scan_masks_secrets_in_detections() {
    let dir = tempfile::tempdir().unwrap();
    let line = access_line("203.0.113.7", 0, "/phpMyAdmin/index.php?pma_username=root&pma_password=toor", 200);
    let log = write(dir.path(), "a.log", &format!("{line}\n"));
    let out = trapline(&["scan", "--json", "--rules", SHIPPED, &log]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let d: serde_json::Value = stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|d| d["rule"]["id"] == "honeypot.phpmyadmin-login")
        .unwrap_or_else(|| panic!("not detected: {stdout}"));
    assert!(!stdout.contains("toor"), "{stdout}");
    assert!(d["line"].as_str().unwrap().contains("pma_password=***"), "{d}");
    assert!(d["fields"]["uri"].as_str().unwrap().ends_with("pma_password=***"), "{d}");
}

/// One request matched by several rules of one class (the honeypot and web packs both know
/// SQL injection) is one detection of that class, naming the others in `also`;
/// `alerts.one_per_class: false` keeps them apart.
#[test]
fn one_detection_per_class_per_request() {
    let dir = tempfile::tempdir().unwrap();
    let line = "203.0.113.7 - - [10/Oct/2024:13:55:36 +0000] \"GET /item.php?id=1+UNION+SELECT+1,2 HTTP/1.1\" 200 99 \"-\" \"sqlmap/1.7\"";
    let log = write(dir.path(), "a.log", &format!("{line}\n"));
    let scan = |config: Option<&str>| -> Vec<serde_json::Value> {
        let mut args = vec!["scan", "--json", "--rules", SHIPPED];
        let cfg;
        if let Some(c) = config {
            cfg = write(dir.path(), "trapline.yml", c);
            args.extend(["--config", cfg.as_str()]);
        }
        args.push(&log);
        let out = trapline(&args);
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    };
    let merged = scan(None);
    let classes: Vec<&str> = merged.iter().map(|d| d["rule"]["class"].as_str().unwrap()).collect();
    let distinct: std::collections::BTreeSet<&str> = classes.iter().copied().collect();
    assert_eq!(classes.len(), distinct.len(), "{merged:?}");
    assert!(distinct.contains("sqli") && distinct.contains("scanner"), "{classes:?}");
    let all_ids = |dets: &[serde_json::Value]| -> std::collections::BTreeSet<String> {
        dets.iter()
            .flat_map(|d| std::iter::once(&d["rule"]["id"]).chain(d["also"].as_array().into_iter().flatten()))
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    let apart = scan(Some("alerts: {one_per_class: false}\n"));
    assert!(apart.len() > merged.len(), "{} vs {}", apart.len(), merged.len());
    assert_eq!(all_ids(&apart), all_ids(&merged), "merging must not lose a rule");
}

/// `explain --fields` lists what the format parsed, so a rule author sees which fields exist
/// (here: syslog gives no `client_ip` for a Postfix line), and what the matching rules
/// extracted themselves (the mail rules take the address out of the message).
#[test]
fn explain_lists_the_fields_the_format_parsed() {
    let out = trapline(&[
        "explain",
        "--rules",
        SHIPPED,
        "--fields",
        "--format",
        "syslog",
        "--line",
        "Jan  5 03:14:15 mx postfix/smtpd[1234]: warning: unknown[203.0.113.9]: SASL LOGIN authentication failed\x1b[2J",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("fields (syslog):"), "{text}");
    assert!(text.contains("  program = \"postfix/smtpd\""), "{text}");
    assert!(text.contains("  pid = \"1234\""), "{text}");
    assert!(!text.contains("client_ip = \"203.0.113.9\"\n"), "not a field of the format: {text}");
    assert!(text.contains("client_ip = \"203.0.113.9\" (extracted by mail.postfix.sasl-failed)\n"), "{text}");
    assert!(!text.contains('\x1b'), "control characters are escaped: {text}");
}

/// `explain --file` shows the window as the explained line finds it: hits that have left the
/// window by the line's time do not count (as `scan` decides).
#[test]
fn explain_counts_the_window_at_the_lines_time() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    std::fs::write(
        rules.join("t.yml"),
        "rules:\n  - id: t.five\n    title: five in an hour\n    severity: low\n    match: {field: path, equals: /login}\n    threshold: {count: 5, within: 1h, group_by: [client_ip]}\n",
    )
    .unwrap();
    let line = |t: &str| format!("192.0.2.1 - - [10/Oct/2024:{t} +0000] \"GET /login HTTP/1.1\" 200 1 \"-\" \"-\"");
    let log = [line("10:00:00"), line("10:01:00"), line("10:02:00"), line("10:03:00"), line("11:00:01")].join("\n");
    let f = write(dir.path(), "a.log", &log);
    let out = trapline(&["explain", "--rules", rules.to_str().unwrap(), "--file", &f, "--rule", "t.five"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("threshold: 3 of 5 matching lines within 3600 s"), "{text}");
    assert!(text.contains("this line would be number 4"), "{text}");
    let scan = trapline(&["scan", "-q", "--fail-on-match", "--rules", rules.to_str().unwrap(), &f]);
    assert_eq!(scan.status.code(), Some(0), "and scan detects nothing either");
}

/// A `match` example the format cannot read says so, instead of "match is false".
#[test]
fn an_unreadable_example_says_the_format_did_not_recognise_it() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "r.yml",
        "rules:\n  - id: e.x\n    title: x\n    severity: low\n    match: {field: path, contains: /adm}\n    examples:\n      match: ['GET /adm HTTP/1.1']\n",
    );
    let out = trapline(&["test", dir.path().to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("r.yml:7:15") && text.contains("line 1 of match does not parse as combined"), "{text}");
}

/// A site's own file changes shipped rules without editing them: severity, enabled, and an
/// exception; an override naming no rule is an error at its position.
#[test]
fn overrides_change_shipped_rules_from_another_file() {
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("site");
    std::fs::create_dir(&site).unwrap();
    let line = |ip: &str| {
        format!(
            "{ip} - - [10/Oct/2024:13:55:36 +0000] \"GET /item.php?id=1+UNION+SELECT+1,2 HTTP/1.1\" 200 1 \"-\" \"curl/8.5\""
        )
    };
    let f = write(dir.path(), "a.log", &[line("203.0.113.7"), line("10.0.0.5")].join("\n"));
    std::fs::write(
        site.join("site.yml"),
        "overrides:\n  - id: honeypot.sqli\n    severity: critical\n    except: {field: client_ip, cidr: 10.0.0.0/8}\n  - id: scanner.*\n    enabled: false\n",
    )
    .unwrap();
    let out = trapline(&["scan", "--json", "--rules", SHIPPED, "--rules", site.to_str().unwrap(), &f]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let dets: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let sqli: Vec<&serde_json::Value> = dets.iter().filter(|d| d["rule"]["id"] == "honeypot.sqli").collect();
    assert_eq!(sqli.len(), 1, "{dets:#?}");
    assert_eq!(sqli[0]["rule"]["severity"], "critical");
    assert_eq!(sqli[0]["fields"]["client_ip"], "203.0.113.7", "the exception holds back 10.0.0.5");
    assert!(!dets.iter().any(|d| d["rule"]["id"].as_str().unwrap().starts_with("scanner.")), "{dets:#?}");
    std::fs::write(site.join("site.yml"), "overrides:\n  - id: honeypot.sqly\n    severity: critical\n").unwrap();
    let out = trapline(&["scan", "--rules", SHIPPED, "--rules", site.to_str().unwrap(), &f]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("site.yml:2:9") && err.contains("no rule has the id \"honeypot.sqly\""), "{err}");
}

/// Named conditions: written once, used by several rules (and lists inside them count as
/// used); an unknown or self-referring one is an error at the reference.
#[test]
fn named_conditions_are_shared_by_rules() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    std::fs::write(
        rules.join("c.yml"),
        "lists:\n  internal: [10.0.0.0/8]\nconditions:\n  from-outside: {not: {field: client_ip, cidr: {list: internal}}}\n",
    )
    .unwrap();
    std::fs::write(
        rules.join("r.yml"),
        "rules:\n  - id: r.admin\n    title: admin\n    severity: high\n    match: {all: [{field: path, starts_with: /admin}, {ref: from-outside}]}\n  - id: r.debug\n    title: debug\n    severity: low\n    match: {all: [{field: path, starts_with: /debug}, {ref: from-outside}]}\n",
    )
    .unwrap();
    let log = [
        access_line("203.0.113.5", 0, "/admin/x", 200),
        access_line("10.1.2.3", 1, "/admin/x", 200),
        access_line("203.0.113.5", 2, "/debug", 200),
    ]
    .join("\n");
    let f = write(dir.path(), "a.log", &log);
    let out = trapline(&["scan", "--json", "--rules", rules.to_str().unwrap(), &f]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let got: Vec<(String, u64)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|d| (d["rule"]["id"].as_str().unwrap().to_string(), d["source"]["line_number"].as_u64().unwrap()))
        .collect();
    assert_eq!(got, [("r.admin".to_string(), 1), ("r.debug".to_string(), 3)]);
    let lint = trapline(&["lint", rules.to_str().unwrap()]);
    assert!(!String::from_utf8_lossy(&lint.stdout).contains("TL114"), "the list is used through the condition");
    // Unknown, and self-referring.
    std::fs::write(rules.join("c.yml"), "conditions:\n  loop: {ref: loop}\n").unwrap();
    let out = trapline(&["scan", "--rules", rules.to_str().unwrap(), &f]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("r.yml:5:") && err.contains("unknown condition \"from-outside\" (defined: loop)"), "{err}");
    std::fs::write(rules.join("c.yml"), "conditions:\n  from-outside: {ref: from-outside}\n").unwrap();
    let err = String::from_utf8_lossy(&trapline(&["scan", "--rules", rules.to_str().unwrap(), &f]).stderr).to_string();
    assert!(err.contains("refers to itself"), "{err}");
}

/// For a `distinct` threshold, explain lists the values counted so far (as far as recorded).
#[test]
fn explain_lists_the_distinct_values_of_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    std::fs::write(
        rules.join("t.yml"),
        "rules:\n  - id: t.spray\n    title: many users\n    severity: low\n    match: {field: status, equals: '401'}\n    threshold: {count: 10, within: 1h, group_by: [client_ip], distinct: user}\n",
    )
    .unwrap();
    let line = |user: &str, s: u32| {
        format!("192.0.2.1 - {user} [10/Oct/2024:10:00:{s:02} +0000] \"GET /login HTTP/1.1\" 401 1 \"-\" \"-\"")
    };
    let log = [line("alice", 1), line("bob", 2), line("alice", 3), line("carol", 4), line("dave", 5)].join("\n");
    let f = write(dir.path(), "a.log", &log);
    let out = trapline(&["explain", "--rules", rules.to_str().unwrap(), "--file", &f, "--rule", "t.spray"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("threshold: 3 of 10 distinct values"), "{text}");
    assert!(text.contains("distinct values counted: \"alice\", \"bob\", \"carol\"\n"), "{text}");
}
