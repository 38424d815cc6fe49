//! **source**: where events come from.
//!
//! The daemon runs any [`Source`]: it delivers [`Event`]s to an [`EventSink`] until told to
//! stop, and a sink error stops it before it moves past the event (no checkpoint passes it).
//!
//! - [`tail`]: follows files (globs) live, across rotation, truncation and restarts, with
//!   checkpointed offsets.
//! - [`stdin`]: lines of standard input (`paths: ["-"]`), e.g. `journalctl -f -o cat | trapline
//!   run`: a stream, read once, with no position to resume from.
//! - [`webroot`]: the files under web roots: each change of a file's state (created,
//!   modified, deleted, renamed, attributes) is an event of fields, checked against a baseline
//!   in SQLite that is the source's checkpoint.
//! - [`nats`]: worker mode: the events other machines published to NATS JetStream, by
//!   partitions this worker holds a lease on, acknowledged once their detections are durable.
//! - [`read`]: reads whole inputs (files, `.gz`, stdin) in large newline-aligned blocks, for
//!   `trapline scan`'s parallel matching.
//!
//! Lines are handed out as `&[u8]` without their newline; nothing here interprets content
//! (the web-root source reads only the first bytes of a file, for its content class).

pub mod nats;
pub mod read;
pub mod stdin;
pub mod tail;
pub mod webroot;

use std::path::Path;
use std::sync::atomic::AtomicBool;

use chrono::{DateTime, Utc};

use crate::event::{Event, Origin};

/// What a sink hands back when it made its effects durable, stored with the source's
/// checkpoint and given back after a restart. Opaque to the source.
pub type Mark = serde_json::Value;

/// Which configured source an event comes from, and which file (or stream) of it.
#[derive(Debug, Clone, Copy)]
pub struct Whence<'a> {
    /// Index of the source in the config.
    pub source: usize,
    /// The file the event comes from (`-` for standard input).
    pub path: &'a Path,
    /// The machine that read it, for events of other machines (worker mode); `None`: here.
    pub host: Option<&'a str>,
}

/// A check every detection passes before any action (worker mode: the detection is published
/// to NATS with a deterministic id first). `Ok(false)`: it was acted upon already (by another
/// worker, before a takeover) and is not acted upon here. An error: not handled.
pub type DetectionGate = Box<dyn FnMut(&crate::engine::Detection) -> anyhow::Result<bool>>;

/// Receives events, in order per file or stream.
pub trait EventSink {
    /// Handles one event. An error means the event was not (completely) handled: the source
    /// delivers nothing more and returns the error, without a checkpoint past the event.
    fn event(&mut self, at: &Whence<'_>, ev: &Event<'_>) -> anyhow::Result<()>;
    /// Makes the effects of every event delivered so far durable; returns the mark the
    /// source stores with its checkpoint (and hands back after a restart).
    fn flush(&mut self) -> std::io::Result<Mark>;
    /// Whether what the last flush's mark names is durable yet (with `wait`, blocks until it
    /// is): a sink may finish slow work in the background, and a source writes its
    /// checkpoint as of that flush only then.
    fn durable(&mut self, _wait: bool) -> std::io::Result<bool> {
        Ok(true)
    }
    /// Called between events at least every few hundred milliseconds: periodic work.
    fn tick(&mut self) {}
    /// The content rules (`content:` and YARA) the sink evaluates with now, for sources that
    /// hand over files: the web-root source scans each file it sees created, modified or
    /// renamed with them. Asked per batch of changes, because a reload replaces them.
    fn content_scanner(&self) -> Option<std::sync::Arc<crate::content::Scanner>> {
        None
    }
    /// A source's own measurement of itself, for metrics: (source index, what, value), e.g.
    /// a web root's watches held and how long its last full comparison took.
    fn measure(&mut self, _source: usize, _what: &'static str, _value: f64) {}
    /// Worker mode: a source interleaving independent streams (partitions) keeps the windows
    /// of each apart. Events from now on step the windows of `lane`; `fresh` starts them
    /// empty, dropping what the lane had.
    fn lane(&mut self, _lane: u32, _fresh: bool) {}
    /// Forgets the windows of `lane` (its partition went to another worker).
    fn drop_lane(&mut self, _lane: u32) {}
    /// While on, events step the windows only: detections are not acted upon (a replay that
    /// restores the windows after a takeover).
    fn replaying(&mut self, _on: bool) {}
    /// The longest time window (threshold, sequence, suppression) of the rules loaded now: how
    /// far back a replay restoring windows must reach.
    fn longest_window(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
    /// Sets the check every detection passes before any action (see [`DetectionGate`]).
    fn gate(&mut self, _gate: DetectionGate) {}
}

/// Something the daemon runs to get events.
pub trait Source {
    /// Delivers events to `sink` until `stop` is set or the source ends; then flushes the sink
    /// (and checkpoints, where the source has positions). A sink error ends it at once.
    fn run(&mut self, sink: &mut dyn EventSink, stop: &AtomicBool) -> anyhow::Result<()>;
    /// Whether the source keeps checkpoints (and so can resume where a restart left off).
    fn checkpoints(&self) -> bool {
        false
    }
    /// The mark stored with the last checkpoint, if the source keeps checkpoints.
    fn mark(&self) -> Option<&Mark> {
        None
    }
}

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
