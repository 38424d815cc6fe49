//! The dashboard in a real browser: headless Chromium driven over WebDriver (chromedriver),
//! against `trapline run` on loopback. Log in; a line appended to a tailed file appears in
//! the live feed within 2 s; a click on its row shows the whole detection, fetched by its
//! key; hostile text in it stays text and nothing runs; refused without
//! the token and without the CSRF token; the page renders with data (screenshot).
//!
//! Needs `chromium` and `chromium-driver` (Debian). Runs under libtest-mimic (`harness =
//! false`): without them the test is reported *ignored*, unless TRAPLINE_E2E_REQUIRED=1 (CI),
//! where it fails.

mod common;

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::http::exchange as http;
use common::{Daemon, append, project, wait_for};
use serde_json::{Value, json};

const RULE: &str = "rules:
  - id: t.xss
    title: script in the request
    severity: high
    class: xss
    formats: [combined]
    match: {field: request, transforms: [url_decode], contains: ['<script', 'onerror']}
";
const TOKEN: &str = "dashboard-test-token";
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// An access-log line of now: the dashboard's periods (1 h, 24 h, 7 d) are on event time.
fn access_line(ip: &str, _sec: u32, target: &str, status: u16) -> String {
    let t = chrono::Utc::now().format("%d/%b/%Y:%H:%M:%S +0000");
    format!("{ip} - - [{t}] \"GET {target} HTTP/1.1\" {status} 123 \"-\" \"Mozilla/5.0\"")
}

/// A WebDriver session on a chromedriver of our own.
struct Browser {
    driver: Child,
    addr: String,
    session: String,
}

