//! The `trapline` command line.
//!
//! - `run`: the daemon (tail the configured sources, fire actions) — [`run`].
//! - `scan`: the same engine over existing files, for back-testing and triage — [`scan`].
//! - `schema`: the JSON Schema of rule files and config — [`schema`].
//! - `xdr sandbox|check|purge`, `render`: Cisco XDR tooling — [`xdr`].
//!
//! Exit codes: 0 ok, 1 detections found with `--fail-on-match`, 2 usage or configuration error.

pub mod explain;
pub mod lint;
pub mod reload;
pub mod run;
pub mod scan;
pub mod schema;
pub mod setup;
pub mod status;
pub mod test;
pub mod xdr;

use std::path::PathBuf;

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
    /// Print the JSON Schema of rule files or of the config file.
    Schema(schema::SchemaArgs),
    /// Show the state of a running `trapline run`: loaded rules, last reload, counters.
    ///
    /// Exit codes: 0 running, last reload (if any) worked; 1 running, last reload failed (the
    /// previous rules keep running); 2 usage or configuration error, or no status file; 3 not
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
        Command::Schema(a) => schema::schema(a),
        Command::Status(a) => status::status(a),
        Command::Lint(a) => lint::lint(a),
        Command::Test(a) => test::test(a),
        Command::Explain(a) => explain::explain(a),
        Command::Xdr(a) => xdr::xdr(a),
        Command::Render(a) => xdr::render(a),
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

/// The config to use when none is given: `./trapline.yml`, else the one shipped in the
/// source tree (so `cargo run -- run` works on a fresh clone from any directory).
pub fn default_config() -> Option<PathBuf> {
    let local = PathBuf::from("trapline.yml");
    if local.is_file() {
        return Some(local);
    }
    let shipped = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("trapline.yml");
    shipped.is_file().then_some(shipped)
}
