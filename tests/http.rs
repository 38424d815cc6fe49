//! The HTTP side of `trapline run` over loopback: the token on every endpoint, the Host
//! check, the live feed (server-sent events) of a line appended to a tailed file, the history
//! (API and `trapline history`), Prometheus metrics, and the refused non-loopback address.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Daemon, access_line, append, project, trapline, wait_for};

const RULE: &str = "rules:
  - id: t.xss
    title: script tag
    severity: high
    class: xss
    formats: [combined]
    match: {field: path, transforms: [url_decode], contains: '<script'}
";

const TOKEN: &str = "s3cret-token-for-tests";

fn config(listen: &str) -> String {
    format!(
        "rules: [rules]\nstate_dir: state\nactions:\n  log: {{path: out.txt}}\nsources:\n  - name: web\n    paths: [logs/access.log]\n    start: beginning\nhttp:\n  listen: \"{listen}\"\n  token_file: token.txt\n"
    )
}

/// A request over a fresh connection: (status, body).
fn request(addr: &str, path: &str, host: &str, token: Option<&str>) -> (u16, String) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.as_deref().map(|a| ("Authorization", a)).into_iter().collect();
    common::http::exchange_as(addr, host, "GET", path, &headers, "")
}

#[test]
fn api_metrics_and_live_feed_behind_the_token() {
    let (_d, p) = project(Some(RULE), &config("127.0.0.1:0"));
    std::fs::write(p.join("token.txt"), format!("{TOKEN}\n")).unwrap();
    std::fs::write(p.join("logs/access.log"), "").unwrap();
    let d = Daemon::start(&p.join("trapline.yml"));
    let addr = d.http_addr();
    assert!(!d.stderr().contains(TOKEN), "the token is never logged");

    // Refused: no token, a wrong one, a foreign Host (DNS rebinding).
    for path in ["/metrics", "/api/detections", "/api/events", "/api/top", "/api/status"] {
        assert_eq!(request(&addr, path, &addr, None).0, 401, "{path}");
        assert_eq!(request(&addr, path, &addr, Some("s3cret-token-for-test")).0, 401, "{path}");
        assert_eq!(request(&addr, path, "evil.example:80", Some(TOKEN)).0, 421, "{path}");
    }

    // The live feed, then a hostile line appended to the tailed file.
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET /api/events HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\n\r\n").unwrap();
    let mut feed = BufReader::new(s);
    let mut first = String::new();
    feed.read_line(&mut first).unwrap();
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    std::thread::sleep(Duration::from_millis(200));
    let hostile = "/x%3Cscript%3Ealert(1)%3C/script%3E%22%3E%3Cimg%20src=x%20onerror=alert(1)%3E";
    let appended = Instant::now();
    append(&p.join("logs/access.log"), &[access_line("203.0.113.66", 1, hostile, 200)]);
    let mut data = None;
    let mut line = String::new();
    while appended.elapsed() < Duration::from_secs(5) {
        line.clear();
        if feed.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        if let Some(json) = line.strip_prefix("data: ") {
            // An event is a JSON array of the detections of a short interval.
            let list = serde_json::from_str::<serde_json::Value>(json.trim()).unwrap();
            data = Some(list[0].clone());
            break;
        }
    }
    let data = data.unwrap_or_else(|| panic!("no event on the live feed:\n{}", d.stderr()));
    assert!(appended.elapsed() < Duration::from_secs(2), "in the feed within 2 s: {:?}", appended.elapsed());
    assert_eq!(data["rule"]["id"], "t.xss");
    assert_eq!(data["fields"]["client_ip"], "203.0.113.66");

    // The history, through the API and the command line.
    assert!(wait_for(Duration::from_secs(5), || {
        let (status, body) = request(&addr, "/api/detections?ip=203.0.113.66", &addr, Some(TOKEN));
        status == 200 && body.contains("t.xss")
    }));
    let (_, body) = request(&addr, "/api/detections?ip=203.0.113.66&since=1000d", &addr, Some(TOKEN));
    let rows: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["fields"]["path"], hostile, "log text stays data");
    let (_, body) = request(&addr, "/api/detections?ip=192.0.2.1", &addr, Some(TOKEN));
    assert_eq!(body.trim(), "[]");
    let (status, body) = request(&addr, "/api/top?since=1000d", &addr, Some(TOKEN));
    assert_eq!(status, 200, "{body}");
    let top: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(top["attackers"][0]["name"], "203.0.113.66");
    assert_eq!(top["rules"][0]["name"], "t.xss");
    assert_eq!(request(&addr, "/api/top?since=banana", &addr, Some(TOKEN)).0, 400);
    let out =
        trapline(&["history", "--json", "--ip", "203.0.113.66", "--config", p.join("trapline.yml").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let line: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().next().unwrap()).unwrap();
    assert_eq!(line["rule"]["id"], "t.xss");

    // Metrics, updated at the daemon's ticks.
    assert!(
        wait_for(Duration::from_secs(5), || {
            let (status, body) = request(&addr, "/metrics", &addr, Some(TOKEN));
            status == 200
                && body.contains("trapline_lines_total{source=\"web\"} 1")
                && body.contains("trapline_detections_total{rule=\"t.xss\",severity=\"high\"} 1")
                && body.contains("trapline_history_written_total 1")
        }),
        "{}",
        request(&addr, "/metrics", &addr, Some(TOKEN)).1
    );
    let (_, body) = request(&addr, "/metrics", &addr, Some(TOKEN));
    assert!(!body.contains("203.0.113.66"), "no per-address series");
}

