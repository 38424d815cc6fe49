//! What is on disk: walking a tree without following symbolic links, stat, and the content
//! fingerprint (SHA-256 and a content class from magic bytes) of files whose stat changed.
//! Then the comparison with the baseline: what changed, with renames paired by inode.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::Metadata;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use globset::GlobSet;
use sha2::{Digest, Sha256};

/// A file's state, as stored in the baseline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Absolute path, as bytes.
    pub path: Vec<u8>,
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    /// `st_mode`: type and permission bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    /// Hex SHA-256 of the content (of the target text, for a symbolic link). `None` for
    /// directories and files too large or unreadable.
    pub sha256: Option<String>,
    /// What the content is, from its first bytes: `php`, `elf`, `jpeg`, `html`, `text`...
    pub content: String,
}

const S_IFMT: u32 = 0o170000;
const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;

impl Entry {
    pub fn is_dir(&self) -> bool {
        self.mode & S_IFMT == S_IFDIR
    }
    pub fn is_file(&self) -> bool {
        self.mode & S_IFMT == S_IFREG
    }
    /// `file`, `symlink`, `dir` or `other` (devices, sockets, FIFOs: stat only).
    pub fn kind(&self) -> &'static str {
        match self.mode & S_IFMT {
            S_IFREG => "file",
            S_IFLNK => "symlink",
            S_IFDIR => "dir",
            _ => "other",
        }
    }
    /// The stat fields whose change means the content may have changed.
    fn same_content_stat(&self, o: &Entry) -> bool {
        self.dev == o.dev
            && self.ino == o.ino
            && self.size == o.size
            && self.mtime_ns == o.mtime_ns
            && self.ctime_ns == o.ctime_ns
            && self.mode & S_IFMT == o.mode & S_IFMT
    }
    fn same_attributes(&self, o: &Entry) -> bool {
        self.mode == o.mode && self.uid == o.uid && self.gid == o.gid
    }
}

/// What a scan needs to know of the source's settings.
pub struct Hasher {
    pub max_bytes: u64,
    /// Bytes per second; 0: unlimited.
    pub rate: u64,
    window_start: Instant,
    window_bytes: u64,
    pub hashed_files: u64,
    pub hashed_bytes: u64,
}

impl Hasher {
    pub fn new(max_bytes: u64, rate: u64) -> Hasher {
        Hasher { max_bytes, rate, window_start: Instant::now(), window_bytes: 0, hashed_files: 0, hashed_bytes: 0 }
    }

    /// Sleeps as long as hashing is ahead of its rate (a token bucket over one-second windows).
    fn pace(&mut self, n: u64) {
        self.hashed_bytes += n;
        if self.rate == 0 {
            return;
        }
        self.window_bytes += n;
        if self.window_bytes >= self.rate {
            let spent = self.window_start.elapsed();
            if spent < Duration::from_secs(1) {
                std::thread::sleep(Duration::from_secs(1) - spent);
            }
            self.window_start = Instant::now();
            self.window_bytes = 0;
        }
    }

    /// SHA-256 and content class of the file at `path` whose lstat is `m`. The file is opened
    /// without following a symbolic link and without blocking (a FIFO swapped in after the
    /// stat), and must still be the same regular file once open.
    fn fingerprint(&mut self, path: &Path, m: &Metadata) -> (Option<String>, String) {
        let ft = m.file_type();
        if ft.is_symlink() {
            return match std::fs::read_link(path) {
                Ok(t) => (Some(hex(&Sha256::digest(t.as_os_str().as_bytes()))), "symlink".into()),
                Err(_) => (None, "symlink".into()),
            };
        }
        if !ft.is_file() {
            return (None, if ft.is_dir() { "dir" } else { "special" }.into());
        }
        let ext = extension(path.as_os_str().as_bytes());
        if m.len() > self.max_bytes {
            return (None, classify(&[], &ext, true));
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(path);
        let Ok(mut file) = file else { return (None, classify(&[], &ext, true)) };
        match file.metadata() {
            Ok(fm) if fm.is_file() && fm.ino() == m.ino() && fm.dev() == m.dev() => {}
            _ => return (None, classify(&[], &ext, true)),
        }
        let mut h = Sha256::new();
        let mut head = Vec::new();
        let mut buf = vec![0u8; 64 << 10];
        let mut total = 0u64;
        loop {
            match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if head.len() < 4096 {
                        let take = (4096 - head.len()).min(n);
                        head.extend_from_slice(&buf[..take]);
                    }
                    h.update(&buf[..n]);
                    total += n as u64;
                    self.pace(n as u64);
                    // Grown past the limit while being read: a log written into the root.
                    if total > self.max_bytes {
                        return (None, classify(&head, &ext, true));
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return (None, classify(&head, &ext, true)),
            }
        }
        self.hashed_files += 1;
        (Some(hex(&h.finalize())), classify(&head, &ext, false))
    }
}

fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push_str(&format!("{x:02x}"));
    }
    s
}

