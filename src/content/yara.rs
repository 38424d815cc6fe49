//! YARA rules through `yara-x`: compiling `.yar` files with positioned errors, and turning
//! matching rules into [`ContentMatch`]es.
//!
//! Each file gets its own namespace (its name without extension, `_2`, `_3`... appended when
//! two files share a name), so two public sets that both define a rule `webshell_generic` load
//! side by side. A rule's severity comes from its meta:
//! `severity` (`info` … `critical`) when given, else `score` (signature-base's 0–100: 90+
//! critical, 70+ high, 50+ medium, else low), else `high`: a YARA rule someone chose to load
//! is meant to be looked at.

use std::path::{Path, PathBuf};
use std::time::Duration;

use yara_x::{Compiler, MetaValue, SourceCode};

use super::{ContentMatch, Engine, excerpt};
use crate::rule::{ErrorKind, RuleError, RuleErrors, Severity};

/// A single file's scan is stopped after this long: a pathological rule must not stall a
/// sweep (the file is reported without YARA matches).
const SCAN_TIMEOUT: Duration = Duration::from_secs(20);

/// Compiled YARA rules.
pub struct YaraRules {
    rules: yara_x::Rules,
}

impl YaraRules {
    /// Compiles `files` (built-in paths included), every error positioned at its file:line:col.
    pub fn compile(files: &[PathBuf]) -> Result<YaraRules, RuleErrors> {
        let mut compiler = Compiler::new();
        let mut errors = Vec::new();
        let mut namespaces = std::collections::HashSet::new();
        for f in files {
            let bytes = match crate::assets::read(f) {
                Ok(b) => b,
                Err(e) => {
                    errors.push(error(f, 0, 0, format!("cannot read YARA file: {e}"), ErrorKind::Io));
                    continue;
                }
            };
            // Two files of the same name (from two sets) get namespaces of their own.
            let base = namespace(f);
            let mut ns = base.clone();
            let mut n = 1;
            while !namespaces.insert(ns.clone()) {
                n += 1;
                ns = format!("{base}_{n}");
            }
            compiler.new_namespace(&ns);
            let origin = f.display().to_string();
            if let Err(e) = compiler.add_source(SourceCode::from(bytes.as_slice()).with_origin(origin.as_str())) {
                // The first label carries the position; its text says what is wrong there.
                let label = e.labels().next().map(|l| {
                    let v = serde_json::to_value(&l).unwrap_or_default();
                    let n = |k: &str| v.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0) as usize;
                    (n("line"), n("column"), l.text().to_string())
                });
                let (line, col, text) = label.unwrap_or_default();
                let msg = if text.is_empty() || text == e.title() {
                    format!("invalid YARA rule: {} [{}]", e.title(), e.code())
                } else {
                    format!("invalid YARA rule: {}: {text} [{}]", e.title(), e.code())
                };
                errors.push(error(f, line, col, msg, ErrorKind::Syntax));
            }
        }
        if !errors.is_empty() {
            return Err(RuleErrors(errors));
        }
        for w in compiler.warnings() {
            tracing::debug!(warning = %w, "YARA");
        }
        Ok(YaraRules { rules: compiler.build() })
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.iter().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn scanner(&self) -> yara_x::Scanner<'_> {
        let mut s = yara_x::Scanner::new(&self.rules);
        s.set_timeout(SCAN_TIMEOUT);
        s
    }

    /// The YARA rules `data` matches.
    pub fn scan(&self, scanner: &mut yara_x::Scanner<'_>, data: &[u8]) -> Vec<ContentMatch> {
        let results = match scanner.scan(data) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "YARA scan stopped");
                return Vec::new();
            }
        };
        let mut out: Vec<ContentMatch> = results
            .matching_rules()
            .map(|r| {
                let mut title = None;
                let mut severity = None;
                let mut score = None;
                for (k, v) in r.metadata() {
                    match (k, v) {
                        ("description", MetaValue::String(s)) => title = Some(excerpt(s.as_bytes())),
                        ("severity", MetaValue::String(s)) => severity = parse_severity(s),
                        ("score", MetaValue::Integer(i)) => score = Some(i),
                        _ => {}
                    }
                }
                let severity = severity.or(score.map(score_severity)).unwrap_or(Severity::High);
                let first = r.patterns().flat_map(|p| p.matches().next()).map(|m| m.range()).min_by_key(|r| r.start);
                ContentMatch {
                    rule: format!("yara.{}.{}", r.namespace(), r.identifier()),
                    title: title.unwrap_or_else(|| r.identifier().to_string()),
                    severity,
                    class: "webshell".to_string(),
                    engine: Engine::Yara,
                    offset: first.as_ref().map(|m| m.start as u64),
                    excerpt: first.and_then(|m| data.get(m)).map(excerpt),
                }
            })
            .collect();
        out.sort_by(|a, b| a.rule.cmp(&b.rule));
        out
    }
}

