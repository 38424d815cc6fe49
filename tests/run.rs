//! `trapline run` through the real binary: real files written, rotated (rename, copytruncate,
//! delete/recreate, truncate) while it runs, stopped, killed and restarted. Every attack line
//! must be detected exactly once.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Daemon, access_line, append, detections, wait_for};

struct Env {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Env {
    fn new(start: &str) -> Env {
        let (dir, root) = common::project(
            Some(
                "rules:\n  - id: t.attack\n    title: test attack\n    severity: high\n    match: {field: uri, contains: ATTACK-}\n",
            ),
            &format!(
                "rules: [rules]\nstate_dir: state\nsources:\n  - name: web\n    paths: [logs/*.log]\n    format: combined\n    start: {start}\nactions:\n  log: {{path: out/out.txt, format: json, console: false}}\n"
            ),
        );
        Env { _dir: dir, root }
    }
    fn config(&self) -> PathBuf {
        self.root.join("trapline.yml")
    }
    fn log(&self) -> PathBuf {
        self.root.join("logs/access.log")
    }
    fn out(&self) -> PathBuf {
        self.root.join("out/out.txt")
    }
    /// Detections per attack marker.
    fn counts(&self) -> BTreeMap<u32, usize> {
        let mut m = BTreeMap::new();
        for d in detections(&self.out()) {
            let uri = d["fields"]["uri"].as_str().unwrap().to_string();
            let n: u32 = uri.rsplit("ATTACK-").next().unwrap().parse().unwrap();
            *m.entry(n).or_default() += 1;
        }
        m
    }
    fn wait_all(&self, upto: u32) {
        let ok = wait_for(Duration::from_secs(15), || self.counts().len() as u32 >= upto);
        assert!(ok, "only {} of {upto} attacks detected: {:?}", self.counts().len(), self.counts());
    }
    fn assert_exactly_once(&self, upto: u32) {
        let c = self.counts();
        let missing: Vec<u32> = (0..upto).filter(|n| !c.contains_key(n)).collect();
        let dup: Vec<(&u32, &usize)> = c.iter().filter(|(_, v)| **v != 1).collect();
        assert!(
            missing.is_empty() && dup.is_empty() && c.len() as u32 == upto,
            "missing {missing:?}, duplicated {dup:?}"
        );
    }
}

/// Attack `n` plus a benign line, as a logger would write them.
fn lines(range: std::ops::Range<u32>) -> Vec<String> {
    range
        .flat_map(|n| {
            [
                access_line("203.0.113.7", n, &format!("/x?id=ATTACK-{n}"), 404),
                access_line("198.51.100.2", n, "/ok", 200),
            ]
        })
        .collect()
}

fn write(p: &Path, range: std::ops::Range<u32>) {
    append(p, &lines(range));
}

#[test]
fn rotations_while_running_detect_every_line_once() {
    let env = Env::new("beginning");
    write(&env.log(), 0..5);
    let mut d = Daemon::start(&env.config());
    env.wait_all(5);

    // 1. rename + create, with the writer still appending to the old file after the rename.
    let rotated = env.root.join("logs/access.log.1");
    std::fs::rename(env.log(), &rotated).unwrap();
    write(&rotated, 5..8);
    write(&env.log(), 8..12);
    env.wait_all(12);

    // 2. copytruncate (logrotate's way: copy, then truncate the live file in place).
    std::fs::copy(env.log(), env.root.join("logs/access.log.2")).unwrap();
    std::fs::OpenOptions::new().write(true).open(env.log()).unwrap().set_len(0).unwrap();
    std::thread::sleep(Duration::from_millis(600));
    write(&env.log(), 12..15);
    env.wait_all(15);

    // 3. delete and recreate.
    std::fs::remove_file(env.log()).unwrap();
    std::thread::sleep(Duration::from_millis(600));
    write(&env.log(), 15..18);
    env.wait_all(18);

    // 4. truncate in place, then regrow past the old size before trapline necessarily looked.
    std::fs::OpenOptions::new().write(true).open(env.log()).unwrap().set_len(0).unwrap();
    write(&env.log(), 18..30);
    env.wait_all(30);

    // 5. a partial line is not matched until its newline arrives.
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(env.log()).unwrap();
        let l = access_line("203.0.113.7", 30, "/x?id=ATTACK-30", 404);
        f.write_all(&l.as_bytes()[..40]).unwrap();
        f.sync_data().unwrap();
        std::thread::sleep(Duration::from_millis(700));
        assert!(!env.counts().contains_key(&30), "partial line was matched");
        f.write_all(&l.as_bytes()[40..]).unwrap();
        f.write_all(b"\n").unwrap();
    }
    env.wait_all(31);

    let took = d.signal("TERM");
    assert!(took < Duration::from_secs(2), "SIGTERM took {took:?}");
    // The copytruncate copy matches the glob but is the same content: no duplicates from it.
    env.assert_exactly_once(31);
}

