//! Discovery: turning the configured paths and globs into files, and knowing which
//! directories to watch and which file-system events concern us.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use anyhow::Context;
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use super::TailSource;
use super::file::FileKey;

/// Characters that make a path component a glob (the `glob` crate's syntax).
const META: &[char] = &['*', '?', '['];

/// One configured path or glob, made absolute.
#[derive(Debug, Clone)]
pub(crate) struct Pattern {
    pub source: usize,
    /// Absolute pattern text.
    pub text: String,
    pub is_glob: bool,
    /// The deepest directory that every match lives under: the parent of a plain path, or the
    /// components before the first glob component.
    pub base_dir: PathBuf,
}

/// A file found by discovery.
#[derive(Debug, Clone)]
pub(crate) struct Found {
    pub source: usize,
    pub path: PathBuf,
    pub key: FileKey,
}

/// The compiled patterns of all sources.
#[derive(Debug)]
pub(crate) struct Patterns {
    pub list: Vec<Pattern>,
    /// Matches every pattern and every directory prefix of a pattern, so that an event about a
    /// directory that a glob will later descend into (created late) counts as relevant.
    relevant: GlobSet,
}

impl Patterns {
    pub(crate) fn compile(sources: &[TailSource]) -> anyhow::Result<Patterns> {
        let cwd = std::env::current_dir().context("cannot read the current directory")?;
        let mut list = Vec::new();
        let mut rel = GlobSetBuilder::new();
        for (source, src) in sources.iter().enumerate() {
            for raw in &src.patterns {
                let abs = cwd.join(raw);
                let text = abs
                    .to_str()
                    .with_context(|| format!("source {:?}: path {raw:?} is not UTF-8", src.name))?
                    .to_string();
                let is_glob = text.contains(META);
                if is_glob {
                    glob::Pattern::new(&text)
                        .with_context(|| format!("source {:?}: invalid glob {raw:?}", src.name))?;
                }
                let base_dir = if is_glob {
                    static_prefix(&abs)
                } else {
                    abs.parent().map(Path::to_path_buf).unwrap_or_else(|| "/".into())
                };
                for prefix in prefixes(&abs) {
                    let g = GlobBuilder::new(&escape_braces(&prefix))
                        .literal_separator(true)
                        .build()
                        .with_context(|| format!("source {:?}: invalid glob {raw:?}", src.name))?;
                    rel.add(g);
                }
                list.push(Pattern { source, text, is_glob, base_dir });
            }
        }
        Ok(Patterns { list, relevant: rel.build().context("cannot compile the source globs")? })
    }

    /// Whether an event on `path` may change what discovery finds.
    pub(crate) fn is_relevant(&self, path: &Path) -> bool {
        self.relevant.is_match(path)
    }

    /// Directories to watch so that files appearing under the patterns wake us up: each
    /// pattern's base directory, or while it does not exist its nearest existing ancestor
    /// (whose "created" event then triggers a rediscovery).
    pub(crate) fn watch_dirs(&self) -> HashSet<PathBuf> {
        let mut dirs = HashSet::new();
        for p in &self.list {
            let mut d = p.base_dir.as_path();
            loop {
                if d.is_dir() {
                    dirs.insert(d.to_path_buf());
                    break;
                }
                match d.parent() {
                    Some(parent) => d = parent,
                    None => break,
                }
            }
        }
        dirs
    }

