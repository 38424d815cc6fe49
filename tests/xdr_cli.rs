//! The XDR commands through the real binary (`render`, `xdr check`, `xdr purge`) and the
//! sandbox's protocol: the validation layers and error shapes trapline relies on.

mod common;
#[path = "common/xdr.rs"]
mod xdr_common;

use std::time::Duration;

use common::{Daemon, append, run_status};
use serde_json::{Value, json};
use xdr_common::{Sandbox, XdrEnv, attack, http_with, wait_delivered};

#[test]
fn render_prints_the_bundle_that_would_be_sent() {
    let env = XdrEnv::new("http://127.0.0.1:9", "");
    let cfg = env.config();
    let line = attack("203.0.113.7", 5);
    let (code, out, err) =
        run_status(&["render", "--config", cfg.to_str().unwrap(), "--rule", "t.pma", "--line", &line]);
    assert_eq!(code, 0, "{err}");
    let b: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(b["incidents"][0]["title"], "Attack from 203.0.113.7: phpMyAdmin login attempt");
    assert_eq!(b["sightings"][0]["observed_time"]["start_time"], "2024-10-10T13:00:05.000Z");
    let (code, _, err) =
        run_status(&["render", "--config", cfg.to_str().unwrap(), "--rule", "t.pma", "--line", "nothing"]);
    assert_eq!(code, 1, "{err}");
}

#[test]
fn shipped_config_renders_the_honeypot_incident() {
    let line = "203.0.113.7 - - [10/Oct/2024:13:55:36 +0000] \"GET /phpMyAdmin/index.php?pma_username=root&pma_password=toor HTTP/1.1\" 200 512 \"-\" \"Mozilla/5.0\"";
    let cfg = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("trapline.yml");
    let (code, out, err) = run_status(&[
        "render",
        "--config",
        cfg.to_str().unwrap(),
        "--rule",
        "honeypot.phpmyadmin-login",
        "--line",
        line,
    ]);
    assert_eq!(code, 0, "{err}");
    let b: Value = serde_json::from_str(&out).unwrap();
    let i = &b["incidents"][0];
    assert_eq!(i["title"], "Brute-force attack from 203.0.113.7: phpMyAdmin login attempt");
    assert_eq!(
        (i["status"].as_str(), i["confidence"].as_str(), i["severity"].as_str(), i["tlp"].as_str()),
        (Some("New"), Some("High"), Some("High"), Some("amber"))
    );
    assert_eq!(b["relationships"][0]["relationship_type"], "member-of");
    // The guessed password is masked in the payload (the rule matched on the real line).
    assert!(!out.contains("toor"), "{out}");
    assert!(out.contains("pma_password=***"), "{out}");
}

#[test]
fn check_and_purge_against_the_sandbox() {
    let dir = tempfile::tempdir().unwrap();
    let sb = Sandbox::start(
        "127.0.0.1:0",
        &dir.path().join("sb.json"),
        &["--client-id", "client-test", "--client-secret", "s3cret-value"],
    );
    let env = XdrEnv::new(&sb.url(), "");
    let cfg = env.config();
    let cfg = cfg.to_str().unwrap();
    let (code, out, err) = run_status(&["xdr", "check", "--config", cfg]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("token: ok") && out.contains("0 incidents"), "{out}");

    let mut d = Daemon::start(&env.config());
    append(&env.log(), &(0..5).map(|n| attack(&format!("198.51.100.{}", n % 2), n)).collect::<Vec<_>>());
    assert!(wait_delivered(&sb, 2, 5, Duration::from_secs(30)), "{}", d.stderr());
    d.signal("TERM");
    // Something trapline did not create survives the purge.
    let other = json!({"source": "someone-else", "incidents": [{"id": "transient:x", "external_ids": ["other-incident-1"], "status": "New", "confidence": "Low", "incident_time": {"opened": "2024-01-01T00:00:00.000Z"}}]});
    let tok = token(&sb.addr, "client-test", "s3cret-value");
    let (s, _) = http_with(
        &sb.addr,
        "POST",
        "/ctia/bundle/import",
        Some(&other.to_string()),
        &[("Authorization", &format!("Bearer {tok}"))],
    );
    assert_eq!(s, 200);

    let (code, out, _) = run_status(&["xdr", "purge", "--config", cfg]);
    assert_eq!(code, 0);
    assert!(out.contains("incidents: 2 would be deleted") && out.contains("sightings: 5 would be deleted"), "{out}");
    assert_eq!(sb.entities("incidents").len(), 3, "dry run deletes nothing");
    let (code, out, err) = run_status(&["xdr", "purge", "--yes", "--config", cfg]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("relationships: 5 deleted") && out.contains("incidents: 2 deleted"), "{out}");
    assert_eq!(sb.entities("incidents").len(), 1);
    assert!(sb.entities("sightings").is_empty() && sb.entities("relationships").is_empty());

    // Wrong credentials: check fails, and the secret is not printed.
    let bad = std::fs::read_to_string(env.config()).unwrap().replace("s3cret-value", "wrong-secret");
    std::fs::write(env.config(), bad).unwrap();
    let (code, out, err) = run_status(&["xdr", "check", "--config", cfg]);
    assert_eq!(code, 1, "{out}");
    assert!(err.contains("token") && !err.contains("wrong-secret") && !out.contains("wrong-secret"), "{err}");
}

