//! `trapline run`: the daemon ([`crate::daemon`]) with the config found or given.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::config;
use crate::shutdown::Shutdown;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Config file (default: ./trapline.yml, else the shipped one).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
}

pub fn run(a: RunArgs) -> Result<i32> {
    let path = match a.config.or_else(super::default_config) {
        Some(p) => p,
        None => bail!("no config: pass --config FILE or create ./trapline.yml"),
    };
    let cfg = config::Loaded::from_file(&path)?;
    let shutdown = Shutdown::new();
    shutdown.on_signals().context("cannot install signal handlers")?;
    crate::daemon::run(cfg, shutdown)?;
    Ok(0)
}
