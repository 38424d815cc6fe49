//! `trapline run` through the real binary: real files written, rotated (rename, copytruncate,
//! delete/recreate, truncate) while it runs, stopped, killed and restarted. Every attack line
//! must be detected exactly once.

mod common;

use std::time::Duration;

use common::attacks::{Env, write};
use common::{Daemon, access_line, append, detections, wait_for};

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

#[test]
fn renamed_output_is_reopened_and_kill_9_writes_nothing_twice() {
    let env = Env::new("beginning");
    write(&env.log(), 0..500);
    let mut d = Daemon::start(&env.config());
    env.wait_all(500);
    // logrotate's default: rename the output away; trapline must write to a new file at the
    // path, without a signal.
    let rotated = env.root.join("out/out.txt.1");
    std::fs::rename(env.out(), &rotated).unwrap();
    assert!(wait_for(Duration::from_secs(10), || env.out().exists()), "output not reopened after rename");
    write(&env.log(), 500..1000);
    assert!(
        wait_for(Duration::from_secs(15), || env.counts().len() == 500),
        "new output holds {} detections",
        env.counts().len()
    );
    // Killed right away: the last checkpoint may predate the rename; the restart replays
    // what came after it and must recognise it in both files.
    d.signal("KILL");
    let mut d = Daemon::start(&env.config());
    write(&env.log(), 1000..1010);
    let files = [rotated.clone(), env.out()];
    assert!(wait_for(Duration::from_secs(15), || env.counts_in(&files).len() == 1010));
    // SIGHUP reopens too (logrotate's postrotate).
    let again = env.root.join("out/out.txt.2");
    std::fs::rename(env.out(), &again).unwrap();
    let hup = std::process::Command::new("kill").args(["-HUP", &d.pid().to_string()]).status().unwrap();
    assert!(hup.success());
    assert!(wait_for(Duration::from_secs(10), || env.out().exists()), "output not reopened on SIGHUP");
    write(&env.log(), 1010..1020);
    let files = [rotated, again, env.out()];
    assert!(wait_for(Duration::from_secs(15), || env.counts_in(&files).len() == 1020));
    d.signal("TERM");
    env.assert_exactly_once_in(1020, &files);
}

#[test]
fn threshold_and_suppression_state_survive_restarts() {
    let rules = "rules:
  - id: t.burst
    title: three attacks within an hour
    severity: high
    match: {field: uri, contains: ATTACK-}
    threshold: {count: 3, within: 1h, group_by: [client_ip]}
  - id: t.quiet
    title: one alert per hour per client
    severity: low
    match: {field: uri, contains: QUIET-}
    suppress: {for: 1h, group_by: [client_ip]}
  - id: t.mark
    title: marks how far trapline has read
    severity: info
    match: {field: uri, contains: MARK-}
";
    let env = Env::with_rules("beginning", rules);
    let count = |id: &str| detections(&env.out()).iter().filter(|d| d["rule"]["id"] == id).count();
    let quiet = |sec: u32| access_line("198.51.100.9", sec, &format!("/q?QUIET-{sec}"), 404);
    let attack = |sec: u32| access_line("203.0.113.7", sec, &format!("/x?id=ATTACK-{sec}"), 404);
    // Appends `lines` and a marker, and waits until the marker is detected (so are the lines).
    let feed = |lines: Vec<String>, n: usize| {
        let mut all = lines;
        all.push(access_line("192.0.2.1", 0, &format!("/MARK-{n}"), 200));
        append(&env.log(), &all);
        assert!(wait_for(Duration::from_secs(15), || count("t.mark") == n), "marker {n} not detected");
    };
    let engine_generation = || {
        let cp = std::fs::read_to_string(env.root.join("state/tail-checkpoints.json")).unwrap_or_default();
        serde_json::from_str::<serde_json::Value>(&cp)
            .ok()
            .and_then(|v| v["sink_mark"]["engine"]["generation"].as_u64())
    };

    let mut d = Daemon::start(&env.config());
    // Two of three attacks, and one alert that opens a suppression window.
    feed(vec![attack(0), attack(1), quiet(2)], 1);
    assert_eq!(count("t.quiet"), 1);
    d.signal("TERM");

    // After a clean stop: the third attack completes the restored window; the suppressed
    // client stays quiet.
    let mut d = Daemon::start(&env.config());
    feed(vec![quiet(3), attack(4)], 2);
    assert_eq!(count("t.burst"), 1, "the half-full window was not restored:\n{}", d.stderr());
    assert_eq!(count("t.quiet"), 1, "re-alert inside the suppression window after a restart");

    // Two more attacks, then kill -9 once a checkpoint holds them.
    let before = engine_generation();
    feed(vec![attack(5), attack(6)], 3);
    assert!(wait_for(Duration::from_secs(15), || engine_generation() > before), "no checkpoint after the attacks");
    d.signal("KILL");
    let mut d = Daemon::start(&env.config());
    feed(vec![quiet(7), attack(8)], 4);
    d.signal("TERM");
    assert_eq!(count("t.quiet"), 1, "re-alert inside the suppression window after kill -9");
    assert_eq!(count("t.burst"), 2, "the window of two attacks was lost with kill -9");
}

