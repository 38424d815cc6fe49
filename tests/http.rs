//! The HTTP side of `trapline run` over loopback: the token on every endpoint, the Host
//! check, the live feed (server-sent events) of a line appended to a tailed file, the history
//! (API and `trapline history`), Prometheus metrics, and the refused non-loopback address.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
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
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

#[test]
fn api_metrics_and_live_feed_behind_the_token() {
    let (_d, p) = project(Some(RULE), &config("127.0.0.1:0"));
    std::fs::write(p.join("token.txt"), format!("{TOKEN}\n")).unwrap();
    std::fs::write(p.join("logs/access.log"), "").unwrap();
    let d = Daemon::start(&p.join("trapline.yml"));
    let addr = d
        .stderr()
        .lines()
        .find(|l| l.contains("http: serving"))
        .and_then(|l| l.split("addr=").nth(1))
        .map(|a| a.split_whitespace().next().unwrap().to_string())
        .unwrap_or_else(|| panic!("no address logged:\n{}", d.stderr()));
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
    let addr = d
        .stderr()
        .lines()
        .find(|l| l.contains("http: serving"))
        .and_then(|l| l.split("addr=").nth(1))
        .map(|a| a.split_whitespace().next().unwrap().to_string())
        .unwrap();
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

/// With a certificate, the server speaks HTTPS only and may listen beyond loopback; the
/// session cookie is `Secure`. (Needs the `openssl` command to make a test certificate.)
#[test]
fn tls_with_a_certificate_and_beyond_loopback() {
    let (_d, p) = project(Some(RULE), &config("0.0.0.0:0"));
    std::fs::write(p.join("token.txt"), TOKEN).unwrap();
    std::fs::write(p.join("logs/access.log"), "").unwrap();
    let made = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-addext", "basicConstraints=critical,CA:FALSE"])
        .args(["-addext", "extendedKeyUsage=serverAuth", "-keyout", "key.pem", "-out", "cert.pem"])
        .current_dir(&p)
        .output();
    if !made.is_ok_and(|o| o.status.success()) {
        assert!(std::env::var("TRAPLINE_E2E_REQUIRED").is_err(), "openssl is needed to make a test certificate");
        eprintln!("skipped: no openssl command");
        return;
    }
    let cfg = std::fs::read_to_string(p.join("trapline.yml")).unwrap();
    std::fs::write(p.join("trapline.yml"), format!("{cfg}  tls: {{cert: cert.pem, key: key.pem}}\n")).unwrap();
    let d = Daemon::start(&p.join("trapline.yml"));
    let port = d
        .stderr()
        .lines()
        .find(|l| l.contains("http: serving"))
        .and_then(|l| l.split("addr=0.0.0.0:").nth(1))
        .map(|a| a.split_whitespace().next().unwrap().to_string())
        .unwrap_or_else(|| panic!("{}", d.stderr()));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let cert = reqwest::Certificate::from_pem(&std::fs::read(p.join("cert.pem")).unwrap()).unwrap();
    let client = reqwest::Client::builder().add_root_certificate(cert).build().unwrap();
    let (status, body) = rt.block_on(async {
        let r = client.get(format!("https://localhost:{port}/metrics")).bearer_auth(TOKEN).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    });
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("trapline_lines_total") || body.contains("# EOF"), "{body}");
    let login = rt.block_on(async {
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(p.join("cert.pem")).unwrap()).unwrap())
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
            .post(format!("https://localhost:{port}/login"))
            .form(&[("token", TOKEN)])
            .send()
            .await
            .unwrap()
    });
    let cookie = login.headers().get("set-cookie").unwrap().to_str().unwrap().to_string();
    assert!(cookie.contains("; Secure") && cookie.contains("HttpOnly"), "{cookie}");
    // Plain HTTP on the TLS port gets no answer.
    let (status, _) = request(&format!("127.0.0.1:{port}"), "/metrics", &format!("127.0.0.1:{port}"), Some(TOKEN));
    assert_eq!(status, 0, "no HTTP answer without TLS");
}