/// The extension of a path (lower case, without the dot; empty when none).
pub fn extension(path: &[u8]) -> String {
    let name = path.rsplit(|&b| b == b'/').next().unwrap_or(path);
    match name.iter().rposition(|&b| b == b'.') {
        Some(i) if i > 0 => String::from_utf8_lossy(&name[i + 1..]).to_ascii_lowercase(),
        _ => String::new(),
    }
}

/// The content class from the first bytes, the extension as a tie-breaker for text.
/// `partial`: the bytes could not (all) be read.
fn classify(head: &[u8], ext: &str, partial: bool) -> String {
    let starts = |m: &[u8]| head.starts_with(m);
    // The signatures content rules know by name (`magic:`), for the types worth telling apart
    // here; the short ones (`BM`, `MZ`, `RIFF`) would misname plain text that begins so.
    let magic = crate::engine::content::KNOWN_MAGIC
        .iter()
        .filter(|(name, _)| matches!(*name, "elf" | "jpeg" | "png" | "gif" | "pdf" | "zip" | "gzip"))
        .find(|(_, sigs)| sigs.iter().any(|m| starts(m)))
        .map(|(name, _)| *name);
    let c = if head.is_empty() {
        if partial { "unknown" } else { "empty" }
    } else if let Some(name) = magic {
        name
    } else if starts(b"#!") {
        "script"
    } else if memchr::memmem::find(head, b"<?php").is_some() || starts(b"<?=") {
        "php"
    } else if memchr::memmem::find(head, b"<%").is_some() && matches!(ext, "jsp" | "jspx" | "asp" | "aspx") {
        "server-page"
    } else if head.contains(&0) {
        "binary"
    } else {
        let lower = head.iter().take(512).map(u8::to_ascii_lowercase).collect::<Vec<_>>();
        if memchr::memmem::find(&lower, b"<html").is_some() || memchr::memmem::find(&lower, b"<!doctype html").is_some()
        {
            "html"
        } else {
            "text"
        }
    };
    c.to_string()
}

/// The state of a path from its lstat, fingerprinted unless `reuse` (the baseline's state
/// of the same path) shows the content cannot have changed.
pub fn entry(path: &Path, m: &Metadata, reuse: Option<&Entry>, h: &mut Hasher) -> Entry {
    let mut e = Entry {
        path: path.as_os_str().as_bytes().to_vec(),
        dev: m.dev(),
        ino: m.ino(),
        size: m.len(),
        mode: m.mode(),
        uid: m.uid(),
        gid: m.gid(),
        mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
        ctime_ns: m.ctime() * 1_000_000_000 + m.ctime_nsec(),
        sha256: None,
        content: String::new(),
    };
    match reuse {
        Some(old) if old.same_content_stat(&e) => {
            e.sha256 = old.sha256.clone();
            e.content = old.content.clone();
        }
        _ => (e.sha256, e.content) = h.fingerprint(path, m),
    }
    e
}

/// Ignore globs and the root they are relative to.
pub struct Filter {
    pub ignore: GlobSet,
}

impl Filter {
    /// Whether `path` (below `root`) is ignored: it, or a directory it is in, matches an
    /// ignore glob — `cache` ignores everything under `cache/` too, as people expect.
    pub fn ignored(&self, root: &Path, path: &Path) -> bool {
        path.strip_prefix(root)
            .is_ok_and(|rel| rel.ancestors().any(|a| !a.as_os_str().is_empty() && self.ignore.is_match(a)))
    }
}

