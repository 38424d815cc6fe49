//! The head of a file: its identity fingerprint and the source of each line's `origin`.
//!
//! Identity is `(dev, ino)` plus xxh3 of the first `fp_len = min(size, 4096)` bytes. The
//! fingerprint grows with the file until it covers 4096 bytes, so a fresh one-line log is
//! identified (and read) at once instead of waiting for 1 KiB like Filebeat does.
//!
//! The same bytes give [`LinePos::origin`](crate::source::LinePos): xxh3 of the first
//! `min(4096, end of line)` bytes, which never changes for an append-only file.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use xxhash_rust::xxh3::xxh3_64;

/// How many head bytes identify a file.
pub(crate) const FP_MAX: usize = 4096;

/// Reads into `buf` at `pos`, stopping early only at end of file. Returns the bytes read.
pub(crate) fn read_full_at(file: &File, buf: &mut [u8], pos: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], pos + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// xxh3 of the first `len` bytes of `file`, or `None` when the file is shorter than that.
pub(crate) fn hash_prefix(file: &File, len: usize) -> io::Result<Option<u64>> {
    let mut buf = [0u8; FP_MAX];
    let len = len.min(FP_MAX);
    let got = read_full_at(file, &mut buf[..len], 0)?;
    Ok((got == len).then(|| xxh3_64(&buf[..len])))
}

/// What is known about the first [`FP_MAX`] bytes of a followed file.
#[derive(Debug, Default)]
pub(crate) struct Head {
    /// The file's first bytes as far as known. Freed once the head is complete and every line
    /// ending inside it has been read: from then on only `full` is needed.
    bytes: Vec<u8>,
    /// xxh3 of the first [`FP_MAX`] bytes, once the file is that large.
    full: Option<u64>,
}

impl Head {
    /// Number of bytes the fingerprint covers (`fp_len`).
    pub(crate) fn len(&self) -> usize {
        if self.full.is_some() { FP_MAX } else { self.bytes.len() }
    }

    /// The identity fingerprint over [`Head::len`] bytes (`fp_hash`).
    pub(crate) fn hash(&self) -> u64 {
        self.full.unwrap_or_else(|| xxh3_64(&self.bytes))
    }

    /// Forget everything (after a truncation reset).
    pub(crate) fn clear(&mut self) {
        *self = Head::default();
    }

    /// Re-reads the head of `file` (now `size` bytes long), grows the known head up to
    /// `min(size, FP_MAX)`, and checks that what was known before is unchanged.
    ///
    /// The re-read is skipped when nothing can be learnt (head complete or not grown) unless
    /// `verify` asks for it. Returns `false` when the head changed: the file was truncated and
    /// rewritten, possibly past the old offset, which the size check alone cannot see.
    pub(crate) fn refresh(&mut self, file: &File, size: u64, verify: bool) -> io::Result<bool> {
        let want = size.min(FP_MAX as u64) as usize;
        let known = self.len();
        if want < known {
            return Ok(false);
        }
        let grows = self.full.is_none() && want > known;
        if !grows && !verify {
            return Ok(true);
        }
        let mut buf = [0u8; FP_MAX];
        let got = read_full_at(file, &mut buf[..want], 0)?;
        if got < known {
            return Ok(false); // shrank between fstat and read
        }
        if let Some(full) = self.full {
            return Ok(xxh3_64(&buf[..FP_MAX]) == full);
        }
        if buf[..known] != self.bytes[..] {
            return Ok(false);
        }
        self.bytes.extend_from_slice(&buf[known..got]);
        self.complete_if_full();
        Ok(true)
    }

    /// Feeds bytes just read at file offset `base`, so reading from the start of a file does
    /// not need a second read for the head.
    pub(crate) fn extend_from_chunk(&mut self, base: u64, chunk: &[u8]) {
        if self.full.is_some() {
            return;
        }
        let have = self.bytes.len() as u64;
        if have < base || have >= base + chunk.len() as u64 {
            return; // no contiguous overlap: `refresh` fills the head instead
        }
        let from = (have - base) as usize;
        let room = FP_MAX - self.bytes.len();
        let take = (chunk.len() - from).min(room);
        self.bytes.extend_from_slice(&chunk[from..from + take]);
        self.complete_if_full();
    }

