//! The HTTP side of `trapline run` over loopback: the token on every endpoint, the Host
//! check, the live feed (server-sent events, compact rows) of a line appended to a tailed
//! file and the whole detection behind a row, the history (API and `trapline history`),
//! Prometheus metrics, and the refused non-loopback address.

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
    for path in ["/metrics", "/api/detections", "/api/events", "/api/top", "/api/status", "/api/detection?id=0"] {
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
            // An event is a JSON array of the rows of the detections of a short interval.
            let list = serde_json::from_str::<serde_json::Value>(json.trim()).unwrap();
            data = Some(list[0].clone());
            break;
        }
    }
    let data = data.unwrap_or_else(|| panic!("no event on the live feed:\n{}", d.stderr()));
    assert!(appended.elapsed() < Duration::from_secs(2), "in the feed within 2 s: {:?}", appended.elapsed());
    assert_eq!(data["rule"], "t.xss");
    assert_eq!(data["client_ip"], "203.0.113.66");
    assert_eq!(data["excerpt"], format!("GET {hostile} HTTP/1.1"), "log text stays data");

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

/// Reads the live feed until an event `detections` arrives; its rows and the raw `data:` line.
fn next_rows(feed: &mut BufReader<TcpStream>, within: Duration) -> Option<(Vec<serde_json::Value>, String)> {
    let start = Instant::now();
    let mut line = String::new();
    let mut event = String::new();
    while start.elapsed() < within {
        line.clear();
        if feed.read_line(&mut line).unwrap_or(0) == 0 {
            return None;
        }
        if let Some(e) = line.strip_prefix("event: ") {
            event = e.trim().to_string();
        } else if let Some(json) = line.strip_prefix("data: ")
            && event == "detections"
        {
            return Some((serde_json::from_str(json.trim()).unwrap(), json.trim().to_string()));
        }
    }
    None
}

fn open_feed(addr: &str) -> BufReader<TcpStream> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET /api/events HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\n\r\n").unwrap();
    let mut feed = BufReader::new(s);
    let mut first = String::new();
    feed.read_line(&mut first).unwrap();
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    // The server counts the client once the stream runs.
    std::thread::sleep(Duration::from_millis(200));
    feed
}