/// What is on disk under a directory: lstat of every entry, not crossing into ignored
/// directories and never following symbolic links. `recursive`: the whole subtree; else the
/// directory's own entries, plus the whole subtree of any directory `known` does not hold
/// (new directories have no watch yet). Unreadable directories are reported in `errors`.
pub fn walk(
    root: &Path,
    dir: &Path,
    recursive: bool,
    filter: &Filter,
    known: &BTreeMap<Vec<u8>, Entry>,
    out: &mut Vec<(PathBuf, Metadata)>,
    errors: &mut Vec<String>,
) {
    let mut stack = vec![(dir.to_path_buf(), recursive)];
    while let Some((d, deep)) = stack.pop() {
        let rd = match std::fs::read_dir(&d) {
            Ok(rd) => rd,
            Err(e) => {
                if d != dir || e.kind() != std::io::ErrorKind::NotFound {
                    errors.push(format!("{}: {e}", d.display()));
                }
                continue;
            }
        };
        for item in rd.flatten() {
            let p = item.path();
            if filter.ignored(root, &p) {
                continue;
            }
            let Ok(m) = std::fs::symlink_metadata(&p) else { continue };
            if m.is_dir() {
                let known_dir = known.get(p.as_os_str().as_bytes()).is_some_and(Entry::is_dir);
                if deep || !known_dir {
                    stack.push((p.clone(), true));
                }
            }
            out.push((p, m));
        }
    }
}

/// Compares `dir` under `root` (its whole subtree when `recursive`) with the baseline `known`:
/// [`walk`], [`previous`], [`diff`].
pub fn compare(
    root: &Path,
    dir: &Path,
    recursive: bool,
    filter: &Filter,
    known: &BTreeMap<Vec<u8>, Entry>,
    h: &mut Hasher,
    errors: &mut Vec<String>,
) -> Vec<Change> {
    let mut seen = Vec::new();
    walk(root, dir, recursive, filter, known, &mut seen, errors);
    let dirs = dirs_of(&seen);
    let prev: Vec<&Entry> = previous(dir, recursive, known, &dirs);
    diff(&prev, seen, known, h)
}

/// The directories among what a walk saw, for [`previous`].
pub fn dirs_of(seen: &[(PathBuf, Metadata)]) -> HashSet<&[u8]> {
    seen.iter().filter(|(_, m)| m.is_dir()).map(|(p, _)| p.as_os_str().as_bytes()).collect()
}

/// The rows of `known` a scan of `dir` (as in [`walk`]) accounts for: its entries, and the
/// subtrees of those that are not directories both in the baseline and on disk now (a
/// directory that vanished, or was replaced by a file, takes its subtree with it).
/// `dirs_on_disk`: the directories the walk saw ([`dirs_of`]).
pub fn previous<'a>(
    dir: &Path,
    recursive: bool,
    known: &'a BTreeMap<Vec<u8>, Entry>,
    dirs_on_disk: &HashSet<&[u8]>,
) -> Vec<&'a Entry> {
    let mut prefix = dir.as_os_str().as_bytes().to_vec();
    if prefix.last() != Some(&b'/') {
        prefix.push(b'/');
    }
    let mut out = Vec::new();
    for (p, e) in known.range(prefix.clone()..) {
        if !p.starts_with(&prefix) {
            break;
        }
        let rest = &p[prefix.len()..];
        if !recursive && let Some(i) = rest.iter().position(|&b| b == b'/') {
            let child = &p[..prefix.len() + i];
            let still_dir = known.get(child).is_some_and(Entry::is_dir) && dirs_on_disk.contains(child);
            if still_dir {
                continue;
            }
        }
        out.push(e);
    }
    out
}

/// Kinds of change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Created,
    Modified,
    Deleted,
    Renamed,
    Attributes,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Created => "created",
            Kind::Modified => "modified",
            Kind::Deleted => "deleted",
            Kind::Renamed => "renamed",
            Kind::Attributes => "attributes",
        }
    }
}

