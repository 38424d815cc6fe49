//! **content**: scanning a file's contents against the `content:` rules and YARA rules.
//!
//! [`Scanner`] is the one entry point: `trapline sweep` walks a tree and calls it on every
//! file (in parallel, one [`ScanScratch`] per thread); the web-root source calls
//! [`Scanner::scan_file`] on each file it sees created or modified. Both kinds of rules come
//! from the rule paths: `content:` rules in the YAML files, YARA rules in `.yar`/`.yara` files
//! next to them (or named directly).
//!
//! Files are read whole, up to [`Scanner::max_size`]; a larger file is not read at all
//! ([`ScanError::TooLarge`]) rather than judged on its first bytes, so the caller can say what
//! it left out.

#[cfg(feature = "yara")]
pub mod yara;

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::engine::content::{ContentRuleSet, ContentScratch, FileFacts};
use crate::rule::{ErrorKind, Loaded, RuleError, RuleErrors, Severity};

/// Default cap on the size of a file read for scanning. Web shells are small; the large files
/// of a web root (media, archives, bundles) are not where they hide, and reading them would
/// dominate a sweep.
pub const DEFAULT_MAX_SIZE: u64 = 8 << 20;

/// Bytes of matched text kept in a [`ContentMatch`] excerpt.
const EXCERPT: usize = 96;

/// Which engine a match came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// A `content:` rule of the YAML rule files.
    Content,
    /// A YARA rule.
    Yara,
}

/// One rule that matched one file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContentMatch {
    /// Rule id: the YAML rule's id, or `yara.NAMESPACE.RULE` for a YARA rule (the namespace
    /// is the `.yar` file's name without extension).
    pub rule: String,
    pub title: String,
    pub severity: Severity,
    pub class: String,
    pub engine: Engine,
    /// Byte offset of the text that decided the match, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// That text (at most 96 bytes), with bytes that are not printable ASCII written as
    /// `\xNN`: safe to print and to log.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub excerpt: Option<String>,
}

/// Why a file was not scanned.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// Larger than the cap: left out whole.
    #[error("{size} bytes, over the {max} byte limit")]
    TooLarge { size: u64, max: u64 },
    /// Not a regular file (directory, device, socket, FIFO).
    #[error("not a regular file")]
    NotAFile,
    /// Could not be opened or read (permissions, vanished, I/O error).
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The compiled content rules and YARA rules, shared by every thread.
pub struct Scanner {
    pub rules: ContentRuleSet,
    #[cfg(feature = "yara")]
    pub yara: Option<yara::YaraRules>,
    /// Files larger than this many bytes are not read.
    pub max_size: u64,
}

impl std::fmt::Debug for Scanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scanner")
            .field("content_rules", &self.rules.rules.len())
            .field("yara_rules", &self.yara_rule_count())
            .field("max_size", &self.max_size)
            .finish()
    }
}

/// Per-thread state of a [`Scanner`]: the prefilter's scratch and, with YARA, a scanner
/// instance (costly to create, so one per thread, not per file).
pub struct ScanScratch<'a> {
    content: ContentScratch,
    buf: Vec<u8>,
    #[cfg(feature = "yara")]
    yara: Option<yara_x::Scanner<'a>>,
    #[cfg(not(feature = "yara"))]
    _scanner: std::marker::PhantomData<&'a ()>,
}