fn parse_severity(s: &str) -> Option<Severity> {
    Some(match s.to_ascii_lowercase().as_str() {
        "info" => Severity::Info,
        "low" => Severity::Low,
        "medium" => Severity::Medium,
        "high" => Severity::High,
        "critical" => Severity::Critical,
        _ => return None,
    })
}

fn score_severity(score: i64) -> Severity {
    match score {
        90.. => Severity::Critical,
        70..=89 => Severity::High,
        50..=69 => Severity::Medium,
        _ => Severity::Low,
    }
}

/// The namespace of a YARA file: its name without extension, as a YARA identifier.
fn namespace(f: &Path) -> String {
    let stem = f.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let mut ns: String = stem.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    if ns.is_empty() || ns.starts_with(|c: char| c.is_ascii_digit()) {
        ns.insert(0, '_');
    }
    ns
}

fn error(f: &Path, line: usize, col: usize, message: String, kind: ErrorKind) -> RuleError {
    RuleError { file: f.to_path_buf(), line, col, rule: None, message, kind }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_yara_is_positioned() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.yar");
        std::fs::write(&p, "rule ok { condition: true }\n\nrule broken {\n  strings: $a = \"x\"\n  condition: $b\n}\n")
            .unwrap();
        let e = YaraRules::compile(std::slice::from_ref(&p)).err().unwrap();
        let s = e.to_string();
        assert!(s.starts_with(&format!("{}:5:", p.display())), "{s}");
        assert!(s.contains("invalid YARA rule"), "{s}");
    }

    #[test]
    fn matches_carry_namespace_severity_and_offset() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("web-shells.yar");
        std::fs::write(
            &p,
            "rule php_eval { meta: description = \"eval\" score = 75\n strings: $e = \"eval($_POST\" condition: $e }\n\
             rule crit { meta: severity = \"critical\" condition: filesize > 3 }\n",
        )
        .unwrap();
        let y = YaraRules::compile(&[p]).unwrap();
        assert_eq!(y.len(), 2);
        let mut s = y.scanner();
        let m = y.scan(&mut s, b"<?php eval($_POST['a']);");
        assert_eq!(m.len(), 2, "{m:?}");
        assert_eq!(m[1].rule, "yara.web_shells.php_eval");
        assert_eq!(m[1].severity, Severity::High);
        assert_eq!(m[1].offset, Some(6));
        assert_eq!(m[1].title, "eval");
        assert_eq!(m[0].severity, Severity::Critical);
        assert!(y.scan(&mut s, b"ab").is_empty());
    }

    #[test]
    fn files_of_the_same_name_load_side_by_side() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        for d in [&a, &b] {
            std::fs::create_dir(d).unwrap();
            std::fs::write(d.join("shells.yar"), "rule same { condition: true }\n").unwrap();
        }
        let y = YaraRules::compile(&[a.join("shells.yar"), b.join("shells.yar")]).unwrap();
        let mut s = y.scanner();
        let ids: Vec<String> = y.scan(&mut s, b"x").into_iter().map(|m| m.rule).collect();
        assert_eq!(ids, ["yara.shells.same", "yara.shells_2.same"]);
    }
}
