//! Alerts a person can act on, measured with real tools and real traffic:
//!
//! - **live**: Debian's `apache2` attacked by real `nmap` (service detection and HTTP
//!   scripts) and real `wfuzz` (directory discovery, SQL injection list, phpMyAdmin log-in
//!   brute force), while `trapline run` tails apache's access log with the shipped rules and
//!   templates and sends incidents to the local XDR sandbox; then real benign traffic: `wget`
//!   crawling the whole Apache manual (Debian's apache2-doc) as a browser, through
//!   `trapline scan`;
//! - **corpus scanners**: the real sqlmap, dirb, hydra and whatweb logs of the shared corpus
//!   through the same `trapline run` setup;
//! - **corpus benign**: the real application traffic of the corpus's CrowdSec `*-whitelist`
//!   folders through `trapline scan`.
//!
//! Each run is one attacker (one tool, one address). What is asserted is what the operator
//! sees: every attacker is flagged; at most [`MAX_CONSOLE_PER_ATTACKER_HOUR`] console lines
//! per attacker and hour; exactly one XDR incident per attacker whose detections ask for one
//! (none for the others), with one sighting per such detection; and on benign traffic at most
//! 0.1 % of lines flagged at medium severity or above and 1 % at any severity. The figures are
//! printed; the README's "Measured" table is made of them.
//!
//! The live trial needs apache2, apache2-doc, nmap, wfuzz and wget: it is reported as ignored
//! without them, unless `TRAPLINE_E2E_REQUIRED=1` (as in CI), where it fails instead. The
//! corpus trials need the corpus (`$TRAPLINE_CORPUS`, default `../shared/corpus` beside the
//! repository) and are reported as ignored, with the reason, when it is absent.

mod common;
#[path = "common/xdr.rs"]
mod xdr_common;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::apache::{self, Apache};
use common::{Daemon, detections, wait_for};
use serde_json::Value;
use xdr_common::Sandbox;

/// What a person can still read and act on, per attacker and hour.
const MAX_CONSOLE_PER_ATTACKER_HOUR: usize = 10;
/// Benign traffic: lines flagged at severity medium or above, and at any severity.
const MAX_BENIGN_MEDIUM: f64 = 0.001;
const MAX_BENIGN_ANY: f64 = 0.01;

const WORDLISTS: &str = "/usr/share/wfuzz/wordlist";
/// Debian's apache2-doc: the Apache manual in HTML, a real site for a benign crawl.
const MANUAL: &str = "/usr/share/doc/apache2-doc/manual";
const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
/// The scanner logs of the corpus, one tool each (paths relative to the corpus).
const SCANNER_LOGS: &[(&str, &str)] = &[
    ("sqlmap", "scanner-traffic/sqlmap.access.log"),
    ("dirb", "scanner-traffic/dirb.access.log"),
    ("hydra", "scanner-traffic/hydra-phpmyadmin.access.log"),
    ("whatweb", "scanner-traffic/whatweb.access.log"),
    // 77 requests of a real Nikto run (common format), kept by the CrowdSec hub as a test.
    ("nikto (excerpt)", "crowdsec-hub-tests/apache-http-probing/apache-http-probing.log"),
];

fn main() {
    let args = libtest_mimic::Arguments::from_args();
    let required = std::env::var("TRAPLINE_E2E_REQUIRED").is_ok_and(|v| v == "1");
    let mut trials = Vec::new();

    let live = live_prerequisites();
    // Required but missing: not ignored, so that the trial runs and fails with the reason.
    let ignored = live.is_err() && !required;
    if let Err(msg) = &live
        && ignored
    {
        eprintln!("ignored: live_nmap_wfuzz_against_apache: {msg}");
    }
    trials.push(
        libtest_mimic::Trial::test("live_nmap_wfuzz_against_apache", move || match live {
            Ok(()) => {
                live_nmap_wfuzz_against_apache();
                Ok(())
            }
            Err(msg) if required => Err(format!("TRAPLINE_E2E_REQUIRED=1 but {msg}").into()),
            Err(msg) => Err(msg.into()),
        })
        .with_ignored_flag(ignored),
    );

    // The corpus is shared data beside the repository, never part of it: without it these
    // trials cannot run, whatever the environment asks.
    let corpus = corpus_dir();
    for (name, run) in [
        ("corpus_scanner_traffic", corpus_scanner_traffic as fn(&Path)),
        ("corpus_benign_traffic", corpus_benign_traffic as fn(&Path)),
    ] {
        let c = corpus.clone();
        if let Err(msg) = &c {
            eprintln!("ignored: {name}: {msg}");
        }
        let ignored = c.is_err();
        trials.push(
            libtest_mimic::Trial::test(name, move || match c {
                Ok(dir) => {
                    run(&dir);
                    Ok(())
                }
                Err(msg) => Err(msg.into()),
            })
            .with_ignored_flag(ignored),
        );
    }
    libtest_mimic::run(&args, trials).exit();
}

