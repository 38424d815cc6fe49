//! `trapline sweep` and the content scanner: the synthetic web shells of
//! tests/fixtures/webshells/shells are all found, their benign look-alikes are not, and hostile
//! trees (links out of the tree, odd names, huge files, broken rules) are handled.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixtures() -> PathBuf {
    root().join("tests/fixtures/webshells")
}

fn trapline() -> Command {
    let mut c = Command::cargo_bin("trapline").unwrap();
    c.env("NO_COLOR", "1").env_remove("TRAPLINE_LOG");
    c
}

/// Runs `sweep --json` with `rules` over `paths`; the matches as (relative path → rule ids).
fn sweep_json(rules: &[&Path], paths: &[&Path], extra: &[&str]) -> (BTreeMap<String, BTreeSet<String>>, Vec<Value>) {
    let mut c = trapline();
    c.arg("sweep").arg("--json");
    for r in rules {
        c.arg("--rules").arg(r);
    }
    c.args(extra).args(paths);
    let out = c.output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let mut by_path: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut all = Vec::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        by_path.entry(v["path"].as_str().unwrap().to_string()).or_default().insert(v["rule"].as_str().unwrap().into());
        all.push(v);
    }
    (by_path, all)
}

fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.display().to_string());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn every_synthetic_shell_is_found_high_or_critical_by_the_shipped_rules() {
    let shells = fixtures().join("shells");
    let expected = files_under(&shells);
    assert!(expected.len() >= 45, "fixtures missing: {}", expected.len());
    let (found, all) = sweep_json(&[&root().join("rules")], &[&shells], &["--min-severity", "high"]);
    let missed: Vec<&String> = expected.iter().filter(|p| !found.contains_key(*p)).collect();
    assert!(missed.is_empty(), "shells not found: {missed:#?}");
    for v in &all {
        assert!(matches!(v["severity"].as_str(), Some("high" | "critical")), "{v}");
        assert!(v["title"].is_string() && v["engine"].is_string(), "{v}");
    }
    // The YAML pack alone finds every one of them too (YARA adds a second opinion).
    let (yaml_only, _) =
        sweep_json(&[&root().join("rules/webshell-content.yml")], &[&shells], &["--min-severity", "high"]);
    let missed: Vec<&String> = expected.iter().filter(|p| !yaml_only.contains_key(*p)).collect();
    assert!(missed.is_empty(), "shells the content rules miss: {missed:#?}");
}

#[test]
fn each_rule_of_the_pack_catches_its_own_shells() {
    let shells = fixtures().join("shells");
    let (found, _) = sweep_json(&[&root().join("rules/webshell-content.yml")], &[&shells], &[]);
    let has = |file: &str, rule: &str| {
        let p = shells.join(file).display().to_string();
        assert!(found.get(&p).is_some_and(|r| r.contains(rule)), "{file}: {rule} not among {:?}", found.get(&p));
    };
    has("php/one-liner-system.php", "webshell.php.input-to-exec");
    has("php/short-tag-backtick.php", "webshell.php.input-to-exec");
    has("php/variable-command.php", "webshell.php.small-input-and-exec");
    has("php/concat-command.php", "webshell.php.small-input-and-exec");
    has("php/eval-gzinflate-base64.php", "webshell.php.eval-decode-chain");
    has("php/eval-gzuncompress-tag.php", "webshell.php.eval-decode-chain");
    has("php/rot13-name.php", "webshell.php.hidden-function-name");
    has("php/strrev-assert.php", "webshell.php.hidden-function-name");
    has("php/chr-chain.php", "webshell.php.chr-chain");
    has("php/input-as-function.php", "webshell.php.input-as-function");
    has("php/brace-superglobal.php", "webshell.php.input-to-exec");
    has("php/variable-function-concat.php", "webshell.php.input-as-function");
    has("php/create-function.php", "webshell.php.create-function-input");
    has("php/preg-replace-e.php", "webshell.php.create-function-input");
    has("php/preg-replace-e-hash.php", "webshell.php.create-function-input");
    has("php/password-protected.php", "webshell.php.password-protected");
    has("php/password-sha1-reversed.php", "webshell.php.password-protected");
    has("php/packed-payload.php", "webshell.php.packed-payload");
    has("php/include-input.php", "webshell.php.include-input");
    has("php/file-put-dropper.php", "webshell.php.write-input");
    has("php/fwrite-dropper.php", "webshell.php.write-input");
    has("php/header-shell.php", "webshell.php.input-to-exec");
    has("php/mixed-case.PhP", "webshell.php.input-to-exec");
    has("uploads/shell.gif", "webshell.upload.php-in-image");
    has("uploads/avatar.jpg", "webshell.upload.php-in-image");
    has("uploads/photo.png", "webshell.upload.php-in-image");
    has("uploads/logo.php", "webshell.upload.image-named-php");
    has("htaccess-addtype/.htaccess", "webshell.htaccess.handler");
    has("htaccess-sethandler/.htaccess", "webshell.htaccess.handler");
    has("htaccess-prepend/.htaccess", "webshell.htaccess.handler");
    has("user-ini/.user.ini", "webshell.user-ini.prepend");
    has("jsp/cmd.jsp", "webshell.jsp.exec");
    has("jsp/processbuilder.jsp", "webshell.jsp.exec");
    has("jsp/classloader.jsp", "webshell.jsp.class-loader");
    has("asp/chopper.aspx", "webshell.asp.eval-request");
    has("asp/eval.asp", "webshell.asp.eval-request");
    has("asp/cmd.aspx", "webshell.asp.exec");
    has("asp/cmdasp.asp", "webshell.asp.exec");
}

