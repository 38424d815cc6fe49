//! Whole-input reading for `trapline scan`: files, gzip files and stdin, in large blocks that
//! end on a line boundary, so blocks can be matched in parallel and each line still knows its
//! offset and number.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek};
use std::path::Path;

/// A run of complete lines (the last line of the input may lack its newline).
#[derive(Debug, Default)]
pub struct Block {
    pub data: Vec<u8>,
    /// Offset of `data[0]` in the (decompressed) input.
    pub offset: u64,
    /// Line number of the first line in the block, 1-based.
    pub first_line: u64,
}

impl Block {
    /// Lines of the block: (start index in `data`, line bytes without `\n`).
    pub fn lines(&self) -> impl Iterator<Item = (usize, &[u8])> + '_ {
        let mut start = 0;
        let data = &self.data;
        std::iter::from_fn(move || {
            if start >= data.len() {
                return None;
            }
            let end = memchr::memchr(b'\n', &data[start..]).map_or(data.len(), |i| start + i);
            let s = start;
            start = end + 1;
            Some((s, &data[s..end]))
        })
    }
}

/// Reads an input in newline-aligned blocks.
pub struct BlockReader {
    inner: Box<dyn Read + Send>,
    carry: Vec<u8>,
    offset: u64,
    line: u64,
    eof: bool,
}

impl BlockReader {
    /// Opens `path`; `-` is stdin; gzip is recognised by its magic bytes, not its name.
    pub fn open(path: &Path) -> io::Result<BlockReader> {
        if path.as_os_str() == "-" {
            return Ok(Self::new(Box::new(io::stdin())));
        }
        let mut f = File::open(path)?;
        let mut magic = [0u8; 2];
        let n = f.read(&mut magic)?;
        let head = std::io::Cursor::new(magic[..n].to_vec());
        if n == 2 && magic == [0x1f, 0x8b] {
            let chained = head.chain(f);
            Ok(Self::new(Box::new(flate2::read::MultiGzDecoder::new(BufReader::with_capacity(256 << 10, chained)))))
        } else if f.seek(std::io::SeekFrom::Start(0)).is_ok() {
            // The file itself (not a chain behind the two bytes read): reads go straight
            // into the block's buffer.
            Ok(Self::new(Box::new(f)))
        } else {
            // Not seekable (a FIFO): the bytes read go first.
            Ok(Self::new(Box::new(head.chain(f))))
        }
    }

    pub fn new(inner: Box<dyn Read + Send>) -> BlockReader {
        BlockReader { inner, carry: Vec::new(), offset: 0, line: 1, eof: false }
    }

    /// The next block of about `target` bytes (more if a single line is longer), or `None`.
    pub fn next_block(&mut self, target: usize) -> io::Result<Option<Block>> {
        self.next_block_in(target, Vec::new())
    }

    /// [`BlockReader::next_block`] into `reuse`, the buffer of a block done with: `scan`
    /// hands its blocks back, so a long input does not fault in fresh pages for every block.
    pub fn next_block_in(&mut self, target: usize, mut reuse: Vec<u8>) -> io::Result<Option<Block>> {
        // The carried partial line goes first, then reads straight into the block's own
        // buffer (no intermediate copy).
        reuse.clear();
        reuse.extend_from_slice(&self.carry);
        self.carry.clear();
        let mut data = reuse;
        if !self.eof && data.len() < target {
            // Into the vector's spare room, not zero-filled first (`read_to_end` on a file
            // reads into uninitialised capacity); stops at the limit or at the end.
            let want = (target - data.len()).max(64 << 10) as u64;
            let n = (&mut self.inner).take(want).read_to_end(&mut data)?;
            if (n as u64) < want {
                self.eof = true;
            }
        }
        if data.is_empty() {
            return Ok(None);
        }
        if !self.eof {
            // Keep the partial last line for the next block; if there is no newline at all,
            // read on until one arrives (the line cap is applied per line by the caller).
            match memchr::memrchr(b'\n', &data) {
                Some(i) => {
                    self.carry.extend_from_slice(&data[i + 1..]);
                    data.truncate(i + 1);
                }
                None => {
                    self.carry = data;
                    return self.next_block(self.carry.len() + target);
                }
            }
        }
        let lines = memchr::memchr_iter(b'\n', &data).count() as u64 + u64::from(data.last() != Some(&b'\n'));
        let block = Block { data, offset: self.offset, first_line: self.line };
        self.offset += block.data.len() as u64;
        self.line += lines;
        Ok(Some(block))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_end_on_lines_and_count_them() {
        let text = b"a\nbb\nccc\ndddd".to_vec();
        let mut r = BlockReader::new(Box::new(std::io::Cursor::new(text)));
        let mut all = Vec::new();
        while let Some(b) = r.next_block(3).unwrap() {
            for (i, (start, l)) in b.lines().enumerate() {
                all.push((b.first_line + i as u64, b.offset + start as u64, String::from_utf8(l.to_vec()).unwrap()));
            }
        }
        assert_eq!(all, vec![(1, 0, "a".into()), (2, 2, "bb".into()), (3, 5, "ccc".into()), (4, 9, "dddd".into())]);
    }

    /// A path that cannot seek (a FIFO) still gives every byte, the two read to detect
    /// gzip included.
    #[test]
    fn reads_a_fifo() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pipe");
        assert!(std::process::Command::new("mkfifo").arg(&p).status().unwrap().success());
        let writer = {
            let p = p.clone();
            std::thread::spawn(move || std::fs::write(p, b"first\nsecond\n").unwrap())
        };
        let mut r = BlockReader::open(&p).unwrap();
        let mut text = Vec::new();
        while let Some(b) = r.next_block(4).unwrap() {
            text.extend_from_slice(&b.data);
        }
        writer.join().unwrap();
        assert_eq!(text, b"first\nsecond\n");
    }

    #[test]
    fn reads_gzip() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.log.gz");
        let mut e = flate2::write::GzEncoder::new(File::create(&p).unwrap(), flate2::Compression::fast());
        e.write_all(b"one\ntwo\n").unwrap();
        e.finish().unwrap();
        let mut r = BlockReader::open(&p).unwrap();
        let b = r.next_block(1 << 20).unwrap().unwrap();
        assert_eq!(b.lines().map(|(_, l)| l.to_vec()).collect::<Vec<_>>(), vec![b"one".to_vec(), b"two".to_vec()]);
    }
}
