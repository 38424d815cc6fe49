//! # trapline
//!
//! A detection engine for text logs. A line travels **source → parse → engine → action**, and
//! the crate is laid out the same way:
//!
//! - [`source`]: where lines come from. The tailer follows files across rotation and restarts
//!   (offsets checkpointed on disk); the reader feeds `scan` from files, `.gz` and stdin.
//! - [`parse`]: one line (`&[u8]`) → named fields, for the built-in formats (combined/common,
//!   Apache error, syslog, JSON lines) and custom regex formats. No allocation per line.
//! - [`rule`]: the rule language as written (serde + schemars model) and its loading, with
//!   file:line:col errors.
//! - [`engine`]: the compiled rule set (one literal prefilter across all rules, then exact
//!   confirmation) and the cross-line state (thresholds, suppression) that turns matches into
//!   [`engine::Detection`]s.
//! - [`action`]: what happens to a detection (the JSON-lines log, the console).
//! - [`config`]: `trapline.yml`, the sources, directories and action settings.
//! - [`state`]: the lock that keeps a state directory to one process at a time.
//! - [`cli`]: the `trapline` command line (`run`, `scan`).

pub mod action;
pub mod cli;
pub mod config;
pub mod engine;
pub mod parse;
pub mod rule;
pub mod source;
pub mod state;