#[test]
fn restart_resumes_without_loss_or_repeat() {
    let env = Env::new("beginning");
    write(&env.log(), 0..10);
    let mut d = Daemon::start(&env.config());
    env.wait_all(10);
    let took = d.signal("INT");
    assert!(took < Duration::from_secs(2), "SIGINT took {took:?}");

    // Written while trapline is down, then a rotation while it is still down.
    write(&env.log(), 10..15);
    std::fs::rename(env.log(), env.root.join("logs/access.log.1")).unwrap();
    write(&env.log(), 15..20);

    let mut d = Daemon::start(&env.config());
    env.wait_all(20);
    write(&env.log(), 20..25);
    env.wait_all(25);
    d.signal("TERM");
    env.assert_exactly_once(25);
}

#[test]
fn kill_9_then_restart_detects_every_line_once() {
    let env = Env::new("beginning");
    let mut d = Daemon::start(&env.config());
    // Keep writing while trapline is killed at an arbitrary point.
    for batch in 0..10u32 {
        write(&env.log(), batch * 20..batch * 20 + 20);
        std::thread::sleep(Duration::from_millis(40));
        if batch == 6 {
            d.signal("KILL");
        }
    }
    let mut d = Daemon::start(&env.config());
    env.wait_all(200);
    d.signal("TERM");
    env.assert_exactly_once(200);
}

#[test]
fn start_at_end_skips_history_and_reads_new_files_whole() {
    let env = Env::new("end");
    write(&env.log(), 0..5);
    let mut d = Daemon::start(&env.config());
    write(&env.log(), 5..8);
    // A file that appears later under the glob is read from its beginning.
    write(&env.root.join("logs/other.log"), 8..10);
    assert!(wait_for(Duration::from_secs(15), || env.counts().len() == 5), "{:?}", env.counts());
    d.signal("TERM");
    let c = env.counts();
    assert_eq!(c.keys().copied().collect::<Vec<_>>(), vec![5, 6, 7, 8, 9]);
}

/// `trapline status` while the daemon runs (exit 0, its pid), after it stopped (exit 3, "not
/// running"), and with a status file naming a live process that is not trapline (exit 3).
#[test]
fn status_tells_a_stopped_daemon_from_a_running_one() {
    let env = Env::new("beginning");
    let config = env.config();
    let status = || common::trapline(&["status", "--config", config.to_str().unwrap()]);
    let mut d = Daemon::start(&config);
    let pid = d.pid();
    let out = status();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.starts_with(&format!("pid {pid} since")), "{stdout}");

    d.signal("TERM");
    let out = status();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(3), "{stdout}");
    assert!(stdout.contains(&format!("not running: last run pid {pid} ended; last update at ")), "{stdout}");
    let json = common::trapline(&["status", "--json", "--config", config.to_str().unwrap()]);
    assert_eq!(json.status.code(), Some(3));

    // A stale status whose pid now belongs to another program.
    let mut other = std::process::Command::new("sleep").arg("30").spawn().unwrap();
    let file = env.root.join("state/status.json");
    let mut s: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    s["pid"] = other.id().into();
    std::fs::write(&file, s.to_string()).unwrap();
    let out = status();
    let _ = other.kill();
    let _ = other.wait();
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stdout));
}

/// trapline's own log goes to stderr; when that is a file or a pipe (journald, `2>log`), it
/// carries no ANSI colour codes, even without `NO_COLOR`. Same for the console action on a
/// piped stdout.
#[test]
fn no_colour_codes_when_stderr_and_stdout_are_not_terminals() {
    let env = Env::new("beginning");
    // A missing templates directory makes the daemon warn that it cannot watch it.
    let config = env.root.join("trapline.yml");
    let text = std::fs::read_to_string(&config).unwrap().replace("console: false", "console: true");
    std::fs::write(&config, format!("templates: no-such-templates\n{text}")).unwrap();
    append(&env.log(), &[access_line("192.0.2.1", 0, "/ATTACK-1", 200)]);
    let stderr_path = env.root.join("stderr.txt");
    let child = std::process::Command::new(common::bin())
        .args(["run", "--config", config.to_str().unwrap()])
        .env_remove("NO_COLOR")
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let stderr = || std::fs::read_to_string(&stderr_path).unwrap_or_default();
    let started = wait_for(Duration::from_secs(20), || stderr().contains("trapline running"));
    let detected = wait_for(Duration::from_secs(10), || !detections(&env.out()).is_empty());
    std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = stderr();
    assert!(started && detected, "{stderr}");
    assert!(stderr.contains("WARN"), "expected a warning: {stderr}");
    assert!(!stderr.contains("\x1b["), "ANSI codes in a non-terminal stderr: {stderr:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("t.attack"), "{stdout}");
    assert!(!stdout.contains("\x1b["), "ANSI codes in a piped stdout: {stdout:?}");
}
