//! XDR templates through the real binary: names that do not exist are errors (in `render`, in
//! `lint` with the template's file:line:col and the rule, at run time), `render --file` for
//! threshold and sequence rules, and hot reload of a rule's own template folder with a broken
//! edit shown by `trapline status` until it is fixed.

mod common;
#[path = "common/xdr.rs"]
mod xdr_common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Daemon, access_line, append, run_status, wait_for};
use serde_json::Value;
use xdr_common::{XdrEnv, attack};

fn shipped() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("templates/xdr")
}

/// `env`'s rule `t.pma` gets its own template folder `tpl/`, holding `file` with `text`
/// (the other files come from the default folder).
fn own_template(env: &XdrEnv, file: &str, text: &str) -> PathBuf {
    let dir = env.root.join("tpl");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(file), text).unwrap();
    let cfg = std::fs::read_to_string(env.config()).unwrap();
    let cfg = cfg.replace("    timeout: 2s\n", "    timeout: 2s\n    rules:\n      t.pma: {templates: tpl}\n");
    std::fs::write(env.config(), cfg).unwrap();
    dir.join(file)
}

/// The shipped sighting template with `from` replaced by `to` (once).
fn sighting_with(from: &str, to: &str) -> String {
    let text = std::fs::read_to_string(shipped().join("sighting.json.j2")).unwrap();
    assert!(text.contains(from), "{from} not in the shipped sighting template");
    text.replacen(from, to, 1)
}

/// 1-based line and column of `needle` in `text`.
fn position(text: &str, needle: &str) -> (usize, usize) {
    let (i, l) = text.lines().enumerate().find(|(_, l)| l.contains(needle)).unwrap();
    (i + 1, l.find(needle).unwrap() + 1)
}

#[test]
fn a_misspelt_variable_fails_render_and_lint_with_file_line_and_rule() {
    for (bad, expr) in [("{{ line|clip(8192) }}", "fields.usr"), ("{{ line|clip(8192) }}", "detection.nosuch.deep")] {
        let env = XdrEnv::new("http://127.0.0.1:9", "");
        let text = sighting_with(bad, &format!("{{{{ {expr} }}}}"));
        let file = own_template(&env, "sighting.json.j2", &text);
        let (line, col) = position(&text, expr);
        let cfg = env.config();
        let cfg = cfg.to_str().unwrap();

        let (code, out, err) =
            run_status(&["render", "--config", cfg, "--rule", "t.pma", "--line", &attack("203.0.113.7", 1)]);
        assert_ne!(code, 0, "{out}");
        let at = format!("{}:{line}:{col}", file.display());
        assert!(err.contains(&at) && err.contains("rule \"t.pma\"") && err.contains(expr), "{at}: {err}");

        let (code, out, _) = run_status(&["lint", "--config", cfg, "--format", "json"]);
        assert_eq!(code, 1, "{out}");
        let findings: Vec<Value> = serde_json::from_str(&out).unwrap();
        let f = findings.iter().find(|f| f["code"] == "TL009").unwrap_or_else(|| panic!("no TL009: {out}"));
        assert_eq!(f["file"], file.display().to_string(), "{f}");
        assert_eq!((f["line"].as_u64(), f["col"].as_u64()), (Some(line as u64), Some(col as u64)), "{f}");
        assert_eq!(f["rule"], "t.pma", "{f}");
        assert!(f["message"].as_str().unwrap().contains(expr), "{f}");
    }
}

