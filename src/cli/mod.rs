//! The `trapline` command line.
//!
//! - `run`: the daemon (tail the configured sources, fire actions) — [`run`].
//! - `scan`: the same engine over existing files, for back-testing and triage — [`scan`].
//! - `sweep`: the content rules (`content:`, YARA) over the files of existing trees — [`sweep`].
//! - `schema`: the JSON Schema of rule files and config — [`schema`].
//! - `xdr sandbox|check|purge`, `render`: Cisco XDR tooling — [`xdr`].
//! - `webroot accept`: re-baseline web roots after a deploy — [`webroot`].
//! - `init`: a starter config, rules and templates to edit — [`init`].
//! - `import sigma`: Sigma rules for web servers converted into rule files — [`import`].
//!
//! Without `--config`, the config is found by [`default_config`]: `./trapline.yml`, the
//! user's, the system's, else the one built into the binary.
//!
//! Exit codes: 0 ok, 1 detections found with `--fail-on-match`, 2 usage or configuration error.

pub mod explain;
pub mod hash_password;
pub mod history;
pub mod import;
pub mod init;
pub mod lint;
pub mod run;
pub mod scan;
pub mod schema;
pub mod setup;
pub mod status;
pub mod sweep;
pub mod test;
pub mod webroot;
pub mod xdr;

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

/// Exit code for usage and configuration errors.
pub const EXIT_USAGE: i32 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "trapline",
    version,
    about = "Tail any text log, evaluate every line against YAML rules, fire actions."
)]
pub struct Cli {
    /// Log filter for trapline's own messages (e.g. `info`, `debug`, `trapline=trace`).
    #[arg(long, global = true, env = "TRAPLINE_LOG", default_value = "info")]
    pub log_level: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Tail the configured sources and fire actions until Ctrl-C / SIGTERM.
    Run(run::RunArgs),
    /// Run the rules over existing files (also .gz, and stdin as `-`), print detections and a summary.
    Scan(scan::ScanArgs),
    /// Scan the contents of existing files and trees with the content rules (`content:` and
    /// YARA): web shells, PHP in images, handler tricks.
    ///
    /// Exit codes as `scan`: 0 done, 1 matches found with --fail-on-match, 2 usage or rule error.
    Sweep(sweep::SweepArgs),
    /// Print the JSON Schema of rule files or of the config file.
    Schema(schema::SchemaArgs),
    /// Show the state of a running `trapline run`: loaded rules, last reload, counters.
    ///
    /// Exit codes: 0 running, last reload (if any) worked; 1 running, but the last reload
    /// failed (the previous rules keep running) or an action is failing (reading paused); 2 usage or configuration error, or no status file; 3 not
    /// running (the status file was left by a daemon that has ended).
    Status(status::StatusArgs),
    /// Check rule files, templates and config; report findings for humans or CI.
    Lint(lint::LintArgs),
    /// Run the rules' inline examples and test fixtures through the production engine.
    Test(test::TestArgs),
    /// Show which rules match a line, and why a rule does not.
    Explain(explain::ExplainArgs),
    /// Cisco XDR: local sandbox, credential check, purge of what trapline created.
    Xdr(xdr::XdrArgs),
    /// Print the exact XDR bundle a log line would produce for a rule.
    Render(xdr::RenderArgs),
    /// Web roots: accept the files as they are now after a deploy.
    Webroot(webroot::WebrootArgs),
    /// The detections `trapline run` recorded (state_dir/history.sqlite), newest first.
    History(history::HistoryArgs),
    /// Write a starter trapline.yml, rules/ and templates/ to edit (refuses to overwrite).
    Init(init::InitArgs),
    /// Print the argon2 hash of a password for a dashboard user (`http.users`); reads the
    /// password from the terminal without echo, or the first line of standard input.
    HashPassword(hash_password::HashPasswordArgs),
    /// Convert rules of other tools into trapline rule files: `import sigma PATH... --out DIR`.
    Import(import::ImportArgs),
}

