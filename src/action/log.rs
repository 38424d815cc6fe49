//! The `log` action: append detections to a file.
//!
//! The file is opened in append mode and never truncated. Each detection is one line: a JSON
//! object (default) or a short text line that still ends with its idempotency key.
//!
//! # Exactly once across restarts
//! The tailer calls [`Action::flush`] before each checkpoint; it returns the file's identity
//! and length, which the checkpoint stores, and starts an fsync of the file on a thread of its
//! own; the checkpoint is written only once [`Action::durable`] says that fsync completed.
//! (Done on the reading thread, a slow disk's fsync — tens of milliseconds — held up every
//! line arriving meanwhile, once per checkpoint.) If trapline dies after writing
//! detections but before the next checkpoint, the lines after the checkpoint are read again
//! on restart and would be detected twice. So on start, the log reads what was written after
//! the stored mark, collects those detections' keys, and skips them when they come again.
//! When the file was rotated meanwhile (the path holds another file), everything in the new
//! file is after the mark, and the rotated file is found by its identity in the same
//! directory.
//!
//! # Never a partial record
//! A write that fails half-way (disk full) is cut back to the last whole record before the
//! error is returned: the action's caller retries the same detection later, and the file
//! holds whole records only.
//!
//! # Rotation of the output
//! The path is checked on every tick: when it no longer names the open file (renamed by
//! logrotate, deleted), the open file is made durable and closed, and the path is created
//! again. A reload (SIGHUP) reopens it too.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::console::escape;
use super::{Action, ActionError};
use crate::engine::Detection;
use crate::rollup::Rollup;

/// The name rules use in `actions:`.
pub const NAME: &str = "log";

/// The `log` action.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogDef {
    /// File detections are appended to (never truncated).
    #[serde(default = "default_out")]
    pub path: PathBuf,
    /// `json` (one object per line) or `text` (one short human line).
    #[serde(default)]
    pub format: LogFormat,
    /// Also print each detection on the console.
    #[serde(default = "yes")]
    pub console: bool,
}

fn yes() -> bool {
    true
}
fn default_out() -> PathBuf {
    PathBuf::from("logs/out.txt")
}

impl Default for LogDef {
    fn default() -> Self {
        LogDef { path: default_out(), format: LogFormat::Json, console: true }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Json,
    Text,
}

/// What the checkpoint stores: which file, and how much of it was durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Mark {
    dev: u64,
    ino: u64,
    len: u64,
}

pub struct LogAction {
    path: PathBuf,
    format: LogFormat,
    out: File,
    /// Identity of the open file.
    id: (u64, u64),
    /// Length of the file after the last whole record written: where a failed write is cut
    /// back to.
    len: u64,
    /// One serialised detection; written with a single `write` so a crash cannot leave half
    /// a record between two whole ones.
    buf: Vec<u8>,
    /// Keys already in the file past the last checkpoint (see module docs).
    seen: HashSet<String>,
    /// Detections written.
    pub written: u64,
    /// Replayed detections skipped because they were already written.
    pub skipped: u64,
    /// Times the output was reopened (rotated, removed, SIGHUP).
    pub reopened: u64,
    /// Roll-up records are written too (`alerts.log_rollups`).
    pub rollups: bool,
    /// The fsync started by the last [`Action::flush`], until it reports.
    syncing: Option<std::sync::mpsc::Receiver<std::io::Result<()>>>,
}