    /// Every regular file currently matching a pattern, each file once (first pattern wins;
    /// the same inode under two paths is one file). `on_error` hears about paths that exist but
    /// cannot be examined (permission denied); vanished files are silently skipped.
    pub(crate) fn discover(&self, mut on_error: impl FnMut(&Path, &io::Error)) -> Vec<Found> {
        let mut out = Vec::new();
        let mut keys = HashSet::new();
        let mut add =
            |source: usize, path: PathBuf, on_error: &mut dyn FnMut(&Path, &io::Error)| match fs::metadata(&path) {
                Ok(md) if md.is_file() => {
                    let key = (md.dev(), md.ino());
                    if keys.insert(key) {
                        out.push(Found { source, path, key });
                    }
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => on_error(&path, &e),
            };
        for p in &self.list {
            if !p.is_glob {
                add(p.source, PathBuf::from(&p.text), &mut on_error);
                continue;
            }
            let opts = glob::MatchOptions {
                case_sensitive: true,
                require_literal_separator: true,
                require_literal_leading_dot: false,
            };
            let Ok(paths) = glob::glob_with(&p.text, opts) else {
                continue; // validated at compile time
            };
            let mut matched: Vec<PathBuf> = Vec::new();
            for entry in paths {
                match entry {
                    Ok(path) => matched.push(path),
                    Err(e) => {
                        let err = io::Error::new(e.error().kind(), e.error().to_string());
                        on_error(e.path(), &err);
                    }
                }
            }
            for path in matched {
                add(p.source, path, &mut on_error);
            }
        }
        out
    }
}

/// The components of `path` before the first one containing a glob character.
fn static_prefix(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        if let Component::Normal(s) = c
            && s.to_string_lossy().contains(META)
        {
            break;
        }
        out.push(c);
    }
    out
}

/// `/a/b*/c.log` → `/a`, `/a/b*`, `/a/b*/c.log`.
fn prefixes(path: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = PathBuf::new();
    for c in path.components() {
        cur.push(c);
        if matches!(c, Component::Normal(_)) {
            out.push(cur.to_string_lossy().into_owned());
        }
    }
    out
}

/// globset treats `{a,b}` as alternatives; the `glob` crate (used for discovery) does not.
fn escape_braces(s: &str) -> String {
    s.replace('{', "[{]").replace('}', "[}]")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::tail::StartAt;

    fn src(patterns: &[&str]) -> TailSource {
        TailSource {
            name: "t".into(),
            patterns: patterns.iter().map(|s| s.to_string()).collect(),
            start: StartAt::Beginning,
        }
    }

    #[test]
    fn prefixes_and_base_dirs() {
        assert_eq!(static_prefix(Path::new("/a/b/*.log")), PathBuf::from("/a/b"));
        assert_eq!(static_prefix(Path::new("/a/x*/c.log")), PathBuf::from("/a"));
        assert_eq!(prefixes(Path::new("/a/b*/c")), vec!["/a", "/a/b*", "/a/b*/c"]);
    }

    #[test]
    fn relevance_covers_late_directories() {
        let p = Patterns::compile(&[src(&["/var/app-*/logs/*.log", "/srv/x{1}.log"])]).unwrap();
        assert!(p.is_relevant(Path::new("/var/app-3")));
        assert!(p.is_relevant(Path::new("/var/app-3/logs")));
        assert!(p.is_relevant(Path::new("/var/app-3/logs/a.log")));
        assert!(!p.is_relevant(Path::new("/var/app-3/logs/a.txt")));
        assert!(!p.is_relevant(Path::new("/var/app-3/logs/sub/a.log")));
        assert!(p.is_relevant(Path::new("/srv/x{1}.log")));
        assert!(!p.is_relevant(Path::new("/srv/x1.log")));
    }

    #[test]
    fn discovers_files_once() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a.log"), b"x").unwrap();
        fs::write(dir.path().join("b.txt"), b"x").unwrap();
        fs::create_dir(dir.path().join("d.log")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("a.log"), dir.path().join("c.log")).unwrap();
        let d = dir.path().display();
        let p = Patterns::compile(&[src(&[&format!("{d}/*.log"), &format!("{d}/b.txt")])]).unwrap();
        let found = p.discover(|path, e| panic!("{}: {e}", path.display()));
        let names: Vec<_> = found.iter().map(|f| f.path.file_name().unwrap().to_owned()).collect();
        assert_eq!(names, vec!["a.log", "b.txt"]);
        assert!(p.watch_dirs().contains(dir.path()));
    }

    #[test]
    fn missing_dir_watches_ancestor() {
        let dir = tempfile::tempdir().unwrap();
        let pat = format!("{}/later/sub/*.log", dir.path().display());
        let p = Patterns::compile(&[src(&[&pat])]).unwrap();
        assert!(p.discover(|_, _| {}).is_empty());
        assert_eq!(p.watch_dirs(), HashSet::from([dir.path().to_path_buf()]));
    }
}
