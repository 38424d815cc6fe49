//! The `log` action: append detections to a file.
//!
//! The file is opened in append mode and never truncated. Each detection is one line: a JSON
//! object (default) or a short text line that still ends with its idempotency key.
//!
//! # Exactly once across restarts
//! The tailer calls [`LogAction::flush`] before each checkpoint; it fsyncs the file and returns
//! its length, which the checkpoint stores. If trapline dies after writing detections but
//! before the next checkpoint, the lines after the checkpoint are read again on restart and
//! would be detected twice. So on start, the log reads the part of the file written after the
//! stored length, collects those detections' keys, and skips them when they come again.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::config::LogFormat;
use crate::engine::Detection;

use super::console::escape;

pub struct LogAction {
    path: PathBuf,
    format: LogFormat,
    out: File,
    /// One serialised detection; written with a single `write` so a crash cannot leave half
    /// a record between two whole ones.
    buf: Vec<u8>,
    /// Keys already in the file past the last checkpoint (see module docs).
    seen: HashSet<String>,
    /// Detections written.
    pub written: u64,
    /// Replayed detections skipped because they were already written.
    pub skipped: u64,
}

impl LogAction {
    /// Opens (creating parent directories) `path` for appending. `mark` is the file length
    /// stored at the last checkpoint, if any.
    pub fn open(path: &Path, format: LogFormat, mark: Option<u64>) -> Result<LogAction> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        repair_torn_tail(&file, path, mark.unwrap_or(0))
            .with_context(|| format!("cannot repair {}", path.display()))?;
        let seen = match mark {
            Some(m) => keys_after(path, m).with_context(|| format!("cannot read {}", path.display()))?,
            None => HashSet::new(),
        };
        Ok(LogAction {
            path: path.to_path_buf(),
            format,
            out: file,
            buf: Vec::with_capacity(4096),
            seen,
            written: 0,
            skipped: 0,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one detection (buffered; see [`LogAction::flush`]).
    pub fn write(&mut self, d: &Detection) -> Result<()> {
        if !self.seen.is_empty() && self.seen.remove(&d.key) {
            self.skipped += 1;
            return Ok(());
        }
        self.buf.clear();
        match self.format {
            LogFormat::Json => {
                serde_json::to_writer(&mut self.buf, d)?;
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
        self.out.write_all(&self.buf)?;
        self.written += 1;
        Ok(())
    }

    /// Makes every written detection durable; returns the file length (the checkpoint mark).
    pub fn flush(&mut self) -> std::io::Result<u64> {
        self.out.sync_data()?;
        Ok(self.out.metadata()?.len())
    }
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

/// Idempotency keys of the detections stored after byte `mark`.
fn keys_after(path: &Path, mark: u64) -> std::io::Result<HashSet<String>> {
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    let mut keys = HashSet::new();
    if mark >= len {
        return Ok(keys);
    }
    f.seek(SeekFrom::Start(mark))?;
    for line in BufReader::new(f).split(b'\n') {
        let line = line?;
        if let Some(k) = key_of(&line) {
            keys.insert(k);
        }
    }
    Ok(keys)
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
        let log = LogAction::open(&p, LogFormat::Json, Some(whole.len() as u64)).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), format!("{whole}{{\"key\":\"bbbb\"}}\n"));
        assert!(log.seen.contains("bbbb") && !log.seen.contains("aaaa"));
    }
}
