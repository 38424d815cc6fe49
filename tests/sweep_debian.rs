//! `trapline sweep` over real PHP applications: the trees of Debian's wordpress, phpmyadmin,
//! mediawiki and roundcube packages must give no high or critical finding with the shipped
//! rules (lower ones are printed, for the record).
//!
//! Without the packages the test is reported as ignored, unless `TRAPLINE_E2E_REQUIRED=1` is
//! set (as in CI, where .ci/setup.sh installs them), in which case it fails.

use std::path::Path;
use std::process::Command;

const TREES: [(&str, &str); 4] = [
    ("wordpress", "/usr/share/wordpress"),
    ("phpmyadmin", "/usr/share/phpmyadmin"),
    ("mediawiki", "/usr/share/mediawiki"),
    ("roundcube-core", "/usr/share/roundcube"),
];

fn main() {
    let args = libtest_mimic::Arguments::from_args();
    let required = std::env::var("TRAPLINE_E2E_REQUIRED").is_ok_and(|v| v == "1");
    let missing: Vec<&str> = TREES.iter().filter(|(_, t)| !Path::new(t).is_dir()).map(|(p, _)| *p).collect();
    let ignored = !missing.is_empty() && !required;
    if ignored {
        eprintln!("ignored: sweep_debian: {} not installed", missing.join(", "));
    }
    let trial = libtest_mimic::Trial::test("sweep_debian_php_trees_no_high_findings", move || {
        if !missing.is_empty() {
            return Err(format!(
                "TRAPLINE_E2E_REQUIRED=1 but {} not installed (apt-get install wordpress phpmyadmin mediawiki \
                 roundcube-core)",
                missing.join(", ")
            )
            .into());
        }
        sweep_debian();
        Ok(())
    })
    .with_ignored_flag(ignored);
    libtest_mimic::run(&args, vec![trial]).exit();
}

fn sweep_debian() {
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    let out = Command::new(env!("CARGO_BIN_EXE_trapline"))
        .env("NO_COLOR", "1")
        .args(["sweep", "--json", "--rules"])
        .arg(&rules)
        .args(TREES.iter().map(|(_, t)| *t))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let mut high = Vec::new();
    let mut lower = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let entry = format!("{} {} {}", v["severity"].as_str().unwrap(), v["rule"].as_str().unwrap(), v["path"]);
        match v["severity"].as_str() {
            Some("high" | "critical") => high.push(entry),
            _ => lower.push(entry),
        }
    }
    for l in &lower {
        eprintln!("lower finding: {l}");
    }
    eprintln!("{stderr}");
    assert!(high.is_empty(), "high or critical findings in Debian's PHP applications:\n{}", high.join("\n"));
    // The sweep did read the trees: thousands of files (the summary's count).
    let files: u64 = stderr
        .lines()
        .find(|l| l.contains(" files, ") && l.contains("files/s"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    assert!(files > 5000, "only {files} files scanned:\n{stderr}");
}