fn token(addr: &str, id: &str, secret: &str) -> String {
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
    let (s, body) = xdr_common::http_with(
        addr,
        "POST",
        "/iroh/oauth2/token",
        None,
        &[("Authorization", &format!("Basic {basic}")), ("X-Body", "x")],
    );
    // The helper sends JSON content type and an empty body: the grant type is required.
    assert_eq!(s, 400, "{body}");
    let raw = "grant_type=client_credentials";
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    use std::io::{Read, Write};
    write!(stream, "POST /iroh/oauth2/token HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: Basic {basic}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{raw}", raw.len()).unwrap();
    let mut resp = String::new();
    stream.read_to_string(&mut resp).unwrap();
    let body = resp.split_once("\r\n\r\n").unwrap().1;
    let v: Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["token_type"], "bearer");
    assert!(v["expires_in"].as_u64().unwrap() > 0);
    v["access_token"].as_str().unwrap().to_string()
}

#[test]
fn sandbox_validates_like_the_service() {
    let dir = tempfile::tempdir().unwrap();
    let sb = Sandbox::start("127.0.0.1:0", &dir.path().join("sb.json"), &["--max-size", "5"]);
    let tok = token(&sb.addr, "a", "b");
    let auth = format!("Bearer {tok}");
    let import = |body: &Value| {
        let (s, b) = http_with(
            &sb.addr,
            "POST",
            "/iroh/private-intel/bundle/import?external-key-prefixes=t-",
            Some(&body.to_string()),
            &[("Authorization", &auth)],
        );
        (s, serde_json::from_str::<Value>(&b).unwrap_or(Value::String(b)))
    };
    let incident = |n: u32, extra: Value| {
        let mut i = json!({"id": format!("transient:t-incident-{n}"), "external_ids": [format!("t-incident-{n}")], "type": "incident",
            "status": "New", "confidence": "High", "tlp": "amber", "incident_time": {"opened": "2024-10-10T13:55:36.000Z"}});
        for (k, v) in extra.as_object().unwrap() {
            i[k] = v.clone();
        }
        i
    };

    // No token at all.
    let (s, b) = http_with(&sb.addr, "POST", "/ctia/bundle/import", Some("{}"), &[]);
    assert_eq!((s, b.contains("No Authorization Header")), (401, true));
    // Malformed JSON.
    let (s, b) = http_with(&sb.addr, "POST", "/ctia/bundle/import", Some("{\"source\": "), &[("Authorization", &auth)]);
    assert_eq!((s, b.contains("json-parse-exception")), (400, true));
    // Schema layer: the whole request fails, errors mirror the body.
    let (s, b) = import(&json!({"source": "t", "incidents": [incident(1, json!({"status": "Bogus", "x": 1}))]}));
    assert_eq!(s, 400);
    assert_eq!(b["errors"]["incidents"][0]["x"], "disallowed-key");
    assert!(b["errors"]["incidents"][0]["status"].as_str().unwrap().contains("Bogus"));
    let (s, b) = import(&json!({"incidents": []}));
    assert_eq!((s, &b["errors"]["source"]), (400, &json!("missing-required-key")));
    // Size.
    let many: Vec<Value> = (0..6).map(|n| incident(n, json!({}))).collect();
    let (s, b) = import(&json!({"source": "t", "incidents": many}));
    assert_eq!((s, b), (400, json!("Bundle max nb of entities: 5")));

    // Spec, TLP and reference errors are per entity, with 200.
    let (s, b) = import(&json!({"source": "t",
    "incidents": [incident(2, json!({"title": "x".repeat(1025)})), incident(3, json!({"tlp": "white"})), incident(4, json!({}))],
    "relationships": [
        {"id": "transient:t-relationship-1", "external_ids": ["t-relationship-1"], "relationship_type": "member-of", "source_ref": "transient:nowhere", "target_ref": "transient:t-incident-4"},
        {"id": "transient:t-relationship-2", "external_ids": ["t-relationship-2"], "relationship_type": "member-of", "source_ref": "transient:t-incident-4", "target_ref": "transient:t-incident-4"}
    ]}));
    assert_eq!(s, 200);
    let r = |id: &str| b["results"].as_array().unwrap().iter().find(|r| r["original_id"] == id).unwrap().clone();
    assert_eq!(r("transient:t-incident-2")["error"], "Entity validation Error");
    assert!(r("transient:t-incident-3")["msg"].as_str().unwrap().contains("Invalid document TLP white"));
    assert_eq!(r("transient:t-incident-4")["result"], "created");
    assert!(r("transient:t-relationship-1")["error"].as_str().unwrap().contains("still a transient ID"));
    let rel = r("transient:t-relationship-2");
    assert_eq!(rel["result"], "created");
    let stored = sb.entities("relationships");
    assert_eq!(stored[0]["target_ref"], r("transient:t-incident-4")["id"], "transient ids resolved");

    // Same external ids again: exists, same id, nothing new.
    let (_, b2) = import(&json!({"source": "t", "incidents": [incident(4, json!({"title": "changed"}))]}));
    assert_eq!(b2["results"][0]["result"], "exists");
    assert_eq!(b2["results"][0]["id"], r("transient:t-incident-4")["id"]);
    assert_eq!(sb.entities("incidents").len(), 1);
    assert!(sb.entities("incidents")[0].get("title").is_none(), "exists updates nothing");

    // Expired token.
    sb.expire_tokens();
    let (s, b) = import(&json!({"source": "t"}));
    assert_eq!((s, b["error"].as_str()), (401, Some("jwt_expired")));
    // Delete by search without a filter is refused.
    let tok = token(&sb.addr, "a", "b");
    let (s, _) =
        http_with(&sb.addr, "DELETE", "/ctia/incident/search", None, &[("Authorization", &format!("Bearer {tok}"))]);
    assert_eq!(s, 403);
}

