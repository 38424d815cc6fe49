//! `trapline run`: the daemon ([`crate::daemon`]) with the config found or given.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use crate::config;
use crate::shutdown::Shutdown;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Config file (default: ./trapline.yml, the user's, /etc/trapline/trapline.yml, else the built-in one).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
}

pub fn run(a: RunArgs) -> Result<i32> {
    let path = a.config.unwrap_or_else(super::default_config);
    let cfg = config::Loaded::from_file(&path)?;
    if cfg.is_builtin() {
        let looked: Vec<String> = super::config_search_path().iter().map(|p| p.display().to_string()).collect();
        tracing::info!(
            looked = %looked.join(", "),
            "no config file found; using the built-in config (built-in rules and templates; state, output and \
             the demo source relative to the current directory). `trapline init` writes one to edit"
        );
    }
    let shutdown = Shutdown::new();
    shutdown.on_signals().context("cannot install signal handlers")?;
    crate::daemon::run(cfg, shutdown)?;
    Ok(0)
}