fn live_prerequisites() -> Result<(), String> {
    let mut missing = apache::missing();
    if which("nmap").is_none() {
        missing.push("nmap");
    }
    if which("wfuzz").is_none() || !Path::new(WORDLISTS).join("general/common.txt").exists() {
        missing.push("wfuzz");
    }
    if which("wget").is_none() {
        missing.push("wget");
    }
    // A dpkg path-exclude on /usr/share/doc would leave the package installed but empty.
    if !Path::new(MANUAL).join("en/index.html").exists() {
        missing.push("apache2-doc (its manual under /usr/share/doc)");
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("{} not installed (apt-get install apache2 apache2-doc nmap wfuzz wget)", missing.join(", ")))
    }
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(tool)).find(|p| p.is_file())
}

/// `$TRAPLINE_CORPUS`, else `../shared/corpus` beside the repository.
fn corpus_dir() -> Result<PathBuf, String> {
    let dir = match std::env::var_os("TRAPLINE_CORPUS") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus"),
    };
    if dir.join("scanner-traffic").is_dir() && dir.join("crowdsec-hub-tests").is_dir() {
        Ok(dir)
    } else {
        Err(format!("no corpus at {} (set TRAPLINE_CORPUS to its directory)", dir.display()))
    }
}

// ------------------------------------------------------------------------------ live tools

/// The site apache serves: pages a crawler finds, a search page, and a phpMyAdmin login page
/// (so that the brute force hits something that exists).
const SITE: &[&str] = &["index.html", "about.html", "search", "login.html", "phpmyadmin/index.php", "robots.txt"];

fn live_nmap_wfuzz_against_apache() {
    let mut rows = Vec::new();

    let nmap = Session::with_apache();
    let port = nmap.port();
    tool(
        "nmap",
        &[
            "-n",
            "-Pn",
            // A connect scan needs no raw sockets, and what reaches apache's log is the same.
            "-sT",
            "-p",
            &port.to_string(),
            "-sV",
            "--script",
            "http-enum,http-headers,http-methods,http-title",
            "--host-timeout",
            "5m",
            "127.0.0.1",
        ],
    );
    rows.push(nmap.finish("nmap -sT -sV --script http-enum,..."));

    // One attacker, the way one works: find what is there, inject, then guess passwords.
    let wfuzz = Session::with_apache();
    let base = format!("http://127.0.0.1:{}", wfuzz.port());
    let list = |l: &str| format!("{WORDLISTS}/{l}");
    tool("wfuzz", &["-w", &list("general/common.txt"), "--hc", "404", &format!("{base}/FUZZ")]);
    tool("wfuzz", &["-w", &list("Injections/SQL.txt"), &format!("{base}/search?q=FUZZ")]);
    tool(
        "wfuzz",
        &[
            "-w",
            &list("others/common_pass.txt"),
            "-d",
            "pma_username=root&pma_password=FUZZ",
            &format!("{base}/phpmyadmin/index.php"),
        ],
    );
    rows.push(wfuzz.finish("wfuzz (common.txt, SQL.txt, phpMyAdmin log-in)"));

    print_table("live: real tools against apache2", &rows);
    for r in &rows {
        r.assert_actionable();
    }
    // The brute force must have reached XDR, or the incident figures prove nothing.
    assert_eq!(rows[1].incidents, 1, "wfuzz's phpMyAdmin brute force made no XDR incident");

    benign_crawl();
}

