//! Helpers for tests that drive the real `trapline` binary.
#![allow(dead_code)]

pub mod apache;
pub mod attacks;
pub mod http;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_trapline"))
}

pub fn trapline(args: &[&str]) -> Output {
    Command::new(bin()).args(args).env("NO_COLOR", "1").output().expect("run trapline")
}

/// `trapline` with `args`: (exit code, stdout, stderr).
pub fn run_status(args: &[&str]) -> (i32, String, String) {
    let o = trapline(args);
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into(),
        String::from_utf8_lossy(&o.stderr).into(),
    )
}

/// `trapline` with `input` on its standard input.
pub fn trapline_stdin(args: &[&str], input: &[u8]) -> Output {
    use std::io::Write;
    let mut child = Command::new(bin())
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run trapline");
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().expect("wait for trapline")
}

/// A combined-format line with a given client IP, time offset (seconds) and request target.
pub fn access_line(ip: &str, sec: u32, target: &str, status: u16) -> String {
    format!(
        "{ip} - - [10/Oct/2024:13:{:02}:{:02} +0000] \"GET {target} HTTP/1.1\" {status} 123 \"-\" \"Mozilla/5.0\"",
        (sec / 60) % 60,
        sec % 60
    )
}

/// A temporary project: `rules/` (holding `rules/t.yml` when `rule` is given), `logs/`, and
/// `trapline.yml` with `config`. Returns the directory guard and its path.
pub fn project(rule: Option<&str>, config: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    std::fs::create_dir_all(root.join("rules")).unwrap();
    std::fs::create_dir_all(root.join("logs")).unwrap();
    if let Some(r) = rule {
        std::fs::write(root.join("rules/t.yml"), r).unwrap();
    }
    std::fs::write(root.join("trapline.yml"), config).unwrap();
    (dir, root)
}

/// Polls `f` until it returns true or `timeout` passes.
pub fn wait_for(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// The records of a JSON-lines output file. A last line without its newline is a write in
/// progress (the file is read while trapline writes it) and is left out; a broken line
/// anywhere else fails the test.
pub fn records(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let whole = match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    };
    whole
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

/// The detections in a JSON-lines output file (see [`records`]).
pub fn detections(path: &Path) -> Vec<serde_json::Value> {
    records(path).into_iter().filter(|v| v["kind"] != "rollup").collect()
}

/// The roll-up records in a JSON-lines output file (see [`records`]).
pub fn rollups(path: &Path) -> Vec<serde_json::Value> {
    records(path).into_iter().filter(|v| v["kind"] == "rollup").collect()
}

/// A running `trapline run`.
pub struct Daemon {
    pub child: Option<Child>,
    pub stderr_path: PathBuf,
    /// What it printed on its standard output (the console action).
    pub stdout_path: PathBuf,
}

impl Daemon {
    pub fn start(config: &Path) -> Daemon {
        let dir = config.parent().unwrap();
        let n = std::fs::read_dir(dir).unwrap().count();
        let stderr_path = dir.join(format!("trapline-{n}.stderr"));
        let stdout_path = dir.join(format!("trapline-{n}.stdout"));
        let child = Command::new(bin())
            .args(["run", "--config", config.to_str().unwrap()])
            .env("NO_COLOR", "1")
            .env("TRAPLINE_LOG", "debug")
            .stdout(std::fs::File::create(&stdout_path).unwrap())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .expect("start trapline run");
        let d = Daemon { child: Some(child), stderr_path, stdout_path };
        // Ready when it logged that it is running (the tailer has then scanned its files).
        assert!(
            wait_for(Duration::from_secs(20), || d.stderr().contains("trapline running")),
            "daemon did not start:\n{}",
            d.stderr()
        );
        std::thread::sleep(Duration::from_millis(300));
        d
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout_path).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Sends `sig` (e.g. "TERM", "INT", "KILL") and waits; returns how long the exit took.
    pub fn signal(&mut self, sig: &str) -> Duration {
        let start = Instant::now();
        let status = Command::new("kill").args([&format!("-{sig}"), &self.pid().to_string()]).status().unwrap();
        assert!(status.success());
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(_s) = child.try_wait().unwrap() {
                break;
            }
            assert!(Instant::now() < deadline, "trapline did not exit after SIG{sig}");
            std::thread::sleep(Duration::from_millis(10));
        }
        start.elapsed()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Appends lines to a file (opening it each time, as a logger that reopens would).
pub fn append(path: &Path, lines: &[String]) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
    for l in lines {
        writeln!(f, "{l}").unwrap();
    }
    f.sync_data().unwrap();
}

/// `trapline run --config <root>/trapline.yml` with `input` on its standard input (a config
/// whose source reads `-`), until it ends with the input; asserts it succeeded. Returns its
/// stdout (the console) and stderr.
pub fn run_piped(root: &Path, input: &str) -> (String, String) {
    use std::io::Write;
    let mut child = Command::new(bin())
        .args(["run", "--config", root.join("trapline.yml").to_str().unwrap()])
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start trapline run");
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    assert!(out.status.success(), "{stderr}");
    (stdout, stderr)
}