/// One change found by a scan. `kind` is `None` for a state to store without reporting
/// (times touched, directories, a temporary file renamed over another).
#[derive(Debug, Clone)]
pub struct Change {
    pub kind: Option<Kind>,
    pub old: Option<Entry>,
    pub new: Option<Entry>,
}

/// Compares what a scan saw (`seen`) with the baseline rows it accounts for (`prev`).
/// Renames are paired by device and inode (with the same size and mtime, so that a reused
/// inode is not taken for a rename); a file replaced by renaming another over it (atomic
/// replace) is `modified`, and the other file's disappearance is not reported.
pub fn diff(
    prev: &[&Entry],
    seen: Vec<(PathBuf, Metadata)>,
    known: &BTreeMap<Vec<u8>, Entry>,
    h: &mut Hasher,
) -> Vec<Change> {
    let mut out = Vec::new();
    let seen_paths: HashSet<Vec<u8>> = seen.iter().map(|(p, _)| p.as_os_str().as_bytes().to_vec()).collect();
    // Baseline rows gone from their path, by inode: candidates for renames.
    let mut gone: HashMap<(u64, u64), &Entry> = HashMap::new();
    for e in prev {
        if !seen_paths.contains(&e.path) {
            gone.insert((e.dev, e.ino), e);
        }
    }
    let mut consumed: HashSet<Vec<u8>> = HashSet::new();
    let mut created = Vec::new();
    for (p, m) in &seen {
        let key = p.as_os_str().as_bytes();
        match known.get(key) {
            Some(old) => {
                let new = entry(p, m, Some(old), h);
                if new == *old {
                    continue;
                }
                let replaced = new.ino != old.ino || new.dev != old.dev;
                let kind = if old.is_dir() && new.is_dir() {
                    None
                } else if replaced
                    || new.size != old.size
                    || new.sha256 != old.sha256
                    || new.mode & S_IFMT != old.mode & S_IFMT
                {
                    Some(Kind::Modified)
                } else if !new.same_attributes(old) {
                    Some(Kind::Attributes)
                } else {
                    None
                };
                if replaced && let Some(tmp) = gone.remove(&(new.dev, new.ino)) {
                    // The file renamed over this one is accounted for here.
                    consumed.insert(tmp.path.clone());
                }
                out.push(Change { kind, old: Some(old.clone()), new: Some(new) });
            }
            None => created.push((p, m)),
        }
    }
    for (p, m) in created {
        let paired = gone
            .get(&(m.dev(), m.ino()))
            .filter(|o| o.size == m.len() && o.mtime_ns == m.mtime() * 1_000_000_000 + m.mtime_nsec())
            .copied();
        let new = entry(p, m, paired, h);
        match paired {
            Some(old) => {
                gone.remove(&(old.dev, old.ino));
                consumed.insert(old.path.clone());
                let kind = (!new.is_dir()).then_some(Kind::Renamed);
                out.push(Change { kind, old: Some(old.clone()), new: Some(new) });
            }
            None => {
                let kind = (!new.is_dir()).then_some(Kind::Created);
                out.push(Change { kind, old: None, new: Some(new) });
            }
        }
    }
    // Every row gone from its path and not paired (hard links share an inode: each counts).
    for e in prev {
        if seen_paths.contains(&e.path) || consumed.contains(&e.path) {
            continue;
        }
        let kind = (!e.is_dir()).then_some(Kind::Deleted);
        out.push(Change { kind, old: Some((*e).clone()), new: None });
    }
    out
}