#[test]
fn benign_look_alikes_are_not_found() {
    let benign = fixtures().join("benign");
    assert!(files_under(&benign).len() >= 15);
    let (found, _) = sweep_json(&[&root().join("rules")], &[&benign], &[]);
    assert!(found.is_empty(), "benign files flagged: {found:#?}");
}

#[cfg(feature = "yara")]
#[test]
fn the_yara_twin_finds_the_content_only_shells() {
    let shells = fixtures().join("shells");
    let (found, all) = sweep_json(&[&root().join("rules/webshell.yar")], &[&shells], &[]);
    assert!(all.iter().all(|v| v["engine"] == "yara" && v["rule"].as_str().unwrap().starts_with("yara.webshell.")));
    for f in ["php/one-liner-system.php", "php/eval-gzinflate-base64.php", "uploads/shell.gif", "jsp/cmd.jsp"] {
        assert!(found.contains_key(&shells.join(f).display().to_string()), "{f}: {found:#?}");
    }
    let (benign, _) = sweep_json(&[&root().join("rules/webshell.yar")], &[&fixtures().join("benign")], &[]);
    assert!(benign.is_empty(), "{benign:#?}");
}

#[test]
fn exit_codes_follow_scan() {
    let shells = fixtures().join("shells/php");
    trapline().args(["sweep", "--quiet", "--rules"]).arg(root().join("rules")).arg(&shells).assert().code(0);
    trapline()
        .args(["sweep", "--quiet", "--fail-on-match", "--rules"])
        .arg(root().join("rules"))
        .arg(&shells)
        .assert()
        .code(1);
    trapline()
        .args(["sweep", "--quiet", "--fail-on-match", "--rules"])
        .arg(root().join("rules"))
        .arg(fixtures().join("benign"))
        .assert()
        .code(0);
    let out =
        trapline().args(["sweep", "--rules"]).arg(root().join("rules")).arg("/nonexistent/tree").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/tree"));
    // Log rules only: nothing for sweep to run is a usage error, not a silent pass.
    let out =
        trapline().args(["sweep", "--rules"]).arg(root().join("rules/web-attacks.yml")).arg(&shells).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no content rules"), "{out:?}");
}

#[test]
fn broken_content_rules_and_yara_are_positioned_errors() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    std::fs::write(
        rules.join("c.yml"),
        "rules:\n  - id: c.bad\n    title: bad\n    severity: high\n    content:\n      any: ['eval(']\n",
    )
    .unwrap();
    let out = trapline().arg("sweep").arg("--rules").arg(&rules).arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:6:", rules.join("c.yml").display())) && err.contains("invalid regex"), "{err}");
    if cfg!(feature = "yara") {
        std::fs::write(rules.join("c.yml"), "rules: []\n").unwrap();
        std::fs::write(rules.join("bad.yar"), "rule a {\n  strings:\n    $a = \"x\"\n  condition:\n    $a and $b\n}\n")
            .unwrap();
        let out = trapline().arg("sweep").arg("--rules").arg(&rules).arg(dir.path()).output().unwrap();
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("{}:5:", rules.join("bad.yar").display())), "{err}");
        // lint reports it at the same place.
        let out = trapline().arg("lint").arg(&rules).output().unwrap();
        let s = String::from_utf8_lossy(&out.stdout);
        assert!(s.contains("bad.yar:5:") && s.contains("TL001"), "{s}");
    }
}

