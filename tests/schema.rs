//! The committed JSON Schemas are the ones generated from the Rust types. To refresh them:
//! `cargo run -- schema rules > schema/trapline-rules.schema.json` (and `config`, `fixtures`), or run this
//! test with `TRAPLINE_UPDATE_SCHEMA=1`.

use trapline::cli::schema::{Which, schema_json};

fn check(which: Which, file: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schema").join(file);
    let fresh = schema_json(which);
    if std::env::var_os("TRAPLINE_UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &fresh).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == fresh,
        "{} is stale: run `cargo run -- schema {which:?} > schema/{file}` (lower-case)",
        path.display()
    );
}

#[test]
fn rules_schema_is_fresh() {
    check(Which::Rules, "trapline-rules.schema.json");
}

#[test]
fn config_schema_is_fresh() {
    check(Which::Config, "trapline-config.schema.json");
}

#[test]
fn fixtures_schema_is_fresh() {
    check(Which::Fixtures, "trapline-fixtures.schema.json");
}

#[test]
fn schema_documents_every_rule_field() {
    let s: serde_json::Value = serde_json::from_str(&schema_json(Which::Rules)).unwrap();
    let rule = &s["definitions"]["Rule"]["properties"];
    for (name, prop) in rule.as_object().unwrap() {
        let described = prop.get("description").is_some()
            || prop.get("allOf").and_then(|a| a[0].get("$ref")).is_some()
            || prop.get("$ref").is_some();
        assert!(described, "rule field {name} has no description");
    }
}

/// The shipped fixtures (and both names of the rule selection) validate against the fixtures
/// schema; an unknown key does not.
#[test]
fn shipped_fixtures_match_the_fixtures_schema() {
    let schema: serde_json::Value = serde_json::from_str(&schema_json(Which::Fixtures)).unwrap();
    let compiled = jsonschema::JSONSchema::compile(&schema).unwrap();
    let valid = |yaml: &str| {
        let v: serde_json::Value = serde_yaml::from_str(yaml).unwrap();
        compiled.is_valid(&v)
    };
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/tests");
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.file_name().to_string_lossy().ends_with(".test.yml") {
            assert!(valid(&std::fs::read_to_string(e.path()).unwrap()), "{}", e.path().display());
            n += 1;
        }
    }
    assert!(n > 0);
    assert!(valid("log: a.log\nrules: [web.*]\nexpect: [{rule: web.x, line: 2}]\n"));
    assert!(valid("lines: [x]\nonly: [web.x]\n"));
    assert!(!valid("log: a.log\nexpected: []\n"));
}
