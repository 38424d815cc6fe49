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
