//! **action**: what happens to a detection.
//!
//! - [`log`]: append detections to a file (`logs/out.txt`), one JSON object (or short text
//!   line) each, durably and exactly once across restarts.
//! - [`console`]: one readable, coloured line per detection, with attacker-controlled text
//!   escaped so it cannot drive the terminal.
//! - [`xdr`]: the `xdr-incident` action (Cisco XDR incidents from templates, via a durable
//!   outbox).
//!
//! A rule names its actions (`actions: [log, ...]`); every configured action is an [`Action`]
//! registered under its name, and a detection is handed to each action its rule names. The
//! names a rule may use are the names of the configured actions, so a typo is a load error.

pub mod console;
pub mod log;
pub mod xdr;

use crate::engine::Detection;

/// Something a detection can trigger.
///
/// `fire` runs on the tailing thread: it must not wait on the network. An action that
/// delivers remotely persists the detection (e.g. to an outbox) and delivers in the
/// background.
pub trait Action: Send {
    /// The name rules use in `actions:`.
    fn name(&self) -> &str;
    /// Handles one detection.
    fn fire(&mut self, d: &Detection) -> anyhow::Result<()>;
    /// Makes every fired detection durable; called before each checkpoint.
    fn flush(&mut self) -> std::io::Result<()>;
    /// Re-reads what the action loads from disk (templates). Must be all-or-nothing: on an
    /// error the action keeps what it had and returns the error (with file:line).
    fn reload(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
    /// Stops background work, after a last flush.
    fn shutdown(&mut self) {}
}
