//! `trapline test`: runs every rule's inline examples, and the test fixtures next to the
//! rules, through the production engine (same parsing, prefilter, thresholds and suppression,
//! on event time) and reports like a test runner.
//!
//! A fixture is a `NAME.test.yml` file anywhere under the rule paths:
//!
//! ```yaml
//! format: combined            # default combined
//! log: bursts.log             # relative to the fixture (or `lines:` inline)
//! expect:                     # every detection the log must produce, and nothing else
//!   - {rule: web.burst.not-found, line: 20}
//! rules: [web.burst.*]        # optional: compare only the detections of these rules
//! ```
//!
//!
//! The model is [`crate::authoring::fixture::Fixture`] (`trapline schema fixtures`). Every
//! line of the log must parse in the fixture's format: a line that does not tests nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use chrono::Utc;
use clap::Args;

use super::setup::{self, AdHoc};
use crate::authoring::fixture::{Expected, Fixture, selected};
use crate::authoring::{CoveragePoint, examples};
use crate::config;
use crate::engine::Detection;
use crate::event::{Event, Origin};
use crate::pipeline::Pipeline;
use crate::source::read::BlockReader;

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Rule files or directories (default: the config's; without --config: ./trapline.yml's,
    /// else ./rules/, else the user's or system config's, else the built-in rules).
    pub paths: Vec<PathBuf>,
    /// Config file (custom formats, rules directory, timezone).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Print passing rules too.
    #[arg(long, short)]
    pub verbose: bool,
    /// List every list value and `any` alternative that no `match` example exercises (default:
    /// just count them).
    #[arg(long)]
    pub coverage: bool,
}

pub fn test(a: TestArgs) -> Result<i32> {
    let path = a.config.clone().or_else(|| if a.paths.is_empty() { super::rules_default_config() } else { None });
    let cfg = path.as_ref().map(|p| config::Loaded::from_file(p)).transpose()?;
    let paths = super::scan::rule_paths(&a.paths, cfg.as_ref());
    let loaded = crate::rule::load::load_paths(&paths)?;
    let tz = cfg.as_ref().map(|c| c.config.timezone.as_str());
    let setup = setup::build(cfg.as_ref(), &paths, &[AdHoc { name: "test", format: "raw", timezone: tz }])?;
    let formats = cfg.as_ref().map(|c| c.config.formats.clone()).unwrap_or_default();
    let parser_for = |name: &str| {
        let mut reg = setup.rules.registry.clone();
        config::parser_for(name, &formats, crate::parse::TimeSettings::default(), &mut reg).ok()
    };

    // Inline examples, grouped per rule.
    let report = examples::run(&loaded, &setup.rules, &parser_for);
    let uncovered: BTreeMap<String, Option<Vec<CoveragePoint>>> =
        examples::coverage(&loaded, &setup.rules, &parser_for).into_iter().collect();
    let mut failed_rules: BTreeMap<&str, Vec<&examples::ExampleFailure>> = BTreeMap::new();
    for f in &report.failures {
        failed_rules.entry(f.rule.as_str()).or_default().push(f);
    }
    let (mut passed, mut failed, mut gaps) = (0usize, 0usize, 0usize);
    for lr in &loaded.rules {
        let id = lr.rule.id.as_str();
        match failed_rules.get(id) {
            None => {
                passed += 1;
                if a.verbose {
                    let n = lr.rule.examples.should_match.len() + lr.rule.examples.no_match.len();
                    println!("ok    {id} ({n} examples)");
                }
            }
            Some(fs) => {
                failed += 1;
                println!("FAIL  {id}");
                for f in fs {
                    let at = loaded.rule_error(lr, &f.path, "");
                    println!("      {}:{}:{} {}: {}", at.file.display(), at.line, at.col, f.path, f.reason);
                    if !f.line.is_empty() {
                        println!("        {}", crate::action::console::escape(&f.line));
                    }
                }
            }
        }
        for w in uncovered.get(id).map(|u| gaps_of(&loaded, lr, u.as_deref())).unwrap_or_default() {
            gaps += 1;
            if a.coverage {
                println!("warn  {id}: {w}");
            }
        }
    }

    // Fixtures.
    for path in fixtures(&paths) {
        match run_fixture(&path, cfg.as_ref(), &paths) {
            Ok(None) => {
                passed += 1;
                if a.verbose {
                    println!("ok    {}", path.display());
                }
            }
            Ok(Some(diff)) => {
                failed += 1;
                println!("FAIL  {}\n{diff}", path.display());
            }
            Err(e) => {
                failed += 1;
                println!("FAIL  {}: {e:#}", path.display());
            }
        }
    }
    if gaps > 0 && !a.coverage {
        println!("warn  {gaps} list values or `any` alternatives are exercised by no example (--coverage lists them)");
    }
    println!("{passed} passed, {failed} failed");
    Ok(if failed > 0 { 1 } else { 0 })
}