    fn complete_if_full(&mut self) {
        if self.bytes.len() >= FP_MAX {
            self.bytes.truncate(FP_MAX);
            self.full = Some(xxh3_64(&self.bytes));
        }
    }

    /// `LinePos::origin` for a line whose end (after its '\n') is at `end`.
    pub(crate) fn origin(&self, end: u64) -> u64 {
        if end >= FP_MAX as u64
            && let Some(full) = self.full
        {
            return full;
        }
        // Should the head be shorter than `end` (a race with a shrinking file), hash what we
        // have rather than fail: the key only loses its stability for that one line.
        let n = (end as usize).min(self.bytes.len());
        xxh3_64(&self.bytes[..n])
    }

    /// Drops the head bytes once no line ending inside them can still be delivered.
    pub(crate) fn compact(&mut self, read_pos: u64) {
        if self.full.is_some() && read_pos >= FP_MAX as u64 && !self.bytes.is_empty() {
            self.bytes = Vec::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_with(content: &[u8]) -> (tempfile::NamedTempFile, File) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(content).unwrap();
        f.flush().unwrap();
        let r = File::open(f.path()).unwrap();
        (f, r)
    }

    #[test]
    fn grows_until_full_and_detects_rewrite() {
        let mut content = b"hello\n".to_vec();
        let (mut tmp, file) = file_with(&content);
        let mut head = Head::default();
        assert!(head.refresh(&file, content.len() as u64, false).unwrap());
        assert_eq!(head.len(), 6);
        assert_eq!(head.hash(), xxh3_64(b"hello\n"));
        assert_eq!(head.origin(6), xxh3_64(b"hello\n"));

        let more = vec![b'x'; 5000];
        tmp.write_all(&more).unwrap();
        tmp.flush().unwrap();
        content.extend_from_slice(&more);
        assert!(head.refresh(&file, content.len() as u64, false).unwrap());
        assert_eq!(head.len(), FP_MAX);
        assert_eq!(head.hash(), xxh3_64(&content[..FP_MAX]));
        assert_eq!(head.origin(6), xxh3_64(b"hello\n"));
        assert_eq!(head.origin(10_000), xxh3_64(&content[..FP_MAX]));
        head.compact(5000);
        assert_eq!(head.origin(10_000), xxh3_64(&content[..FP_MAX]));
        assert!(head.refresh(&file, content.len() as u64, true).unwrap());

        // Rewrite the first byte in place: a verify must notice.
        tmp.as_file().write_at(b"J", 0).unwrap();
        assert!(!head.refresh(&file, content.len() as u64, true).unwrap());
        // A shorter file can never be the same head.
        assert!(!head.refresh(&file, 10, false).unwrap());
    }

    #[test]
    fn chunk_extension_matches_file() {
        let content: Vec<u8> = (0..6000u32).map(|i| (i % 251) as u8).collect();
        let mut head = Head::default();
        head.extend_from_chunk(0, &content[..1000]);
        head.extend_from_chunk(500, &content[500..3000]);
        head.extend_from_chunk(5000, &content[5000..]); // gap: ignored
        assert_eq!(head.len(), 3000);
        head.extend_from_chunk(3000, &content[3000..]);
        assert_eq!(head.len(), FP_MAX);
        assert_eq!(head.hash(), xxh3_64(&content[..FP_MAX]));
        assert_eq!(head.origin(100), xxh3_64(&content[..100]));
    }

    #[test]
    fn hash_prefix_short_file() {
        let (_tmp, file) = file_with(b"abc");
        assert_eq!(hash_prefix(&file, 3).unwrap(), Some(xxh3_64(b"abc")));
        assert_eq!(hash_prefix(&file, 4).unwrap(), None);
        assert_eq!(hash_prefix(&file, 0).unwrap(), Some(xxh3_64(b"")));
    }
}
