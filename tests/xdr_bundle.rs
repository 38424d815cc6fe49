//! Template rendering and validation with hostile values: whatever an attacker puts in a log
//! line, the bundle stays valid JSON, carries the value verbatim (or clipped), and passes the
//! CTIM checks. Broken templates fail at load time with file:line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use trapline::action::xdr::bundle::{Renderer, sample_context, validate};

fn shipped() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("templates/xdr")
}

fn base() -> Value {
    json!({"vars": {"target": {"hostname": "honeypot-1", "ip": "10.0.0.5"}}, "host": {"hostname": "h", "ip": null, "os": "linux"}})
}

fn load(dir: &Path) -> anyhow::Result<Renderer> {
    Renderer::load(dir, &BTreeMap::new(), "trapline", &base())
}

fn ctx_with(fields: Value, line: &str) -> Value {
    let mut c = sample_context(false);
    c["fields"] = fields;
    c["line"] = json!(line);
    c["detection"]["line"] = json!(line);
    c["vars"] = base()["vars"].clone();
    c
}

const HOSTILE: &[&str] = &[
    "\"}, \"status\": \"Closed\", \"x\": {\"",
    "\\\\\\\"",
    "\u{0}\u{1}\u{7f}\u{1b}[2J\r\n\t",
    "{{ 7*7 }}{% for x in range(10) %}{{ x }}{% endfor %}",
    "</script><script>alert(1)</script>",
    "\u{2028}\u{2029}\u{feff}é😀",
];

#[test]
fn hostile_values_stay_data() {
    let r = load(&shipped()).unwrap();
    for v in HOSTILE {
        let fields =
            json!({"client_ip": "203.0.113.7", "uri": format!("/phpmyadmin/?q={v}"), "user_agent": v, "path": v});
        let b = r.render("any.rule", &ctx_with(fields, v), true).unwrap().bundle;
        let text = serde_json::to_string(&b).unwrap();
        let back: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, b);
        let s = &b["sightings"][0];
        let ua = s["observables"].as_array().unwrap().iter().find(|o| o["type"] == "user_agent").unwrap();
        assert_eq!(ua["value"], *v, "verbatim");
        assert_eq!(s["data"]["rows"][0][0], *v);
        assert_eq!(b["incidents"][0]["status"], "New", "no injected keys");
        assert_eq!(b["incidents"].as_array().unwrap().len(), 1);
        assert!(validate(&b, "green").is_ok());
    }
}

#[test]
fn huge_values_are_clipped_to_ctim_limits() {
    let r = load(&shipped()).unwrap();
    let huge = "A".repeat(1 << 20);
    let mut c = ctx_with(json!({"client_ip": "203.0.113.7", "uri": huge, "user_agent": huge}), &huge);
    c["rule"]["title"] = json!(huge);
    let b = r.render("any.rule", &c, true).unwrap().bundle;
    assert!(b["incidents"][0]["title"].as_str().unwrap().chars().count() <= 1024);
    assert!(b["incidents"][0]["description"].as_str().unwrap().chars().count() <= 5000);
    assert!(validate(&b, "green").is_ok());
}

#[test]
fn ids_are_set_by_trapline_and_times_are_utc_millis() {
    let r = load(&shipped()).unwrap();
    let c = ctx_with(json!({"client_ip": "2001:db8::1"}), "x");
    let b = r.render("any.rule", &c, true).unwrap().bundle;
    assert_eq!(b["incidents"][0]["id"], c["ids"]["incident"]);
    assert_eq!(b["incidents"][0]["external_ids"], json!([c["xids"]["incident"]]));
    assert_eq!(b["relationships"][0]["target_ref"], c["ids"]["incident"]);
    assert_eq!(b["judgements"][0]["observable"], json!({"type": "ipv6", "value": "2001:db8::1"}));
    assert_eq!(b["judgements"][0]["valid_time"]["end_time"], "2024-10-17T13:55:36.000Z");
    assert_eq!(b["sightings"][0]["observed_time"]["start_time"], "2024-10-10T13:55:36.000Z");
    // Without the judgement flag, no judgement.
    assert!(r.render("any.rule", &c, false).unwrap().bundle.get("judgements").is_none());
}

/// A template directory: the shipped files with `file` replaced by `text`.
fn with(file: &str, text: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(shipped()).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, d.path().join(p.file_name().unwrap())).unwrap();
    }
    std::fs::write(d.path().join(file), text).unwrap();
    d
}

