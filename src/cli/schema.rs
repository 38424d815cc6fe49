//! `trapline schema`: the JSON Schema of rule files and of the config, generated from the
//! Rust types, for editors (completion, hover docs) and CI validation.

use anyhow::Result;
use clap::{Args, ValueEnum};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Which {
    /// Rule files (`rules/*.yml`).
    Rules,
    /// The config file (`trapline.yml`).
    Config,
}

#[derive(Debug, Args)]
pub struct SchemaArgs {
    #[arg(value_enum, default_value = "rules")]
    pub which: Which,
}

/// The schema as pretty-printed JSON, ending with a newline.
pub fn schema_json(which: Which) -> String {
    let schema = match which {
        Which::Rules => schemars::schema_for!(crate::rule::RuleFile),
        Which::Config => schemars::schema_for!(crate::config::Config),
    };
    let mut s = serde_json::to_string_pretty(&schema).expect("a schema serialises");
    s.push('\n');
    s
}

pub fn schema(a: SchemaArgs) -> Result<i32> {
    print!("{}", schema_json(a.which));
    Ok(0)
}
