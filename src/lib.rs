//! # trapline
//!
//! A detection engine for logs and other events. An event travels
//! **source → parse → engine → action**, and the crate is laid out the same way:
//!
//! - [`event`]: what the engine evaluates — a line of a file, a message, a file's state or
//!   content — with the origin its idempotency keys derive from.
//! - [`source`]: where events come from, behind one `Source`/`EventSink` interface. The
//!   tailer follows files across rotation and restarts (offsets checkpointed on disk);
//!   standard input is a stream source; the web-root source turns file changes (checked
//!   against a sealed SQLite baseline) into events of fields; the NATS source (worker mode)
//!   consumes the partitions of the stream other machines publish to, under leases, and
//!   acknowledges once the detections are durable; the reader feeds `scan` from files, `.gz`
//!   and stdin.
//! - [`parse`]: raw bytes (`&[u8]`) → named fields, for the built-in formats (combined/common,
//!   Apache error, syslog, JSON lines) and custom regex formats. No allocation per line.
//! - [`rule`]: the rule language as written (serde + schemars model) and its loading, with
//!   file:line:col errors.
//! - [`engine`]: the compiled rule set (one literal prefilter across all rules, then exact
//!   confirmation) and the cross-line state (thresholds, suppression) that turns matches into
//!   [`engine::Detection`]s.
//! - [`content`]: file contents against `content:` rules and YARA rules. The entry point for
//!   any caller holding a file: [`content::Scanner::from_paths`] once, then
//!   [`content::Scanner::scan_file`] (one file) or `scan_path` with a per-thread `scratch`
//!   (many), each giving the [`content::ContentMatch`]es (rule id, severity, offset, excerpt).
//!   `trapline sweep` is a walk over trees around it.
//! - [`action`]: what happens to a detection (the JSON-lines log, the console, Cisco XDR),
//!   behind one registry; transient failures retried, never skipped. The NATS output sits in
//!   the same registry: it publishes every event (not detections) to JetStream for other
//!   machines, under the same contract (durable before a checkpoint passes it).
//! - [`authoring`]: explain (every condition's verdict and position), example coverage, lint
//!   proofs, the fixture model and the Sigma import, for rule authors, kept out of the
//!   per-line path.
//! - [`rollup`]: one activity record per attacker (opened, escalated, closed) instead of one
//!   alert per line.
//! - [`pipeline`]: events → detections → a sink, the one path every command uses, plus the
//!   wiring from config to a ready rule set and the redaction of secrets in detections.
//! - [`daemon`]: `trapline run`: a source → pipeline → roll-ups and actions, reloads, saved
//!   engine state, status.
//! - [`history`]: every detection of `run` in SQLite, written off the reading thread, for
//!   `trapline history` and the dashboard.
//! - [`http`]: what `run` serves when asked: the dashboard (live feed, attacker and rule
//!   pages, web-root changes to accept), Prometheus metrics and the history as JSON, behind a
//!   bearer token or a user's session; loopback, or any address with TLS.
//! - [`shutdown`]: the one stop signal of the process.
//! - [`sandbox`]: local stand-ins of external services (Cisco XDR) for tests and demos.
//! - [`config`]: `trapline.yml`, the sources, directories and action settings.
//! - [`state`]: the lock that keeps a state directory to one process at a time.
//! - [`cli`]: the `trapline` command line: argument parsing and printing.
//! - [`assets`]: the shipped rules, templates and default config, built into the binary.
//!
//! Dependencies point one way: rule model and engine ← sources and actions ← pipeline and
//! daemon ← cli. The config model (`config`, composed of each part's own `*Def` section) is
//! read by every layer above the engine.

pub mod action;
pub mod assets;
pub mod authoring;
pub mod cli;
pub mod config;
pub mod content;
pub mod daemon;
pub mod engine;
pub mod event;
pub mod history;
pub mod http;
pub mod parse;
pub mod pipeline;
pub mod rollup;
pub mod rule;
pub mod sandbox;
pub mod shutdown;
pub mod source;
pub mod state;
