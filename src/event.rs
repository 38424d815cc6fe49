//! **event**: what the engine evaluates, whatever its origin.
//!
//! A line of a log file is one kind of event; a message of a stream, a change of a file's
//! state and a file's content are others. They all reach the engine as an [`Event`]: optional
//! raw bytes (parsed by the source's format into fields), fields the source produced itself,
//! an optional event time, and an [`Origin`] from which the idempotency key of every
//! detection is derived. The same event delivered twice (a replay after a crash, a re-sent
//! message) has the same origin, so what it triggers can be recognised and not acted on twice.

use chrono::{DateTime, Utc};

/// Where an event comes from, precisely enough to recognise it when it comes again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A line of a file. `content` identifies the file's content up to the line (xxh3 of its
    /// first min(4096, end of line) bytes: stable across rename and copytruncate copies),
    /// `offset` is the line's first byte.
    Line { content: u64, offset: u64, line_number: u64 },
    /// A message of a stream (stdin, a message queue): the stream's identity and the
    /// message's sequence number in it.
    Message { stream: u64, sequence: u64 },
    /// A version of an object that is not a stream of lines (a file's state or content):
    /// the object's identity (e.g. a hash of its path) and its version (e.g. a content hash).
    Object { object: u64, version: u64 },
}

impl Origin {
    /// Idempotency key of what `rule` triggers on this event: 16 hex digits.
    ///
    /// For lines it is the hash of `(content, offset, rule)`, the same key trapline has always
    /// written, so detections written by an earlier version are still recognised on replay.
    pub fn idempotency_key(&self, rule: &str) -> String {
        let (a, b, tag): (u64, u64, &[u8]) = match *self {
            Origin::Line { content, offset, .. } => (content, offset, b""),
            Origin::Message { stream, sequence } => (stream, sequence, b"\x01msg"),
            Origin::Object { object, version } => (object, version, b"\x01obj"),
        };
        let mut buf = Vec::with_capacity(16 + tag.len() + rule.len());
        buf.extend_from_slice(&a.to_le_bytes());
        buf.extend_from_slice(&b.to_le_bytes());
        buf.extend_from_slice(tag);
        buf.extend_from_slice(rule.as_bytes());
        format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&buf))
    }

    /// Line number (lines), sequence (messages), 0 otherwise: what a person uses to find it.
    pub fn number(&self) -> u64 {
        match *self {
            Origin::Line { line_number, .. } => line_number,
            Origin::Message { sequence, .. } => sequence,
            Origin::Object { .. } => 0,
        }
    }

    /// Byte offset of a line, 0 otherwise.
    pub fn offset(&self) -> u64 {
        match *self {
            Origin::Line { offset, .. } => offset,
            _ => 0,
        }
    }
}

/// One thing to evaluate. Borrowed: building an event allocates nothing.
#[derive(Debug, Clone, Copy)]
pub struct Event<'a> {
    pub origin: Origin,
    /// The raw bytes (a log line without its newline), parsed by the source's format. Empty
    /// for events that are only fields.
    pub raw: &'a [u8],
    /// Fields the source produced itself (a file's path, size, hash...), by field name. They
    /// are added to what the format parsed from `raw`, and win over it.
    pub fields: &'a [(&'a str, &'a [u8])],
    /// Event time known to the source (a message's timestamp, a file's mtime). `None`: taken
    /// from the parsed `time` field, else the arrival time.
    pub time: Option<DateTime<Utc>>,
    /// When trapline received it.
    pub arrival: DateTime<Utc>,
    /// `raw` was longer than the configured maximum and was cut.
    pub truncated: bool,
}

impl<'a> Event<'a> {
    /// A line of a file, as delivered by a source.
    pub fn line(raw: &'a [u8], origin: Origin, arrival: DateTime<Utc>, truncated: bool) -> Event<'a> {
        Event { origin, raw, fields: &[], time: None, arrival, truncated }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_keys_are_stable_and_kinds_never_collide() {
        let line = Origin::Line { content: 7, offset: 42, line_number: 3 };
        // The key written by earlier versions for (origin 7, offset 42, rule "r").
        let mut old = Vec::new();
        old.extend_from_slice(&7u64.to_le_bytes());
        old.extend_from_slice(&42u64.to_le_bytes());
        old.extend_from_slice(b"r");
        assert_eq!(line.idempotency_key("r"), format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&old)));
        let msg = Origin::Message { stream: 7, sequence: 42 };
        let obj = Origin::Object { object: 7, version: 42 };
        assert_ne!(line.idempotency_key("r"), msg.idempotency_key("r"));
        assert_ne!(msg.idempotency_key("r"), obj.idempotency_key("r"));
        assert_ne!(line.idempotency_key("r"), line.idempotency_key("s"));
    }
}
