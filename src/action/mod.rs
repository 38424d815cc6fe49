//! **action**: what happens to a detection.
//!
//! - [`log`]: append detections to a file (`logs/out.txt`), one JSON object (or short text
//!   line) each, durably and exactly once across restarts.
//! - [`console`]: one readable, coloured line per detection, with attacker-controlled text
//!   escaped so it cannot drive the terminal.

pub mod console;
pub mod log;
