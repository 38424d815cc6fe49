//! Splitting a byte stream into lines: partial lines, over-long lines, byte-exact content.
//!
//! Lines are delivered without their '\n'. A '\r' before it is kept: the tailer does not
//! interpret content, and stripping it would make `offset + len` lie about the file.
//! Bytes are never decoded, so invalid UTF-8 passes through untouched.

use memchr::memchr_iter;

/// Where a delivered line sits; see [`crate::source::LinePos`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Frame {
    pub offset: u64,
    pub line_number: u64,
    pub truncated: bool,
    /// End of the bytes the line's `origin` covers: just past its '\n', or for a cut line just
    /// past the delivered prefix (the same on every replay, wherever the reads split).
    pub origin_end: u64,
}

/// Per-file line assembly state.
#[derive(Debug)]
pub(crate) struct Framer {
    /// Bytes after the last '\n' read so far: the start of a line whose '\n' has not arrived.
    /// Never delivered before its newline, and never longer than `max` once a feed returns.
    carry: Vec<u8>,
    /// File offset of the start of the line being assembled, i.e. just past the last '\n'
    /// consumed. This is the checkpoint offset: it never moves past a partial line.
    pub offset: u64,
    /// Lines completed before `offset` (so the next line is number `line_number + 1`).
    pub line_number: u64,
    /// File offset of the next byte to read.
    pub read_pos: u64,
    /// The current line was over-long and its prefix already delivered; drop bytes up to its
    /// '\n'. `offset` stays at the line's start, so a restart replays the same cut prefix with
    /// the same position (and idempotency key) rather than starting mid-line.
    skipping: bool,
    max: usize,
}

impl Framer {
    pub(crate) fn new(max_line_bytes: usize) -> Framer {
        Framer {
            carry: Vec::new(),
            offset: 0,
            line_number: 0,
            read_pos: 0,
            skipping: false,
            max: max_line_bytes.max(1),
        }
    }

    /// Continue at `offset` (start of a line) with `line_number` lines before it.
    pub(crate) fn seek(&mut self, offset: u64, line_number: u64) {
        self.carry.clear();
        self.skipping = false;
        self.offset = offset;
        self.read_pos = offset;
        self.line_number = line_number;
    }

    /// Feeds the bytes read at `self.read_pos`; calls `emit` for every line they complete.
    pub(crate) fn feed(&mut self, chunk: &[u8], mut emit: impl FnMut(&[u8], Frame)) {
        let base = self.read_pos;
        self.read_pos += chunk.len() as u64;
        let mut start = 0;
        for nl in memchr_iter(b'\n', chunk) {
            let end = base + nl as u64 + 1;
            let seg = &chunk[start..nl];
            start = nl + 1;
            if self.skipping {
                self.skipping = false;
            } else if self.carry.is_empty() {
                let cut = seg.len() > self.max;
                let line = &seg[..seg.len().min(self.max)];
                emit(line, self.frame(cut, end));
            } else {
                let total = self.carry.len() + seg.len();
                let take = seg.len().min(self.max.saturating_sub(self.carry.len()));
                self.carry.extend_from_slice(&seg[..take]);
                let cut = total > self.max;
                let frame = self.frame(cut, end);
                emit(&self.carry, frame);
                self.clear_carry();
            }
            self.offset = end;
            self.line_number += 1;
        }
        if self.skipping {
            return;
        }
        self.carry.extend_from_slice(&chunk[start..]);
        if self.carry.len() > self.max {
            // Deliver the capped prefix now rather than buffer an unbounded line.
            let frame = self.frame(true, 0);
            emit(&self.carry[..self.max], frame);
            self.clear_carry();
            self.skipping = true;
        }
    }

    /// The file ended for good (rotated or deleted and drained): deliver what is left as a
    /// last line, complete as far as the file goes.
    pub(crate) fn finish(&mut self, mut emit: impl FnMut(&[u8], Frame)) {
        if !self.skipping && !self.carry.is_empty() {
            let frame = Frame {
                offset: self.offset,
                line_number: self.line_number + 1,
                truncated: false,
                origin_end: self.read_pos,
            };
            emit(&self.carry, frame);
        }
        if self.skipping || !self.carry.is_empty() {
            self.line_number += 1;
        }
        self.clear_carry();
        self.skipping = false;
        self.offset = self.read_pos;
    }

