//! One followed file: its open descriptor, identity, framing state and read loop.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use chrono::Utc;

use super::checkpoint::FileCheckpoint;
use super::fingerprint::{Head, hash_prefix};
use super::framing::Framer;
use super::{Counters, FileInfo, LineSink};
use crate::source::LinePos;

/// `(dev, ino)`: the part of a file's identity the kernel gives.
pub(crate) type FileKey = (u64, u64);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Found at its path by the last discovery.
    Active,
    /// No longer at any discovered path (rotated away or deleted) since this instant: drained
    /// until `rotate_wait` has passed and it is at EOF, then closed.
    Draining(Instant),
}

/// What [`Followed::check`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    Unchanged,
    /// The file is larger than what was read.
    Grown,
    /// The file shrank below what was read (copytruncate, `: > file`), or its head changed
    /// (truncated and rewritten past the old offset): reading restarted at 0. Carries where
    /// the old content was left, to find its rotated copy.
    Reset(Position),
}

/// Where reading stood in some content, and that content's identity fingerprint: enough to
/// recognise a copy of it and continue there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Position {
    pub fp_len: u64,
    pub fp_hash: u64,
    /// Just past the last delivered complete line.
    pub offset: u64,
    pub line_number: u64,
}

impl From<&FileCheckpoint> for Position {
    fn from(cp: &FileCheckpoint) -> Position {
        Position { fp_len: cp.fp_len, fp_hash: cp.fp_hash, offset: cp.offset, line_number: cp.line_number }
    }
}

/// Result of one bounded read.
#[derive(Debug, Default)]
pub(crate) struct ReadOutcome {
    pub bytes: u64,
    /// The last read returned less than asked: caught up with the writer.
    pub eof: bool,
    /// The sink refused a line: nothing after it was delivered, and the tailer must stop
    /// without checkpointing past it.
    pub halt: Option<anyhow::Error>,
}

#[derive(Debug)]
pub(crate) struct Followed {
    pub info: FileInfo,
    pub key: FileKey,
    file: File,
    head: Head,
    framer: Framer,
    pub phase: Phase,
    /// Position changed since the last checkpoint.
    pub dirty: bool,
    /// The last read reached the end of the file, and `check` has not seen it grow since.
    pub at_eof: bool,
    /// This is the rotated copy of a truncated file (copytruncate), read from where the
    /// original was left. Recorded when it is closed, so that it is never read again.
    pub is_copy: bool,
    /// Not read while this file (the rotated copy of its old content) is open and not yet at
    /// EOF: the old content is delivered before the new.
    pub after: Option<FileKey>,
}

impl Followed {
    /// Opens `path`, positioned at offset 0. The identity is taken from the descriptor, so a
    /// path replaced between a `stat` and this `open` is still described correctly.
    pub(crate) fn open(path: &Path, source: usize, max_line_bytes: usize) -> io::Result<Followed> {
        let file = File::open(path)?;
        let md = file.metadata()?;
        if !md.is_file() {
            return Err(io::Error::other("not a regular file"));
        }
        let mut head = Head::default();
        head.refresh(&file, md.len(), false)?;
        Ok(Followed {
            info: FileInfo { source, path: path.to_path_buf() },
            key: (md.dev(), md.ino()),
            file,
            head,
            framer: Framer::new(max_line_bytes),
            phase: Phase::Active,
            dirty: true,
            at_eof: false,
            is_copy: false,
            after: None,
        })
    }

    /// Whether `cp` describes this file: same `(dev, ino)`, the file still reaches the
    /// checkpointed offset and fingerprint length, and its first `fp_len` bytes hash the same.
    pub(crate) fn matches(&self, cp: &FileCheckpoint) -> bool {
        (cp.dev, cp.ino) == self.key && self.holds(&Position::from(cp))
    }

    /// Whether this file holds the content `pos` describes: it reaches `pos.offset` and the
    /// fingerprint length, and its first `fp_len` bytes hash the same. Whatever the inode.
    pub(crate) fn holds(&self, pos: &Position) -> bool {
        let size = match self.file.metadata() {
            Ok(md) => md.len(),
            Err(_) => return false,
        };
        if size < pos.offset || size < pos.fp_len {
            return false;
        }
        matches!(hash_prefix(&self.file, pos.fp_len as usize), Ok(Some(h)) if h == pos.fp_hash)
    }

    /// Continue where the checkpoint left off.
    pub(crate) fn resume(&mut self, cp: &FileCheckpoint) {
        self.resume_at(&Position::from(cp));
        self.is_copy = cp.copy;
    }

    /// Continue at `pos` (the start of a line).
    pub(crate) fn resume_at(&mut self, pos: &Position) {
        self.framer.seek(pos.offset, pos.line_number);
    }