impl LogAction {
    /// Opens (creating parent directories) `path` for appending. `mark` is what the last
    /// checkpoint stored for this action, if any.
    pub fn open(path: &Path, format: LogFormat, mark: Option<&serde_json::Value>) -> Result<LogAction> {
        let (file, id) = open_append(path)?;
        let mark = mark.and_then(|m| parse_mark(m, id));
        let len = file.metadata()?.len();
        // Where in the file at `path` the records after the checkpoint begin.
        let from = match mark {
            Some(Mark { dev, ino, len }) if (dev, ino) == id => len,
            Some(_) => 0,
            None => len,
        };
        repair_torn_tail(&file, path, from).with_context(|| format!("cannot repair {}", path.display()))?;
        let mut seen = HashSet::new();
        if mark.is_some() {
            keys_after(path, from, &mut seen).with_context(|| format!("cannot read {}", path.display()))?;
        }
        if let Some(m) = mark.filter(|m| (m.dev, m.ino) != id)
            && let Some(rotated) = find_by_id(path, (m.dev, m.ino))
        {
            keys_after(&rotated, m.len, &mut seen).with_context(|| format!("cannot read {}", rotated.display()))?;
            tracing::info!(rotated = %rotated.display(), replayed = seen.len(), "output was rotated since the last checkpoint");
        }
        let len = file.metadata()?.len();
        Ok(LogAction {
            path: path.to_path_buf(),
            format,
            out: file,
            id,
            len,
            buf: Vec::with_capacity(4096),
            seen,
            written: 0,
            skipped: 0,
            reopened: 0,
            rollups: false,
            syncing: None,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one roll-up record (a JSON object with `"kind": "rollup"`, or a text line).
    /// Roll-ups are not replayed exactly once: after a crash, an activity opens again.
    pub fn write_rollup(&mut self, r: &Rollup) -> Result<(), ActionError> {
        self.buf.clear();
        match self.format {
            LogFormat::Json => {
                serde_json::to_writer(&mut self.buf, r).map_err(|e| ActionError::Permanent(e.into()))?;
                self.buf.push(b'\n');
            }
            LogFormat::Text => {
                let group: Vec<String> = r.group.iter().map(|(k, v)| format!("{k}={}", escape(v))).collect();
                let classes: Vec<String> = r.classes.iter().map(|(k, n)| format!("{}:{n}", escape(k))).collect();
                writeln!(
                    self.buf,
                    "{} {} rollup {} {} classes={} detections={} held_back={} id={}",
                    r.last_seen.format("%Y-%m-%dT%H:%M:%S%.3fZ"),
                    r.severity.as_str(),
                    serde_json::to_value(r.state).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default(),
                    group.join(" "),
                    classes.join(","),
                    r.detections,
                    r.held_back,
                    r.id
                )?;
            }
        }
        self.append()
    }

    /// Appends one detection (durable at the next [`Action::flush`]).
    pub fn write(&mut self, d: &Detection) -> Result<(), ActionError> {
        if !self.seen.is_empty() && self.seen.remove(&d.key) {
            self.skipped += 1;
            return Ok(());
        }
        self.buf.clear();
        match self.format {
            LogFormat::Json => {
                serde_json::to_writer(&mut self.buf, d).map_err(|e| ActionError::Permanent(e.into()))?;
                self.buf.push(b'\n');
            }
            LogFormat::Text => {
                let ip = d.fields.get("client_ip").map(String::as_str).unwrap_or("-");
                writeln!(
                    self.buf,
                    "{} {} {} ip={} {}:{} {} key={}",
                    d.event_time.format("%Y-%m-%dT%H:%M:%S%.3fZ"),
                    d.rule.severity.as_str(),
                    escape(&d.rule.id),
                    escape(ip),
                    escape(&d.source.path),
                    d.source.line_number,
                    escape(&d.line),
                    d.key
                )?;
            }
        }
        self.append()?;
        self.written += 1;
        Ok(())
    }

    /// Writes the record in `buf` with one `write`.
    fn append(&mut self) -> Result<(), ActionError> {
        if let Err(e) = self.out.write_all(&self.buf) {
            // Cut what part of the record made it, so the file holds whole records only. If
            // even that fails, the next attempt starts by cutting again (see `ensure_len`).
            let _ = self.out.set_len(self.len);
            return Err(ActionError::Transient(
                anyhow::Error::new(e).context(format!("cannot write to {}", self.path.display())),
            ));
        }
        self.len += self.buf.len() as u64;
        Ok(())
    }

    /// Before a write: a failed cut-back may have left a partial record; cut it now.
    fn ensure_len(&mut self) -> std::io::Result<()> {
        let actual = self.out.metadata()?.len();
        if actual > self.len {
            self.out.set_len(self.len)?;
        } else if actual < self.len {
            // Someone truncated the output (copytruncate): follow it.
            self.len = actual;
        }
        Ok(())
    }

    /// Reopens the path when it no longer names the open file. The open file is made durable
    /// first: a checkpoint taken later only vouches for the new one.
    fn reopen_if_moved(&mut self, force: bool) -> Result<()> {
        let current = std::fs::metadata(&self.path).ok().map(|m| (m.dev(), m.ino()));
        if !force && current == Some(self.id) {
            return Ok(());
        }
        self.out.sync_data().with_context(|| format!("cannot sync {}", self.path.display()))?;
        let (file, id) = open_append(&self.path)?;
        if id != self.id {
            tracing::info!(path = %self.path.display(), "output file reopened (rotated or removed)");
        }
        self.len = file.metadata()?.len();
        self.out = file;
        self.id = id;
        self.reopened += 1;
        Ok(())
    }
}

impl Action for LogAction {
    fn name(&self) -> &str {
        NAME
    }

    fn fire(&mut self, d: &Detection) -> Result<(), ActionError> {
        self.ensure_len()?;
        self.write(d)
    }

    fn rollup(&mut self, r: &Rollup) -> Result<(), ActionError> {
        if !self.rollups {
            return Ok(());
        }
        self.ensure_len()?;
        self.write_rollup(r)
    }

    /// Starts making every written detection durable (an fsync on a thread of its own, see
    /// [`Action::durable`]); the mark is the file's identity and its length now.
    fn flush(&mut self) -> std::io::Result<Option<serde_json::Value>> {
        // One fsync at a time: one still running (a disk slower than the checkpoints) is
        // waited for, and its error reported here.
        self.durable(true)?;
        let m = Mark { dev: self.id.0, ino: self.id.1, len: self.len };
        // The clone shares the open file: its fsync covers every record written before now,
        // even if the path is rotated and this file closed meanwhile.
        let file = self.out.try_clone()?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new().name("log-fsync".into()).spawn(move || {
            let _ = tx.send(file.sync_data());
        })?;
        self.syncing = Some(rx);
        Ok(Some(serde_json::to_value(m).map_err(std::io::Error::other)?))
    }

    fn durable(&mut self, wait: bool) -> std::io::Result<bool> {
        let Some(rx) = &self.syncing else { return Ok(true) };
        let r = if wait {
            rx.recv().map_err(|_| std::io::Error::other("the fsync thread ended without a result"))?
        } else {
            match rx.try_recv() {
                Ok(r) => r,
                Err(std::sync::mpsc::TryRecvError::Empty) => return Ok(false),
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    Err(std::io::Error::other("the fsync thread ended without a result"))
                }
            }
        };
        self.syncing = None;
        r.map(|()| true).map_err(|e| std::io::Error::new(e.kind(), format!("cannot sync {}: {e}", self.path.display())))
    }

    fn reload(&mut self) -> Result<()> {
        self.reopen_if_moved(true)
    }

    fn tick(&mut self) {
        if let Err(e) = self.reopen_if_moved(false) {
            tracing::warn!(error = format!("{e:#}"), "cannot reopen the output file; retrying");
        }
    }

    fn shutdown(&mut self) {
        let _ = self.durable(true);
        let _ = self.out.sync_data();
        tracing::info!(
            written = self.written,
            replay_skipped = self.skipped,
            reopened = self.reopened,
            path = %self.path.display(),
            "log output closed"
        );
    }
}

/// A checkpoint's mark: `{dev, ino, len}`, or a bare length as written by earlier versions
/// (then the file is assumed to be the one at the path).
fn parse_mark(v: &serde_json::Value, current: (u64, u64)) -> Option<Mark> {
    match v.as_u64() {
        Some(len) => Some(Mark { dev: current.0, ino: current.1, len }),
        None => serde_json::from_value(v.clone()).ok(),
    }
}

fn open_append(path: &Path) -> Result<(File, (u64, u64))> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let file = OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let md = file.metadata()?;
    Ok((file, (md.dev(), md.ino())))
}

/// The file with identity `id` in the directory of `path` (where logrotate leaves it).
fn find_by_id(path: &Path, id: (u64, u64)) -> Option<PathBuf> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::read_dir(dir).ok()?.flatten().find_map(|e| {
        let md = e.metadata().ok()?;
        ((md.dev(), md.ino()) == id).then(|| e.path())
    })
}