#[test]
fn a_non_loopback_address_is_refused_with_its_position() {
    let (_d, p) = project(Some(RULE), &config("0.0.0.0:9100"));
    std::fs::write(p.join("logs/access.log"), "").unwrap();
    let out = trapline(&["run", "--config", p.join("trapline.yml").to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("trapline.yml:10:11") && err.contains("not a loopback address"), "{err}");
}

#[test]
fn web_root_changes_are_served_with_sizes_and_hashes() {
    let (_d, p) = project(Some(RULE), &config("127.0.0.1:0"));
    std::fs::write(p.join("token.txt"), TOKEN).unwrap();
    std::fs::write(p.join("logs/access.log"), "").unwrap();
    std::fs::create_dir_all(p.join("www")).unwrap();
    std::fs::write(p.join("www/index.php"), "<?php echo 1;\n").unwrap();
    let cfg = std::fs::read_to_string(p.join("trapline.yml")).unwrap();
    let cfg = cfg.replace("sources:\n", "sources:\n  - name: site\n    type: webroot\n    paths: [www]\n");
    std::fs::write(p.join("trapline.yml"), cfg).unwrap();
    let d = Daemon::start(&p.join("trapline.yml"));
    let addr = d.http_addr();
    assert!(wait_for(Duration::from_secs(10), || d.stderr().contains("web root ready")));
    std::fs::write(p.join("www/index.php"), "<?php echo 'defaced';\n").unwrap();
    let mut rows = Vec::new();
    assert!(wait_for(Duration::from_secs(10), || {
        let (status, body) = request(&addr, "/api/webroot/changes", &addr, Some(TOKEN));
        rows = serde_json::from_str::<Vec<serde_json::Value>>(&body).unwrap_or_default();
        status == 200 && !rows.is_empty()
    }));
    let c = &rows[0];
    assert_eq!(c["change"], "modified", "{c}");
    assert!(c["path"].as_str().unwrap().ends_with("www/index.php"), "{c}");
    assert_eq!((c["old_size"].as_i64(), c["size"].as_i64()), (Some(14), Some(22)), "{c}");
    assert_eq!(c["sha256"].as_str().unwrap().len(), 64, "{c}");
    assert_ne!(c["old_sha256"], c["sha256"]);
    assert_eq!(request(&addr, "/api/webroot/changes", &addr, None).0, 401);
    // The web root's own measurements, and its events counted as the source's lines.
    assert!(
        wait_for(Duration::from_secs(5), || {
            let (_, m) = request(&addr, "/metrics", &addr, Some(TOKEN));
            m.contains("trapline_source_measure{source=\"site\",measure=\"webroot_files\"} 1.0")
                && m.contains("trapline_source_measure{source=\"site\",measure=\"webroot_watches\"}")
                && m.contains("measure=\"webroot_scan_seconds\"")
                && m.contains("trapline_lines_total{source=\"site\"} 1")
        }),
        "{}",
        request(&addr, "/metrics", &addr, Some(TOKEN)).1
    );
}
