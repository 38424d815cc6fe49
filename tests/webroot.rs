//! Web roots through `trapline run`: real files in temporary roots, every change kind,
//! changes made while trapline was stopped, atomic replace, renames, a mass change, polling,
//! a tampered baseline, maintenance windows, flapping, `trapline webroot accept`, hostile
//! names, and the config errors.

mod common;

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use common::{bin, detections, wait_for};

/// Every change, named, so tests can see exactly what the source reported.
const ANY: &str = "rules:
  - id: t.any
    title: any change
    severity: low
    formats: [webroot]
    match: {field: change, exists: true}
";

/// A project: the shipped web-root rules plus `t.any`, a root `www/` with `uploads/` and
/// `app/index.php`, and a config with `extra` appended to the source.
fn project(extra: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().to_path_buf();
    std::fs::create_dir_all(p.join("rules")).unwrap();
    std::fs::write(p.join("rules/t.yml"), ANY).unwrap();
    std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/webroot.yml"), p.join("rules/webroot.yml"))
        .unwrap();
    std::fs::create_dir_all(p.join("www/uploads")).unwrap();
    std::fs::create_dir_all(p.join("www/app")).unwrap();
    std::fs::create_dir_all(p.join("www/cache")).unwrap();
    std::fs::write(p.join("www/app/index.php"), "<?php echo 'hello';\n").unwrap();
    std::fs::write(p.join("www/uploads/cat.jpg"), b"\xff\xd8\xff\xe0 a cat").unwrap();
    let config = format!(
        "rules: [rules]
state_dir: state
actions:
  log: {{path: out.txt}}
sources:
  - name: site
    type: webroot
    paths: [www]
    ignore: [\"cache\"]
    flap_window: 1ms
    classes:
      - {{name: uploads, paths: [\"uploads/**\"]}}
      - {{name: code, paths: [\"**/*.php\", \"**/.htaccess\"]}}
{extra}"
    );
    std::fs::write(p.join("trapline.yml"), config).unwrap();
    (dir, p)
}

struct Run {
    child: Child,
    stderr: PathBuf,
}

impl Run {
    fn start(p: &Path, env: &[(&str, &str)]) -> Run {
        let n = std::fs::read_dir(p).unwrap().count();
        let stderr = p.join(format!("run-{n}.stderr"));
        let child = Command::new(bin())
            .args(["run", "--config", p.join("trapline.yml").to_str().unwrap()])
            .env("NO_COLOR", "1")
            .env("TRAPLINE_LOG", "info")
            .envs(env.iter().copied())
            .stdout(std::fs::File::create(p.join(format!("run-{n}.stdout"))).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let r = Run { child, stderr };
        assert!(wait_for(Duration::from_secs(30), || r.err().contains("web root ready")), "not ready:\n{}", r.err());
        r
    }

    fn err(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn stop(mut self) -> String {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
        self.err()
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// (change, path relative to the project) of every `t.any` detection.
fn changes(p: &Path) -> Vec<(String, String)> {
    let prefix = format!("{}/", std::fs::canonicalize(p).unwrap().display());
    detections(&p.join("out.txt"))
        .iter()
        .filter(|d| d["rule"]["id"] == "t.any")
        .map(|d| {
            let path = d["fields"]["path"].as_str().unwrap_or_default();
            (
                d["fields"]["change"].as_str().unwrap().to_string(),
                path.strip_prefix(&prefix).unwrap_or(path).to_string(),
            )
        })
        .collect()
}

fn has(p: &Path, change: &str, path: &str) -> bool {
    changes(p).iter().any(|(c, q)| c == change && q == path)
}

/// Paths of the detections of `rule`, also where it was merged into a more severe detection
/// of the same class (`also`).
fn rule_paths(p: &Path, rule: &str) -> Vec<String> {
    detections(&p.join("out.txt"))
        .iter()
        .filter(|d| d["rule"]["id"] == rule || d["also"].as_array().is_some_and(|a| a.iter().any(|x| x == rule)))
        .map(|d| d["fields"]["path"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn wait_change(p: &Path, change: &str, path: &str) {
    assert!(wait_for(Duration::from_secs(15), || has(p, change, path)), "no {change} of {path}; got {:?}", changes(p));
}

fn first_detection(p: &Path, change: &str, path: &str) -> serde_json::Value {
    let abs = format!("{}/{path}", std::fs::canonicalize(p).unwrap().display());
    detections(&p.join("out.txt"))
        .into_iter()
        .find(|d| d["rule"]["id"] == "t.any" && d["fields"]["change"] == change && d["fields"]["path"] == abs.as_str())
        .unwrap()
}

#[test]
fn every_change_kind_is_reported_live() {
    let (_d, p) = project("");
    let run = Run::start(&p, &[]);
    assert!(run.err().contains("baseline built"), "{}", run.err());
    assert!(changes(&p).is_empty(), "the first start reports nothing: {:?}", changes(&p));
    let www = p.join("www");

    std::fs::write(www.join("uploads/shell.php"), "<?php system($_GET['c']);").unwrap();
    wait_change(&p, "created", "www/uploads/shell.php");
    let d = first_detection(&p, "created", "www/uploads/shell.php");
    assert_eq!(d["fields"]["ext"], "php");
    assert_eq!(d["fields"]["class"], "uploads");
    assert_eq!(d["fields"]["content"], "php");
    assert_eq!(d["fields"]["sha256"].as_str().unwrap().len(), 64);
    assert!(rule_paths(&p, "webroot.upload.script").iter().any(|x| x.ends_with("uploads/shell.php")));

    std::fs::write(www.join("app/index.php"), "<?php echo 'defaced';\n").unwrap();
    wait_change(&p, "modified", "www/app/index.php");
    // `write` truncates, then writes: a comparison that falls between the two (a loaded
    // machine) reports the empty file first, then the written one. The last state counts.
    let abs = format!("{}/www/app/index.php", std::fs::canonicalize(&p).unwrap().display());
    let written = || {
        detections(&p.join("out.txt")).into_iter().find(|d| {
            d["rule"]["id"] == "t.any"
                && d["fields"]["change"] == "modified"
                && d["fields"]["path"] == abs.as_str()
                && d["fields"]["size"] == "22"
        })
    };
    assert!(wait_for(Duration::from_secs(10), || written().is_some()), "{:?}", changes(&p));
    let d = written().unwrap();
    assert_ne!(d["fields"]["sha256"], d["fields"]["old_sha256"]);
    if d["fields"]["old_size"] == "20" {
        assert_eq!(d["fields"]["size_delta"], "2");
    }
    assert!(rule_paths(&p, "webroot.code.changed").iter().any(|x| x.ends_with("app/index.php")));

    std::fs::set_permissions(www.join("uploads/cat.jpg"), std::fs::Permissions::from_mode(0o777)).unwrap();
    wait_change(&p, "attributes", "www/uploads/cat.jpg");
    let d = first_detection(&p, "attributes", "www/uploads/cat.jpg");
    assert_eq!(d["fields"]["mode"], "0777");
    assert_eq!(d["fields"]["old_mode"], "0644");
    let id = |flag: &str| String::from_utf8(Command::new("id").arg(flag).output().unwrap().stdout).unwrap();
    let me = format!("{}:{}", id("-un").trim(), id("-gn").trim());
    assert_eq!(d["fields"]["owner"], me.as_str());

    // A .jpg renamed to .php: a rename paired by inode, and its own detection.
    std::fs::rename(www.join("uploads/cat.jpg"), www.join("uploads/cat.php")).unwrap();
    wait_change(&p, "renamed", "www/uploads/cat.php");
    let d = first_detection(&p, "renamed", "www/uploads/cat.php");
    assert!(d["fields"]["old_path"].as_str().unwrap().ends_with("uploads/cat.jpg"));
    assert_eq!(d["fields"]["old_ext"], "jpg");
    assert!(rule_paths(&p, "webroot.extension.to-executable").iter().any(|x| x.ends_with("uploads/cat.php")));
    assert!(!has(&p, "deleted", "www/uploads/cat.jpg"), "a rename is not a deletion: {:?}", changes(&p));

    // Atomic replace: write a temporary file, rename it over the original.
    std::fs::write(www.join("app/.index.php.tmp"), "<?php echo 'v2';\n").unwrap();
    std::fs::rename(www.join("app/.index.php.tmp"), www.join("app/index.php")).unwrap();
    assert!(wait_for(Duration::from_secs(15), || changes(&p)
        .iter()
        .filter(|(c, q)| c == "modified" && q == "www/app/index.php")
        .count()
        == 2));
    assert!(!has(&p, "renamed", "www/app/index.php"), "{:?}", changes(&p));

    std::fs::write(www.join(".htaccess"), "AddType application/x-httpd-php .jpg\n").unwrap();
    wait_change(&p, "created", "www/.htaccess");
    assert!(rule_paths(&p, "webroot.htaccess.changed").iter().any(|x| x.ends_with("www/.htaccess")));

    std::fs::remove_file(www.join("uploads/shell.php")).unwrap();
    wait_change(&p, "deleted", "www/uploads/shell.php");

    // A new directory and a file inside it: the new directory is watched too.
    std::fs::create_dir(www.join("uploads/2024")).unwrap();
    std::fs::write(www.join("uploads/2024/a.txt"), "a").unwrap();
    wait_change(&p, "created", "www/uploads/2024/a.txt");
    std::fs::write(www.join("uploads/2024/b.txt"), "b").unwrap();
    wait_change(&p, "created", "www/uploads/2024/b.txt");

    // Ignored: no event, whatever happens there.
    std::fs::write(www.join("cache/x.php"), "<?php").unwrap();
    std::thread::sleep(Duration::from_millis(800));
    assert!(!changes(&p).iter().any(|(_, q)| q.contains("cache")), "{:?}", changes(&p));
    let err = run.stop();
    assert!(!err.contains("ERROR"), "{err}");
    // Each change once: the same change is never reported twice.
    let all = changes(&p);
    let created_shell = all.iter().filter(|(c, q)| c == "created" && q == "www/uploads/shell.php").count();
    assert_eq!(created_shell, 1, "{all:?}");
}

#[test]
fn changes_made_while_stopped_are_reported_at_start() {
    let (_d, p) = project("");
    Run::start(&p, &[]).stop();
    let www = p.join("www");
    std::fs::write(www.join("app/index.php"), "<?php echo 'changed while down';\n").unwrap();
    std::fs::write(www.join("uploads/new.php"), "<?php eval($_POST['x']);").unwrap();
    std::fs::rename(www.join("uploads/cat.jpg"), www.join("uploads/cat.phtml")).unwrap();
    std::fs::create_dir(www.join("app/lib")).unwrap();
    std::fs::write(www.join("app/lib/x.php"), "<?php").unwrap();
    let run = Run::start(&p, &[]);
    assert!(wait_for(Duration::from_secs(10), || changes(&p).len() >= 4), "{:?}", changes(&p));
    assert!(has(&p, "modified", "www/app/index.php"), "{:?}", changes(&p));
    assert!(has(&p, "created", "www/uploads/new.php"), "{:?}", changes(&p));
    assert!(has(&p, "renamed", "www/uploads/cat.phtml"), "{:?}", changes(&p));
    assert!(has(&p, "created", "www/app/lib/x.php"), "{:?}", changes(&p));
    assert!(run.err().contains("compared with its baseline"), "{}", run.err());
    // The event time is the change's time, not the start.
    let d = first_detection(&p, "created", "www/uploads/new.php");
    assert_eq!(d["time_source"], "event");
    run.stop();
    // Reported once: the next start finds nothing new.
    let before = changes(&p).len();
    Run::start(&p, &[]).stop();
    assert_eq!(changes(&p).len(), before, "{:?}", changes(&p));
}

#[test]
fn polling_is_the_fallback() {
    let (_d, p) = project("    poll_interval: 300ms\n");
    let run = Run::start(&p, &[("TRAPLINE_WEBROOT_POLL", "1")]);
    assert!(run.err().contains("polling"), "{}", run.err());
    assert!(!run.err().contains("web root: watching"), "{}", run.err());
    std::fs::write(p.join("www/uploads/poll.php"), "<?php").unwrap();
    wait_change(&p, "created", "www/uploads/poll.php");
    std::fs::rename(p.join("www/uploads/poll.php"), p.join("www/uploads/poll2.php")).unwrap();
    wait_change(&p, "renamed", "www/uploads/poll2.php");
    std::fs::remove_file(p.join("www/uploads/poll2.php")).unwrap();
    wait_change(&p, "deleted", "www/uploads/poll2.php");
    run.stop();
}

#[test]
fn a_mass_change_fires_once() {
    let (_d, p) = project("");
    let run = Run::start(&p, &[]);
    for i in 0..30 {
        std::fs::write(p.join(format!("www/app/f{i}.html")), format!("<html>{i}")).unwrap();
    }
    assert!(wait_for(Duration::from_secs(15), || changes(&p).len() >= 30), "{:?}", changes(&p));
    assert!(wait_for(Duration::from_secs(5), || !rule_paths(&p, "webroot.mass-change").is_empty()));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(rule_paths(&p, "webroot.mass-change").len(), 1, "one detection per burst (then suppressed)");
    let d = detections(&p.join("out.txt")).into_iter().find(|d| d["rule"]["id"] == "webroot.mass-change").unwrap();
    assert_eq!(d["threshold"]["count"], 21, "{d}");
    run.stop();
}

fn sqlite(p: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(p.join("state/webroot.sqlite")).unwrap()
}

#[test]
fn a_tampered_baseline_is_reported_until_accepted() {
    let (_d, p) = project("");
    Run::start(&p, &[]).stop();
    // Someone plants a shell and edits the baseline so that it looks known.
    std::fs::write(p.join("www/uploads/planted.php"), "<?php eval($_REQUEST[1]);").unwrap();
    let canon = std::fs::canonicalize(p.join("www/uploads/planted.php")).unwrap();
    let db = sqlite(&p);
    let n = db
        .execute(
            "INSERT INTO files SELECT source, ?1, dev, ino, size, mode, uid, gid, mtime_ns, ctime_ns, sha256, content, mac
             FROM files WHERE path LIKE '%cat.jpg'",
            [canon.as_os_str().as_bytes()],
        )
        .unwrap();
    assert_eq!(n, 1);
    drop(db);
    let run = Run::start(&p, &[]);
    assert!(wait_for(Duration::from_secs(10), || !rule_paths(&p, "webroot.baseline.tampered").is_empty()));
    assert!(run.err().contains("TAMPERED"), "{}", run.err());
    let d =
        detections(&p.join("out.txt")).into_iter().find(|d| d["rule"]["id"] == "webroot.baseline.tampered").unwrap();
    assert_eq!(d["rule"]["severity"], "critical");
    run.stop();
    // Still reported at the next start: nothing accepted it.
    let run = Run::start(&p, &[]);
    assert!(wait_for(Duration::from_secs(10), || rule_paths(&p, "webroot.baseline.tampered").len() == 2));
    run.stop();
    // Removing the flag by hand breaks the seal again.
    sqlite(&p).execute("UPDATE meta SET value = X'30' WHERE key = 'tampered'", []).unwrap();
    let run = Run::start(&p, &[]);
    assert!(wait_for(Duration::from_secs(10), || rule_paths(&p, "webroot.baseline.tampered").len() == 3));
    run.stop();
    // After verification, accepting everything rebuilds the seal.
    let out = accept(&p, &[]);
    assert!(out.contains("accepted"), "{out}");
    let run = Run::start(&p, &[]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(rule_paths(&p, "webroot.baseline.tampered").len(), 3);
    assert!(!run.err().contains("TAMPERED"), "{}", run.err());
    run.stop();
    // The key is private.
    let mode = std::fs::metadata(p.join("state/webroot.key")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

fn accept(p: &Path, paths: &[&Path]) -> String {
    let out = Command::new(bin())
        .args(["webroot", "accept", "--config", p.join("trapline.yml").to_str().unwrap()])
        .args(paths)
        .env("USER", "deployer")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn accepted_changes_are_not_reported() {
    let (_d, p) = project("");
    Run::start(&p, &[]).stop();
    std::fs::write(p.join("www/app/index.php"), "<?php echo 'release 2';\n").unwrap();
    std::fs::write(p.join("www/app/new.php"), "<?php echo 'new in release 2';\n").unwrap();
    std::fs::write(p.join("www/uploads/evil.php"), "<?php").unwrap();
    let out = accept(&p, &[&p.join("www/app")]);
    assert!(out.contains("site: 2 changes accepted by deployer"), "{out}");
    let who: String = sqlite(&p).query_row("SELECT who FROM accepts", [], |r| r.get(0)).unwrap();
    assert_eq!(who, "deployer");
    let run = Run::start(&p, &[]);
    wait_change(&p, "created", "www/uploads/evil.php");
    run.stop();
    assert!(!changes(&p).iter().any(|(_, q)| q.starts_with("www/app")), "{:?}", changes(&p));
    // Refused while the daemon holds the state directory.
    let run = Run::start(&p, &[]);
    let out = Command::new(bin())
        .args(["webroot", "accept", "--config", p.join("trapline.yml").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    run.stop();
}

#[test]
fn maintenance_windows_record_without_reporting() {
    let (_d, p) = project("    maintenance:\n      - {hours: \"00:00-24:00\"}\n");
    let run = Run::start(&p, &[]);
    std::fs::write(p.join("www/app/deploy.php"), "<?php").unwrap();
    assert!(wait_for(Duration::from_secs(10), || {
        sqlite(&p)
            .query_row("SELECT count(*) FROM changes WHERE reported = 0 AND note = 'maintenance window'", [], |r| {
                r.get::<_, i64>(0)
            })
            .unwrap_or(0)
            == 1
    }));
    run.stop();
    assert!(changes(&p).is_empty(), "{:?}", changes(&p));
}

#[test]
fn a_flapping_file_gives_one_event_per_window() {
    let (_d, p) = project("");
    let cfg = std::fs::read_to_string(p.join("trapline.yml")).unwrap().replace("flap_window: 1ms", "flap_window: 1h");
    std::fs::write(p.join("trapline.yml"), cfg).unwrap();
    let run = Run::start(&p, &[]);
    for i in 0..4 {
        std::fs::write(p.join("www/app/index.php"), format!("<?php echo {i};\n")).unwrap();
        std::thread::sleep(Duration::from_millis(400));
    }
    wait_change(&p, "modified", "www/app/index.php");
    let recorded = || {
        sqlite(&p)
            .query_row("SELECT count(*) FROM changes WHERE path LIKE '%index.php'", [], |r| r.get::<_, i64>(0))
            .unwrap_or(0)
    };
    assert!(wait_for(Duration::from_secs(5), || recorded() >= 3), "{}", recorded());
    run.stop();
    let n = changes(&p).iter().filter(|(c, q)| c == "modified" && q == "www/app/index.php").count();
    assert_eq!(n, 1, "{:?}", changes(&p));
}

#[test]
fn hostile_names_links_and_fifos_are_handled() {
    let (_d, p) = project("");
    let outside = p.join("outside.txt");
    std::fs::write(&outside, "secret").unwrap();
    std::os::unix::fs::symlink(&outside, p.join("www/uploads/link")).unwrap();
    let run = Run::start(&p, &[]);
    // A name that is not UTF-8.
    let odd = p.join("www/uploads").join(std::ffi::OsStr::from_bytes(b"sh\xffell.php"));
    std::fs::write(&odd, "<?php").unwrap();
    assert!(wait_for(Duration::from_secs(10), || rule_paths(&p, "webroot.upload.script").len() == 1));
    // A FIFO: recorded by stat, never opened (the source must not hang on it).
    let fifo = p.join("www/uploads/pipe");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    wait_change(&p, "created", "www/uploads/pipe");
    // The link's target changes outside the root: not followed, not reported.
    std::fs::write(&outside, "changed").unwrap();
    std::fs::write(p.join("www/uploads/after.txt"), "x").unwrap();
    wait_change(&p, "created", "www/uploads/after.txt");
    assert!(!changes(&p).iter().any(|(_, q)| q.contains("link") || q.contains("outside")), "{:?}", changes(&p));
    // Repointing the link is a modification of the link.
    std::fs::remove_file(p.join("www/uploads/link")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", p.join("www/uploads/link")).unwrap();
    wait_change(&p, "modified", "www/uploads/link");
    let err = run.stop();
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn bad_configs_are_refused_with_a_position() {
    let (_d, p) = project("");
    let cfg = std::fs::read_to_string(p.join("trapline.yml")).unwrap();
    let check = |text: &str, want: &str| {
        std::fs::write(p.join("trapline.yml"), text).unwrap();
        let out =
            Command::new(bin()).args(["run", "--config", p.join("trapline.yml").to_str().unwrap()]).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(want), "want {want:?} in {err}");
        assert!(!p.join("state/webroot.sqlite").exists(), "nothing starts half-way");
    };
    check(&cfg.replace("paths: [www]", "paths: [nowhere]"), "trapline.yml:8:13: source \"site\": web root");
    std::fs::write(p.join("afile"), "x").unwrap();
    check(&cfg.replace("paths: [www]", "paths: [afile]"), "is not a directory");
    check(&cfg.replace("[\"uploads/**\"]", "[\"uploads/[\"]"), "invalid glob");
    check(&format!("{cfg}    maintenance: [{{hours: \"8-18\"}}]\n"), "maintenance window");
    check(
        &cfg.replace("    type: webroot\n", ""),
        "trapline.yml:10:5: source \"site\": classes is for `type: webroot` sources",
    );
    // An unreadable root (as root, every directory is readable: nothing to check).
    std::fs::set_permissions(p.join("www"), std::fs::Permissions::from_mode(0o000)).unwrap();
    if std::fs::read_dir(p.join("www")).is_err() {
        check(&cfg, "cannot read web root");
    }
    std::fs::set_permissions(p.join("www"), std::fs::Permissions::from_mode(0o755)).unwrap();
    // A YARA rule that does not compile: the files written could not be scanned with it.
    std::fs::write(p.join("rules/broken.yar"), "rule broken {\n  strings: $a = \"x\"\n  condition: $b\n}\n").unwrap();
    check(&cfg, "broken.yar:3:");
}

#[test]
fn the_time_operator_works_on_log_lines() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("r.yml");
    std::fs::write(
        &rules,
        "rules:
  - id: t.night
    title: admin outside office hours
    severity: low
    match:
      all:
        - {field: path, starts_with: /admin}
        - not: {time: {days: [mon, tue, wed, thu, fri], hours: \"08:00-18:00\", timezone: Europe/Paris}}
",
    )
    .unwrap();
    let log = dir.path().join("access.log");
    // Thursday 10 Oct 2024: 13:55 UTC is 15:55 in Paris (inside); 17:30 UTC is 19:30 (outside);
    // Saturday 12 Oct at noon (outside).
    std::fs::write(
        &log,
        "198.51.100.1 - - [10/Oct/2024:13:55:36 +0000] \"GET /admin/a HTTP/1.1\" 200 1 \"-\" \"-\"\n\
         198.51.100.2 - - [10/Oct/2024:17:30:00 +0000] \"GET /admin/b HTTP/1.1\" 200 1 \"-\" \"-\"\n\
         198.51.100.3 - - [12/Oct/2024:12:00:00 +0000] \"GET /admin/c HTTP/1.1\" 200 1 \"-\" \"-\"\n",
    )
    .unwrap();
    let out = Command::new(bin())
        .args(["scan", "--json", "--rules", rules.to_str().unwrap(), log.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let ips: Vec<String> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["rule"]["id"] == "t.night")
        .map(|v| v["fields"]["client_ip"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(ips, ["198.51.100.2", "198.51.100.3"], "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_removed_directory_reports_each_file_once() {
    let (_d, p) = project("");
    std::fs::create_dir_all(p.join("www/app/lib/deep")).unwrap();
    for n in ["a.php", "b.php", "deep/c.php"] {
        std::fs::write(p.join("www/app/lib").join(n), "<?php").unwrap();
    }
    let run = Run::start(&p, &[]);
    std::fs::remove_dir_all(p.join("www/app/lib")).unwrap();
    for n in ["a.php", "b.php", "deep/c.php"] {
        wait_change(&p, "deleted", &format!("www/app/lib/{n}"));
    }
    std::thread::sleep(Duration::from_millis(500));
    run.stop();
    let deleted = changes(&p).iter().filter(|(c, _)| c == "deleted").count();
    assert_eq!(deleted, 3, "{:?}", changes(&p));
}

#[test]
fn web_roots_and_logs_run_together() {
    let (_d, p) = project("");
    std::fs::write(p.join("access.log"), "").unwrap();
    std::fs::write(
        p.join("rules/log.yml"),
        "rules:\n  - id: t.log\n    title: log line\n    severity: low\n    formats: [combined]\n    match: {field: path, contains: /probe}\n",
    )
    .unwrap();
    let cfg = std::fs::read_to_string(p.join("trapline.yml")).unwrap();
    std::fs::write(p.join("trapline.yml"), format!("{cfg}  - name: web\n    paths: [access.log]\n")).unwrap();
    let run = Run::start(&p, &[]);
    common::append(&p.join("access.log"), &[common::access_line("203.0.113.9", 1, "/probe", 404)]);
    std::fs::write(p.join("www/uploads/x.php"), "<?php").unwrap();
    wait_change(&p, "created", "www/uploads/x.php");
    assert!(wait_for(Duration::from_secs(10), || detections(&p.join("out.txt"))
        .iter()
        .any(|d| d["rule"]["id"] == "t.log")));
    // Rules for file changes never see log lines, and log rules never see file changes.
    let dets = detections(&p.join("out.txt"));
    assert!(dets.iter().all(|d| (d["rule"]["id"] == "t.log") == (d["source"]["name"] == "web")), "{dets:?}");
    run.stop();
}

/// The rule example of the README's web-root section loads and its examples pass.
#[test]
fn readme_webroot_rule_example_works() {
    use trapline::rule::load::{SourceFile, load_sources};
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme.split("## Watching a web root").nth(1).unwrap().split("\n## ").next().unwrap();
    let yaml = section.split("```yaml\n").nth(2).and_then(|s| s.split("```").next()).unwrap();
    let text = format!("rules:\n{yaml}");
    let loaded = load_sources(vec![SourceFile { path: PathBuf::from("README.md"), text }]).unwrap();
    let rules = trapline::engine::RuleSet::compile(
        &loaded,
        &trapline::pipeline::setup::compile_options(),
        trapline::parse::FieldRegistry::default(),
    )
    .unwrap();
    let report = trapline::authoring::examples::run(&loaded, &rules, &|_| None);
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert_eq!(report.passed, 2);
}

#[test]
fn too_few_watches_fall_back_to_polling_with_the_numbers() {
    let (_d, p) = project("    poll_interval: 300ms\n");
    std::fs::create_dir_all(p.join("www/app/lib")).unwrap();
    let run = Run::start(&p, &[("TRAPLINE_WEBROOT_MAX_WATCHES", "2")]);
    // The root, app, app/lib and uploads (cache is ignored: no watch there).
    assert!(
        run.err().contains("4 directories need as many watches but fs.inotify.max_user_watches is 2"),
        "{}",
        run.err()
    );
    std::fs::write(p.join("www/app/lib/x.php"), "<?php").unwrap();
    wait_change(&p, "created", "www/app/lib/x.php");
    run.stop();
}

#[test]
fn hashing_is_rate_limited() {
    let (_d, p) = project("    hash_bytes_per_second: 262144\n");
    std::fs::write(p.join("www/uploads/big.bin"), vec![7u8; 600 << 10]).unwrap();
    let started = std::time::Instant::now();
    let run = Run::start(&p, &[]);
    // 600 KiB at 256 KiB/s: two full seconds of pacing before the build can end.
    assert!(started.elapsed() >= Duration::from_secs(2), "{:?}", started.elapsed());
    assert!(run.err().contains("hashed=3"), "{}", run.err());
    run.stop();
}

/// The shipped content rules and YARA rules beside the web-root rules.
fn with_content_rules(p: &Path) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for f in ["rules/webshell-content.yml", "rules/webshell.yar"] {
        std::fs::copy(root.join(f), p.join(f)).unwrap();
    }
}

/// The content detection (`webroot.content.*`) of `path`, alone or merged into another
/// detection of the same change.
fn content_detection(p: &Path, path: &str) -> Option<serde_json::Value> {
    let abs = format!("{}/{path}", std::fs::canonicalize(p).unwrap().display());
    let is_content = |v: &serde_json::Value| v.as_str().is_some_and(|s| s.starts_with("webroot.content."));
    detections(&p.join("out.txt")).into_iter().find(|d| {
        d["fields"]["path"] == abs.as_str()
            && (is_content(&d["rule"]["id"]) || d["also"].as_array().is_some_and(|a| a.iter().any(is_content)))
    })
}

#[test]
fn files_written_are_scanned_with_the_content_and_yara_rules() {
    // A deploy window all day, and files that change twice within the flap window: the
    // changes themselves are muted, what the files contain is not.
    let (_d, p) = project("    maintenance:\n      - {hours: \"00:00-24:00\"}\n");
    let cfg = std::fs::read_to_string(p.join("trapline.yml")).unwrap().replace("flap_window: 1ms", "flap_window: 1h");
    std::fs::write(p.join("trapline.yml"), cfg).unwrap();
    with_content_rules(&p);
    let run = Run::start(&p, &[]);
    // Dropped in one write.
    std::fs::write(p.join("www/uploads/avatar.php"), "<?php system($_GET['c']); ?>\n").unwrap();
    // Created empty, then written (the way many upload handlers and editors do it).
    std::fs::write(p.join("www/app/cache.php"), "").unwrap();
    std::thread::sleep(Duration::from_millis(600));
    std::fs::write(p.join("www/app/cache.php"), "<?php @eval(base64_decode($_POST['x']));\n").unwrap();
    // PHP code inside an image, then renamed to .php.
    std::fs::write(p.join("www/uploads/me.jpg"), b"\xff\xd8\xff\xe0\x00\x10JFIF<?php passthru($_REQUEST['c']); ?>")
        .unwrap();
    // Harmless code during the window: recorded, not reported.
    std::fs::write(p.join("www/app/about.php"), "<?php echo 'about us';\n").unwrap();
    for f in ["www/uploads/avatar.php", "www/app/cache.php", "www/uploads/me.jpg"] {
        assert!(
            wait_for(Duration::from_secs(15), || content_detection(&p, f).is_some()),
            "no content detection of {f}: {:#?}\n{}",
            detections(&p.join("out.txt")),
            run.err()
        );
    }
    let d = content_detection(&p, "www/uploads/avatar.php").unwrap();
    assert_eq!(d["rule"]["severity"], "critical", "{d:#}");
    let rules = d["fields"]["content_rules"].as_str().unwrap();
    assert!(rules.split(' ').any(|r| r == "webshell.php.input-to-exec"), "{rules}");
    assert!(rules.split(' ').any(|r| r.starts_with("yara.")), "the YARA rules ran too: {rules}");
    assert!(d["fields"]["content_excerpt"].as_str().unwrap().contains("system($_GET"), "{d:#}");
    let d = content_detection(&p, "www/app/cache.php").unwrap();
    assert_eq!(d["fields"]["change"], "modified", "{d:#}");
    std::fs::rename(p.join("www/uploads/me.jpg"), p.join("www/uploads/me.php")).unwrap();
    assert!(
        wait_for(Duration::from_secs(15), || content_detection(&p, "www/uploads/me.php").is_some()),
        "{:#?}",
        detections(&p.join("out.txt"))
    );
    let d = content_detection(&p, "www/uploads/me.php").unwrap();
    assert_eq!(d["fields"]["change"], "renamed", "{d:#}");
    run.stop();
    assert!(content_detection(&p, "www/app/about.php").is_none());
    assert!(
        !detections(&p.join("out.txt"))
            .iter()
            .any(|d| d["fields"]["path"].as_str().unwrap_or("").ends_with("about.php")),
        "a harmless change inside the maintenance window is not reported"
    );
}

/// Detections of the shipped sequence rule: (client_ip, sequence key).
fn planted_and_used(p: &Path) -> Vec<(String, String)> {
    detections(&p.join("out.txt"))
        .iter()
        .filter(|d| d["rule"]["id"] == "webroot.webshell.planted-and-used")
        .map(|d| {
            (
                d["fields"]["client_ip"].as_str().unwrap_or_default().to_string(),
                d["sequence"]["key"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// An access-log line of now (the sequence joins on event time).
fn line_now(ip: &str, target: &str, status: u16) -> String {
    let t = chrono::Utc::now().format("%d/%b/%Y:%H:%M:%S +0000");
    format!("{ip} - - [{t}] \"GET {target} HTTP/1.1\" {status} 123 \"-\" \"curl/8.5\"")
}

#[test]
fn a_web_shell_planted_then_requested_is_one_critical_detection_naming_the_requester() {
    let (_d, p) = project("");
    with_content_rules(&p);
    std::fs::write(p.join("access.log"), "").unwrap();
    let cfg = std::fs::read_to_string(p.join("trapline.yml")).unwrap();
    std::fs::write(p.join("trapline.yml"), format!("{cfg}  - name: web\n    paths: [access.log]\n")).unwrap();
    let run = Run::start(&p, &[]);
    let log = p.join("access.log");
    // Requested before it exists: not a use of it.
    common::append(&log, &[line_now("198.51.100.1", "/uploads/shell.php", 200)]);
    std::thread::sleep(Duration::from_millis(500));
    // Planted, then requested at once — no pause for the web root to settle: the change must
    // still be seen first. A 404 for it and a request for another file are not uses.
    std::fs::write(p.join("www/uploads/shell.php"), "<?php echo 1;\n").unwrap();
    common::append(
        &log,
        &[
            line_now("203.0.113.7", "/uploads/shell.php?cmd=id", 200),
            line_now("203.0.113.8", "/uploads/shell.php", 404),
            line_now("203.0.113.9", "/uploads/other.php", 200),
        ],
    );
    // A file whose contents are a web shell, in the code: planted anywhere counts.
    std::fs::write(p.join("www/app/x y.php"), "<?php system($_GET['c']); ?>\n").unwrap();
    common::append(&log, &[line_now("203.0.113.10", "/app//x%20y.php", 200)]);
    // Harmless code changed, then requested: no sequence.
    std::fs::write(p.join("www/app/index.php"), "<?php echo 'v2';\n").unwrap();
    common::append(&log, &[line_now("203.0.113.11", "/app/index.php", 200)]);
    assert!(
        wait_for(Duration::from_secs(15), || planted_and_used(&p).len() >= 2),
        "{:?}\n{:#?}\n{}",
        planted_and_used(&p),
        detections(&p.join("out.txt")),
        run.err()
    );
    // Nothing more comes.
    std::thread::sleep(Duration::from_millis(1500));
    run.stop();
    let got = planted_and_used(&p);
    assert_eq!(
        got,
        [
            ("203.0.113.7".to_string(), "/uploads/shell.php".to_string()),
            ("203.0.113.10".to_string(), "/app/x y.php".to_string()),
        ],
        "{:#?}",
        detections(&p.join("out.txt"))
    );
    let d = detections(&p.join("out.txt"))
        .into_iter()
        .find(|d| d["rule"]["id"] == "webroot.webshell.planted-and-used")
        .unwrap();
    assert_eq!(d["rule"]["severity"], "critical");
    assert_eq!(d["sequence"]["steps"], 2);
    assert_eq!(d["source"]["name"], "web", "made from the request: {d:#}");
}