impl Scanner {
    /// Loads the YAML rules and the YARA files under `rule_paths`, plus the YARA files or
    /// directories `extra_yara`. All or nothing: every problem, positioned.
    pub fn from_paths(rule_paths: &[PathBuf], extra_yara: &[PathBuf]) -> Result<Scanner, RuleErrors> {
        let loaded = crate::rule::load::load_paths(rule_paths);
        let mut errors = Vec::new();
        let mut yara_files = Vec::new();
        for p in rule_paths.iter().chain(extra_yara) {
            match crate::rule::load::yara_files(p) {
                Ok(f) => yara_files.extend(f),
                // load_paths already reported a rule path it could not read.
                Err(_) if rule_paths.contains(p) => {}
                Err(e) => errors.push(io_error(p, format!("cannot read YARA rules: {e}"))),
            }
        }
        // The same file reached twice (a rule directory and --yara) is loaded once.
        let mut seen = std::collections::HashSet::new();
        yara_files.retain(|f| seen.insert(std::fs::canonicalize(f).unwrap_or_else(|_| f.clone())));
        for p in extra_yara {
            if crate::assets::is_file(p) && !crate::rule::load::is_yara_file(p) {
                errors.push(io_error(p, "not a YARA file: name .yar or .yara files, or directories holding them"));
            }
        }
        let loaded = match loaded {
            Ok(l) => Some(l),
            Err(RuleErrors(e)) => {
                errors.extend(e);
                None
            }
        };
        let scanner = loaded.as_ref().map(|l| Scanner::new(l, &yara_files));
        match scanner {
            Some(Ok(s)) if errors.is_empty() => Ok(s),
            Some(Err(RuleErrors(e))) => {
                errors.extend(e);
                Err(RuleErrors(errors))
            }
            _ => Err(RuleErrors(errors)),
        }
    }

    /// Compiles the content rules of `loaded` and the YARA files `yara_files`.
    pub fn new(loaded: &Loaded, yara_files: &[PathBuf]) -> Result<Scanner, RuleErrors> {
        #[cfg_attr(not(feature = "yara"), allow(unused_mut))]
        let (rules, mut errors) = ContentRuleSet::compile_lenient(loaded);
        #[cfg(feature = "yara")]
        let yara = if yara_files.is_empty() {
            None
        } else {
            match yara::YaraRules::compile(yara_files) {
                Ok(y) => Some(y),
                Err(RuleErrors(e)) => {
                    errors.extend(e);
                    None
                }
            }
        };
        // Built without YARA: the `content:` rules still run, and every YARA file is named as
        // left out (the built-in rules hold one, so refusing would make sweep unusable).
        #[cfg(not(feature = "yara"))]
        for f in yara_files {
            tracing::warn!(
                file = %f.display(),
                "YARA rules left out: this trapline was built without the `yara` feature"
            );
        }
        if !errors.is_empty() {
            return Err(RuleErrors(errors));
        }
        Ok(Scanner {
            rules,
            #[cfg(feature = "yara")]
            yara,
            max_size: DEFAULT_MAX_SIZE,
        })
    }

    /// Number of YARA rules loaded.
    pub fn yara_rule_count(&self) -> usize {
        #[cfg(feature = "yara")]
        return self.yara.as_ref().map_or(0, |y| y.len());
        #[cfg(not(feature = "yara"))]
        0
    }

    /// Whether any rule (content or YARA) is loaded and enabled.
    pub fn is_empty(&self) -> bool {
        !self.rules.rules.iter().any(|r| r.enabled) && self.yara_rule_count() == 0
    }

