//! Hot reload while `trapline run` tails a file: edits, additions (atomic save, `mv` into the
//! directory), a broken edit that changes nothing, SIGHUP, and threshold state that survives a
//! reload of an unrelated rule.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Daemon, access_line, append, detections, wait_for};

fn setup() -> (tempfile::TempDir, PathBuf) {
    common::project(
        None,
        "rules: [rules]\nstate_dir: state\ntemplates: templates\nsources:\n  - name: web\n    paths: [logs/access.log]\n    format: combined\n    start: beginning\nactions:\n  log: {path: out/out.txt, format: json, console: false}\n",
    )
}

/// Writes a rule file the way editors do: a temporary file renamed over the target.
fn save(path: &Path, text: &str) {
    let tmp = path.with_extension("yml.tmp~");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn rule(id: &str, literal: &str) -> String {
    format!(
        "rules:\n  - id: {id}\n    title: {id}\n    severity: high\n    match: {{field: uri, contains: \"{literal}\"}}\n"
    )
}

fn ids(out: &Path) -> Vec<(String, String)> {
    detections(out)
        .iter()
        .map(|d| (d["rule"]["id"].as_str().unwrap().to_string(), d["fields"]["uri"].as_str().unwrap().to_string()))
        .collect()
}

fn status(root: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(root.join("state/status.json")).unwrap_or_default())
        .unwrap_or(serde_json::Value::Null)
}

fn reloads(root: &Path) -> String {
    status(root)["last_reload"]["at"].as_str().unwrap_or("").to_string()
}

/// Waits for a reload newer than `before` and returns its report.
fn next_reload(root: &Path, before: &str) -> serde_json::Value {
    assert!(wait_for(Duration::from_secs(10), || reloads(root) != before), "no reload happened");
    status(root)["last_reload"].clone()
}