/// A crash in the middle of a write can leave a last record without its newline. That record
/// lies after the last checkpoint (the mark is taken after an fsync), so the replay on restart
/// writes it again in full: cut the torn bytes so the file stays one valid record per line.
fn repair_torn_tail(file: &File, path: &Path, mark: u64) -> std::io::Result<()> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(());
    }
    let mut f = file;
    let mut last = [0u8; 1];
    f.seek(SeekFrom::Start(len - 1))?;
    f.read_exact(&mut last)?;
    if last[0] == b'\n' {
        return Ok(());
    }
    // Find the last newline, reading backwards in chunks.
    let mut end = len;
    let mut keep = 0;
    let mut chunk = vec![0u8; 64 << 10];
    while end > 0 {
        let start = end.saturating_sub(chunk.len() as u64);
        let n = (end - start) as usize;
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(&mut chunk[..n])?;
        if let Some(i) = memchr::memrchr(b'\n', &chunk[..n]) {
            keep = start + i as u64 + 1;
            break;
        }
        end = start;
    }
    if keep < mark {
        // Not ours to cut (written before the last checkpoint): leave it, end it cleanly.
        f.write_all(b"\n")?;
        return Ok(());
    }
    tracing::warn!(path = %path.display(), bytes = len - keep, "removing a torn last record left by a crash; it is detected again from the log");
    file.set_len(keep)?;
    Ok(())
}

/// Adds the idempotency keys of the detections stored after byte `mark`.
fn keys_after(path: &Path, mark: u64, keys: &mut HashSet<String>) -> std::io::Result<()> {
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    if mark >= len {
        return Ok(());
    }
    f.seek(SeekFrom::Start(mark))?;
    for line in BufReader::new(f).split(b'\n') {
        let line = line?;
        if let Some(k) = key_of(&line) {
            keys.insert(k);
        }
    }
    Ok(())
}

fn key_of(line: &[u8]) -> Option<String> {
    if line.first() == Some(&b'{') {
        let v: serde_json::Value = serde_json::from_slice(line).ok()?;
        return v.get("key")?.as_str().map(str::to_string);
    }
    let s = std::str::from_utf8(line).ok()?;
    s.rsplit_once(" key=").map(|(_, k)| k.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torn_tail_after_the_mark_is_cut_and_replay_is_deduplicated() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.txt");
        let whole = "{\"key\":\"aaaa\"}\n";
        std::fs::write(&p, format!("{whole}{{\"key\":\"bbbb\"}}\n{{\"key\":\"cc")).unwrap();
        let log = LogAction::open(&p, LogFormat::Json, Some(&(whole.len() as u64).into())).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), format!("{whole}{{\"key\":\"bbbb\"}}\n"));
        assert!(log.seen.contains("bbbb") && !log.seen.contains("aaaa"));
    }
}
