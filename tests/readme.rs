//! The rule example in the README is real: it loads, compiles and its examples pass.

use std::path::PathBuf;

use trapline::authoring::examples;
use trapline::engine::RuleSet;
use trapline::parse::FieldRegistry;
use trapline::rule::load::{SourceFile, load_sources};

/// The first ```yaml block after `marker` in the README.
fn readme_yaml(marker: &str) -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme.split(marker).nth(1).unwrap_or_else(|| panic!("README has {marker}"));
    section
        .split("```yaml\n")
        .nth(1)
        .and_then(|s| s.split("```").next())
        .unwrap_or_else(|| panic!("a yaml block after {marker}"))
        .to_string()
}

/// Runs access-log `lines` through the pipeline built from `rule_paths` (one ad-hoc `combined`
/// source), handing each detection to `on`; returns the pipeline for its counters.
fn run_lines(
    rule_paths: &[PathBuf],
    lines: &[&str],
    mut on: impl FnMut(trapline::engine::Detection),
) -> trapline::pipeline::Pipeline {
    use trapline::event::{Event, Origin};
    use trapline::pipeline::{AdHoc, Pipeline, setup};
    let adhoc = [AdHoc { name: "web", format: "combined", timezone: None }];
    let built = setup::build(None, rule_paths, &adhoc).unwrap();
    let info = built.sources[0].info("access.log");
    let mut p = Pipeline::new(built, 100);
    for (n, l) in lines.iter().enumerate() {
        let ev = Event::line(
            l.as_bytes(),
            Origin::Line { content: 1, offset: n as u64 * 100, line_number: n as u64 + 1 },
            chrono::Utc::now(),
            false,
        );
        p.process(0, &info, &ev, &mut |d: trapline::engine::Detection| {
            on(d);
            Ok(())
        })
        .unwrap();
    }
    p
}

#[test]
fn readme_rule_example_works() {
    let yaml = readme_yaml("## The rule language");
    let loaded = load_sources(vec![SourceFile { path: PathBuf::from("README.md"), text: yaml }])
        .unwrap_or_else(|e| panic!("README example does not load: {e}"));
    let rules = RuleSet::compile(&loaded, &trapline::pipeline::setup::compile_options(), FieldRegistry::default())
        .unwrap_or_else(|e| panic!("README example does not compile: {e}"));
    let report = examples::run(&loaded, &rules, &|_| None);
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert_eq!(report.passed, 2);
}

#[test]
fn readme_content_rule_example_works() {
    let yaml = readme_yaml("### Content rules");
    let loaded = load_sources(vec![SourceFile { path: PathBuf::from("README.md"), text: yaml }])
        .unwrap_or_else(|e| panic!("README content example does not load: {e}"));
    assert_eq!(loaded.content.len(), 2);
    let set = trapline::engine::content::ContentRuleSet::compile(&loaded)
        .unwrap_or_else(|e| panic!("README content example does not compile: {e}"));
    let facts = |name: &'static str, data: &[u8]| trapline::engine::content::FileFacts {
        name: name.as_bytes(),
        size: data.len() as u64,
    };
    let gif = b"GIF89a\x01\x00<?php system($_GET['c']); ?>";
    let hits = set.matches(facts("cat.gif", gif), gif, &mut set.scratch());
    assert_eq!(hits.len(), 1);
    assert_eq!(set.rules[hits[0].rule].id, "local.php-in-image");
}

/// The sequence example of the README compiles to one rule entry per step and fires on its
/// two steps in order.
#[test]
fn readme_sequence_example_works() {
    let yaml = readme_yaml("**Sequences**");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("r.yml"), format!("rules:\n{yaml}")).unwrap();
    let lines = [
        "203.0.113.5 - - [10/Oct/2024:13:00:00 +0000] \"POST /wp-login.php HTTP/1.1\" 200 1 \"-\" \"-\"",
        "203.0.113.6 - - [10/Oct/2024:13:00:01 +0000] \"GET /wp-admin/ HTTP/1.1\" 200 1 \"-\" \"-\"",
        "203.0.113.5 - - [10/Oct/2024:13:00:02 +0000] \"GET /wp-admin/ HTTP/1.1\" 200 1 \"-\" \"-\"",
    ];
    let mut got = Vec::new();
    let p = run_lines(&[dir.path().to_path_buf()], &lines, |d| {
        got.push((d.source.line_number, d.fields["client_ip"].clone()))
    });
    assert_eq!(p.rules().rules.len(), 2, "one entry per step");
    assert_eq!(got, [(3, "203.0.113.5".to_string())]);
}

