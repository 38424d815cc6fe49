//! `trapline schema`: the JSON Schema of rule files, of the config and of test fixtures, generated from the
//! Rust types, for editors (completion, hover docs) and CI validation.

use anyhow::Result;
use clap::{Args, ValueEnum};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Which {
    /// Rule files (`rules/*.yml`).
    Rules,
    /// The config file (`trapline.yml`).
    Config,
    /// Test fixtures (`rules/**/*.test.yml`).
    Fixtures,
}

#[derive(Debug, Args)]
pub struct SchemaArgs {
    #[arg(value_enum, default_value = "rules")]
    pub which: Which,
}

/// The schema as pretty-printed JSON, ending with a newline.
pub fn schema_json(which: Which) -> String {
    // An absent optional key is written by leaving it out, never as `null`: without the
    // `anyOf: [T, null]` wrapping, a validator reports the real problem inside `T` (an
    // unknown transform at its own position) instead of "not valid under any of the schemas".
    let generator = schemars::r#gen::SchemaSettings::draft07()
        .with(|s| {
            s.option_nullable = false;
            s.option_add_null_type = false;
        })
        .into_generator();
    let schema = match which {
        Which::Rules => generator.into_root_schema_for::<crate::rule::RuleFile>(),
        Which::Config => generator.into_root_schema_for::<crate::config::Config>(),
        Which::Fixtures => generator.into_root_schema_for::<crate::authoring::fixture::Fixture>(),
    };
    let value = serde_json::to_value(&schema).expect("a schema serialises");
    let mut s = serde_json::to_string_pretty(&sorted(value)).expect("a schema serialises");
    s.push('\n');
    s
}

/// `v` with every object's keys in name order. serde_json keeps insertion order when any crate
/// of the build enables its `preserve_order` feature (yara-x does), sorted order otherwise;
/// sorting here makes the schema the same text in every build.
fn sorted(v: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Object(m) => {
            let mut entries: Vec<(String, Value)> = m.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(a) => Value::Array(a.into_iter().map(sorted).collect()),
        v => v,
    }
}

pub fn schema(a: SchemaArgs) -> Result<i32> {
    print!("{}", schema_json(a.which));
    Ok(0)
}
