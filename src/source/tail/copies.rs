//! Rotated copies: finding what logrotate's `copytruncate` made of a file before it truncated
//! it, so that the lines not yet read when the copy was taken are read from the copy.
//!
//! A copy has its own inode, so it is recognised by content: it sits next to the file, its
//! name is the file's name plus a rotation suffix, its first `fp_len` bytes hash to the
//! fingerprint of the content we were reading, and it reaches the offset we had read to.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::checkpoint::CopyRead;
use super::file::{FileKey, Followed, Position};

/// At most this many read copies are remembered (the oldest are forgotten first); they are
/// also forgotten once gone from their directory.
const MAX_COPIES_READ: usize = 64;

/// Whether `name` is `base` plus a rotation suffix: `.1`, `.0`, `-20261201`, `-2026-12-01`,
/// `-20261201-1733011200`, `.1.2`... i.e. `.` or `-`, then digits and `.`, `-`, `_` with at
/// least one digit. Compressed copies (`.1.gz`) are not: their bytes are not the log's.
pub(crate) fn is_rotation_of(base: &OsStr, name: &OsStr) -> bool {
    let (base, name) = (base.as_encoded_bytes(), name.as_encoded_bytes());
    let Some(rest) = name.strip_prefix(base) else { return false };
    let Some((&sep, suffix)) = rest.split_first() else { return false };
    (sep == b'.' || sep == b'-')
        && suffix.iter().any(u8::is_ascii_digit)
        && suffix.iter().all(|&b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_'))
}

/// The rotated copy of the content `pos` describes, last seen at `path`: opened and
/// positioned at `pos`. Skips files in `followed` (already being read) and copies already
/// read. When several qualify, the largest wins: it holds the most of that content.
pub(crate) fn find(
    path: &Path,
    source: usize,
    max_line_bytes: usize,
    pos: &Position,
    followed: impl Fn(FileKey) -> bool,
    read: &[CopyRead],
) -> Option<Followed> {
    // Without a fingerprint there is no identity: any file would "match".
    if pos.fp_len == 0 {
        return None;
    }
    let (dir, base) = (path.parent()?, path.file_name()?);
    let mut best: Option<(u64, Followed)> = None;
    for entry in fs::read_dir(dir).ok()?.flatten() {
        if !is_rotation_of(base, &entry.file_name()) {
            continue;
        }
        let Ok(md) = entry.metadata() else { continue };
        let key = (md.dev(), md.ino());
        if !md.is_file() || followed(key) || read.iter().any(|c| (c.dev, c.ino, c.size) == (key.0, key.1, md.len())) {
            continue;
        }
        if best.as_ref().is_some_and(|(size, _)| *size >= md.len()) {
            continue;
        }
        if let Ok(mut t) = Followed::open(&entry.path(), source, max_line_bytes)
            && t.holds(pos)
        {
            t.resume_at(pos);
            t.is_copy = true;
            best = Some((md.len(), t));
        }
    }
    best.map(|(_, t)| t)
}

/// Records `copy` as read to its end, forgetting copies that left their directory.
pub(crate) fn remember(read: &mut Vec<CopyRead>, copy: CopyRead) {
    read.retain(|c| *c != copy && still_there(c));
    read.push(copy);
    if read.len() > MAX_COPIES_READ {
        read.drain(..read.len() - MAX_COPIES_READ);
    }
}

/// Whether the copy's inode is still in its directory (under any name: logrotate shifts
/// `.1` to `.2`), with its size.
fn still_there(c: &CopyRead) -> bool {
    let Some(dir) = Path::new(&c.path).parent() else { return false };
    let Ok(entries) = fs::read_dir(dir) else { return true }; // unreadable now: keep it
    entries
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .any(|md| (md.dev(), md.ino(), md.len()) == (c.dev, c.ino, c.size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_suffixes() {
        let yes = ["a.log.1", "a.log.0", "a.log.12", "a.log-20261201", "a.log-2026-12-01", "a.log-20261201-1733011200"];
        for n in yes {
            assert!(is_rotation_of(OsStr::new("a.log"), OsStr::new(n)), "{n}");
        }
        let no = ["a.log", "a.log.", "a.log.1.gz", "a.log.bak", "a.log-old", "a.logs.1", "b.log.1", "a.log.gz"];
        for n in no {
            assert!(!is_rotation_of(OsStr::new("a.log"), OsStr::new(n)), "{n}");
        }
    }

    #[test]
    fn finds_the_copy_by_content() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("a.log");
        let content = b"first line\nsecond line\nthird\n";
        fs::write(&log, content).unwrap();
        let original = Followed::open(&log, 0, 1000).unwrap();
        let pos = Position { offset: 11, line_number: 1, ..original.position() };
        // A stranger with the same name pattern, a compressed copy, then the real copy.
        fs::write(dir.path().join("a.log.2"), b"other content\n").unwrap();
        fs::write(dir.path().join("a.log.1.gz"), content).unwrap();
        assert!(find(&log, 0, 1000, &pos, |_| false, &[]).is_none());
        fs::write(dir.path().join("a.log.1"), content).unwrap();
        let copy = find(&log, 0, 1000, &pos, |_| false, &[]).expect("copy");
        assert_eq!(copy.info.path, dir.path().join("a.log.1"));
        assert_eq!(copy.offset(), 11);
        assert!(copy.is_copy);

        // Not when followed already, not when read already, not when shorter than the offset.
        assert!(find(&log, 0, 1000, &pos, |k| k == copy.key, &[]).is_none());
        let size = content.len() as u64;
        let done = CopyRead { path: String::new(), dev: copy.key.0, ino: copy.key.1, size };
        assert!(find(&log, 0, 1000, &pos, |_| false, &[done]).is_none());
        let far = Position { offset: size + 1, ..pos };
        assert!(find(&log, 0, 1000, &far, |_| false, &[]).is_none());
        // No fingerprint, no identity.
        let empty = Position { fp_len: 0, fp_hash: 0, offset: 0, line_number: 0 };
        assert!(find(&log, 0, 1000, &empty, |_| false, &[]).is_none());
    }

    #[test]
    fn remembers_only_copies_still_present() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.log.1");
        fs::write(&p, b"x\n").unwrap();
        let md = fs::metadata(&p).unwrap();
        let here = CopyRead { path: p.display().to_string(), dev: md.dev(), ino: md.ino(), size: 2 };
        let gone = CopyRead { path: p.display().to_string(), dev: md.dev(), ino: md.ino() + 1_000_000, size: 2 };
        let mut read = vec![gone];
        remember(&mut read, here.clone());
        assert_eq!(read, vec![here.clone()]);
        // Renamed (`.1` to `.2`): still there.
        fs::rename(&p, dir.path().join("a.log.2")).unwrap();
        let next = CopyRead { ino: md.ino() + 2_000_000, ..here.clone() };
        remember(&mut read, next.clone());
        assert_eq!(read, vec![here, next]);
    }
}