#[test]
fn a_second_run_on_the_same_state_is_refused_until_the_first_dies() {
    let env = Env::new("beginning");
    write(&env.log(), 0..5);
    let mut first = Daemon::start(&env.config());
    env.wait_all(5);

    // Same config, same state directory: refused, naming the holder and the directory.
    let err_path = env.root.join("second.stderr");
    let mut second = std::process::Command::new(common::bin())
        .args(["run", "--config", env.config().to_str().unwrap()])
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("start a second trapline run");
    let mut status = None;
    wait_for(Duration::from_secs(15), || {
        status = second.try_wait().unwrap();
        status.is_some()
    });
    let err = std::fs::read_to_string(&err_path).unwrap_or_default();
    if status.is_none() {
        let _ = second.kill();
        let _ = second.wait();
        panic!("the second run did not exit: two instances ran on one state directory\n{err}");
    }
    assert_eq!(status.unwrap().code(), Some(2), "{err}");
    assert!(err.contains(&format!("pid {}", first.pid())), "{err}");
    assert!(err.contains(&env.root.join("state").display().to_string()), "{err}");
    assert_eq!(
        std::fs::read_to_string(env.root.join("state/lock")).unwrap().trim(),
        first.pid().to_string(),
        "the refused run left the holder's pid alone"
    );
    write(&env.log(), 5..10);
    env.wait_all(10);

    // kill -9 leaves no cleanup behind, yet the kernel released the lock: a new run starts.
    first.signal("KILL");
    let mut third = Daemon::start(&env.config());
    write(&env.log(), 10..15);
    env.wait_all(15);
    third.signal("TERM");
    env.assert_exactly_once(15);
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
    // Each configured source on a line of its own, with what it read.
    assert!(stdout.lines().any(|l| l.starts_with("  source ") && l.contains(" lines (")), "{stdout}");

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
    assert!(stdout.contains("attack started"), "{stdout}");
    assert!(!stdout.contains("\x1b["), "ANSI codes in a piped stdout: {stdout:?}");
}