/// Entry point; returns the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    init_tracing(&cli.log_level);
    if !matches!(cli.command, Command::Run(_) | Command::Xdr(_)) {
        default_sigpipe();
    }
    let result = match cli.command {
        Command::Run(a) => run::run(a),
        Command::Scan(a) => scan::scan(a),
        Command::Sweep(a) => sweep::sweep(a),
        Command::Schema(a) => schema::schema(a),
        Command::Status(a) => status::status(a),
        Command::Lint(a) => lint::lint(a),
        Command::Test(a) => test::test(a),
        Command::Explain(a) => explain::explain(a),
        Command::Xdr(a) => xdr::xdr(a),
        Command::Render(a) => xdr::render(a),
        Command::Init(a) => init::init(a),
        Command::Import(a) => import::import(a),
        Command::Webroot(a) => webroot::webroot(a),
        Command::History(a) => history::history(a),
        Command::HashPassword(a) => hash_password::hash_password(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("trapline: error: {e:#}");
            EXIT_USAGE
        }
    }
}

/// Commands that print a report behave like other Unix filters when the reader goes away
/// (`trapline test | head`): they end quietly on SIGPIPE. Rust ignores SIGPIPE by default,
/// which turns the closed pipe into a panic inside `println!`. The daemon (`run`) and the XDR
/// commands keep ignoring it: a peer closing a socket must not kill them.
fn default_sigpipe() {
    #[cfg(unix)]
    // SAFETY: called once at start-up, before any thread exists; SIG_DFL is a valid disposition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn init_tracing(level: &str) {
    let filter =
        tracing_subscriber::EnvFilter::try_new(level).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = crate::action::console::use_color(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_target(false)
        .try_init();
}

/// Where a config is looked for when none is given, in this order: `./trapline.yml`, the
/// user's (`$XDG_CONFIG_HOME/trapline/trapline.yml`, else `~/.config/trapline/trapline.yml`),
/// then the system's (`/etc/trapline/trapline.yml`, or `$TRAPLINE_SYSTEM_CONFIG` for a
/// package installed under another prefix).
pub fn config_search_path() -> Vec<PathBuf> {
    let mut out = vec![PathBuf::from("trapline.yml")];
    // The XDG base directory spec ignores a relative $XDG_CONFIG_HOME.
    let xdg = std::env::var_os("XDG_CONFIG_HOME").map(PathBuf::from).filter(|p| p.is_absolute());
    let home = std::env::var_os("HOME").map(PathBuf::from).filter(|p| p.is_absolute());
    if let Some(dir) = xdg.or_else(|| home.map(|h| h.join(".config"))) {
        out.push(dir.join("trapline").join("trapline.yml"));
    }
    let system = std::env::var_os("TRAPLINE_SYSTEM_CONFIG").filter(|p| !p.is_empty());
    out.push(system.map_or_else(|| PathBuf::from("/etc/trapline/trapline.yml"), PathBuf::from));
    out
}

/// The config to use when none is given: the first file of [`config_search_path`], else the
/// built-in one (`<built-in>/trapline.yml`: the built-in rules and templates, with state,
/// output and the demo source relative to the current directory).
pub fn default_config() -> PathBuf {
    let searched = config_search_path();
    if let Some(p) = searched.iter().find(|p| p.is_file()) {
        tracing::debug!(config = %p.display(), "using config");
        return p.clone();
    }
    let looked: Vec<String> = searched.iter().map(|p| p.display().to_string()).collect();
    tracing::debug!(looked = %looked.join(", "), "no config file found; using the built-in config");
    PathBuf::from(crate::assets::CONFIG)
}

/// The config of a command that runs rules (`scan`, `lint`, `test`, `explain`) when it is
/// given neither a config nor rule paths: `./trapline.yml`; else `None` when `./rules/` is a
/// directory (those rules, without a config, as trapline has always done); else
/// [`default_config`] (the user's, the system's or the built-in config).
pub fn rules_default_config() -> Option<PathBuf> {
    let local = Path::new("trapline.yml");
    if !local.is_file() && Path::new("rules").is_dir() {
        return None;
    }
    Some(default_config())
}