/// Real benign traffic: a visitor's browser walking the whole Apache manual (every page in
/// every language, with its images), as `wget --recursive` does it with a browser's
/// User-Agent. A library's own User-Agent is flagged (info) on purpose, and is not what a
/// visitor sends.
fn benign_crawl() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let m = apache::MODULES;
    let apache = Apache::start_with(
        dir.path(),
        &["index.html"],
        &format!(
            "LoadModule alias_module {m}/mod_alias.so\nAlias /manual \"{MANUAL}\"\n<Directory \"{MANUAL}\">\n    Require all granted\n</Directory>\n"
        ),
    );
    let out = Command::new("wget")
        .args([
            "--recursive",
            "--level=inf",
            "--no-parent",
            "--page-requisites",
            "--no-verbose",
            "--user-agent",
            FIREFOX,
        ])
        .arg("--directory-prefix")
        .arg(dir.path().join("crawl"))
        .arg(format!("http://127.0.0.1:{}/manual/", apache.port))
        .stdin(Stdio::null())
        .output()
        .expect("run wget");
    // 8: some link answered an error (the manual has a few dead ones); anything else failed.
    assert!(
        matches!(out.status.code(), Some(0 | 8)),
        "wget failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    settled(&apache.access_log);
    let f =
        benign_shares("live: wget crawl of the Apache manual (apache2-doc)", std::slice::from_ref(&apache.access_log));
    // A crawl that fetched next to nothing would measure nothing.
    assert!(f.lines >= 500, "the crawl made only {} requests", f.lines);
    f.assert_within_targets();
}

/// Waits until `log` stops growing: apache logs a request after answering it, so the last
/// lines may land just after the tool has exited.
fn settled(log: &Path) {
    let size = || std::fs::metadata(log).map(|m| m.len()).unwrap_or(0);
    let mut last = size();
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let now = size();
        if now == last {
            return;
        }
        last = now;
    }
}