#[test]
fn a_misspelling_in_the_default_templates_names_a_rule_that_renders_them() {
    let env = XdrEnv::new("http://127.0.0.1:9", "");
    let dir = env.root.join("templates-copy");
    std::fs::create_dir_all(&dir).unwrap();
    for e in std::fs::read_dir(shipped()).unwrap().flatten() {
        std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
    }
    let text = std::fs::read_to_string(dir.join("incident.json.j2")).unwrap().replacen(
        "\"timestamp\": {{ now }}",
        "\"timestamp\": {{ nwo }}",
        1,
    );
    std::fs::write(dir.join("incident.json.j2"), &text).unwrap();
    let cfg = std::fs::read_to_string(env.config()).unwrap();
    let cfg = cfg.replace("    timeout: 2s\n", "    timeout: 2s\n    templates: templates-copy\n");
    std::fs::write(env.config(), cfg).unwrap();
    std::fs::write(
        env.root.join("rules/t.yml"),
        std::fs::read_to_string(env.root.join("rules/t.yml")).unwrap()
            + "    examples:\n      match: ['203.0.113.7 - - [10/Oct/2024:13:55:36 +0000] \"GET /phpmyadmin/?pma_password=x HTTP/1.1\" 200 1 \"-\" \"-\"']\n",
    )
    .unwrap();
    let (code, out, _) = run_status(&["lint", "--config", env.config().to_str().unwrap(), "--format", "json"]);
    assert_eq!(code, 1, "{out}");
    let findings: Vec<Value> = serde_json::from_str(&out).unwrap();
    let f = findings.iter().find(|f| f["code"] == "TL009").unwrap_or_else(|| panic!("no TL009: {out}"));
    let (line, col) = position(&text, "nwo");
    assert!(f["file"].as_str().unwrap().ends_with("templates-copy/incident.json.j2"), "{f}");
    assert_eq!((f["line"].as_u64(), f["col"].as_u64()), (Some(line as u64), Some(col as u64)), "{f}");
    assert_eq!(f["rule"], "t.pma", "{f}");
}

