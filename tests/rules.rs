//! The shipped rules: they compile, their inline examples pass through the production
//! matching path, and the prefilter agrees with brute-force evaluation.

use std::path::PathBuf;

use trapline::authoring::examples;
use trapline::engine::RuleSet;
use trapline::parse::{FieldRegistry, TimeSettings};
use trapline::rule::load;

fn shipped() -> (load::Loaded, RuleSet) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("rules");
    let loaded = load::load_paths(&[dir]).unwrap_or_else(|e| panic!("shipped rules do not load:\n{e}"));
    let rules = RuleSet::compile(&loaded, &trapline::pipeline::setup::compile_options(), FieldRegistry::default())
        .unwrap_or_else(|e| panic!("shipped rules do not compile:\n{e}"));
    (loaded, rules)
}

#[test]
fn shipped_examples_pass() {
    let (loaded, rules) = shipped();
    let report = examples::run(&loaded, &rules, &|_| None);
    let msg: Vec<String> =
        report.failures.iter().map(|f| format!("{} {}: {}\n    {}", f.rule, f.path, f.reason, f.line)).collect();
    assert!(report.failures.is_empty(), "{} example(s) failed:\n{}", msg.len(), msg.join("\n"));
    assert!(report.passed > 0);
}

#[test]
fn every_shipped_rule_has_examples() {
    let (loaded, _) = shipped();
    // A sequence cannot be shown by one line: each shipped one has an end-to-end test.
    let e2e = [include_str!("webroot.rs"), include_str!("sequence.rs")].concat();
    for r in &loaded.rules {
        if r.rule.sequence.is_some() {
            assert!(e2e.contains(&format!("\"{}\"", r.rule.id)), "sequence rule {} has no end-to-end test", r.rule.id);
            continue;
        }
        assert!(!r.rule.examples.should_match.is_empty(), "rule {} has no `match` example", r.rule.id);
        assert!(!r.rule.examples.no_match.is_empty(), "rule {} has no `no_match` example", r.rule.id);
    }
}

/// The prefilter must never hide a match: for every example line (and mutations that move
/// literals into encoded or escaped form), the candidate path gives the same hits as
/// evaluating every rule directly.
#[test]
fn prefilter_agrees_with_brute_force() {
    let (loaded, rules) = shipped();
    let mut s = rules.scratch();
    let mut lines: Vec<(String, String)> = Vec::new();
    for lr in &loaded.rules {
        let fmt =
            lr.rule.examples.format.clone().or_else(|| lr.rule.formats.first().cloned()).unwrap_or("combined".into());
        for l in lr.rule.examples.should_match.iter().chain(&lr.rule.examples.no_match) {
            lines.push((fmt.clone(), l.clone()));
            // Percent-encode every other letter of the request: literals vanish from the raw
            // line but remain in decoded views.
            let enc: String = l
                .chars()
                .enumerate()
                .map(
                    |(i, c)| {
                        if c.is_ascii_lowercase() && i % 2 == 0 { format!("%{:02X}", c as u8) } else { c.to_string() }
                    },
                )
                .collect();
            lines.push((fmt.clone(), enc));
        }
    }
    let mut checked = 0;
    for (fmt, line) in &lines {
        let parser = trapline::config::parser_for(
            fmt,
            &Default::default(),
            TimeSettings::default(),
            &mut FieldRegistry::default(),
        )
        .unwrap();
        let mut parser = parser;
        parser.bind(&rules.registry);
        let all = rules.applicable("any", fmt);
        rules.match_line(&parser, &all, line.as_bytes(), &mut s);
        let fast = s.hits.clone();
        let brute: Vec<u32> = (0..rules.rules.len())
            .filter(|&i| all.get(i) && rules.explain_rule(i, &parser, line.as_bytes(), &mut s).is_ok())
            .map(|i| i as u32)
            .collect();
        assert_eq!(fast, brute, "prefilter disagrees on {line}");
        checked += 1;
    }
    assert!(checked > 10);
}