    pub fn scratch(&self) -> ScanScratch<'_> {
        ScanScratch {
            content: self.rules.scratch(),
            buf: Vec::new(),
            #[cfg(feature = "yara")]
            yara: self.yara.as_ref().map(|y| y.scanner()),
            #[cfg(not(feature = "yara"))]
            _scanner: std::marker::PhantomData,
        }
    }

    /// Scans one file: the entry point for callers that see one file at a time (the web-root
    /// source). Creates its own scratch; callers scanning many files on one thread should
    /// keep a [`Scanner::scratch`] and use [`Scanner::scan_path`].
    pub fn scan_file(&self, path: &Path) -> Result<Vec<ContentMatch>, ScanError> {
        self.scan_path(path, &mut self.scratch())
    }

    /// Scans one file with a reused scratch. Symbolic links are not followed (the caller
    /// decides about them): a link is [`ScanError::NotAFile`].
    pub fn scan_path(&self, path: &Path, s: &mut ScanScratch<'_>) -> Result<Vec<ContentMatch>, ScanError> {
        let meta = std::fs::symlink_metadata(path)?;
        if !meta.is_file() {
            return Err(ScanError::NotAFile);
        }
        if meta.len() > self.max_size {
            return Err(ScanError::TooLarge { size: meta.len(), max: self.max_size });
        }
        let mut f = open_nofollow(path)?;
        if !f.metadata()?.is_file() {
            return Err(ScanError::NotAFile);
        }
        let mut buf = std::mem::take(&mut s.buf);
        buf.clear();
        // The file may have grown since the stat: read one byte past the cap to notice.
        let read = (&mut f).take(self.max_size + 1).read_to_end(&mut buf);
        let result = match read {
            Err(e) => Err(ScanError::Io(e)),
            Ok(_) if buf.len() as u64 > self.max_size => {
                Err(ScanError::TooLarge { size: buf.len() as u64, max: self.max_size })
            }
            Ok(_) => {
                let name = file_name_bytes(path);
                Ok(self.scan_bytes(FileFacts { name: &name, size: buf.len() as u64 }, &buf, s))
            }
        };
        // Keep the allocation for the next file, but not a huge one.
        if buf.capacity() <= 1 << 20 {
            s.buf = buf;
        }
        result
    }

    /// Scans content already in memory.
    pub fn scan_bytes(&self, facts: FileFacts<'_>, data: &[u8], s: &mut ScanScratch<'_>) -> Vec<ContentMatch> {
        #[cfg_attr(not(feature = "yara"), allow(unused_mut))]
        let mut out: Vec<ContentMatch> = self
            .rules
            .matches(facts, data, &mut s.content)
            .into_iter()
            .map(|h| {
                let r = &self.rules.rules[h.rule];
                ContentMatch {
                    rule: r.id.clone(),
                    title: r.title.clone(),
                    severity: r.severity,
                    class: r.class.clone(),
                    engine: Engine::Content,
                    offset: h.span.map(|(a, _)| a as u64),
                    excerpt: h.span.map(|(a, b)| excerpt(&data[a..b])),
                }
            })
            .collect();
        #[cfg(feature = "yara")]
        if let (Some(y), Some(sc)) = (&self.yara, s.yara.as_mut()) {
            out.extend(y.scan(sc, data));
        }
        out
    }
}

/// The text of a match, safe for a terminal and a log: printable ASCII as is, every other
/// byte as `\xNN`, cut to [`EXCERPT`] bytes of input.
pub fn excerpt(bytes: &[u8]) -> String {
    let mut s = String::new();
    for &b in bytes.iter().take(EXCERPT) {
        if (0x20..0x7f).contains(&b) && b != b'\\' {
            s.push(b as char);
        } else {
            s.push_str(&format!("\\x{b:02x}"));
        }
    }
    if bytes.len() > EXCERPT {
        s.push('…');
    }
    s
}

/// The last component of `path` as bytes (file names need not be UTF-8).
pub fn file_name_bytes(path: &Path) -> Vec<u8> {
    let name = path.file_name().unwrap_or(path.as_os_str());
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        name.as_bytes().to_vec()
    }
    #[cfg(not(unix))]
    {
        name.to_string_lossy().into_owned().into_bytes()
    }
}

/// Opens a file for reading without following a symbolic link at its last component (a link
/// swapped in between the stat and the open must not take the read elsewhere), and without
/// blocking on a FIFO swapped in the same way.
fn open_nofollow(path: &Path) -> std::io::Result<std::fs::File> {
    let mut o = std::fs::OpenOptions::new();
    o.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
    }
    o.open(path)
}

fn io_error(p: &Path, message: impl Into<String>) -> RuleError {
    RuleError { file: p.to_path_buf(), line: 0, col: 0, rule: None, message: message.into(), kind: ErrorKind::Io }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_escape_everything_unprintable() {
        assert_eq!(excerpt(b"eval(\x1b[31m\\"), "eval(\\x1b[31m\\x5c");
        assert_eq!(excerpt("é".as_bytes()), "\\xc3\\xa9");
        assert!(excerpt(&[b'a'; 200]).ends_with('…'));
    }
}