#[test]
fn rules_reload_atomically_and_a_broken_edit_changes_nothing() {
    let (_dir, root) = setup();
    let log = root.join("logs/access.log");
    let out = root.join("out/out.txt");
    let rules = root.join("rules/a.yml");
    save(&rules, &rule("t.a", "AAA"));
    let mut d = Daemon::start(&root.join("trapline.yml"));

    append(&log, &[access_line("192.0.2.1", 0, "/AAA-1", 200), access_line("192.0.2.1", 1, "/BBB-1", 200)]);
    assert!(wait_for(Duration::from_secs(10), || ids(&out).len() == 1));

    // Edit: t.a now looks for BBB. Lines after the reload use the new rule only.
    let before = reloads(&root);
    save(&rules, &rule("t.a", "BBB"));
    let r = next_reload(&root, &before);
    assert_eq!(r["ok"], true, "{r}");
    append(&log, &[access_line("192.0.2.1", 2, "/AAA-2", 200), access_line("192.0.2.1", 3, "/BBB-2", 200)]);
    assert!(wait_for(Duration::from_secs(10), || ids(&out).len() == 2));
    assert_eq!(ids(&out)[1], ("t.a".to_string(), "/BBB-2".to_string()));

    // A broken edit: rejected with its position, the running rules stay.
    let before = reloads(&root);
    save(&rules, "rules:\n  - id: t.a\n    title: broken\n    severity: high\n    match: {field: uri, regex: 'a(b'}\n");
    let r = next_reload(&root, &before);
    assert_eq!(r["ok"], false);
    let errors = r["errors"].to_string();
    assert!(errors.contains("a.yml:5:") && errors.contains("invalid regex"), "{errors}");
    append(&log, &[access_line("192.0.2.1", 4, "/BBB-3", 200)]);
    assert!(wait_for(Duration::from_secs(10), || ids(&out).len() == 3), "old rules stopped working: {:?}", ids(&out));
    let s = std::process::Command::new(common::bin())
        .args(["status", "--config", root.join("trapline.yml").to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(s.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&s.stdout).contains("FAILED"), "{}", String::from_utf8_lossy(&s.stdout));

    // A new file moved into the directory, plus the fix: both take effect together.
    let before = reloads(&root);
    let outside = root.join("c.yml");
    std::fs::write(&outside, rule("t.c", "CCC")).unwrap();
    std::fs::rename(&outside, root.join("rules/c.yml")).unwrap();
    save(&rules, &rule("t.a", "BBB"));
    let r = next_reload(&root, &before);
    assert_eq!(r["ok"], true, "{r}");
    append(&log, &[access_line("192.0.2.1", 5, "/CCC-1", 200)]);
    assert!(wait_for(Duration::from_secs(10), || ids(&out).len() == 4));
    assert_eq!(ids(&out)[3].0, "t.c");
    d.signal("TERM");
}

#[test]
fn threshold_state_survives_a_reload_of_other_rules() {
    let (_dir, root) = setup();
    let log = root.join("logs/access.log");
    let out = root.join("out/out.txt");
    let burst = "rules:\n  - id: t.burst\n    title: burst\n    severity: medium\n    match: {field: uri, contains: /probe}\n    threshold: {count: 3, within: 1h, group_by: [client_ip]}\n";
    save(&root.join("rules/burst.yml"), burst);
    save(&root.join("rules/other.yml"), &rule("t.other", "OTHER"));
    let mut d = Daemon::start(&root.join("trapline.yml"));
    append(&log, &[access_line("192.0.2.9", 0, "/probe1", 404), access_line("192.0.2.9", 1, "/probe2", 404)]);
    std::thread::sleep(Duration::from_millis(500));

    // Reload through SIGHUP after changing an unrelated rule.
    save(&root.join("rules/other.yml"), &rule("t.other", "OTHER2"));
    std::thread::sleep(Duration::from_millis(100));
    let before = reloads(&root);
    std::process::Command::new("kill").args(["-HUP", &d.pid().to_string()]).status().unwrap();
    let r = next_reload(&root, &before);
    assert_eq!(r["ok"], true);
    assert!(r["state_kept"].as_u64().unwrap() >= 1, "{r}");

    // The third probe completes the window that started before the reload.
    append(&log, &[access_line("192.0.2.9", 2, "/probe3", 404)]);
    assert!(wait_for(Duration::from_secs(10), || !ids(&out).is_empty()), "threshold state was lost");
    let det = &detections(&out)[0];
    assert_eq!(det["rule"]["id"], "t.burst");
    assert_eq!(det["threshold"]["count"], 3);
    d.signal("TERM");
}

/// `run` and `scan` refuse an empty rule directory (exit 2, naming it); a running daemon whose
/// rule files are all deleted rejects the reload and keeps detecting with the rules it has.
#[test]
fn zero_rules_are_refused_at_start_and_on_reload() {
    let (_dir, root) = setup();
    let config = root.join("trapline.yml");
    let rules_dir = root.join("rules");
    let out = common::trapline(&["run", "--config", config.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&format!("no rules in {}", rules_dir.display())), "{stderr}");
    let log = root.join("logs/access.log");
    append(&log, &[access_line("192.0.2.1", 0, "/AAA-0", 200)]);
    let out = common::trapline(&["scan", "--config", config.to_str().unwrap(), log.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no rules in "), "{stderr}");

    // All disabled counts as none.
    let disabled = rule("t.off", "AAA").replace("    match:", "    enabled: false\n    match:");
    save(&rules_dir.join("off.yml"), &disabled);
    let out = common::trapline(&["run", "--config", config.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no enabled rules in ") && stderr.contains("all 1 rules are disabled"), "{stderr}");

    std::fs::remove_file(rules_dir.join("off.yml")).unwrap();
    save(&rules_dir.join("a.yml"), &rule("t.a", "AAA"));
    save(&rules_dir.join("b.yml"), &rule("t.b", "BBB"));
    let out_file = root.join("out/out.txt");
    let mut d = Daemon::start(&config);
    assert!(wait_for(Duration::from_secs(10), || ids(&out_file).len() == 1));

    let before = reloads(&root);
    std::fs::remove_file(rules_dir.join("a.yml")).unwrap();
    std::fs::remove_file(rules_dir.join("b.yml")).unwrap();
    // Deleting two files may produce two reloads; wait until the last one saw an empty directory.
    let r = next_reload(&root, &before);
    let r = if r["ok"] == true { next_reload(&root, r["at"].as_str().unwrap()) } else { r };
    assert_eq!(r["ok"], false, "{r}");
    assert!(r["errors"].to_string().contains("no rules in "), "{r}");
    append(&log, &[access_line("192.0.2.1", 1, "/AAA-1", 200), access_line("192.0.2.1", 2, "/BBB-1", 200)]);
    assert!(wait_for(Duration::from_secs(10), || ids(&out_file).len() == 3), "old rules stopped: {:?}", ids(&out_file));
    assert_eq!(status(&root)["rules"], 2);
    d.signal("TERM");
}
