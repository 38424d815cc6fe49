//! An installed trapline, through the real binary, from directories far from the source tree:
//! the built-in rules, templates and config, the config search order, and `trapline init`.
//!
//! Every command runs in a fresh temporary directory with `HOME` and `XDG_CONFIG_HOME` pointed
//! at empty temporary directories, so no config of the machine's user leaks in.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const ATTACK: &str = r#"203.0.113.7 - - [10/Oct/2024:13:55:36 +0000] "GET /item.php?id=1+UNION+SELECT+1,2 HTTP/1.1" 200 99 "-" "sqlmap/1.7""#;

/// A working directory and an empty home (with an empty XDG config directory).
struct Env {
    cwd: tempfile::TempDir,
    home: tempfile::TempDir,
    xdg: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        Env { cwd: tempfile::tempdir().unwrap(), home: tempfile::tempdir().unwrap(), xdg: tempfile::tempdir().unwrap() }
    }

    fn cwd(&self) -> &Path {
        self.cwd.path()
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_trapline"));
        c.args(args)
            .current_dir(self.cwd.path())
            .env("HOME", self.home.path())
            .env("XDG_CONFIG_HOME", self.xdg.path())
            // The machine's /etc/trapline (a package installed here) must not leak in.
            .env("TRAPLINE_SYSTEM_CONFIG", self.home.path().join("etc/trapline/trapline.yml"))
            .env("NO_COLOR", "1")
            .env_remove("TRAPLINE_LOG");
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).stdin(Stdio::null()).output().expect("run trapline")
    }

    /// Runs with `input` on stdin.
    fn run_with(&self, args: &[&str], input: &str) -> Output {
        self.run_with_env(args, input, |_| {})
    }

    /// Runs with `input` on stdin, after `adjust` changed the command.
    fn run_with_env(&self, args: &[&str], input: &str, adjust: impl FnOnce(&mut Command)) -> Output {
        let mut cmd = self.cmd(args);
        adjust(&mut cmd);
        let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        child.stdin.take().unwrap().write_all(format!("{input}\n").as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    }
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// A rule file with one rule matching `needle` in the path.
fn rule(id: &str, needle: &str) -> String {
    format!(
        "version: 1\nrules:\n  - id: {id}\n    title: {id}\n    severity: low\n    match: {{field: path, contains: {needle}}}\n"
    )
}

#[test]
fn scan_without_config_uses_the_built_in_rules() {
    let env = Env::new();
    let out = env.run_with(&["scan", "--fail-on-match", "-"], ATTACK);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("web.sqli.union-select"), "{}", text(&out));
    // Nothing is written next to a scan.
    assert_eq!(std::fs::read_dir(env.cwd()).unwrap().count(), 0);
}