    /// Start after the last '\n' currently in the file, counting the lines before it so that
    /// line numbers stay right. Reads the whole file once.
    pub(crate) fn seek_to_end(&mut self, buf: &mut [u8]) -> io::Result<()> {
        let (mut pos, mut lines, mut after_last_nl) = (0u64, 0u64, 0u64);
        loop {
            let n = match self.file.read_at(buf, pos) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let chunk = &buf[..n];
            lines += memchr::memchr_iter(b'\n', chunk).count() as u64;
            if let Some(i) = memchr::memrchr(b'\n', chunk) {
                after_last_nl = pos + i as u64 + 1;
            }
            pos += n as u64;
        }
        self.framer.seek(after_last_nl, lines);
        self.head.compact(after_last_nl);
        self.dirty = true;
        Ok(())
    }

    pub(crate) fn offset(&self) -> u64 {
        self.framer.offset
    }

    /// `fstat` and compare with what was read: the truncation check run on every wake-up.
    /// The head is re-verified when `verify_head` is set (each poll) and whenever the file
    /// grew, so a truncate-and-regrow past the old offset is caught before reading a byte of
    /// the new content at the old offset.
    pub(crate) fn check(&mut self, verify_head: bool) -> io::Result<Change> {
        let size = self.file.metadata()?.len();
        let grown = size > self.framer.read_pos;
        let same_head = size >= self.framer.read_pos && self.head.refresh(&self.file, size, verify_head || grown)?;
        if same_head {
            if grown {
                self.at_eof = false;
                return Ok(Change::Grown);
            }
            return Ok(Change::Unchanged);
        }
        let before = self.position();
        self.framer.seek(0, 0);
        self.head.clear();
        self.head.refresh(&self.file, size, false)?;
        self.dirty = true;
        self.at_eof = false;
        Ok(Change::Reset(before))
    }

    /// Where reading stands, with the fingerprint of the content read.
    pub(crate) fn position(&self) -> Position {
        Position {
            fp_len: self.head.len() as u64,
            fp_hash: self.head.hash(),
            offset: self.framer.offset,
            line_number: self.framer.line_number,
        }
    }

    /// Size of the file now.
    pub(crate) fn size(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    /// Reads and delivers up to about `budget` bytes, in `buf`-sized chunks.
    pub(crate) fn read(
        &mut self,
        buf: &mut [u8],
        budget: u64,
        sink: &mut dyn LineSink,
        counters: &Counters,
    ) -> io::Result<ReadOutcome> {
        let mut out = ReadOutcome::default();
        while out.bytes < budget {
            let base = self.framer.read_pos;
            let n = match self.file.read_at(buf, base) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n == 0 {
                out.eof = true;
                break;
            }
            let chunk = &buf[..n];
            self.head.extend_from_chunk(base, chunk);
            let arrival = Utc::now();
            let (head, info) = (&self.head, &self.info);
            let (mut lines, mut cut) = (0u64, 0u64);
            let halt = &mut out.halt;
            self.framer.feed(chunk, |line, f| {
                if halt.is_some() {
                    return;
                }
                lines += 1;
                cut += f.truncated as u64;
                let pos = LinePos {
                    origin: head.origin(f.origin_end),
                    offset: f.offset,
                    line_number: f.line_number,
                    truncated: f.truncated,
                    arrival,
                };
                if let Err(e) = sink.line(info, line, pos) {
                    *halt = Some(e);
                }
            });
            if out.halt.is_some() {
                return Ok(out);
            }
            self.head.compact(self.framer.read_pos);
            counters.lines.fetch_add(lines, Relaxed);
            counters.long_lines.fetch_add(cut, Relaxed);
            counters.bytes.fetch_add(n as u64, Relaxed);
            out.bytes += n as u64;
            self.dirty = true;
            if n < buf.len() {
                out.eof = true;
                break;
            }
        }
        self.at_eof = out.eof;
        Ok(out)
    }

    /// The file is being closed for good: deliver a final line without '\n', if any.
    pub(crate) fn finish(&mut self, sink: &mut dyn LineSink, counters: &Counters) -> anyhow::Result<()> {
        let arrival = Utc::now();
        let mut result = Ok(());
        let (head, info) = (&self.head, &self.info);
        self.framer.finish(|line, f| {
            counters.lines.fetch_add(1, Relaxed);
            let pos = LinePos {
                origin: head.origin(f.origin_end),
                offset: f.offset,
                line_number: f.line_number,
                truncated: false,
                arrival,
            };
            result = sink.line(info, line, pos);
        });
        result
    }

    pub(crate) fn checkpoint(&self, source_name: &str) -> FileCheckpoint {
        let pos = self.position();
        FileCheckpoint {
            source: source_name.to_string(),
            path: self.info.path.to_string_lossy().into_owned(),
            dev: self.key.0,
            ino: self.key.1,
            fp_len: pos.fp_len,
            fp_hash: pos.fp_hash,
            offset: pos.offset,
            line_number: pos.line_number,
            copy: self.is_copy,
        }
    }
}
