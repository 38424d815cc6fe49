//! The arguments shared by the commands that run rules over one ad-hoc input.

use std::path::PathBuf;

use anyhow::Result;

use crate::config;
pub use crate::pipeline::setup::{AdHoc, Setup, SourceSetup, build};

/// The arguments of the commands that run rules over one ad-hoc input (`scan`, `explain`):
/// where the rules are, the input's format and time zone, and an optional config.
#[derive(Debug, clap::Args)]
pub struct InputArgs {
    /// Rule files or directories (default: the config's; without --config: ./trapline.yml's,
    /// else ./rules/, else the user's or system config's, else the built-in rules).
    #[arg(long)]
    pub rules: Vec<PathBuf>,
    /// Log format of the input: combined, common, apache_error, syslog, json, raw, or a custom
    /// format from the config.
    #[arg(long, default_value = "combined")]
    pub format: String,
    /// Config file (custom formats, rules directory, timezone).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Time zone for timestamps without one (default: the config's, else UTC).
    #[arg(long)]
    pub timezone: Option<String>,
}

impl InputArgs {
    /// Loads the config (if any) and builds the rules and the input's source, named `name`.
    /// Returns the config, the rule paths used and the setup.
    pub fn setup(&self, name: &str) -> Result<(Option<config::Loaded>, Vec<PathBuf>, Setup)> {
        let path =
            self.config.clone().or_else(|| if self.rules.is_empty() { super::rules_default_config() } else { None });
        let cfg = path.as_ref().map(|p| config::Loaded::from_file(p)).transpose()?;
        let rule_paths = super::scan::rule_paths(&self.rules, cfg.as_ref());
        let tz = self.timezone.as_deref().or(cfg.as_ref().map(|c| c.config.timezone.as_str()));
        let setup = build(cfg.as_ref(), &rule_paths, &[AdHoc { name, format: &self.format, timezone: tz }])?;
        Ok((cfg, rule_paths, setup))
    }
}