/// The overrides example of the README applies to the shipped rules.
#[test]
fn readme_overrides_example_applies_to_the_shipped_rules() {
    let yaml = readme_yaml("**Overrides**");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("o.yml"), yaml).unwrap();
    let loaded = trapline::rule::load::load_paths(&[
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/rules")),
        dir.path().to_path_buf(),
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    let rule = |id: &str| loaded.rules.iter().find(|r| r.rule.id == id).unwrap().rule.clone();
    assert_eq!(rule("web.sqli.union-select").severity, trapline::rule::Severity::Critical);
    assert_eq!(rule("web.rate.per-client").threshold.unwrap().count, 1000);
    assert!(!rule("scanner.http-library-agent").enabled);
    RuleSet::compile(&loaded, &trapline::pipeline::setup::compile_options(), FieldRegistry::default())
        .unwrap_or_else(|e| panic!("{e}"));
}

/// The named-conditions example of the README compiles.
#[test]
fn readme_named_conditions_example_compiles() {
    let yaml = readme_yaml("**Named conditions**");
    let loaded = load_sources(vec![SourceFile { path: PathBuf::from("README.md"), text: yaml }])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(loaded.conditions.len(), 1);
    RuleSet::compile(&loaded, &trapline::pipeline::setup::compile_options(), FieldRegistry::default())
        .unwrap_or_else(|e| panic!("{e}"));
}

/// The README's `extract` and JSON array examples load, compile and pass their own examples.
#[test]
fn readme_extract_and_json_array_examples_work() {
    for marker in ["**Extracting fields**", "**JSON arrays**"] {
        let yaml = readme_yaml(marker);
        let text = format!("rules:\n{yaml}");
        let loaded = load_sources(vec![SourceFile { path: PathBuf::from("README.md"), text }])
            .unwrap_or_else(|e| panic!("README {marker} example does not load: {e}"));
        let rules = RuleSet::compile(&loaded, &trapline::pipeline::setup::compile_options(), FieldRegistry::default())
            .unwrap_or_else(|e| panic!("README {marker} example does not compile: {e}"));
        let report = examples::run(&loaded, &rules, &|_| None);
        assert!(report.failures.is_empty(), "{marker}: {:?}", report.failures);
        assert_eq!(report.passed, 2, "{marker}");
    }
}

/// The exceptions example of the README: the scanner and the health check are held back and
/// counted under their names, the rule's own `except` under the rule's id.
#[test]
fn readme_exceptions_example_works() {
    let yaml = readme_yaml("**Exceptions**");
    let dir = tempfile::tempdir().unwrap();
    // `rules: [web.*, honeypot.sqli]` needs those rules: the shipped ones next to it.
    std::fs::write(dir.path().join("r.yml"), yaml).unwrap();
    let shipped = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/rules"));
    let lines = [
        "203.0.113.5 - - [10/Oct/2024:13:00:00 +0000] \"GET /admin/ HTTP/1.1\" 200 1 \"-\" \"curl/8\"",
        "192.0.2.10 - - [10/Oct/2024:13:00:01 +0000] \"GET /admin/ HTTP/1.1\" 200 1 \"-\" \"curl/8\"",
        "203.0.113.5 - - [10/Oct/2024:13:00:02 +0000] \"GET /admin/ HTTP/1.1\" 200 1 \"-\" \"Pingdom.com_bot\"",
    ];
    let mut got = Vec::new();
    let p = run_lines(&[shipped, dir.path().to_path_buf()], &lines, |d| {
        if d.rule.id == "web.admin-probe" {
            got.push(d.source.line_number);
        }
    });
    assert_eq!(got, [1]);
    let held: Vec<(String, u64)> =
        p.detector().held_back().filter(|(_, n)| *n > 0).map(|(s, n)| (s.to_string(), n)).collect();
    assert!(held.contains(&("web.admin-probe".to_string(), 1)), "{held:?}");
    assert!(held.iter().any(|(s, n)| s == "scanner-allowlist" && *n >= 1), "{held:?}");
}

/// The `nats:` example of the README is a valid config section (with its commented keys
/// too), and its defaults are the ones it shows.
#[test]
fn readme_nats_example_is_a_valid_config() {
    let yaml = readme_yaml("## Several machines");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trapline.yml");
    std::fs::write(&path, &yaml).unwrap();
    let loaded = trapline::config::Loaded::from_file(&path).unwrap_or_else(|e| panic!("{e:#}"));
    let n = loaded.config.nats.expect("a nats section");
    assert_eq!((n.partitions, n.partition_by.as_str(), n.max_in_flight, n.evaluate), (16, "client_ip", 1024, true));
    // Uncommented, every optional key is accepted too (the two credential schemes apart).
    let all: String = yaml
        .lines()
        .map(|l| l.strip_prefix("  # ").map_or(l.to_string(), |rest| format!("  {rest}")))
        .filter(|l| !l.contains("creds_file"))
        .map(|l| l + "\n")
        .collect();
    std::fs::write(&path, &all).unwrap();
    let loaded = trapline::config::Loaded::from_file(&path).unwrap_or_else(|e| panic!("{e:#}\n{all}"));
    let n = loaded.config.nats.unwrap();
    assert!(!n.evaluate && n.user.as_deref() == Some("web01") && n.tls.is_some(), "{all}");
}

/// The worker example of the README is a valid config (with its commented keys too).
#[test]
fn readme_worker_example_is_a_valid_config() {
    let yaml = readme_yaml("### Workers");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trapline.yml");
    let all: String = yaml
        .lines()
        .map(|l| l.strip_prefix("  # ").map_or(l.to_string(), |rest| format!("  {rest}")))
        .map(|l| l + "\n")
        .collect();
    for text in [&yaml, &all] {
        std::fs::write(&path, text).unwrap();
        let loaded = trapline::config::Loaded::from_file(&path).unwrap_or_else(|e| panic!("{e:#}\n{text}"));
        assert!(loaded.config.worker_mode());
        let w = &loaded.config.worker;
        assert_eq!((w.id.as_deref(), w.lease.as_str(), w.batch), (Some("worker-1"), "5s", 256));
    }
}
