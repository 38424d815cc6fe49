//! `trapline webroot accept [PATH...]`: after a deploy, the files as they are now become the
//! baseline of the web-root sources (all files, or those under the given paths), with who
//! and when recorded in the baseline database.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};

use crate::config;

#[derive(Debug, Args)]
pub struct WebrootArgs {
    #[command(subcommand)]
    pub command: WebrootCommand,
}

#[derive(Debug, Subcommand)]
pub enum WebrootCommand {
    /// Accept the current state of the files (all, or those under PATH...) as the baseline,
    /// without reporting the changes. Accepting everything also clears a tamper finding.
    /// Refused while `trapline run` holds the state directory: stop it, accept, start it (or
    /// deploy inside a configured maintenance window).
    Accept {
        /// Files or directories to accept; none: everything.
        paths: Vec<PathBuf>,
        /// Config file (default: ./trapline.yml, the user's, /etc/trapline/trapline.yml).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

pub fn webroot(a: WebrootArgs) -> Result<i32> {
    match a.command {
        WebrootCommand::Accept { paths, config } => {
            let path = config.unwrap_or_else(super::default_config);
            let cfg = config::Loaded::from_file(&path)?;
            let _lock = crate::state::StateLock::acquire(&cfg.resolve(&cfg.config.state_dir))?;
            let who = who();
            for (source, n) in crate::source::webroot::accept(&cfg, &paths, &who)? {
                println!("{source}: {n} changes accepted by {who}");
            }
            Ok(0)
        }
    }
}

/// Who accepts: the user behind sudo when there is one, else the login name, else the uid.
fn who() -> String {
    for var in ["SUDO_USER", "USER", "LOGNAME"] {
        if let Ok(v) = std::env::var(var)
            && !v.is_empty()
        {
            return v;
        }
    }
    // SAFETY: getuid cannot fail.
    format!("uid {}", unsafe { libc::getuid() })
}