#[test]
fn broken_templates_fail_at_load_time_with_file_and_line() {
    // Quoting an expression (the classic injection-prone way) does not produce JSON.
    let d = with(
        "relationship.json.j2",
        "{\n  \"relationship_type\": \"member-of\",\n  \"description\": \"{{ rule.title }}\",\n  \"source_ref\": {{ ids.sighting }}, \"target_ref\": {{ ids.incident }}\n}\n",
    );
    let e = load(d.path()).err().unwrap().to_string();
    assert!(e.contains("relationship.json.j2:3:") && e.contains("not valid JSON"), "{e}");

    // A value outside a closed vocabulary, reported at the line of its key.
    let inc = std::fs::read_to_string(shipped().join("incident.json.j2"))
        .unwrap()
        .replace("\"status\": \"New\"", "\"status\": \"Nouveau\"");
    let line = inc.lines().position(|l| l.contains("Nouveau")).unwrap() + 1;
    let d = with("incident.json.j2", &inc);
    let e = load(d.path()).err().unwrap().to_string();
    assert!(e.contains(&format!("incident.json.j2:{line}:")) && e.contains("status"), "{e}");

    // A missing required key.
    let d = with("relationship.json.j2", "{\"relationship_type\": \"member-of\", \"source_ref\": {{ ids.sighting }}}");
    let e = load(d.path()).err().unwrap().to_string();
    assert!(e.contains("target_ref") && e.contains("missing-required-key"), "{e}");

    // Template syntax errors carry the line.
    let d = with("sighting.json.j2", "{\n{% if %}\n}");
    let e = load(d.path()).err().unwrap().to_string();
    assert!(e.contains("sighting.json.j2:2:"), "{e}");

    // TLP white is refused before anything is sent.
    let inc = std::fs::read_to_string(shipped().join("incident.json.j2"))
        .unwrap()
        .replace("\"tlp\": \"amber\"", "\"tlp\": \"white\"");
    let e = load(with("incident.json.j2", &inc).path()).err().unwrap().to_string();
    assert!(e.contains("Invalid document TLP white"), "{e}");

    // Local time without a zone (the old script's bug).
    let rel = "{\"relationship_type\": \"member-of\", \"source_ref\": {{ ids.sighting }}, \"target_ref\": {{ ids.incident }}, \"timestamp\": \"2024-10-10T13:55:36\"}";
    let e = load(with("relationship.json.j2", rel).path()).err().unwrap().to_string();
    assert!(e.contains("timestamp"), "{e}");
}

#[test]
fn safe_and_tojson_cannot_bypass_the_json_encoding() {
    let rel = "{\"relationship_type\": \"member-of\", \"description\": {{ fields.user_agent|safe|clip(100) }}, \"short_description\": {{ fields.user_agent|clip(100)|tojson }}, \"source_ref\": {{ ids.sighting }}, \"target_ref\": {{ ids.incident }}}";
    let d = with("relationship.json.j2", rel);
    let r = load(d.path()).unwrap();
    let v = HOSTILE[0];
    let b = r.render("x", &ctx_with(json!({"user_agent": v}), "l"), false).unwrap().bundle;
    assert_eq!(b["relationships"][0]["description"], v);
    assert_eq!(b["relationships"][0]["short_description"], v);
}

#[test]
fn per_rule_templates_override_only_what_they_contain() {
    let d = tempfile::tempdir().unwrap();
    let inc = std::fs::read_to_string(shipped().join("incident.json.j2"))
        .unwrap()
        .replace("\"status\": \"New\"", "\"status\": \"Open\"");
    std::fs::write(d.path().join("incident.json.j2"), inc).unwrap();
    let per_rule: BTreeMap<String, PathBuf> = [("special".to_string(), d.path().to_path_buf())].into_iter().collect();
    let r = Renderer::load(&shipped(), &per_rule, "trapline", &base()).unwrap();
    let c = ctx_with(json!({"client_ip": "203.0.113.7"}), "x");
    assert_eq!(r.render("special", &c, false).unwrap().bundle["incidents"][0]["status"], "Open");
    assert_eq!(r.render("other", &c, false).unwrap().bundle["incidents"][0]["status"], "New");
    assert!(r.render("special", &c, false).unwrap().bundle["sightings"].is_array());
}

/// A `distinct` threshold's values (attacker-chosen user names) are told in the sighting's
/// description, as data, and the bundle stays valid.
#[test]
fn distinct_values_are_described_in_the_sighting() {
    let r = load(&shipped()).unwrap();
    let mut c = ctx_with(json!({"client_ip": "203.0.113.7"}), "line");
    c["detection"]["threshold"] = json!({
        "count": 25, "within_seconds": 600.0, "group": {"client_ip": "203.0.113.7"}, "distinct": "user",
        "distinct_values": ["alice", HOSTILE[0], HOSTILE[2]],
        "first_seen": "2024-10-10T13:00:00.000Z", "last_seen": "2024-10-10T13:05:00.000Z"
    });
    let b = r.render("auth.spray", &c, true).unwrap().bundle;
    let d = b["sightings"][0]["description"].as_str().unwrap();
    assert!(d.contains("25 distinct user within 600 s, among them: alice, "), "{d}");
    assert!(d.contains(HOSTILE[0]), "verbatim: {d}");
    assert!(validate(&b, "green").is_ok());
    // Without a threshold the description is the line alone.
    let b = r.render("auth.spray", &ctx_with(json!({}), "line"), true).unwrap().bundle;
    assert!(!b["sightings"][0]["description"].as_str().unwrap().contains("distinct"));
}