/// Runs a tool to its end; its output goes to a file only shown when it fails.
fn tool(name: &str, args: &[&str]) {
    let out = Command::new(name).args(args).stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("run {name}: {e}"));
    assert!(
        out.status.success(),
        "{name} {args:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

// ------------------------------------------------------------------------------ corpus

fn corpus_scanner_traffic(corpus: &Path) {
    let mut rows = Vec::new();
    for (name, file) in SCANNER_LOGS {
        let src = corpus.join(file);
        let session = Session::with_log(&std::fs::read(&src).unwrap_or_else(|e| panic!("{}: {e}", src.display())));
        rows.push(session.finish(name));
    }
    print_table("corpus: real scanner logs", &rows);
    for r in &rows {
        r.assert_actionable();
    }
}

fn corpus_benign_traffic(corpus: &Path) {
    let hub = corpus.join("crowdsec-hub-tests");
    let mut logs: Vec<PathBuf> = std::fs::read_dir(&hub)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with("-whitelist"))
        .flat_map(|e| std::fs::read_dir(e.path()).unwrap().filter_map(|f| f.ok()).map(|f| f.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    logs.sort();
    assert!(!logs.is_empty(), "no *-whitelist logs under {}", hub.display());
    let label = format!("corpus: real benign traffic ({} logs of CrowdSec *-whitelist tests)", logs.len());
    benign_shares(&label, &logs).assert_within_targets();
}

/// Lines of benign logs flagged by `trapline scan` with the shipped rules.
struct Benign {
    label: String,
    lines: usize,
    /// (file, line number) flagged at severity medium or above, and at any severity.
    medium: BTreeSet<(String, u64)>,
    any: BTreeSet<(String, u64)>,
    by_rule: BTreeMap<String, usize>,
}

fn benign_shares(label: &str, logs: &[PathBuf]) -> Benign {
    let text: Vec<String> = logs.iter().map(|l| std::fs::read_to_string(l).unwrap()).collect();
    let all: usize = text.iter().map(|t| t.lines().count()).sum();
    // Blank lines (one log ends with one) are neither traffic nor flagged.
    let lines: usize = text.iter().map(|t| t.lines().filter(|l| !l.trim().is_empty()).count()).sum();
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    let out = Command::new(common::bin())
        .args(["scan", "--json", "--rules", rules.to_str().unwrap(), "--format", "combined"])
        .args(logs)
        .output()
        .expect("run trapline scan");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Every line was read and parsed: a line that does not parse would escape most rules and
    // flatter the figures.
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let summary = format!("{all} lines ({} unparsed)", all - lines);
    assert!(
        stderr.lines().any(|l| l.starts_with(&summary)),
        "{label}: the scan's summary is not `{summary}`:\n{stderr}"
    );
    // A line is flagged once, whatever number of rules matched it.
    let mut b = Benign {
        label: label.to_string(),
        lines,
        medium: BTreeSet::new(),
        any: BTreeSet::new(),
        by_rule: BTreeMap::new(),
    };
    for d in stdout.lines().filter(|l| l.starts_with('{')) {
        let d: Value = serde_json::from_str(d).unwrap();
        let at = (d["source"]["path"].as_str().unwrap().to_string(), d["source"]["line_number"].as_u64().unwrap());
        *b.by_rule.entry(d["rule"]["id"].as_str().unwrap().to_string()).or_default() += 1;
        if matches!(d["rule"]["severity"].as_str(), Some("medium" | "high" | "critical")) {
            b.medium.insert(at.clone());
        }
        b.any.insert(at);
    }
    eprintln!(
        "\n{label}: {lines} lines; flagged at medium or above: {} ({:.2} %), at any severity: {} ({:.2} %); detections per rule: {:?}",
        b.medium.len(),
        100.0 * b.share(b.medium.len()),
        b.any.len(),
        100.0 * b.share(b.any.len()),
        b.by_rule,
    );
    b
}

impl Benign {
    fn share(&self, n: usize) -> f64 {
        n as f64 / self.lines as f64
    }

    fn assert_within_targets(&self) {
        let label = &self.label;
        assert!(self.lines > 0, "{label}: no lines");
        assert!(
            self.share(self.medium.len()) <= MAX_BENIGN_MEDIUM,
            "{label}: benign lines flagged at medium or above: {:?} ({:?})",
            self.medium,
            self.by_rule
        );
        assert!(
            self.share(self.any.len()) <= MAX_BENIGN_ANY,
            "{label}: benign lines flagged: {:?} ({:?})",
            self.any,
            self.by_rule
        );
    }
}

// ------------------------------------------------------------------------------ a measured run

/// One attacker's run: a log (apache's, or a copy of a corpus log), `trapline run` tailing it
/// from the beginning with the shipped rules and templates, console on, XDR to a sandbox.
struct Session {
    daemon: Daemon,
    sandbox: Sandbox,
    // Declared after the daemon: apache stops after trapline, and the directory goes last.
    apache: Option<Apache>,
    root: PathBuf,
    log: PathBuf,
    started: Instant,
    _dir: tempfile::TempDir,
}

impl Session {
    fn with_apache() -> Session {
        let dir = tempfile::tempdir().unwrap();
        // Apache's workers run as www-data when we are root: they must reach the DocumentRoot.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let apache = Apache::start(dir.path(), SITE);
        let log = apache.access_log.clone();
        Session::start(dir, log, Some(apache))
    }

    fn with_log(content: &[u8]) -> Session {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("logs/access.log");
        std::fs::create_dir_all(log.parent().unwrap()).unwrap();
        std::fs::write(&log, content).unwrap();
        Session::start(dir, log, None)
    }

    fn start(dir: tempfile::TempDir, log: PathBuf, apache: Option<Apache>) -> Session {
        let root = dir.path().to_path_buf();
        let sandbox = Sandbox::start("127.0.0.1:0", &root.join("sandbox.json"), &[]);
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        // The shipped trapline.yml, pointed at this log, this directory and this sandbox.
        let config = root.join("trapline/trapline.yml");
        std::fs::create_dir_all(config.parent().unwrap()).unwrap();
        std::fs::write(
            &config,
            format!(
                "rules: [{rules}]\ntemplates: {templates}\nstate_dir: {root}/state\ntimezone: UTC\nsources:\n  - name: web\n    paths: [{log}]\n    format: combined\n    start: beginning\nactions:\n  log: {{path: {root}/out/out.txt, format: json, console: true}}\n  xdr:\n    base_url: {sb}\n    client_id: sandbox\n    client_secret: sandbox\n    window: 1h\n    group_by: [client_ip]\n",
                rules = repo.join("rules").display(),
                templates = repo.join("templates").display(),
                root = root.display(),
                log = log.display(),
                sb = sandbox.url(),
            ),
        )
        .unwrap();
        let daemon = Daemon::start(&config);
        Session { daemon, sandbox, apache, root, log, started: Instant::now(), _dir: dir }
    }

    fn port(&self) -> u16 {
        self.apache.as_ref().unwrap().port
    }

    /// Waits until trapline has read the whole log and delivered everything to XDR, stops it
    /// (which closes the attackers' activities) and collects the figures.
    fn finish(mut self, tool: &str) -> Figures {
        settled(&self.log);
        let log_lines = std::fs::read_to_string(&self.log).unwrap().lines().count();
        let status = self.root.join("state/status.json");
        let read = || -> u64 {
            std::fs::read_to_string(&status)
                .ok()
                .and_then(|s| serde_json::from_str::<Value>(&s).ok())
                .and_then(|v| v["lines"].as_u64())
                .unwrap_or(0)
        };
        assert!(
            wait_for(Duration::from_secs(120), || read() >= log_lines as u64),
            "{tool}: trapline read {} of {log_lines} lines:\n{}",
            read(),
            self.daemon.stderr()
        );
        let outbox = self.root.join("state/xdr/outbox");
        let pending = || std::fs::read_dir(&outbox).map(|d| d.count()).unwrap_or(0);
        assert!(
            wait_for(Duration::from_secs(60), || pending() == 0),
            "{tool}: {} XDR deliveries still pending:\n{}",
            pending(),
            self.daemon.stderr()
        );
        let wall = self.started.elapsed();
        let took = self.daemon.signal("TERM");
        assert!(took < Duration::from_secs(5), "{tool}: SIGTERM took {took:?}");
        let stderr = self.daemon.stderr();
        assert!(!stderr.contains("panicked"), "{tool}: trapline panicked:\n{stderr}");

        let console: Vec<String> = self.daemon.stdout().lines().map(str::to_string).collect();
        let detections = detections(&self.root.join("out/out.txt"));
        let log_text = std::fs::read_to_string(&self.log).unwrap();
        let attackers: BTreeSet<String> =
            log_text.lines().filter_map(|l| l.split(' ').next()).map(str::to_string).collect();
        let xdr_detections: Vec<&Value> = detections
            .iter()
            .filter(|d| d["actions"].as_array().is_some_and(|a| a.iter().any(|x| x == "xdr-incident")))
            .collect();
        let incidents = self.sandbox.entities("incidents");
        Figures {
            tool: tool.to_string(),
            requests: log_lines,
            attackers,
            console,
            detections: detections.len(),
            xdr_attackers: xdr_detections
                .iter()
                .filter_map(|d| d["fields"]["client_ip"].as_str())
                .map(str::to_string)
                .collect(),
            xdr_detections: xdr_detections.len(),
            incident_titles: incidents.iter().filter_map(|i| i["title"].as_str()).map(str::to_string).collect(),
            incidents: incidents.len(),
            sightings: self.sandbox.entities("sightings").len(),
            imports: self.sandbox.counter("imports"),
            attack_secs: attack_secs(&log_text),
            wall,
            sandbox: self.sandbox.dump(),
        }
    }
}

/// What one run produced, as the operator sees it.
struct Figures {
    tool: String,
    requests: usize,
    /// Client addresses in the log: every one is an attacker (each log is one tool's).
    attackers: BTreeSet<String>,
    /// The console lines of `trapline run` (roll-ups).
    console: Vec<String>,
    detections: usize,
    /// Attackers with a detection whose rule asks for an XDR incident.
    xdr_attackers: BTreeSet<String>,
    xdr_detections: usize,
    incident_titles: Vec<String>,
    incidents: usize,
    sightings: usize,
    imports: u64,
    /// From the first line to the last, on the log's clock.
    attack_secs: i64,
    /// From trapline's start until it had read everything and delivered to XDR.
    wall: Duration,
    sandbox: Value,
}

impl Figures {
    /// Console lines per (attacker, hour of the log's clock), from the roll-up lines
    /// (`<time> <SEVERITY> attack started: client_ip=... classes=...`).
    fn console_per_attacker_hour(&self) -> BTreeMap<(String, String), usize> {
        let mut m = BTreeMap::new();
        for l in &self.console {
            let hour = l.get(..13).unwrap_or_default().to_string();
            let who = l
                .split_once(": client_ip=")
                .and_then(|(_, rest)| rest.split(' ').next())
                .unwrap_or_else(|| panic!("{}: console line without an attacker: {l}", self.tool));
            *m.entry((who.to_string(), hour)).or_default() += 1;
        }
        m
    }

    fn max_console_per_attacker_hour(&self) -> usize {
        self.console_per_attacker_hour().values().copied().max().unwrap_or(0)
    }

    /// Imports per minute of the attack (an attack shorter than a minute counts as one): the
    /// load on XDR's API, whose limit is per organisation and hour.
    fn imports_per_minute(&self) -> f64 {
        self.imports as f64 / (self.attack_secs as f64 / 60.0).max(1.0)
    }

    /// Incidents naming `ip` as the attacker (the templates title them "... from <ip>...").
    fn incidents_of(&self, ip: &str) -> usize {
        let from = format!("from {ip}");
        self.incident_titles
            .iter()
            .filter(|t| {
                t.match_indices(&from).any(|(i, _)| !t[i + from.len()..].starts_with(|c: char| c.is_ascii_digit()))
            })
            .count()
    }

    fn assert_actionable(&self) {
        let tool = &self.tool;
        let per = self.console_per_attacker_hour();
        let flagged: BTreeSet<&String> = per.keys().map(|(who, _)| who).collect();
        for a in &self.attackers {
            assert!(flagged.contains(a), "{tool}: attacker {a} not flagged on the console: {:#?}", self.console);
        }
        assert!(
            self.max_console_per_attacker_hour() <= MAX_CONSOLE_PER_ATTACKER_HOUR,
            "{tool}: too many console lines per attacker and hour {per:?}:\n{}",
            self.console.join("\n")
        );
        for a in &self.attackers {
            let want = usize::from(self.xdr_attackers.contains(a));
            assert_eq!(self.incidents_of(a), want, "{tool}: XDR incidents of {a}: {:?}", self.incident_titles);
        }
        // Every incident belongs to one of the log's attackers, and every detection that asks
        // for XDR became exactly one sighting (no duplicates, none lost).
        xdr_common::assert_exactly_once_in(&self.sandbox, self.incidents, self.xdr_detections);
        assert_eq!(self.incidents, self.xdr_attackers.len(), "{tool}: {:?}", self.incident_titles);
        if self.incidents > 0 {
            assert!(self.imports >= 1, "{tool}: incidents without an import");
        }
        assert!(self.imports as usize <= self.sightings.max(1), "{tool}: more imports than sightings: batching lost");
    }
}

/// Seconds from the first line's time to the last's (combined format: `[10/Oct/2024:13:55:36 +0000]`).
fn attack_secs(log: &str) -> i64 {
    let time = |l: &str| {
        let t = l.split_once('[').and_then(|(_, r)| r.split_once(']')).map(|(t, _)| t)?;
        chrono::DateTime::parse_from_str(t, "%d/%b/%Y:%H:%M:%S %z").ok()
    };
    let times: Vec<_> = log.lines().filter_map(time).collect();
    match (times.iter().min(), times.iter().max()) {
        (Some(a), Some(b)) => (*b - *a).num_seconds(),
        _ => 0,
    }
}

fn print_table(title: &str, rows: &[Figures]) {
    eprintln!("\n{title}");
    eprintln!(
        "| tool | requests | attack length | console alerts (max per attacker-hour) | detections | XDR incidents | sightings | imports | imports/min | trapline done after |"
    );
    eprintln!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        eprintln!(
            "| {} | {} | {} s | {} ({}) | {} | {} | {} | {} | {:.1} | {:.1} s |",
            r.tool,
            r.requests,
            r.attack_secs,
            r.console.len(),
            r.max_console_per_attacker_hour(),
            r.detections,
            r.incidents,
            r.sightings,
            r.imports,
            r.imports_per_minute(),
            r.wall.as_secs_f64()
        );
    }
    for r in rows {
        for l in &r.console {
            eprintln!("  {}: {}", r.tool, l.get(..200).unwrap_or(l));
        }
    }
}