impl Browser {
    fn start() -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let addr = format!("127.0.0.1:{port}");
        assert!(wait_for(Duration::from_secs(20), || TcpStream::connect(&addr).is_ok()), "chromedriver did not start");
        let mut b = Browser { driver, addr, session: String::new() };
        let caps = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1000"]
        }}}});
        let v = b.call("POST", "/session", Some(caps));
        b.session = v["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {v}")).to_string();
        b
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        // WebDriver wants a JSON object as the body of every POST, even an empty one.
        let body =
            body.map(|b| b.to_string()).unwrap_or_else(|| if method == "POST" { "{}".into() } else { String::new() });
        let (_, text) = http(&self.addr, method, path, &[("Content-Type", "application/json")], &body);
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: {e}: {text}"));
        v["value"].clone()
    }

    fn s(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    fn go(&self, url: &str) {
        self.call("POST", &self.s("/url"), Some(json!({"url": url})));
    }

    fn find(&self, css: &str) -> Option<String> {
        let v = self.call("POST", &self.s("/element"), Some(json!({"using": "css selector", "value": css})));
        v[ELEMENT].as_str().map(str::to_string)
    }

    fn text(&self, css: &str) -> String {
        match self.find(css) {
            Some(e) => {
                self.call("GET", &self.s(&format!("/element/{e}/text")), None).as_str().unwrap_or("").to_string()
            }
            None => String::new(),
        }
    }

    fn script(&self, js: &str) -> Value {
        self.call("POST", &self.s("/execute/sync"), Some(json!({"script": js, "args": []})))
    }

    /// The text of an open alert, if any.
    fn alert(&self) -> Option<String> {
        let v = self.call("GET", &self.s("/alert/text"), None);
        v.as_str().map(str::to_string)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = http(&self.addr, "DELETE", &format!("/session/{}", self.session), &[], "");
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Whether the browser and its driver are installed.
fn browser_missing() -> Option<&'static str> {
    let have = |b: &str| {
        Command::new("sh").args(["-c", &format!("command -v {b}")]).output().is_ok_and(|o| o.status.success())
    };
    (!have("chromedriver") || !have("chromium"))
        .then_some("chromium / chromedriver missing (apt-get install chromium chromium-driver)")
}

fn main() {
    let args = libtest_mimic::Arguments::from_args();
    let required = std::env::var("TRAPLINE_E2E_REQUIRED").is_ok_and(|v| v == "1");
    let missing = browser_missing();
    // Required but missing: not ignored, so that the trial runs and fails with the reason.
    let ignored = missing.is_some() && !required;
    if let Some(msg) = missing.filter(|_| ignored) {
        eprintln!("ignored: dashboard: {msg}");
    }
    let trial = libtest_mimic::Trial::test("the_dashboard_in_a_real_browser", move || match missing {
        None => {
            the_dashboard_in_a_real_browser();
            Ok(())
        }
        Some(msg) => Err(format!("TRAPLINE_E2E_REQUIRED=1 but {msg}").into()),
    })
    .with_ignored_flag(ignored);
    libtest_mimic::run(&args, vec![trial]).exit();
}

fn the_dashboard_in_a_real_browser() {
    let b = Browser::start();
    let config = "rules: [rules]\nstate_dir: state\nactions:\n  log: {path: out.txt}\nsources:\n  - name: web\n    paths: [logs/access.log]\n  - name: site\n    type: webroot\n    paths: [www]\nhttp:\n  listen: \"127.0.0.1:0\"\n  token_file: token.txt\n";
    let (_d, p) = project(Some(RULE), config);
    std::fs::write(p.join("token.txt"), TOKEN).unwrap();
    std::fs::write(p.join("logs/access.log"), "").unwrap();
    std::fs::create_dir_all(p.join("www")).unwrap();
    std::fs::write(p.join("www/index.html"), "<h1>welcome</h1>\n").unwrap();
    let d = Daemon::start(&p.join("trapline.yml"));
    assert!(wait_for(Duration::from_secs(10), || d.stderr().contains("web root ready")), "{}", d.stderr());
    let addr = d.http_addr();
    let base = format!("http://{addr}");
    // Some history first, so the page has data to draw.
    append(
        &p.join("logs/access.log"),
        &[
            access_line("198.51.100.20", 1, "/a?q=%3Cscript%3Ex%3C/script%3E", 200),
            access_line("198.51.100.21", 2, "/b?q=%3Cscript%3Ey%3C/script%3E", 404),
        ],
    );
    assert!(wait_for(Duration::from_secs(5), || common::detections(&p.join("out.txt")).len() == 2));

    // Not logged in: the log-in page. A wrong token: refused.
    b.go(&base);
    assert!(b.find("#token").is_some(), "the log-in page");
    let t = b.find("#token").unwrap();
    b.call("POST", &b.s(&format!("/element/{t}/value")), Some(json!({"text": "wrong"})));
    b.call("POST", &b.s(&format!("/element/{}/click", b.find("#submit").unwrap())), None);
    assert!(b.find("#feed").is_none(), "a wrong token does not log in");
    // The right one.
    b.go(&format!("{base}/login"));
    let t = b.find("#token").unwrap();
    b.call("POST", &b.s(&format!("/element/{t}/value")), Some(json!({"text": TOKEN})));
    b.call("POST", &b.s(&format!("/element/{}/click", b.find("#submit").unwrap())), None);
    assert!(
        wait_for(Duration::from_secs(10), || b.text("#feed").contains("198.51.100.21")),
        "the history is shown: at {} the page says {}",
        b.call("GET", &b.s("/url"), None),
        b.script("return document.body.innerText")
    );
    assert!(wait_for(Duration::from_secs(10), || b.text("#attackers").contains("198.51.100.20")), "top attackers");

    // A hostile line appended to the tailed file reaches the live feed within 2 s, as text.
    let hostile = "/x?a=%3Cscript%3Ealert(1)%3C/script%3E&b=%22%3E%3Cimg%20src=x%20onerror=alert(1)%3E";
    let appended = Instant::now();
    append(&p.join("logs/access.log"), &[access_line("203.0.113.99", 3, hostile, 200)]);
    assert!(wait_for(Duration::from_secs(5), || b.text("#feed").contains("203.0.113.99")), "{}", d.stderr());
    let took = appended.elapsed();
    assert!(took < Duration::from_secs(2), "live feed took {took:?}");
    assert_eq!(b.alert(), None, "nothing executed");
    let shown = b.text("#feed");
    assert!(shown.contains(&hostile[..20]), "the request is shown as logged: {shown}");
    assert_eq!(b.script("return document.querySelectorAll('#feed img, #feed script').length"), json!(0));
    // The feed carries rows only: a click on one fetches the whole detection (the raw line,
    // with its user agent, which no row carries) from /api/detection.
    b.script(
        "for (const tr of document.querySelectorAll('#feed tr')) \
           if (tr.children[3].textContent === '203.0.113.99') { tr.lastChild.click(); break; }",
    );
    let shown = || b.script("const d = document.getElementById('detail'); return d.hidden ? '' : d.textContent");
    assert!(
        wait_for(Duration::from_secs(5), || shown()
            .as_str()
            .is_some_and(|t| t.contains("\"line\"") && t.contains("Mozilla/5.0") && t.contains("onerror=alert(1)"))),
        "{}",
        shown()
    );
    assert_eq!(
        b.script("return performance.getEntriesByType('resource').filter((e) => e.name.includes('/api/detection?id=')).length > 0"),
        json!(true),
        "fetched from the endpoint"
    );
    assert_eq!(b.alert(), None, "nothing executed");
    assert_eq!(b.script("return document.querySelectorAll('#detail img, #detail script').length"), json!(0));
    // Drill down: the attacker's page shows the raw line.
    b.script("for (const td of document.querySelectorAll('#feed td.link')) if (td.textContent === '203.0.113.99') { td.click(); break; }");
    assert!(wait_for(Duration::from_secs(5), || b.text("#feed-title").contains("203.0.113.99")));
    let detail = || {
        b.script("document.querySelector('#feed tr td:last-child').click()");
        b.script("const d = document.getElementById('detail'); return d.hidden ? '' : d.textContent")
    };
    assert!(
        wait_for(Duration::from_secs(5), || detail().as_str().is_some_and(|t| t.contains("onerror=alert(1)"))),
        "{}",
        detail()
    );
    assert_eq!(b.alert(), None, "nothing executed");
    // The attacker page: its classes, rules and raw lines, as text.
    assert!(wait_for(Duration::from_secs(5), || b.text("#subject-title").contains("Attacker 203.0.113.99")));
    assert!(
        wait_for(Duration::from_secs(5), || {
            let page = b.text("#subject-body");
            page.contains("xss") && page.contains("t.xss") && page.contains("onerror=alert(1)")
        }),
        "{}",
        b.text("#subject-body")
    );
    assert_eq!(b.script("return document.querySelectorAll('#subject img, #subject script').length"), json!(0));
    // From there, the rule page: the rule as loaded and what evaluating it cost.
    b.script("for (const td of document.querySelectorAll('#subject td.link')) if (td.textContent === 't.xss') { td.click(); break; }");
    assert!(
        wait_for(Duration::from_secs(5), || {
            let page = b.text("#subject-body");
            b.text("#subject-title").starts_with("Rule t.xss: ") && page.contains("per evaluation")
        }),
        "{}",
        b.text("#subject")
    );
    assert_eq!(b.alert(), None, "nothing executed");
    // The attacker page folds in detections the feed brought and the history (written in
    // batches) does not hold yet; their raw lines, which rows do not carry, are fetched. Drawn
    // here with a feed row of this address as such a detection, whatever the history holds by now.
    let fed = b.script(
        "const r = Object.assign({}, state.live.find((d) => d.client_ip === '203.0.113.99')); \
         const had = 'line' in r; delete r.line; \
         document.getElementById('subject-body').replaceChildren(); \
         drawAttacker('203.0.113.99', [r], [r]); return had",
    );
    assert_eq!(fed, json!(false), "a feed row carries no raw line");
    assert!(
        wait_for(Duration::from_secs(5), || {
            let page = b.text("#subject-body");
            b.text("#subject-title") == "Attacker 203.0.113.99"
                && page.contains("Mozilla/5.0")
                && page.contains("onerror=alert(1)")
        }),
        "{}",
        b.text("#subject")
    );
    assert_eq!(b.script("return document.querySelectorAll('#subject img, #subject script').length"), json!(0));
    assert_eq!(b.alert(), None, "nothing executed");

    // A web-root change, accepted from the page (recorded as the token's log-in).
    std::fs::write(p.join("www/index.html"), "<h1>defaced</h1>\n").unwrap();
    b.script("refreshWebroot()");
    assert!(
        wait_for(Duration::from_secs(15), || {
            b.script("refreshWebroot()");
            b.find("#webroot button.accept").is_some()
        }),
        "{}",
        b.text("#webroot-panel")
    );
    b.script("document.querySelector('#webroot button.accept').click()");
    assert!(
        wait_for(Duration::from_secs(5), || b.text("#webroot").contains("accepted by token")),
        "{}",
        b.text("#webroot-panel")
    );

    // Without the token, or with the session but without the CSRF token: refused.
    assert_eq!(http(&addr, "GET", "/api/detections", &[], "").0, 401);
    let cookie = b.call("GET", &b.s("/cookie/trapline_session"), None);
    let cookie = format!("trapline_session={}", cookie["value"].as_str().unwrap());
    assert!(cookie.len() > 20, "{cookie}");
    assert_eq!(http(&addr, "GET", "/api/detections", &[("Cookie", &cookie)], "").0, 200, "the session reads");
    assert_eq!(http(&addr, "POST", "/logout", &[("Cookie", &cookie)], "").0, 403, "a POST without the CSRF token");
    assert_eq!(http(&addr, "POST", "/logout", &[("Cookie", &cookie), ("X-CSRF-Token", "nope")], "").0, 403);

    // The page renders with data: a screenshot of some substance. (The history is written in
    // batches: a page loaded before that shows what the feed brings from then on.)
    assert!(wait_for(Duration::from_secs(10), || {
        http(&addr, "GET", "/api/detections?ip=203.0.113.99", &[("Authorization", &format!("Bearer {TOKEN}"))], "")
            .1
            .contains("203.0.113.99")
    }));
    b.go(&base);
    assert!(
        wait_for(Duration::from_secs(20), || b.text("#feed").contains("203.0.113.99")),
        "at {}: {}\nbrowser log: {}\n{}",
        b.call("GET", &b.s("/url"), None),
        b.script("return document.body.innerText"),
        b.call("POST", &b.s("/se/log"), Some(json!({"type": "browser"}))),
        d.stderr()
    );
    std::thread::sleep(Duration::from_millis(500));
    let png = b.call("GET", &b.s("/screenshot"), None);
    use base64::Engine;
    let png = base64::engine::general_purpose::STANDARD.decode(png.as_str().unwrap()).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 20_000, "{} bytes", png.len());
    let out = std::env::var_os("TRAPLINE_SCREENSHOT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png"));
    std::fs::write(&out, &png).unwrap();
    eprintln!("screenshot: {}", out.display());
}