/// The name part of a path, for messages.
pub fn display(p: &[u8]) -> String {
    Path::new(OsStr::from_bytes(p)).display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scans `root` recursively against `known` and returns (kind, old name, new name).
    fn changes_in(root: &Path, known: &BTreeMap<Vec<u8>, Entry>) -> Vec<(Option<Kind>, String, String)> {
        let filter = Filter { ignore: GlobSet::empty() };
        let name = |e: &Option<Entry>| e.as_ref().map(|e| display(&e.path).rsplit('/').next().unwrap().to_string());
        let mut h = Hasher::new(1 << 20, 0);
        let mut out: Vec<_> = super::compare(root, root, true, &filter, known, &mut h, &mut Vec::new())
            .into_iter()
            .map(|c| (c.kind, name(&c.old).unwrap_or_default(), name(&c.new).unwrap_or_default()))
            .collect();
        out.sort_by(|a, b| (&a.1, &a.2).cmp(&(&b.1, &b.2)));
        out
    }

    fn baseline(root: &Path) -> BTreeMap<Vec<u8>, Entry> {
        let mut seen = Vec::new();
        walk(root, root, true, &Filter { ignore: GlobSet::empty() }, &BTreeMap::new(), &mut seen, &mut Vec::new());
        let mut h = Hasher::new(1 << 20, 0);
        seen.iter().map(|(p, m)| (p.as_os_str().as_bytes().to_vec(), entry(p, m, None, &mut h))).collect()
    }

    #[test]
    fn renames_pair_by_inode_and_atomic_replace_is_a_modification() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        std::fs::write(r.join("a.jpg"), "image").unwrap();
        std::fs::write(r.join("index.php"), "v1").unwrap();
        std::fs::write(r.join("gone.txt"), "bye").unwrap();
        std::fs::write(r.join(".tmp"), "v2 longer").unwrap();
        let known = baseline(r);
        std::fs::rename(r.join("a.jpg"), r.join("a.php")).unwrap();
        std::fs::rename(r.join(".tmp"), r.join("index.php")).unwrap();
        std::fs::remove_file(r.join("gone.txt")).unwrap();
        std::fs::write(r.join("new.txt"), "n").unwrap();
        let got = changes_in(r, &known);
        let want = vec![
            (Some(Kind::Created), String::new(), "new.txt".to_string()),
            (Some(Kind::Renamed), "a.jpg".into(), "a.php".into()),
            (Some(Kind::Deleted), "gone.txt".into(), String::new()),
            (Some(Kind::Modified), "index.php".into(), "index.php".into()),
        ];
        assert_eq!(got, want);
        // Nothing changed: nothing to report.
        assert!(changes_in(r, &baseline(r)).is_empty());
    }

    #[test]
    fn a_new_file_on_a_reused_inode_is_not_a_rename() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        std::fs::write(r.join("old.txt"), "old").unwrap();
        let mut known = baseline(r);
        std::fs::remove_file(r.join("old.txt")).unwrap();
        std::fs::write(r.join("other.php"), "<?php different").unwrap();
        // Whatever inode the kernel gave it, pretend it is the old one's.
        let ino = std::fs::metadata(r.join("other.php")).unwrap().ino();
        known.values_mut().for_each(|e| e.ino = ino);
        let got = changes_in(r, &known);
        assert_eq!(
            got,
            vec![
                (Some(Kind::Created), String::new(), "other.php".into()),
                (Some(Kind::Deleted), "old.txt".into(), String::new()),
            ]
        );
    }

    #[test]
    fn content_classes_and_extensions() {
        assert_eq!(classify(b"<?php echo 1;", "jpg", false), "php");
        assert_eq!(classify(b"\xff\xd8\xff\xe0rest", "jpg", false), "jpeg");
        assert_eq!(classify(b"\x7fELF\x02", "", false), "elf");
        assert_eq!(classify(b"", "", false), "empty");
        for (head, class) in [
            (&b"\x89PNG\r\n\x1a\n.."[..], "png"),
            (b"GIF87a..", "gif"),
            (b"GIF89a..", "gif"),
            (b"%PDF-1.7", "pdf"),
            (b"PK\x03\x04..", "zip"),
            (b"\x1f\x8b\x08", "gzip"),
            (b"MZ is a text file", "text"),
            (b"BM too", "text"),
        ] {
            assert_eq!(classify(head, "", false), class, "{head:?}");
        }
        assert_eq!(classify(b"<!DOCTYPE html><p>", "html", false), "html");
        assert_eq!(extension(b"/srv/a.b/shell.PHP"), "php");
        assert_eq!(extension(b"/srv/a.b/.htaccess"), "");
        assert_eq!(extension(b"/srv/x/noext"), "");
    }
}
