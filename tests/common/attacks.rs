//! A temporary project whose rule detects `ATTACK-<n>` markers, for tests that count every
//! detection: each attack must be detected exactly once, whatever happens to files and the
//! daemon in between.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{access_line, append, detections, wait_for};

pub struct Env {
    _dir: tempfile::TempDir,
    pub root: PathBuf,
}

const ATTACK_RULE: &str = "rules:\n  - id: t.attack\n    title: test attack\n    severity: high\n    match: {field: uri, contains: ATTACK-}\n";

impl Env {
    pub fn new(start: &str) -> Env {
        Env::with_rules(start, ATTACK_RULE)
    }
    pub fn with_rules(start: &str, rules: &str) -> Env {
        let (dir, root) = super::project(
            Some(rules),
            &format!(
                "rules: [rules]\nstate_dir: state\nsources:\n  - name: web\n    paths: [logs/*.log]\n    format: combined\n    start: {start}\nactions:\n  log: {{path: out/out.txt, format: json, console: false}}\n"
            ),
        );
        Env { _dir: dir, root }
    }
    pub fn config(&self) -> PathBuf {
        self.root.join("trapline.yml")
    }
    pub fn log(&self) -> PathBuf {
        self.root.join("logs/access.log")
    }
    pub fn out(&self) -> PathBuf {
        self.root.join("out/out.txt")
    }
    /// Detections per attack marker.
    pub fn counts(&self) -> BTreeMap<u32, usize> {
        self.counts_in(&[self.out()])
    }
    /// Detections per attack marker over several output files (the live one and rotated ones).
    pub fn counts_in(&self, files: &[PathBuf]) -> BTreeMap<u32, usize> {
        let mut m = BTreeMap::new();
        for d in files.iter().flat_map(|f| detections(f)) {
            let uri = d["fields"]["uri"].as_str().unwrap().to_string();
            let n: u32 = uri.rsplit("ATTACK-").next().unwrap().parse().unwrap();
            *m.entry(n).or_default() += 1;
        }
        m
    }
    pub fn wait_all(&self, upto: u32) {
        let ok = wait_for(Duration::from_secs(15), || self.counts().len() as u32 >= upto);
        assert!(ok, "only {} of {upto} attacks detected: {:?}", self.counts().len(), self.counts());
    }
    pub fn assert_exactly_once(&self, upto: u32) {
        self.assert_exactly_once_in(upto, &[self.out()]);
    }
    pub fn assert_exactly_once_in(&self, upto: u32, files: &[PathBuf]) {
        let c = self.counts_in(files);
        let missing: Vec<u32> = (0..upto).filter(|n| !c.contains_key(n)).collect();
        let dup: Vec<(&u32, &usize)> = c.iter().filter(|(_, v)| **v != 1).collect();
        assert!(
            missing.is_empty() && dup.is_empty() && c.len() as u32 == upto,
            "missing {missing:?}, duplicated {dup:?}"
        );
    }
}

/// Attack `n` plus a benign line, as a logger would write them.
pub fn lines(range: std::ops::Range<u32>) -> Vec<String> {
    range
        .flat_map(|n| {
            [
                access_line("203.0.113.7", n, &format!("/x?id=ATTACK-{n}"), 404),
                access_line("198.51.100.2", n, "/ok", 200),
            ]
        })
        .collect()
}

pub fn write(p: &Path, range: std::ops::Range<u32>) {
    append(p, &lines(range));
}