/// `PATCH /iroh/private-intel/incident/{id}` as CTIA applies it: scope, body schema (every
/// key optional, none unknown), 404, deep merge, the merged incident re-validated, the stored
/// incident returned (and visible to GET).
#[test]
fn sandbox_patches_incidents_like_the_service() {
    let dir = tempfile::tempdir().unwrap();
    let sb = Sandbox::start("127.0.0.1:0", &dir.path().join("sb.json"), &[]);
    let auth = format!("Bearer {}", token(&sb.addr, "a", "b"));
    let send = |method: &str, path: &str, body: Option<&Value>, auth: &str| {
        let body = body.map(|b| b.to_string());
        let (s, b) = http_with(&sb.addr, method, path, body.as_deref(), &[("Authorization", auth)]);
        (s, serde_json::from_str::<Value>(&b).unwrap_or(Value::String(b)))
    };
    let bundle = json!({"source": "t", "incidents": [{"id": "transient:t-incident-1", "external_ids": ["t-incident-1"],
        "status": "Open", "confidence": "High", "severity": "Low", "tlp": "amber", "title": "1 detection",
        "incident_time": {"opened": "2024-10-10T13:55:36.000Z"}, "meta": {"detections": 1, "first": "a"}}]});
    let (s, b) = send("POST", "/iroh/private-intel/bundle/import", Some(&bundle), &auth);
    assert_eq!(s, 200, "{b}");
    let long = b["results"][0]["id"].as_str().unwrap().to_string();
    let short = long.rsplit('/').next().unwrap().to_string();
    let path = format!("/iroh/private-intel/incident/{short}");

    let patch = json!({"title": "3 detections", "severity": "Critical", "meta": {"detections": 3},
                       "categories": ["Unauthorized Access"], "timestamp": "2024-10-10T13:56:00.000Z"});
    let (s, stored) = send("PATCH", &path, Some(&patch), &auth);
    assert_eq!(s, 200, "{stored}");
    assert_eq!(stored["id"], long.as_str());
    assert_eq!((stored["title"].as_str(), stored["severity"].as_str()), (Some("3 detections"), Some("Critical")));
    assert_eq!(stored["meta"], json!({"detections": 3, "first": "a"}), "maps are merged");
    assert_eq!(stored["status"], "Open", "untouched fields stay");
    let (s, got) = send("GET", &path, None, &auth);
    assert_eq!((s, &got), (200, &stored));
    // CTIA's own path does the same.
    let (s, _) = send("PATCH", &format!("/ctia/incident/{short}"), Some(&json!({"title": "via ctia"})), &auth);
    assert_eq!(s, 200);
    assert_eq!(sb.entities("incidents")[0]["title"], "via ctia");

    // A key no incident has, a closed vocabulary violated, a wrong type: 400, nothing changed.
    let (s, b) = send("PATCH", &path, Some(&json!({"bogus": 1, "severity": "Severe", "categories": "x"})), &auth);
    assert_eq!(s, 400, "{b}");
    assert_eq!(b["errors"]["bogus"], "disallowed-key");
    assert!(b["errors"]["severity"].as_str().unwrap().contains("Severe"));
    assert!(b["errors"]["categories"].as_str().unwrap().contains("instance?"));
    // Valid shape, invalid value (spec layer on the merged incident).
    let (s, b) = send("PATCH", &path, Some(&json!({"title": "x".repeat(1025)})), &auth);
    assert_eq!((s, b["error"].as_str()), (400, Some("Spec Validation Client Error")));
    let (s, _) = send("PATCH", &path, Some(&json!({"tlp": "white"})), &auth);
    assert_eq!(s, 400);
    assert_eq!(sb.entities("incidents")[0]["title"], "via ctia");
    // Unknown id; only incidents can be patched.
    let (s, _) = send(
        "PATCH",
        "/iroh/private-intel/incident/incident-00000000-0000-4000-8000-000000000000",
        Some(&patch),
        &auth,
    );
    assert_eq!(s, 404);
    let (s, _) = send("PATCH", &format!("/ctia/sighting/{short}"), Some(&patch), &auth);
    assert_eq!(s, 405);
    // No token; a token whose scope does not cover incident writes.
    let (s, _) = send("PATCH", &path, Some(&patch), "Bearer nope");
    assert_eq!(s, 401);
    let narrow = Sandbox::start("127.0.0.1:0", &dir.path().join("narrow.json"), &["--scope", "private-intel:read"]);
    let tok = token(&narrow.addr, "a", "b");
    let (s, b) = http_with(
        &narrow.addr,
        "PATCH",
        &path,
        Some(&patch.to_string()),
        &[("Authorization", &format!("Bearer {tok}"))],
    );
    assert_eq!(s, 403, "{b}");
    assert!(b.contains("missing_capability"));
    assert_eq!(sb.counter("patches"), 2);
}