/// The coverage gaps of one rule as lines for the report, each with the file:line:col of the
/// alternative or value list. `points` is `None` when the rule has no `match` example.
fn gaps_of(
    loaded: &crate::rule::Loaded,
    lr: &crate::rule::LoadedRule,
    points: Option<&[CoveragePoint]>,
) -> Vec<String> {
    let Some(points) = points else { return vec!["no `match` example".to_string()] };
    let at = |path: &str| {
        let e = loaded.rule_error(lr, path, "");
        format!("{}:{}:{}", e.file.display(), e.line, e.col)
    };
    points
        .iter()
        .map(|p| match p {
            CoveragePoint::Alternative(path) => {
                format!("{path} ({}) is made true by no `match` example", at(path))
            }
            CoveragePoint::Value { path, op, value, .. } => {
                format!(
                    "{path}.{op} value {value:?} ({}) is exercised by no `match` example",
                    at(&format!("{path}.{op}"))
                )
            }
        })
        .collect()
}

fn fixtures(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = paths.to_vec();
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
        } else if p.to_str().is_some_and(|s| s.ends_with(".test.yml") || s.ends_with(".test.yaml")) {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// Runs one fixture; `Ok(Some(diff))` when the detections differ from the expectation.
fn run_fixture(path: &Path, cfg: Option<&config::Loaded>, rule_paths: &[PathBuf]) -> Result<Option<String>> {
    let text = std::fs::read_to_string(path)?;
    let fx: Fixture = serde_yaml::from_str(&text).map_err(|e| match e.location() {
        Some(l) => anyhow::anyhow!("{}:{}:{}: {e}", path.display(), l.line(), l.column()),
        None => anyhow::anyhow!("{}: {e}", path.display()),
    })?;
    let selection = fx.selection().map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let tz = cfg.map(|c| c.config.timezone.as_str());
    let setup = setup::build(cfg, rule_paths, &[AdHoc { name: "test", format: &fx.format, timezone: tz }])?;
    let info = setup.sources[0].info(&path.display().to_string());
    let mut pipeline = Pipeline::new(setup, crate::engine::DEFAULT_MAX_KEYS);
    let data = match &fx.log {
        Some(log) => {
            let p = path.parent().unwrap_or(Path::new(".")).join(log);
            let mut r = BlockReader::open(&p).with_context(|| format!("cannot open {}", p.display()))?;
            let mut all = Vec::new();
            while let Some(b) = r.next_block(1 << 20)? {
                all.extend_from_slice(&b.data);
            }
            all
        }
        None => fx.lines.join("\n").into_bytes(),
    };
    let mut got = Vec::new();
    let mut unparsed = Vec::new();
    let mut offset = 0u64;
    for (i, line) in data.split(|&b| b == b'\n').enumerate() {
        let origin = Origin::Line { content: 0, offset, line_number: i as u64 + 1 };
        offset += line.len() as u64 + 1;
        if line.is_empty() {
            continue;
        }
        let ev = Event::line(line, origin, Utc::now(), false);
        let unparsed_before = pipeline.counts.unparsed;
        pipeline.process(0, &info, &ev, &mut |d: Detection| {
            match selection {
                None => got.push(Expected { rule: d.rule.id.clone(), line: d.source.line_number }),
                Some(only) => {
                    for id in std::iter::once(&d.rule.id).chain(&d.also).filter(|id| selected(only, id)) {
                        got.push(Expected { rule: id.clone(), line: d.source.line_number });
                    }
                }
            }
            Ok(())
        })?;
        if pipeline.counts.unparsed > unparsed_before {
            unparsed.push((i + 1, line));
        }
    }
    let mut want = fx.expect.clone();
    want.sort();
    got.sort();
    if want == got && unparsed.is_empty() {
        return Ok(None);
    }
    let mut diff = String::new();
    // A line the format cannot read reaches only raw-line rules: as part of a fixture it
    // silently tests much less than it seems to.
    let of = match &fx.log {
        Some(log) => log.display().to_string(),
        None => "lines".to_string(),
    };
    for (n, line) in &unparsed {
        diff.push_str(&format!(
            "      ! line {n} of {of} does not parse as {}: {}\n",
            fx.format,
            crate::action::console::escape(&String::from_utf8_lossy(line))
        ));
    }
    for w in want.iter().filter(|w| !got.contains(w)) {
        diff.push_str(&format!("      - missing:    {} at line {}\n", w.rule, w.line));
    }
    for g in got.iter().filter(|g| !want.contains(g)) {
        diff.push_str(&format!("      + unexpected: {} at line {}\n", g.rule, g.line));
    }
    Ok(Some(diff))
}