#[test]
fn lint_without_arguments_lints_the_built_in_pack_clean() {
    let env = Env::new();
    let out = env.run(&["lint", "--deny-warnings"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("0 errors, 0 warnings"), "{}", text(&out));
    // Findings in built-in files are positioned like those in files on disk.
    let out = env.run(&["lint", "--format", "json"]);
    let findings: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let built_in = findings
        .iter()
        .find(|f| f["file"].as_str().is_some_and(|p| p.starts_with("<built-in>/rules/")))
        .unwrap_or_else(|| panic!("no finding in a built-in rule file: {findings:?}"));
    assert!(built_in["line"].as_u64().unwrap() > 0 && built_in["col"].as_u64().unwrap() > 0, "{built_in}");
    // `test` runs the built-in pack's examples.
    let out = env.run(&["test"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains(" passed, 0 failed"), "{}", text(&out));
}

#[test]
fn missing_rules_say_where_trapline_looked_and_how_to_fix_it() {
    let env = Env::new();
    let out = env.run_with(&["scan", "--rules", "my-rules", "-"], ATTACK);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let msg = text(&out);
    let abs = env.cwd().canonicalize().unwrap().join("my-rules");
    assert!(msg.contains(&abs.display().to_string()) || msg.contains("my-rules ("), "{msg}");
    assert!(msg.contains("--rules") && msg.contains("trapline init"), "{msg}");
    let out = env.run(&["lint", "my-rules"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("trapline init"), "{}", text(&out));
}

#[test]
fn init_writes_a_project_that_lints_clean_and_scans() {
    let env = Env::new();
    let out = env.run(&["init", "proj"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let dir = env.cwd().join("proj");
    for f in
        ["trapline.yml", "rules/web-attacks.yml", "templates/xdr/incident.json.j2", "schema/trapline-rules.schema.json"]
    {
        assert!(dir.join(f).is_file(), "{f} not written: {}", text(&out));
        assert!(text(&out).contains(&format!("proj/{f}")), "{f} not listed: {}", text(&out));
    }
    assert!(text(&out).contains("trapline lint --config proj/trapline.yml"), "{}", text(&out));

    let out = env.run(&["lint", "--config", "proj/trapline.yml", "--deny-warnings"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("0 errors, 0 warnings"), "{}", text(&out));
    assert!(!text(&out).contains("<built-in>"), "the written files are used: {}", text(&out));

    std::fs::write(env.cwd().join("line.log"), format!("{ATTACK}\n")).unwrap();
    let out = env.run(&["scan", "--config", "proj/trapline.yml", "--fail-on-match", "line.log"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("web.sqli.union-select"), "{}", text(&out));

    // The written rules are the ones used: an edit shows.
    std::fs::write(dir.join("rules/mine.yml"), rule("mine.item", "item.php")).unwrap();
    let out = env.run(&["scan", "--config", "proj/trapline.yml", "line.log"]);
    assert!(text(&out).contains("mine.item"), "{}", text(&out));
}

#[test]
fn init_refuses_to_overwrite_unless_forced() {
    let env = Env::new();
    assert_eq!(env.run(&["init"]).status.code(), Some(0));
    let config = env.cwd().join("trapline.yml");
    std::fs::write(&config, "# my edits\n").unwrap();
    let out = env.run(&["init"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("trapline.yml") && text(&out).contains("--force"), "{}", text(&out));
    assert_eq!(std::fs::read_to_string(&config).unwrap(), "# my edits\n", "nothing is overwritten");
    // In the current directory, the next commands need no --config.
    let out = env.run(&["init", "--force"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("(overwritten)"), "{}", text(&out));
    assert!(std::fs::read_to_string(&config).unwrap().contains("sources:"));
    // ./trapline.yml is found, and its relative rules are the written ones.
    let out = env.run(&["lint", "--deny-warnings"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("0 errors, 0 warnings"), "{}", text(&out));
}

/// `--force` replaces a link where one of its files goes; the file it pointed at is untouched.
#[test]
fn init_force_replaces_links_instead_of_writing_through_them() {
    let env = Env::new();
    let outside = env.home.path().join("precious.txt");
    std::fs::write(&outside, "keep me\n").unwrap();
    let config = env.cwd().join("trapline.yml");
    std::os::unix::fs::symlink(&outside, &config).unwrap();
    let out = env.run(&["init", "--force"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "keep me\n", "the link's target is not written");
    assert!(!config.symlink_metadata().unwrap().file_type().is_symlink(), "the link is replaced by a file");
    assert!(std::fs::read_to_string(&config).unwrap().contains("sources:"));
}

/// Writes `dir/trapline.yml` using the rules in `dir/rules/` (one rule, `id`).
fn config_with_rule(dir: &Path, id: &str) -> PathBuf {
    std::fs::create_dir_all(dir.join("rules")).unwrap();
    std::fs::write(dir.join("rules/r.yml"), rule(id, "item.php")).unwrap();
    let path = dir.join("trapline.yml");
    std::fs::write(&path, "rules: [rules]\nstate_dir: state\n").unwrap();
    path
}

#[test]
fn config_search_order_local_then_user_then_system_then_built_in() {
    let env = Env::new();
    // The system's config (/etc/trapline, here $TRAPLINE_SYSTEM_CONFIG) wins over the built-in.
    config_with_rule(&env.home.path().join("etc/trapline"), "system.rule");
    let out = env.run_with(&["scan", "-"], ATTACK);
    assert!(text(&out).contains("system.rule"), "{}", text(&out));
    // The user's config directory ($XDG_CONFIG_HOME/trapline) wins over the built-in config.
    config_with_rule(&env.xdg.path().join("trapline"), "user.rule");
    let out = env.run_with(&["scan", "-"], ATTACK);
    assert!(text(&out).contains("user.rule"), "{}", text(&out));
    assert!(!text(&out).contains("web.sqli.union-select"), "{}", text(&out));

    // Without XDG_CONFIG_HOME: ~/.config/trapline.
    config_with_rule(&env.home.path().join(".config/trapline"), "home.rule");
    let out = env.run_with_env(&["scan", "-"], ATTACK, |c| {
        c.env_remove("XDG_CONFIG_HOME");
    });
    assert!(text(&out).contains("home.rule"), "{}", text(&out));

    // ./trapline.yml wins over the user's config.
    config_with_rule(env.cwd(), "local.rule");
    let out = env.run_with(&["scan", "-"], ATTACK);
    assert!(text(&out).contains("local.rule"), "{}", text(&out));
    assert!(!text(&out).contains("user.rule"), "{}", text(&out));

    // `status` reads the state directory of the config `run` would use (here ./state).
    let out = env.run(&["status"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("state/status.json"), "{}", text(&out));
    std::fs::remove_file(env.cwd().join("trapline.yml")).unwrap();
    let out = env.run(&["status"]);
    let user_state = env.xdg.path().join("trapline/state/status.json");
    assert!(text(&out).contains(&user_state.display().to_string()), "{}", text(&out));
}

#[test]
fn run_without_config_uses_the_current_directory_for_state_and_output() {
    let env = Env::new();
    let child = env.cmd(&["run"]).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let status = env.cwd().join("state/status.json");
    let start = std::time::Instant::now();
    while !status.exists() && start.elapsed() < std::time::Duration::from_secs(20) {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // SIGTERM: `run` stops cleanly. SAFETY: a plain signal to the child this test started.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    assert!(status.exists(), "{}", text(&out));
    assert!(text(&out).contains("using the built-in config"), "{}", text(&out));
    assert!(env.cwd().join("logs/out.txt").exists(), "{}", text(&out));
    // `status` finds the same state directory, and knows the daemon has ended.
    let out = env.run(&["status"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("not running"), "{}", text(&out));
}

#[test]
fn no_source_file_depends_on_the_build_tree() {
    // A path compiled in from the build machine breaks a copied or installed binary.
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut stack = vec![src];
    let mut offenders = Vec::new();
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else if p.extension().is_some_and(|e| e == "rs")
            && std::fs::read_to_string(&p).unwrap().contains(concat!("CARGO_", "MANIFEST_DIR"))
        {
            offenders.push(p);
        }
    }
    assert!(offenders.is_empty(), "build-tree paths in {offenders:?}");
}

#[test]
fn packaged_config_loads_and_uses_the_built_in_rules() {
    // The Debian package's /etc/trapline/trapline.yml; its only findings are the XDR rules
    // while XDR is left to set up (TL111).
    let env = Env::new();
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/trapline.yml");
    let out = env.run(&["lint", "--format", "json", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let findings: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let codes: Vec<&str> =
        findings.iter().filter(|f| f["severity"] != "note").filter_map(|f| f["code"].as_str()).collect();
    assert!(!codes.is_empty() && codes.iter().all(|c| *c == "TL111"), "{findings:?}");
    let out = env.run_with(&["scan", "--config", config.to_str().unwrap(), "--fail-on-match", "-"], ATTACK);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
}