/// The target, the URL observable and the IP relation name what was attacked: the vhost from
/// the log, else nothing guessed (no address of this machine).
#[test]
fn targets_come_from_what_was_attacked() {
    let cfg = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("trapline.yml");
    let request =
        "\"GET /phpMyAdmin/index.php?pma_username=root&pma_password=toor HTTP/1.1\" 200 512 \"-\" \"Mozilla/5.0\"";
    let render = |line: &str| {
        let (code, out, err) = run_status(&[
            "render",
            "--config",
            cfg.to_str().unwrap(),
            "--rule",
            "honeypot.phpmyadmin-login",
            "--line",
            line,
        ]);
        assert_eq!(code, 0, "{err}");
        serde_json::from_str::<Value>(&out).unwrap()
    };
    let b = render(&format!("www.example.org:443 203.0.113.7 - - [10/Oct/2024:13:55:36 +0000] {request}"));
    let s = &b["sightings"][0];
    assert_eq!(s["targets"][0]["observables"], serde_json::json!([{"type": "hostname", "value": "www.example.org"}]));
    let urls: Vec<&str> = s["observables"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["type"] == "url")
        .map(|o| o["value"].as_str().unwrap())
        .collect();
    assert_eq!(urls, ["https://www.example.org/phpMyAdmin/index.php?pma_username=root&pma_password=***"]);

    let b = render(&format!("127.0.0.1:8080 203.0.113.7 - - [10/Oct/2024:13:55:36 +0000] {request}"));
    let s = &b["sightings"][0];
    assert_eq!(s["targets"][0]["observables"], serde_json::json!([{"type": "ip", "value": "127.0.0.1"}]));
    assert_eq!(s["relations"][0]["related"]["value"], "127.0.0.1");

    // A plain combined line names no server, and the shipped config names none: no URL, no IP.
    let b = render(&format!("203.0.113.7 - - [10/Oct/2024:13:55:36 +0000] {request}"));
    let s = &b["sightings"][0];
    assert!(s["observables"].as_array().unwrap().iter().all(|o| o["type"] != "url"), "{s}");
    assert!(s["targets"][0]["observables"].as_array().unwrap().iter().all(|o| o["type"] == "hostname"), "{s}");
    assert!(s["relations"].as_array().is_none_or(|r| r.is_empty()), "{s}");
}
