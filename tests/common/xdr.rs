//! Helpers for the XDR tests: the sandbox as a child process (`trapline xdr sandbox`), a tiny
//! HTTP client for its inspection endpoints, and a temporary trapline setup with the shipped
//! templates.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::common::{bin, wait_for};

/// A running `trapline xdr sandbox`.
pub struct Sandbox {
    child: Option<Child>,
    pub addr: String,
}

impl Sandbox {
    /// Starts a sandbox on `listen` (e.g. `127.0.0.1:0`) keeping its data in `data`.
    pub fn start(listen: &str, data: &Path, extra: &[&str]) -> Sandbox {
        let mut child = Command::new(bin())
            .args(["xdr", "sandbox", "--listen", listen, "--data", data.to_str().unwrap()])
            .args(extra)
            .env("TRAPLINE_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start sandbox");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let addr = line.trim().rsplit("http://").next().unwrap().to_string();
        assert!(addr.contains(':'), "sandbox did not start: {line:?}");
        Sandbox { child: Some(child), addr }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn dump(&self) -> Value {
        let (status, body) = http(&self.addr, "GET", "/sandbox/dump", None);
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    pub fn entities(&self, kind: &str) -> Vec<Value> {
        self.dump()["entities"][kind].as_array().cloned().unwrap_or_default()
    }

    pub fn counter(&self, name: &str) -> u64 {
        self.dump()["counters"][name].as_u64().unwrap_or(0)
    }

    pub fn faults(&self, f: Value) {
        let (status, body) = http(&self.addr, "POST", "/sandbox/faults", Some(&f.to_string()));
        assert_eq!(status, 200, "{body}");
    }

    pub fn expire_tokens(&self) {
        let (status, _) = http(&self.addr, "POST", "/sandbox/expire-tokens", None);
        assert_eq!(status, 200);
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A minimal HTTP/1.1 request (Connection: close); returns status and body.
pub fn http(addr: &str, method: &str, path: &str, json: Option<&str>) -> (u16, String) {
    http_with(addr, method, path, json, &[])
}

/// [`http`] with extra headers.
pub fn http_with(addr: &str, method: &str, path: &str, json: Option<&str>, headers: &[(&str, &str)]) -> (u16, String) {
    let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let body = json.unwrap_or("");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{extra}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let body =
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(body) } else { body.to_string() };
    (status, body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((len, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(len.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A temporary trapline setup: one rule firing `xdr-incident` on `/phpmyadmin` + `pma_password=`,
/// the shipped templates, XDR pointed at `base_url`.
pub struct XdrEnv {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
}

impl XdrEnv {
    pub fn new(base_url: &str, extra_xdr: &str) -> XdrEnv {
        // Tests that are not about the per-incident import bound should not wait for it.
        let extra_xdr = if extra_xdr.contains("incident_rate_period") {
            extra_xdr.to_string()
        } else {
            format!("    incident_rate_period: 100ms\n{extra_xdr}")
        };
        let templates = Path::new(env!("CARGO_MANIFEST_DIR")).join("templates");
        let (dir, root) = crate::common::project(
            Some(
                "rules:\n  - id: t.pma\n    title: phpMyAdmin login attempt\n    severity: high\n    tags: [attack.t1110, attack.credential-access]\n    match: {all: [{field: path, contains: /phpmyadmin}, {field: query, contains: pma_password=}]}\n    actions: [log, xdr-incident]\n",
            ),
            &format!(
                "rules: [rules]\ntemplates: {}\nstate_dir: state\nsources:\n  - name: web\n    paths: [logs/access.log]\n    format: combined\n    start: beginning\nactions:\n  log: {{path: out/out.txt, format: json, console: false}}\n  xdr:\n    base_url: {base_url}\n    client_id: client-test\n    client_secret: s3cret-value\n    timeout: 2s\n{extra_xdr}variables:\n  target: {{hostname: honeypot-1, ip: 10.0.0.5, mac: \"00:11:22:33:44:55\"}}\n",
                templates.display()
            ),
        );
        XdrEnv { dir, root }
    }

    pub fn config(&self) -> PathBuf {
        self.root.join("trapline.yml")
    }

    pub fn log(&self) -> PathBuf {
        self.root.join("logs/access.log")
    }

    /// Pending outbox entries.
    pub fn pending(&self) -> usize {
        std::fs::read_dir(self.root.join("state/xdr/outbox"))
            .map(|d| d.filter_map(|e| e.ok()).filter(|e| e.file_name().to_string_lossy().ends_with(".json")).count())
            .unwrap_or(0)
    }

    pub fn failed(&self) -> usize {
        std::fs::read_dir(self.root.join("state/xdr/failed")).map(|d| d.count()).unwrap_or(0)
    }
}

/// Attack line `n` from `ip` (second `n`, so every line is distinct).
pub fn attack(ip: &str, n: u32) -> String {
    format!(
        "{ip} - - [10/Oct/2024:13:{:02}:{:02} +0000] \"GET /phpmyadmin/index.php?pma_username=root&pma_password=try{n} HTTP/1.1\" 200 512 \"-\" \"Mozilla/5.0\"",
        (n / 60) % 60,
        n % 60
    )
}

/// Waits until the sandbox holds `incidents` incidents and `sightings` sightings.
pub fn wait_delivered(sb: &Sandbox, incidents: usize, sightings: usize, timeout: Duration) -> bool {
    wait_for(timeout, || sb.entities("incidents").len() >= incidents && sb.entities("sightings").len() >= sightings)
}

/// Every sighting is `member-of` a stored incident, every external id is stored once, and the
/// counts are exact.
pub fn assert_exactly_once(sb: &Sandbox, incidents: usize, sightings: usize) {
    assert_exactly_once_in(&sb.dump(), incidents, sightings);
}

/// [`assert_exactly_once`] on what the sandbox held (its `/sandbox/dump`).
pub fn assert_exactly_once_in(d: &Value, incidents: usize, sightings: usize) {
    let inc = d["entities"]["incidents"].as_array().unwrap();
    let sig = d["entities"]["sightings"].as_array().unwrap();
    let rel = d["entities"]["relationships"].as_array().unwrap();
    assert_eq!(inc.len(), incidents, "incidents: {inc:#?}");
    assert_eq!(sig.len(), sightings, "sightings");
    assert_eq!(rel.len(), sightings, "one member-of per sighting");
    let mut xids = std::collections::HashSet::new();
    for e in inc.iter().chain(sig).chain(rel) {
        for x in e["external_ids"].as_array().unwrap() {
            assert!(xids.insert(x.as_str().unwrap().to_string()), "duplicate external id {x}");
        }
    }
    let inc_ids: std::collections::HashSet<&str> = inc.iter().map(|i| i["id"].as_str().unwrap()).collect();
    let sig_ids: std::collections::HashSet<&str> = sig.iter().map(|i| i["id"].as_str().unwrap()).collect();
    for r in rel {
        assert_eq!(r["relationship_type"], "member-of");
        assert!(inc_ids.contains(r["target_ref"].as_str().unwrap()), "dangling target_ref {r}");
        assert!(sig_ids.contains(r["source_ref"].as_str().unwrap()), "dangling source_ref {r}");
    }
}

/// A bearer token from the sandbox (form-encoded client-credentials request).
pub fn token(addr: &str, id: &str, secret: &str) -> String {
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
    let raw = "grant_type=client_credentials";
    let mut s = TcpStream::connect(addr).expect("connect");
    write!(
        s,
        "POST /iroh/oauth2/token HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: Basic {basic}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{raw}",
        raw.len()
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {resp}"));
    v["access_token"].as_str().expect("a token").to_string()
}