#[test]
fn optional_names_tested_with_is_defined_or_default_render() {
    let env = XdrEnv::new("http://127.0.0.1:9", "");
    let text = sighting_with(
        "{{ line|clip(8192) }}",
        "{{ (fields.usr if fields.usr is defined else line)|clip(8192) }}, {{ \"\" ~ (detection.threshold.count if detection.threshold is defined else 1) }}, {{ vars.nosuch|default(\"none\") }}",
    )
    .replacen("\"columns\": [{\"name\": \"log_line\", \"type\": \"string\"}, {\"name\": \"source\", \"type\": \"string\"}]", "\"columns\": [{\"name\": \"log_line\", \"type\": \"string\"}, {\"name\": \"n\", \"type\": \"string\"}, {\"name\": \"v\", \"type\": \"string\"}, {\"name\": \"source\", \"type\": \"string\"}]", 1);
    own_template(&env, "sighting.json.j2", &text);
    let cfg = env.config();
    let line = attack("203.0.113.7", 1);
    let (code, out, err) =
        run_status(&["render", "--config", cfg.to_str().unwrap(), "--rule", "t.pma", "--line", &line]);
    assert_eq!(code, 0, "{err}");
    let b: Value = serde_json::from_str(&out).unwrap();
    assert!(b["sightings"][0]["data"]["rows"][0][0].as_str().unwrap().contains("pma_username=root"), "{out}");
    assert_eq!(b["sightings"][0]["data"]["rows"][0][2], "none");
    let (code, out, _) = run_status(&["lint", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
}

/// The shipped templates render for every shipped rule: lint of the shipped config renders
/// each rule's sample (its first example) through them.
#[test]
fn shipped_templates_render_for_every_shipped_rule() {
    let cfg = Path::new(env!("CARGO_MANIFEST_DIR")).join("trapline.yml");
    let (code, out, err) = run_status(&["lint", "--config", cfg.to_str().unwrap(), "--format", "json"]);
    assert_eq!(code, 0, "{out}{err}");
    let findings: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert!(findings.iter().all(|f| f["code"] != "TL009"), "{out}");
}

const THRESHOLD: &str = "  - id: t.burst\n    title: 404 burst\n    severity: medium\n    match: {field: status, equals: \"404\"}\n    threshold: {count: 3, within: 1m, group_by: [client_ip]}\n    actions: [log, xdr-incident]\n";
const SEQUENCE: &str = "  - id: t.abc\n    title: a, then b\n    severity: high\n    sequence:\n      within: 1m\n      steps:\n        - {match: {field: path, equals: /a}, key: client_ip}\n        - {match: {field: path, equals: /b}, key: client_ip}\n    actions: [log, xdr-incident]\n";

#[test]
fn render_takes_a_log_that_fires_a_threshold_or_sequence_rule() {
    let env = XdrEnv::new("http://127.0.0.1:9", "");
    let rules = std::fs::read_to_string(env.root.join("rules/t.yml")).unwrap();
    std::fs::write(env.root.join("rules/t.yml"), format!("{rules}{THRESHOLD}{SEQUENCE}")).unwrap();
    let cfg = env.config();
    let cfg = cfg.to_str().unwrap();
    let log = env.root.join("burst.log");
    let lines: Vec<String> = vec![
        access_line("198.51.100.1", 0, "/x1", 404),
        access_line("203.0.113.9", 1, "/a", 200),
        access_line("198.51.100.1", 2, "/x2", 404),
        access_line("203.0.113.9", 3, "/b", 200),
        access_line("198.51.100.1", 4, "/x3", 404),
    ];
    std::fs::write(&log, lines.join("\n") + "\n").unwrap();
    let log = log.to_str().unwrap();

    let (code, _, err) = run_status(&["render", "--config", cfg, "--rule", "t.burst"]);
    assert_eq!(code, 2, "--line or --file is required: {err}");
    // A single line cannot fire a threshold rule: the message says what to do instead.
    let (code, _, err) = run_status(&["render", "--config", cfg, "--rule", "t.burst", "--line", &lines[0]]);
    assert_eq!(code, 1);
    assert!(err.contains("--file"), "{err}");

    let (code, out, err) = run_status(&["render", "--config", cfg, "--rule", "t.burst", "--file", log]);
    assert_eq!(code, 0, "{err}");
    let b: Value = serde_json::from_str(&out).unwrap();
    let s = &b["sightings"][0];
    assert_eq!(s["data"]["rows"][0][0], lines[4].as_str(), "the line that fired: {s}");
    assert_eq!(s["observed_time"]["start_time"], "2024-10-10T13:00:04.000Z");
    assert!(s["short_description"].as_str().unwrap().ends_with(":5"), "{s}");

    let (code, out, err) = run_status(&["render", "--config", cfg, "--rule", "t.abc", "--file", log]);
    assert_eq!(code, 0, "{err}");
    let b: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(b["sightings"][0]["data"]["rows"][0][0], lines[3].as_str());
    assert!(b["incidents"][0]["title"].as_str().unwrap().contains("203.0.113.9"), "{out}");

    // A log that does not fire the rule.
    let quiet = env.root.join("quiet.log");
    std::fs::write(&quiet, format!("{}\n", lines[0])).unwrap();
    let (code, _, err) =
        run_status(&["render", "--config", cfg, "--rule", "t.burst", "--file", quiet.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("no line of") && err.contains("quiet.log"), "{err}");
}

/// The sightings queued in the outbox, oldest first.
fn queued(env: &XdrEnv) -> Vec<Value> {
    let mut v: Vec<Value> = std::fs::read_dir(env.root.join("state/xdr/outbox"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
                .filter_map(|e| serde_json::from_str(&std::fs::read_to_string(e.path()).ok()?).ok())
                .collect()
        })
        .unwrap_or_default();
    v.sort_by_key(|e: &Value| e["seq"].as_u64());
    v
}

fn title(entry: &Value) -> String {
    entry["bundle"]["sightings"][0]["title"].as_str().unwrap_or_default().to_string()
}

fn last_reload(root: &Path) -> Value {
    let s: Value = serde_json::from_str(&std::fs::read_to_string(root.join("state/status.json")).unwrap_or_default())
        .unwrap_or(Value::Null);
    s["last_reload"].clone()
}

fn save(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn a_rules_own_templates_reload_while_running_and_a_broken_edit_shows_in_status() {
    // Nothing listens on port 9: bundles stay in the outbox, where the test reads them.
    let env = XdrEnv::new("http://127.0.0.1:9", "");
    let v1 = sighting_with("(rule.title ~ \" from \" ~ ip)", "(\"V1 \" ~ rule.title ~ \" from \" ~ ip)");
    let file = own_template(&env, "sighting.json.j2", &v1);
    let cfg = env.config();
    let status = || run_status(&["status", "--config", cfg.to_str().unwrap()]);
    let mut d = Daemon::start(&cfg);
    append(&env.log(), &[attack("203.0.113.7", 1)]);
    assert!(wait_for(Duration::from_secs(15), || queued(&env).len() == 1), "{}", d.stderr());
    assert!(title(&queued(&env)[0]).starts_with("V1 "), "{}", title(&queued(&env)[0]));

    // An edit of the rule's own template is reloaded without a detection to trigger it.
    let before = last_reload(&env.root)["at"].clone();
    save(&file, &v1.replace("\"V1 \"", "\"V2 \""));
    assert!(wait_for(Duration::from_secs(15), || last_reload(&env.root)["at"] != before), "no reload: {}", d.stderr());
    assert_eq!(last_reload(&env.root)["ok"], true, "{}", last_reload(&env.root));
    append(&env.log(), &[attack("203.0.113.7", 2)]);
    assert!(wait_for(Duration::from_secs(15), || queued(&env).len() == 2), "{}", d.stderr());
    assert!(title(&queued(&env)[1]).starts_with("V2 "), "{}", title(&queued(&env)[1]));

    // A broken edit: the reload fails with the template's file:line, status exits 1, and the
    // previous templates keep rendering.
    let broken = v1.replace("\"V1 \"", "\"V3 \" ~ fields.usr");
    let before = last_reload(&env.root)["at"].clone();
    save(&file, &broken);
    assert!(wait_for(Duration::from_secs(15), || last_reload(&env.root)["at"] != before), "no reload: {}", d.stderr());
    let r = last_reload(&env.root);
    assert_eq!(r["ok"], false, "{r}");
    let (line, _) = position(&broken, "fields.usr");
    let at = format!("{}:{line}:", file.display());
    assert!(r["errors"].to_string().contains(&at), "{at}: {r}");
    let (code, out, _) = status();
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAILED") && out.contains(&at) && out.contains("fields.usr"), "{out}");
    assert!(out.contains("the rules did reload"), "{out}");
    append(&env.log(), &[attack("203.0.113.7", 3)]);
    assert!(wait_for(Duration::from_secs(15), || queued(&env).len() == 3), "{}", d.stderr());
    assert!(title(&queued(&env)[2]).starts_with("V2 "), "{}", title(&queued(&env)[2]));

    // The fix clears it.
    let before = last_reload(&env.root)["at"].clone();
    save(&file, &v1.replace("\"V1 \"", "\"V4 \""));
    assert!(wait_for(Duration::from_secs(15), || last_reload(&env.root)["at"] != before), "no reload: {}", d.stderr());
    assert_eq!(last_reload(&env.root)["ok"], true, "{}", last_reload(&env.root));
    let (code, out, _) = status();
    assert_eq!(code, 0, "{out}");
    append(&env.log(), &[attack("203.0.113.7", 4)]);
    assert!(wait_for(Duration::from_secs(15), || queued(&env).len() == 4), "{}", d.stderr());
    assert!(title(&queued(&env)[3]).starts_with("V4 "), "{}", title(&queued(&env)[3]));
    d.signal("TERM");
}

/// A rule's own templates are checked with detections shaped like that rule's: a threshold
/// rule's may use `detection.threshold` as is; the same template for a rule without a
/// threshold must test it with `is defined`.
#[test]
fn a_rules_own_templates_are_checked_with_its_kind_of_detection() {
    let env = XdrEnv::new("http://127.0.0.1:9", "");
    let rules = std::fs::read_to_string(env.root.join("rules/t.yml")).unwrap();
    std::fs::write(env.root.join("rules/t.yml"), format!("{rules}{THRESHOLD}")).unwrap();
    let text = sighting_with(
        "(rule.title ~ \" from \" ~ ip)",
        "(rule.title ~ \" (\" ~ detection.threshold.count ~ \" within \" ~ detection.threshold.within_seconds ~ \"s) from \" ~ ip)",
    );
    let dir = env.root.join("tpl");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("sighting.json.j2"), &text).unwrap();
    let cfg = std::fs::read_to_string(env.config()).unwrap();
    let with = |rule: &str| {
        cfg.replace("    timeout: 2s\n", &format!("    timeout: 2s\n    rules:\n      {rule}: {{templates: tpl}}\n"))
    };
    let log = env.root.join("burst.log");
    let lines: Vec<String> = (0..3).map(|s| access_line("198.51.100.1", s, "/x", 404)).collect();
    std::fs::write(&log, lines.join("\n") + "\n").unwrap();

    std::fs::write(env.config(), with("t.burst")).unwrap();
    let c = env.config();
    let (code, out, err) =
        run_status(&["render", "--config", c.to_str().unwrap(), "--rule", "t.burst", "--file", log.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let b: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(b["sightings"][0]["title"], "404 burst (3 within 60.0s) from 198.51.100.1");

    std::fs::write(env.config(), with("t.pma")).unwrap();
    let (code, _, err) = run_status(&[
        "render",
        "--config",
        c.to_str().unwrap(),
        "--rule",
        "t.pma",
        "--line",
        &attack("203.0.113.7", 1),
    ]);
    assert_ne!(code, 0);
    assert!(
        err.contains("sighting.json.j2:") && err.contains("rule \"t.pma\"") && err.contains("detection.threshold"),
        "{err}"
    );
}

/// A rule edit re-checks the rule's own templates against what its detections now carry: a
/// template using `detection.threshold` as is fails once its rule loses the threshold.
#[test]
fn a_rule_edit_rechecks_its_own_templates() {
    let env = XdrEnv::new("http://127.0.0.1:9", "");
    let rules = env.root.join("rules/t.yml");
    let pma = std::fs::read_to_string(&rules).unwrap();
    std::fs::write(&rules, format!("{pma}{THRESHOLD}")).unwrap();
    let text = sighting_with(
        "(rule.title ~ \" from \" ~ ip)",
        "(rule.title ~ \" x\" ~ detection.threshold.count ~ \" from \" ~ ip)",
    );
    let dir = env.root.join("tpl");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("sighting.json.j2"), &text).unwrap();
    let cfg = std::fs::read_to_string(env.config()).unwrap();
    std::fs::write(
        env.config(),
        cfg.replace("    timeout: 2s\n", "    timeout: 2s\n    rules:\n      t.burst: {templates: tpl}\n"),
    )
    .unwrap();
    let mut d = Daemon::start(&env.config());
    assert!(wait_for(Duration::from_secs(15), || env.root.join("state/status.json").exists()), "{}", d.stderr());
    let before = last_reload(&env.root)["at"].clone();
    save(
        &rules,
        &format!("{pma}{}", THRESHOLD.replace("    threshold: {count: 3, within: 1m, group_by: [client_ip]}\n", "")),
    );
    assert!(wait_for(Duration::from_secs(15), || last_reload(&env.root)["at"] != before), "no reload: {}", d.stderr());
    let r = last_reload(&env.root);
    assert_eq!((r["ok"].as_bool(), r["rules_reloaded"].as_bool()), (Some(false), Some(true)), "{r}");
    let (line, _) = position(&text, "detection.threshold.count");
    let at = format!("{}:{line}:", dir.join("sighting.json.j2").display());
    let errors = r["errors"].to_string();
    assert!(errors.contains(&at) && errors.contains("t.burst") && errors.contains("detection.threshold"), "{r}");
    d.signal("TERM");
}