#[cfg(unix)]
#[test]
fn hostile_trees_links_names_and_sizes() {
    use std::os::unix::ffi::OsStrExt;
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.php"), "<?php system($_GET['c']);").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let web = dir.path();
    std::fs::create_dir(web.join("sub")).unwrap();
    std::fs::write(web.join("sub/real.php"), "<?php eval($_POST['x']);").unwrap();
    // A link out of the tree (to a file and to a directory) is not followed; one inside is
    // not scanned twice.
    std::os::unix::fs::symlink(outside.path().join("secret.php"), web.join("out.php")).unwrap();
    std::os::unix::fs::symlink(outside.path(), web.join("outdir")).unwrap();
    std::os::unix::fs::symlink(web.join("sub/real.php"), web.join("in.php")).unwrap();
    std::os::unix::fs::symlink(web.join("nowhere"), web.join("dangling.php")).unwrap();
    // A name that is not UTF-8 and carries terminal escapes.
    let name = std::ffi::OsStr::from_bytes(b"x\xff\x1b]0;owned\x07.php");
    std::fs::write(web.join(name), "<?php passthru($_REQUEST['c']);").unwrap();
    // Larger than the cap given.
    std::fs::write(web.join("big.php"), format!("<?php system($_GET['c']); /*{}*/", "a".repeat(4096))).unwrap();

    let out = trapline()
        .args(["sweep", "--max-size", "2k", "--rules"])
        .arg(root().join("rules/webshell-content.yml"))
        .arg(web)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    for text in [&stdout, &stderr] {
        assert!(!text.chars().any(|c| c.is_control() && c != '\n'), "raw control characters: {text:?}");
    }
    assert!(stdout.contains("sub/real.php") && stdout.contains("\\\\xff\\u{1b}]0;owned\\u{7}.php"), "{stdout}");
    assert!(!stdout.contains("secret.php") && !stdout.contains("out.php") && !stdout.contains("in.php"), "{stdout}");
    // Reached once, under its own path: each rule reports it once.
    let real: Vec<&str> =
        stdout.lines().filter(|l| l.contains("real.php")).map(|l| l.split(' ').nth(1).unwrap()).collect();
    assert!(!real.is_empty() && real.iter().collect::<BTreeSet<_>>().len() == real.len(), "{stdout}");
    assert!(!stdout.contains("big.php"), "{stdout}");
    assert!(stderr.contains("larger than 2048 bytes") && stderr.contains("big.php"), "{stderr}");
    assert!(stderr.contains("links leading out of the tree (or dangling): 3"), "{stderr}");
    assert!(stderr.contains("out.php") && stderr.contains("outdir") && stderr.contains("dangling.php"), "{stderr}");
    assert!(stderr.contains("links inside the tree: 1"), "{stderr}");
    assert!(stderr.contains("2 files,"), "{stderr}");

    let (found, all) = sweep_json(&[&root().join("rules/webshell-content.yml")], &[web], &[]);
    let odd = all.iter().find(|v| v["path_utf8"] == false).expect("the odd name is reported");
    assert!(odd["path"].as_str().unwrap().ends_with("x\\xff\u{1b}]0;owned\u{7}.php"), "{odd}");
    assert!(found.keys().all(|p| p.starts_with(&web.display().to_string())), "{found:?}");
}

#[test]
fn library_entry_point_scans_one_file() {
    use trapline::content::{Engine, ScanError, Scanner};
    let scanner = Scanner::from_paths(&[root().join("rules")], &[]).unwrap();
    let m = scanner.scan_file(&fixtures().join("shells/php/eval-gzinflate-base64.php")).unwrap();
    let ids: Vec<&str> = m.iter().map(|m| m.rule.as_str()).collect();
    assert!(ids.contains(&"webshell.php.eval-decode-chain"), "{ids:?}");
    let hit = m.iter().find(|m| m.rule == "webshell.php.eval-decode-chain").unwrap();
    assert_eq!(hit.engine, Engine::Content);
    assert_eq!(hit.offset, Some(6));
    assert!(hit.excerpt.as_deref().unwrap().starts_with("eval(gzinflate("), "{hit:?}");
    assert!(scanner.scan_file(&fixtures().join("benign/inline-logo.php")).unwrap().is_empty());
    assert!(matches!(scanner.scan_file(&fixtures()), Err(ScanError::NotAFile)));
    assert!(matches!(scanner.scan_file(Path::new("/nonexistent/x.php")), Err(ScanError::Io(_))));
    // The built-in rules carry the pack too.
    let builtin = Scanner::from_paths(&[PathBuf::from("<built-in>/rules")], &[]).unwrap();
    assert!(builtin.rules.rules.len() >= 15);
    assert_eq!(builtin.yara_rule_count() > 0, cfg!(feature = "yara"));
}
