//! The rule example in the README is real: it loads, compiles and its examples pass.

use std::path::PathBuf;

use trapline::authoring::examples;
use trapline::engine::RuleSet;
use trapline::parse::FieldRegistry;
use trapline::rule::load::{SourceFile, load_sources};

#[test]
fn readme_rule_example_works() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme.split("## The rule language").nth(1).expect("README has a rule language section");
    let yaml = section.split("```yaml\n").nth(1).and_then(|s| s.split("```").next()).expect("a yaml block");
    let loaded = load_sources(vec![SourceFile { path: PathBuf::from("README.md"), text: yaml.to_string() }])
        .unwrap_or_else(|e| panic!("README example does not load: {e}"));
    let rules = RuleSet::compile(&loaded, &trapline::pipeline::setup::compile_options(), FieldRegistry::default())
        .unwrap_or_else(|e| panic!("README example does not compile: {e}"));
    let report = examples::run(&loaded, &rules, &|_| None);
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert_eq!(report.passed, 2);
}

#[test]
fn readme_content_rule_example_works() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme.split("### Content rules").nth(1).expect("README has a content rules section");
    let yaml = section.split("```yaml\n").nth(1).and_then(|s| s.split("```").next()).expect("a yaml block");
    let loaded = load_sources(vec![SourceFile { path: PathBuf::from("README.md"), text: yaml.to_string() }])
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
