//! **source**: where lines come from.
//!
//! - [`tail`]: follows files (globs) live, across rotation, truncation and restarts, with
//!   checkpointed offsets. Used by `trapline run`.
//! - [`read`]: reads whole inputs (files, `.gz`, stdin) in large newline-aligned blocks. Used by
//!   `trapline scan`.
//!
//! Both hand out lines as `&[u8]` without their newline; nothing here interprets content.

pub mod read;
pub mod tail;

use chrono::{DateTime, Utc};

use crate::event::{Event, Origin};

/// What a sink hands back when it made its effects durable, stored with the source's
/// checkpoint and given back after a restart. Opaque to the source.
pub type Mark = serde_json::Value;

/// Where a line sits, as reported by a source.
#[derive(Debug, Clone, Copy)]
pub struct LinePos {
    /// Identity of the file content up to this line, for idempotency keys: xxh3 of the file's
    /// first min(4096, end of this line) bytes. Stable for an append-only file and across
    /// rotation/copytruncate copies, so a replayed line gets the same key.
    pub origin: u64,
    /// Byte offset of the first byte of the line.
    pub offset: u64,
    /// 1-based line number in the file (0 when unknown).
    pub line_number: u64,
    /// The line was longer than the maximum and was cut there.
    pub truncated: bool,
    /// When the line was read.
    pub arrival: DateTime<Utc>,
}

impl LinePos {
    /// The event's origin: this line of this file content.
    pub fn origin(&self) -> Origin {
        Origin::Line { content: self.origin, offset: self.offset, line_number: self.line_number }
    }

    /// The event of line `raw` at this position.
    pub fn event<'a>(&self, raw: &'a [u8]) -> Event<'a> {
        Event::line(raw, self.origin(), self.arrival, self.truncated)
    }
}