    fn frame(&self, truncated: bool, end: u64) -> Frame {
        Frame {
            offset: self.offset,
            line_number: self.line_number + 1,
            truncated,
            origin_end: if truncated { self.offset + self.max as u64 } else { end },
        }
    }

    fn clear_carry(&mut self) {
        self.carry.clear();
        // One huge line must not pin its buffer for the life of the file.
        if self.carry.capacity() > 64 * 1024 {
            self.carry = Vec::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(max: usize, chunks: &[&[u8]]) -> (Vec<(Vec<u8>, Frame)>, Framer) {
        let mut f = Framer::new(max);
        let mut out = Vec::new();
        for c in chunks {
            f.feed(c, |l, fr| out.push((l.to_vec(), fr)));
        }
        (out, f)
    }

    #[test]
    fn whole_and_split_lines() {
        let (out, f) = run(100, &[b"ab\ncd", b"e\n\nf"]);
        let lines: Vec<&[u8]> = out.iter().map(|(l, _)| &l[..]).collect();
        assert_eq!(lines, vec![&b"ab"[..], b"cde", b""]);
        let offs: Vec<(u64, u64)> = out.iter().map(|(_, f)| (f.offset, f.line_number)).collect();
        assert_eq!(offs, vec![(0, 1), (3, 2), (7, 3)]);
        assert_eq!(out[1].1.origin_end, 7);
        // The partial "f" is pending: the checkpoint offset stays before it.
        assert_eq!((f.offset, f.read_pos, f.line_number), (8, 9, 3));
    }

    #[test]
    fn keeps_cr_and_invalid_utf8() {
        let (out, _) = run(100, &[b"a\r\n\xff\xfe\x00z\n"]);
        assert_eq!(out[0].0, b"a\r");
        assert_eq!(out[1].0, b"\xff\xfe\x00z");
    }

    #[test]
    fn long_line_in_one_chunk() {
        let mut data = vec![b'x'; 25];
        data.extend_from_slice(b"\nok\n");
        let (out, f) = run(10, &[&data]);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].0, vec![b'x'; 10]);
        assert!(out[0].1.truncated);
        assert_eq!(out[0].1.origin_end, 10);
        assert_eq!((out[1].0.as_slice(), out[1].1.offset), (&b"ok"[..], 26));
        assert_eq!(out[1].1.line_number, 2);
        assert_eq!(f.offset, 29);
    }

    #[test]
    fn long_line_across_chunks_skips_rest() {
        let (out, f) = run(10, &[b"0123456", b"789abcdef", b"ghij", b"klm\nnext\n"]);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].0, b"0123456789");
        assert_eq!(out[0].1, Frame { offset: 0, line_number: 1, truncated: true, origin_end: 10 });
        assert_eq!(out[1].0, b"next");
        assert_eq!((out[1].1.offset, out[1].1.line_number), (24, 2));
        assert_eq!((f.offset, f.line_number), (29, 2));
    }

    #[test]
    fn long_line_offset_stays_while_skipping() {
        let (_, f) = run(4, &[b"abcdefgh"]);
        assert_eq!((f.offset, f.line_number, f.read_pos), (0, 0, 8));
    }

    #[test]
    fn carry_plus_segment_over_max() {
        let (out, _) = run(5, &[b"abc", b"defg\n"]);
        assert_eq!(out[0].0, b"abcde");
        assert!(out[0].1.truncated);
    }

    #[test]
    fn exact_max_is_not_truncated() {
        let (out, _) = run(5, &[b"abc", b"de", b"\n"]);
        assert_eq!(out[0].0, b"abcde");
        assert!(!out[0].1.truncated);
    }

    #[test]
    fn finish_delivers_partial() {
        let (mut out, mut f) = run(100, &[b"a\nbc"]);
        f.finish(|l, fr| out.push((l.to_vec(), fr)));
        assert_eq!(out[1].0, b"bc");
        assert_eq!((out[1].1.offset, out[1].1.line_number, out[1].1.origin_end), (2, 2, 4));
        assert_eq!((f.offset, f.line_number), (4, 2));
        let mut again = 0;
        f.finish(|_, _| again += 1);
        assert_eq!(again, 0);
    }

    #[test]
    fn seek_resumes() {
        let mut f = Framer::new(100);
        f.seek(10, 3);
        let mut out = Vec::new();
        f.feed(b"x\n", |l, fr| out.push((l.to_vec(), fr)));
        assert_eq!((out[0].1.offset, out[0].1.line_number), (10, 4));
    }
}
