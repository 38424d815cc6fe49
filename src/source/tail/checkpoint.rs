//! Checkpoints: where each followed file was left, and the sink's mark, written atomically.
//!
//! One JSON document (`tail-checkpoints.json` in the state directory) is replaced as a whole:
//! write a temporary file, fsync it, rename it over the old one, fsync the directory. A crash
//! at any point leaves either the old or the new document, never a torn one.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// Bumped on incompatible changes; an unknown version is an error, not a silent restart.
pub(crate) const VERSION: u32 = 1;
const FILE_NAME: &str = "tail-checkpoints.json";
const TMP_NAME: &str = "tail-checkpoints.json.tmp";

/// The whole checkpoint document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Checkpoints {
    pub version: u32,
    /// What `LineSink::flush` returned just before this document was written (opaque to the
    /// tailer; earlier versions stored a bare number, still valid here).
    pub sink_mark: Option<serde_json::Value>,
    /// Names of the sources configured when written. On restart, a file of a known source
    /// without a checkpoint appeared while trapline was down, so it is read from 0 instead of
    /// following the start policy.
    #[serde(default)]
    pub sources: Vec<String>,
    pub files: Vec<FileCheckpoint>,
    /// Rotated copies (copytruncate) already read to their end: never taken for the copy of
    /// a later truncation, even should its head match again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub copies_read: Vec<CopyRead>,
}

impl Default for Checkpoints {
    fn default() -> Self {
        Checkpoints {
            version: VERSION,
            sink_mark: None,
            sources: Vec::new(),
            files: Vec::new(),
            copies_read: Vec::new(),
        }
    }
}

/// A rotated copy read to its end. Copies do not change, so `(dev, ino, size)` names it; the
/// path is where it was, whose directory is where its disappearance is noticed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CopyRead {
    pub path: String,
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
}

/// Where one file was left.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FileCheckpoint {
    /// Source name, for diagnostics.
    pub source: String,
    /// Last known path (lossy if not UTF-8). Also where a file rotated while trapline was down
    /// is looked for: in this path's directory.
    pub path: String,
    pub dev: u64,
    pub ino: u64,
    pub fp_len: u64,
    /// Hex, so that tools that read JSON numbers as f64 do not mangle it.
    #[serde(with = "hex_u64")]
    pub fp_hash: u64,
    /// Byte just past the last delivered complete line.
    pub offset: u64,
    /// Lines before `offset`.
    pub line_number: u64,
    /// This is the rotated copy of a truncated file (copytruncate), being read from where
    /// the original was left.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub copy: bool,
}

mod hex_u64 {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{v:016x}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let s = String::deserialize(d)?;
        u64::from_str_radix(&s, 16).map_err(|e| D::Error::custom(format!("bad hex {s:?}: {e}")))
    }
}

/// The checkpoint file in a state directory.
#[derive(Debug)]
pub(crate) struct CheckpointStore {
    dir: PathBuf,
}

impl CheckpointStore {
    /// Uses `dir`, creating it if needed.
    pub(crate) fn open(dir: &Path) -> anyhow::Result<CheckpointStore> {
        fs::create_dir_all(dir).with_context(|| format!("cannot create state directory {}", dir.display()))?;
        Ok(CheckpointStore { dir: dir.to_path_buf() })
    }

    pub(crate) fn path(&self) -> PathBuf {
        self.dir.join(FILE_NAME)
    }

    /// The stored document; `None` when there is none yet. A document that cannot be read is
    /// an error: silently starting over would re-read or skip whole files.
    pub(crate) fn load(&self) -> anyhow::Result<Option<Checkpoints>> {
        let path = self.path();
        let text = match fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(e).with_context(|| format!("cannot read checkpoints {}", path.display()));
            }
        };
        let doc: Checkpoints = serde_json::from_slice(&text).with_context(|| {
            format!(
                "corrupt checkpoint file {}: remove or fix it to start over \
                 (files then follow the start policy)",
                path.display()
            )
        })?;
        if doc.version != VERSION {
            anyhow::bail!(
                "checkpoint file {} has version {}, this trapline understands {VERSION}",
                path.display(),
                doc.version
            );
        }
        Ok(Some(doc))
    }

    /// Replaces the stored document atomically and durably.
    pub(crate) fn save(&self, doc: &Checkpoints) -> io::Result<()> {
        let tmp = self.dir.join(TMP_NAME);
        let mut f = File::create(&tmp)?;
        let json = serde_json::to_vec_pretty(doc).map_err(io::Error::other)?;
        f.write_all(&json)?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, self.path())?;
        // The rename lives in the directory: sync it so it survives a power cut.
        File::open(&self.dir)?.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Checkpoints {
        Checkpoints {
            version: VERSION,
            sink_mark: Some(77.into()),
            sources: vec!["web".into()],
            files: vec![FileCheckpoint {
                source: "web".into(),
                path: "/var/log/a.log".into(),
                dev: 2049,
                ino: 123,
                fp_len: 4096,
                fp_hash: u64::MAX - 5,
                offset: 999,
                line_number: 12,
                copy: true,
            }],
            copies_read: vec![CopyRead { path: "/var/log/a.log.1".into(), dev: 2049, ino: 124, size: 5 }],
        }
    }

    #[test]
    fn missing_is_none_and_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(&dir.path().join("new/state")).unwrap();
        assert!(store.load().unwrap().is_none());
        store.save(&sample()).unwrap();
        assert_eq!(store.load().unwrap().unwrap(), sample());
        // The temporary file does not linger, and the hash is stored as hex.
        assert!(!dir.path().join("new/state").join(TMP_NAME).exists());
        let text = fs::read_to_string(store.path()).unwrap();
        assert!(text.contains("\"fp_hash\": \"fffffffffffffffa\""), "{text}");
        assert!(text.contains("\"version\": 1"));
    }

    #[test]
    fn save_replaces_and_ignores_stale_tmp() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path()).unwrap();
        // A torn temporary file from a crash must not matter.
        fs::write(dir.path().join(TMP_NAME), b"{garbage").unwrap();
        assert!(store.load().unwrap().is_none());
        store.save(&Checkpoints::default()).unwrap();
        let mut doc = sample();
        store.save(&doc).unwrap();
        doc.sink_mark = Some(78.into());
        store.save(&doc).unwrap();
        assert_eq!(store.load().unwrap().unwrap().sink_mark, Some(78.into()));
    }

    #[test]
    fn corrupt_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path()).unwrap();
        fs::write(store.path(), b"{\"version\": 1, \"files\": [").unwrap();
        let err = format!("{:#}", store.load().unwrap_err());
        assert!(err.contains("corrupt checkpoint file"), "{err}");

        fs::write(store.path(), br#"{"version": 99, "sink_mark": null, "files": []}"#).unwrap();
        let err = format!("{:#}", store.load().unwrap_err());
        assert!(err.contains("version 99"), "{err}");
    }
}