/// `paths: ["-"]`: `run` reads standard input (e.g. `journalctl -f -o cat | trapline run`) and
/// ends, with everything written, at the end of input. Beside files it is refused, at its
/// position in the config.
#[test]
fn standard_input_as_the_source() {
    let (_dir, root) = common::project(
        Some(
            "rules:\n  - id: t.attack\n    title: test attack\n    severity: high\n    match: {field: uri, contains: ATTACK-}\n",
        ),
        "rules: [rules]\nsources:\n  - name: piped\n    paths: [\"-\"]\n    format: combined\nactions:\n  log: {path: out.txt, console: false}\n",
    );
    let mut input = String::new();
    for n in 0..50u32 {
        input.push_str(&access_line("203.0.113.7", n, &format!("/x?id=ATTACK-{n}"), 404));
        input.push('\n');
        input.push_str(&access_line("198.51.100.2", n, "/ok", 200));
        input.push('\n');
    }
    let (_, stderr) = common::run_piped(&root, &input);
    let got = detections(&root.join("out.txt"));
    assert_eq!(got.len(), 50, "{stderr}");
    assert!(got.iter().all(|d| d["source"]["path"] == "-" && d["source"]["name"] == "piped"));
    // A stream cannot resume: no engine state is saved for it (a file source's stays intact).
    assert!(!root.join("state/engine-0.json").exists() && !root.join("state/engine-1.json").exists());
    let keys: std::collections::HashSet<&str> = got.iter().map(|d| d["key"].as_str().unwrap()).collect();
    assert_eq!(keys.len(), 50, "idempotency keys of stream messages must differ");

    std::fs::write(
        root.join("trapline.yml"),
        "rules: [rules]\nsources:\n  - name: files\n    paths: [logs/*.log]\n  - name: piped\n    paths: [\"-\"]\n",
    )
    .unwrap();
    let out = common::trapline(&["run", "--config", root.join("trapline.yml").to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("trapline.yml:6:12:") && err.contains("standard input"), "{err}");
}

/// Secrets in a detected line (a guessed password, a session id) are masked in out.txt and on
/// the console, while the rule still matched on the real value; `redact: {params: []}` turns
/// it off.
#[test]
fn secrets_are_masked_in_every_output_but_rules_see_them() {
    let rule = "rules:\n  - id: t.guess\n    title: guessed password\n    severity: high\n    match: {field: uri, contains: hunter2}\n";
    let line = access_line("203.0.113.7", 1, "/login.php?user=admin&password=hunter2&PHPSESSID=abc123", 200);
    let run_with = |redact: &str| {
        let (dir, root) = common::project(
            Some(rule),
            &format!(
                "rules: [rules]\n{redact}sources:\n  - name: piped\n    paths: [\"-\"]\nactions:\n  log: {{path: out.txt, console: true}}\n"
            ),
        );
        let (console, _) = common::run_piped(&root, &format!("{line}\n"));
        let file = std::fs::read_to_string(root.join("out.txt")).unwrap();
        (dir, console, file)
    };
    let (d, console, file) = run_with("");
    let out_txt = d.path().join("out.txt");
    assert_eq!(detections(&out_txt).len(), 1, "the rule must match the real value: {file}");
    for (what, text) in [("console", &console), ("out.txt", &file)] {
        assert!(!text.contains("hunter2") && !text.contains("abc123"), "{what}: {text}");
        assert!(text.contains("password=***") && text.contains("PHPSESSID=***"), "{what}: {text}");
    }
    let (_d, console, file) = run_with("redact: {params: []}\n");
    assert!(console.contains("hunter2") && file.contains("hunter2"), "{console}\n{file}");
}

/// A scanner's hundreds of detections reach the console as a handful of roll-up lines per
/// attacker (started, escalated, ended), while out.txt keeps every detection (or only the
/// first per rule with `alerts.detections: first`, the rest counted as held back).
#[test]
fn rollups_per_attacker_on_the_console_detections_in_the_log() {
    let mut input = String::new();
    for n in 0..100u32 {
        let target = match n % 3 {
            0 => format!("/item.php?id={n}%20UNION%20SELECT%201,2,3--"),
            1 => format!("/index.php?page=../../../../etc/passwd&n={n}"),
            _ => format!("/admin{n}.php"),
        };
        input.push_str(&format!(
            "203.0.113.7 - - [10/Oct/2024:13:{:02}:{:02} +0000] \"GET {target} HTTP/1.1\" 404 162 \"-\" \"sqlmap/1.7.2#stable (https://sqlmap.org)\"\n",
            n / 60,
            n % 60
        ));
    }
    for n in 0..30u32 {
        input.push_str(&format!(
            "{}\n",
            access_line("198.51.100.23", n, "/wp-login.php?x=<script>alert(1)</script>", 200)
        ));
    }
    let run_with = |alerts: &str| {
        let (dir, root) = common::project(
            None,
            &format!(
                "rules: [\"<built-in>/rules\"]\n{alerts}sources:\n  - name: piped\n    paths: [\"-\"]\nactions:\n  log: {{path: out.txt, console: true}}\n"
            ),
        );
        let (console, _) = common::run_piped(&root, &input);
        let out_txt = root.join("out.txt");
        (dir, console, detections(&out_txt), common::rollups(&out_txt))
    };

    let (_d, console, dets, rollups) = run_with("");
    let lines: Vec<&str> = console.lines().collect();
    assert!(
        lines
            .iter()
            .all(|l| l.contains("attack started") || l.contains("attack escalated") || l.contains("attack ended")),
        "{console}"
    );
    for ip in ["203.0.113.7", "198.51.100.23"] {
        let mine: Vec<&&str> = lines.iter().filter(|l| l.contains(&format!("client_ip={ip}"))).collect();
        assert!(!mine.is_empty() && mine.len() <= 10, "{ip}: {} console lines:\n{console}", mine.len());
        assert!(mine[0].contains("attack started") && mine.last().unwrap().contains("attack ended"), "{console}");
    }
    assert!(dets.len() >= 100, "every detection stays in out.txt: {}", dets.len());
    let closed: Vec<&serde_json::Value> = rollups.iter().filter(|r| r["state"] == "closed").collect();
    assert_eq!(closed.len(), 2, "{rollups:?}");
    let a = closed.iter().find(|r| r["group"]["client_ip"] == "203.0.113.7").unwrap();
    let from_a = dets.iter().filter(|d| d["fields"]["client_ip"] == "203.0.113.7").count() as u64;
    assert_eq!(a["detections"].as_u64(), Some(from_a));
    for class in ["sqli", "traversal", "scanner"] {
        assert!(a["classes"][class].as_u64().unwrap_or(0) > 0, "{class} missing in {a}");
    }
    assert_eq!(a["held_back"], 0);

    let (_d, _console, dets, rollups) = run_with("alerts: {detections: first, console: both}\n");
    let a = rollups.iter().find(|r| r["state"] == "closed" && r["group"]["client_ip"] == "203.0.113.7").unwrap();
    let mine: Vec<&str> = dets
        .iter()
        .filter(|d| d["fields"]["client_ip"] == "203.0.113.7")
        .map(|d| d["rule"]["id"].as_str().unwrap())
        .collect();
    let distinct: std::collections::BTreeSet<&str> = mine.iter().copied().collect();
    assert_eq!(mine.len(), distinct.len(), "one detection per rule: {mine:?}");
    let written = mine.len() as u64;
    assert_eq!(a["held_back"].as_u64().unwrap(), a["detections"].as_u64().unwrap() - written);
}