#[test]
fn the_feed_carries_compact_rows_and_the_whole_detection_is_fetched_by_its_key() {
    let (_d, p) = project(Some(RULE), &config("127.0.0.1:0"));
    std::fs::write(p.join("token.txt"), TOKEN).unwrap();
    std::fs::write(p.join("logs/access.log"), "").unwrap();
    let d = Daemon::start(&p.join("trapline.yml"));
    let addr = d.http_addr();
    let get = |path: &str, token: Option<&str>| request(&addr, path, &addr, token);

    // A detection made while no one watched the feed: only the history has it.
    append(&p.join("logs/access.log"), &[access_line("192.0.2.40", 1, "/old%3Cscript%3E", 200)]);
    let mut old: Vec<serde_json::Value> = Vec::new();
    assert!(wait_for(Duration::from_secs(10), || {
        old = serde_json::from_str(&get("/api/detections?ip=192.0.2.40", Some(TOKEN)).1).unwrap_or_default();
        !old.is_empty()
    }));
    let old_key = old[0]["key"].as_str().unwrap().to_string();
    let (status, body) = get(&format!("/api/detection?id={old_key}"), Some(TOKEN));
    assert_eq!(status, 200, "{body}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&body).unwrap(), old[0], "from the history");

    // A hostile, long request on a virtual host: its row is small, bounded and escaped.
    let mut feed = open_feed(&addr);
    let target = format!("/x/<script>alert(\\\"é\\\")</script>\\\"><img/src=x/onerror=alert(1)>{}", "é".repeat(150));
    let line = format!(
        "www.example.org:443 {}",
        access_line("203.0.113.77", 2, &target, 200)
            .replace("\"Mozilla/5.0\"", &format!("\"Mozilla/5.0 {}\"", "z".repeat(400)))
    );
    append(&p.join("logs/access.log"), &[line]);
    let (rows, raw) = next_rows(&mut feed, Duration::from_secs(5)).unwrap_or_else(|| panic!("{}", d.stderr()));
    assert_eq!(rows.len(), 1, "{raw}");
    let row = &rows[0];
    let mut keys: Vec<&str> = row.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        ["class", "client_ip", "cut", "excerpt", "host", "key", "rule", "severity", "source", "time"],
        "{row}"
    );
    assert_eq!(
        (row["rule"].as_str(), row["severity"].as_str(), row["class"].as_str()),
        (Some("t.xss"), Some("high"), Some("xss"))
    );
    assert_eq!((row["client_ip"].as_str(), row["host"].as_str()), (Some("203.0.113.77"), Some("www.example.org:443")));
    assert_eq!(row["source"], "web");
    assert!(row["time"].as_str().unwrap().starts_with("2024-10-10T13:00:02"), "{row}");
    let excerpt = row["excerpt"].as_str().unwrap();
    let request = format!("GET {} HTTP/1.1", target.replace("\\\"", "\""));
    assert!(excerpt.len() <= 200 && excerpt.len() >= 190, "{} bytes", excerpt.len());
    assert!(request.starts_with(excerpt), "a prefix of the request, cut on a character: {excerpt}");
    assert_eq!(row["cut"], true);
    assert!(
        raw.contains(r#"alert(\"é\")</script>\"><img/src=x/onerror=alert(1)>"#),
        "the quotes are JSON-escaped, the rest is text in a JSON string: {raw}"
    );
    assert!(raw.len() < 600, "a compact row: {} bytes: {raw}", raw.len());
    assert!(!raw.contains("zzzz") && !raw.contains("\"line\""), "no user agent, no raw line: {raw}");

    // The whole detection, fetched by the row's key: at once (the history is written in
    // batches) and once the history has it.
    let key = row["key"].as_str().unwrap();
    let (status, body) = get(&format!("/api/detection?id={key}"), Some(TOKEN));
    assert_eq!(status, 200, "{body}");
    let full: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(full["key"], key);
    assert_eq!(full["fields"]["request"], request, "whole, not cut");
    assert!(full["line"].as_str().unwrap().contains(&"z".repeat(400)));
    eprintln!("live feed, one detection: row {} bytes, whole detection {} bytes", raw.len() - 2, body.len());
    assert!(wait_for(Duration::from_secs(10), || get("/api/detections?ip=203.0.113.77", Some(TOKEN)).1.contains(key)));
    let (status, again) = get(&format!("/api/detection?id={key}"), Some(TOKEN));
    assert_eq!((status, serde_json::from_str::<serde_json::Value>(&again).unwrap()), (200, full));
    assert!(get(&format!("/api/detections?key={key}&since=1000d"), Some(TOKEN)).1.contains(key));

    // Unknown, missing, without the token.
    assert_eq!(get("/api/detection?id=0123456789abcdef", Some(TOKEN)).0, 404);
    assert_eq!(get(&format!("/api/detection?id={}", "a".repeat(500)), Some(TOKEN)).0, 404);
    assert_eq!(get("/api/detection", Some(TOKEN)).0, 400);
    assert_eq!(get(&format!("/api/detection?id={key}"), None).0, 401);
    assert_eq!(get(&format!("/api/detection?id={key}"), Some("wrong")).0, 401);
}

#[test]
fn without_a_history_the_whole_detection_comes_from_the_recent_ones() {
    let cfg = config("127.0.0.1:0") + "history: {enabled: false}\n";
    let (_d, p) = project(Some(RULE), &cfg);
    std::fs::write(p.join("token.txt"), TOKEN).unwrap();
    std::fs::write(p.join("logs/access.log"), "").unwrap();
    let d = Daemon::start(&p.join("trapline.yml"));
    let addr = d.http_addr();
    let mut feed = open_feed(&addr);
    let lines: Vec<String> =
        (0..3).map(|i| access_line("198.51.100.9", i, &format!("/{i}%3Cscript%3E"), 200)).collect();
    append(&p.join("logs/access.log"), &lines);
    let mut rows = Vec::new();
    while rows.len() < 3 {
        let (more, _) = next_rows(&mut feed, Duration::from_secs(5)).unwrap_or_else(|| panic!("{}", d.stderr()));
        rows.extend(more);
    }
    for row in &rows {
        let key = row["key"].as_str().unwrap();
        let (status, body) = request(&addr, &format!("/api/detection?id={key}"), &addr, Some(TOKEN));
        assert_eq!(status, 200, "{body}");
        let full: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!((full["key"].as_str(), full["rule"]["id"].as_str()), (Some(key), Some("t.xss")));
        assert_eq!(full["fields"]["client_ip"], "198.51.100.9");
        eprintln!(
            "live feed, a typical detection: row {} bytes, whole detection {} bytes",
            row.to_string().len(),
            body.len()
        );
    }
    assert!(!p.join("state/history.sqlite").exists());
    assert_eq!(request(&addr, "/api/detection?id=0123456789abcdef", &addr, Some(TOKEN)).0, 404);
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

/// Logs in through the form; returns the session cookie (`name=value`) and its CSRF token.
fn log_in(addr: &str, form: &str) -> Option<(String, String)> {
    let (status, head, _) = common::http::exchange_full(
        addr,
        addr,
        "POST",
        "/login",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        form,
    );
    if status != 303 {
        return None;
    }
    let cookie = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().starts_with("set-cookie:").then(|| l[11..].trim().to_string()))?;
    let cookie = cookie.split(';').next()?.to_string();
    let (s, body) = common::http::exchange(addr, "GET", "/api/session", &[("Cookie", &cookie)], "");
    assert_eq!(s, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    Some((cookie, v["csrf"].as_str()?.to_string()))
}

fn hash(password: &str) -> String {
    let out = common::trapline_stdin(&["hash-password"], password.as_bytes());
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn users_log_in_with_argon2_hashes_and_accept_web_root_changes_under_their_name() {
    let (_d, p) = project(Some(RULE), &config("127.0.0.1:0"));
    std::fs::write(p.join("token.txt"), TOKEN).unwrap();
    std::fs::write(p.join("logs/access.log"), "").unwrap();
    std::fs::create_dir_all(p.join("www")).unwrap();
    std::fs::write(p.join("www/index.php"), "<?php echo 1;\n").unwrap();
    let h = hash("correct horse battery");
    assert!(h.starts_with("$argon2id$"), "{h}");
    assert_eq!(
        common::trapline_stdin(&["hash-password"], b"short\n").status.code(),
        Some(2),
        "short passwords refused"
    );
    let cfg = std::fs::read_to_string(p.join("trapline.yml")).unwrap();
    let cfg = cfg.replace("sources:\n", "sources:\n  - name: site\n    type: webroot\n    paths: [www]\n")
        + &format!("  users:\n    - name: alice\n      password_hash: '{h}'\n");
    std::fs::write(p.join("trapline.yml"), cfg).unwrap();
    let d = Daemon::start(&p.join("trapline.yml"));
    let addr = d.http_addr();
    assert!(wait_for(Duration::from_secs(10), || d.stderr().contains("web root ready")));

    // Wrong password, unknown user, the token as alice's password: refused.
    for form in
        ["user=alice&token=correct+horse", "user=bob&token=correct+horse+battery", &format!("user=alice&token={TOKEN}")]
    {
        assert!(log_in(&addr, form).is_none(), "{form}");
    }
    assert!(!d.stderr().contains("correct horse"), "no password is logged");
    // Four failures so far; the fifth would start the one-minute lock-out, so log in now.
    let (cookie, csrf) = log_in(&addr, "user=alice&token=correct+horse+battery").expect("alice logs in");
    let (_, body) = common::http::exchange(&addr, "GET", "/api/session", &[("Cookie", &cookie)], "");
    assert!(body.contains("\"user\":\"alice\""), "{body}");

    // A reported change, accepted by alice (with the CSRF token; refused without).
    std::fs::write(p.join("www/index.php"), "<?php echo 'defaced';\n").unwrap();
    let mut rows = Vec::new();
    assert!(wait_for(Duration::from_secs(10), || {
        let (_, body) = common::http::exchange(&addr, "GET", "/api/webroot/changes", &[("Cookie", &cookie)], "");
        rows = serde_json::from_str::<Vec<serde_json::Value>>(&body).unwrap_or_default();
        rows.iter().any(|r| r["reported"] == true)
    }));
    let row = rows.iter().find(|r| r["reported"] == true).unwrap().clone();
    assert!(row["accepted_by"].is_null(), "{row}");
    let body = format!("{{\"ids\":[{}]}}", row["id"]);
    let json = ("Content-Type", "application/json");
    let (status, _) = common::http::exchange(&addr, "POST", "/api/webroot/accept", &[("Cookie", &cookie), json], &body);
    assert_eq!(status, 403, "a POST without the CSRF token is refused");
    let (status, answer) = common::http::exchange(
        &addr,
        "POST",
        "/api/webroot/accept",
        &[("Cookie", &cookie), ("X-CSRF-Token", &csrf), json],
        &body,
    );
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains("\"accepted\":1") && answer.contains("\"by\":\"alice\""), "{answer}");
    // Accepting again changes nothing; with the bearer token it is recorded as the token.
    let auth = format!("Bearer {TOKEN}");
    let (_, again) =
        common::http::exchange(&addr, "POST", "/api/webroot/accept", &[("Authorization", &auth), json], &body);
    assert!(again.contains("\"accepted\":0"), "{again}");
    let (_, body) = request(&addr, "/api/webroot/changes", &addr, Some(TOKEN));
    let rows: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    let r = rows.iter().find(|r| r["id"] == row["id"]).unwrap();
    assert_eq!(r["accepted_by"], "alice", "{r}");
    assert!(r["accepted_at"].as_str().is_some_and(|t| t.starts_with("20")), "{r}");
    drop(d);

    // A hash that is not argon2 stops the start with the entry's position.
    let cfg = std::fs::read_to_string(p.join("trapline.yml")).unwrap().replace(&h, "hunter2");
    std::fs::write(p.join("trapline.yml"), cfg).unwrap();
    let out = trapline(&["run", "--config", p.join("trapline.yml").to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert!(err.contains("trapline.yml:") && err.contains("is not a PHC string"), "{err}");
}

#[test]
fn attacker_and_rule_pages_with_each_rules_cost() {
    let rules = format!(
        "{RULE}  - id: t.burst
    title: many not-found
    description: Probing for files that are not there.
    severity: medium
    class: recon
    formats: [combined]
    match: {{field: status, equals: '404'}}
    threshold: {{count: 3, within: 1m, group_by: [client_ip]}}
"
    );
    let rules = rules.replacen(
        "    class: xss\n",
        "    class: xss\n    except: {field: client_ip, cidr: [192.0.2.250/32]}\n",
        1,
    );
    let (_d, p) = project(Some(&rules), &config("127.0.0.1:0"));
    std::fs::write(p.join("token.txt"), TOKEN).unwrap();
    std::fs::write(p.join("logs/access.log"), "").unwrap();
    let d = Daemon::start(&p.join("trapline.yml"));
    let addr = d.http_addr();
    // Stamped now: the rule page counts the last hour, day and week.
    let now = |ip: &str, target: &str, status: u16| {
        let t = chrono::Utc::now().format("%d/%b/%Y:%H:%M:%S +0000");
        format!("{ip} - - [{t}] \"GET {target} HTTP/1.1\" {status} 123 \"-\" \"Mozilla/5.0\"")
    };
    let mut lines = vec![now("203.0.113.9", "/a%3Cscript%3E", 200)];
    for i in 0..3 {
        lines.push(now("203.0.113.9", &format!("/missing{i}"), 404));
    }
    lines.push(now("198.51.100.4", "/ok", 200));
    // Held back by the rule's exception, on the profiled path too.
    lines.push(now("192.0.2.250", "/scan%3Cscript%3E", 200));
    append(&p.join("logs/access.log"), &lines);
    let get = |path: &str| {
        let (status, body) = request(&addr, path, &addr, Some(TOKEN));
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str::<serde_json::Value>(&body).unwrap()
    };
    assert!(
        wait_for(Duration::from_secs(10), || get("/api/attacker?ip=203.0.113.9")["detections"] == 2),
        "{}",
        d.stderr()
    );
    let a = get("/api/attacker?ip=203.0.113.9");
    let rules: Vec<&str> = a["rules"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(rules.len(), 2, "{a}");
    assert!(a["classes"].as_array().unwrap().iter().any(|c| c["name"] == "recon"), "{a}");
    assert_eq!(a["sources"][0]["name"], "web");
    assert_eq!(get("/api/attacker?ip=192.0.2.200")["detections"], 0);
    assert_eq!(request(&addr, "/api/attacker", &addr, Some(TOKEN)).0, 400);

    // The rule page: as loaded, with its history and what evaluating it cost.
    assert!(wait_for(Duration::from_secs(5), || get("/api/rule?rule=t.burst")["counts"]["evaluations"] == 6));
    let r = get("/api/rule?rule=t.burst");
    assert_eq!(r["rule"]["kind"], "threshold", "{r}");
    assert_eq!(r["rule"]["threshold"], "3 within 1m by client_ip", "{r}");
    assert_eq!(r["rule"]["description"], "Probing for files that are not there.");
    assert!(r["rule"]["file"].as_str().unwrap().ends_with(".yml"), "{r}");
    assert!(r["rule"]["changed_at"].as_str().is_some_and(|t| t.starts_with("20")), "{r}");
    assert_eq!((r["counts"]["hits"].as_u64(), r["counts"]["detections"].as_u64()), (Some(3), Some(1)), "{r}");
    assert!(r["counts"]["eval_nanos"].as_u64().unwrap() > 0, "the first line is timed: {r}");
    assert_eq!(r["history"]["last_week"], 1, "{r}");
    assert_eq!(r["history"]["attackers"][0]["name"], "203.0.113.9");
    assert!(get("/api/rule?rule=no.such")["rule"].is_null());
    let (_, m) = request(&addr, "/metrics", &addr, Some(TOKEN));
    assert!(m.contains("trapline_rule_evaluations_total{rule=\"t.burst\"} 6"), "{m}");
    assert!(m.contains("trapline_rule_evaluation_seconds_total{rule=\"t.burst\"}"), "{m}");

    // Health: per source, in the status the page polls (rewritten every second).
    assert!(wait_for(Duration::from_secs(5), || get("/api/status")["lines"] == 6));
    assert_eq!(get("/api/attacker?ip=192.0.2.250")["detections"], 0, "the exception held it back");
    assert!(m.contains("trapline_held_back_total{exception=\"t.xss\"} 1"), "{m}");
    let s = get("/api/status");
    assert_eq!(s["sources"][0]["name"], "web", "{s}");
    assert_eq!(s["sources"][0]["lines"], 6, "{s}");
    assert!(s["sources"][0]["last_event_at"].as_str().is_some(), "{s}");
}
