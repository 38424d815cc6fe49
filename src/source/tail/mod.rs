//! **tail**: follow files (paths and globs) live, across rotation, truncation and restarts.
//!
//! In short:
//!
//! - **Identity** is `(dev, ino)` plus an xxh3 fingerprint of the first `min(size, 4096)`
//!   bytes (`fingerprint.rs`). A checkpoint is resumed only when both match, so inode reuse and
//!   identical headers cannot make us resume at a stranger's offset.
//! - **Checkpoints** (`checkpoint.rs`) hold, per file, the offset just past the last delivered
//!   complete line, and the sink's mark. They are written atomically, only right after
//!   [`LineSink::flush`] made every delivered line durable: a crash replays, never skips.
//! - **Wake-ups** come from `notify` watches on the *directories* (`watch.rs`) and from a
//!   polling backstop that always runs. Every wake-up `fstat`s the followed files (truncation
//!   check) and reads what is new; relevant events and every poll also re-run discovery.
//! - **Rotation**: a file no longer found at any discovered path keeps its descriptor and is
//!   drained for `rotate_wait` (and at least to EOF) before it is closed; the new file at the
//!   path is read from 0. Truncation (size below what was read) or a changed head restarts
//!   the file at 0, counted and checkpointed at once.
//! - **copytruncate** (`copies.rs`): when a followed file is found truncated, or a
//!   checkpointed file is found at its path truncated at start-up, its rotated copy is looked
//!   for next to it (same name plus `.1`, `.0`, `-20261201`... ) by content: the fingerprint
//!   of what we were reading, and a size reaching the offset we had read to. The copy is read
//!   from that offset to its end (checkpointed like any file) before the truncated file goes
//!   on from 0, then remembered in the checkpoint so that it is never read again.
//! - **Framing** (`framing.rs`): bytes, '\n'-terminated, never delivered before the '\n';
//!   over-long lines are cut with `truncated = true`.
//!
//! Lines are delivered without their '\n'; a '\r' before it is kept (content is not
//! interpreted).
//!
//! Known limits:
//! - the copytruncate window: bytes written between logrotate's copy and its truncate are in
//!   neither file and are lost (inherent to copytruncate); lines not yet read when the copy
//!   was taken are read from the copy;
//! - a copytruncate copy is found only uncompressed, in the same directory, under the file's
//!   name plus a numeric or date suffix (not `dateext` with `extension`, which puts the date
//!   before the extension). With `compress` and no `delaycompress`, the copy is found only if
//!   the truncation is noticed before gzip replaces `.1` (a race a running tailer may lose;
//!   across a restart it is always lost). If several truncations happened while trapline was
//!   down, only the copy of the content it was reading is found, not the generations between;
//! - a pattern that also matches the rotated copies (`access.log*`) discovers a fresh copy as
//!   a new file and reads it from 0;
//! - a file created *and* rotated away before discovery ever opens it is not read (events make
//!   that window milliseconds wide, not a polling interval);
//! - a file rotated *and* removed while trapline is down, or rotated into another directory,
//!   is not found on restart;
//! - a file rewritten in place with an identical first 4 KiB is not seen as new;
//! - `StartAt::End` reads existing files once at start-up to count their lines;
//! - every wake-up `fstat`s every followed file; symlink targets' directories are not watched
//!   (the polling backstop notices a repointed link).

mod checkpoint;
mod copies;
mod discover;
mod file;
mod fingerprint;
mod framing;
mod watch;

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use self::checkpoint::{CheckpointStore, Checkpoints, CopyRead, FileCheckpoint, VERSION};
use self::discover::{Found, Patterns};
use self::file::{Change, FileKey, Followed, Phase, Position, ReadOutcome};
use self::watch::{Wake, Watch};
use crate::source::{LinePos, Mark};

/// Where to start in a file that exists at start-up and has no checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartAt {
    /// Read the existing content.
    Beginning,
    /// Skip the existing content: start after its last '\n'.
    #[default]
    End,
}

/// A named group of paths or globs (absolute, or relative to the current directory).
#[derive(Debug, Clone)]
pub struct TailSource {
    pub name: String,
    pub patterns: Vec<String>,
    pub start: StartAt,
}

/// Tailer settings.
#[derive(Debug, Clone)]
pub struct TailConfig {
    pub sources: Vec<TailSource>,
    /// Checkpoints live here (created if missing).
    pub state_dir: PathBuf,
    /// Longer lines are cut here, delivered with `truncated = true`, and the rest of the line
    /// is skipped up to its '\n'.
    pub max_line_bytes: usize,
    /// Polling backstop: stat every followed file and re-run discovery this often.
    pub poll_interval: Duration,
    /// How long a rotated or deleted file is kept open and drained (it is always read to EOF
    /// first, however long that takes).
    pub rotate_wait: Duration,
    /// Checkpoint about this often when something changed.
    pub checkpoint_interval: Duration,
}

impl Default for TailConfig {
    fn default() -> Self {
        TailConfig {
            sources: Vec::new(),
            state_dir: PathBuf::from("state"),
            max_line_bytes: 1 << 20,
            poll_interval: Duration::from_millis(250),
            rotate_wait: Duration::from_secs(5),
            checkpoint_interval: Duration::from_secs(1),
        }
    }
}

/// Receives lines, in file order per file.
pub trait LineSink {
    /// Handles one line. An error means the line was not (completely) handled: the tailer
    /// delivers nothing more, writes no checkpoint past it, and returns the error from
    /// [`Tailer::run`]; after a restart the line is delivered again.
    fn line(&mut self, file: &FileInfo, line: &[u8], pos: LinePos) -> anyhow::Result<()>;
    /// Called before every checkpoint write: make the effects of every line delivered so far
    /// durable, and return an opaque mark (e.g. the output file's identity and length) stored
    /// with the checkpoint. An error skips that checkpoint (the offsets do not move).
    fn flush(&mut self) -> io::Result<Mark>;
    /// Whether what the last [`LineSink::flush`]'s mark names is durable yet; with `wait`,
    /// blocks until it is. A sink may finish slow work (saving a large state) in the
    /// background: the tailer keeps reading and writes the checkpoint *as of that flush*
    /// once this says so. An error drops that checkpoint (a later one flushes again).
    fn durable(&mut self, _wait: bool) -> io::Result<bool> {
        Ok(true)
    }
    /// Called on every turn of the loop (at least every few hundred milliseconds, lines or
    /// not), between lines: the place for periodic work such as a rule reload.
    fn tick(&mut self) {}
}

/// The tailer as a [`crate::source::Source`]: its lines become events of the file they are in.
impl crate::source::Source for Tailer {
    fn run(&mut self, sink: &mut dyn crate::source::EventSink, stop: &AtomicBool) -> anyhow::Result<()> {
        Tailer::run(self, &mut Lines(sink), stop)
    }

    fn checkpoints(&self) -> bool {
        true
    }

    fn mark(&self) -> Option<&Mark> {
        self.sink_mark()
    }
}

/// Lines of files, handed to an event sink.
struct Lines<'a>(&'a mut dyn crate::source::EventSink);

impl LineSink for Lines<'_> {
    fn line(&mut self, file: &FileInfo, line: &[u8], pos: LinePos) -> anyhow::Result<()> {
        self.0.event(&crate::source::Whence { source: file.source, path: &file.path, host: None }, &pos.event(line))
    }

    fn flush(&mut self) -> io::Result<Mark> {
        self.0.flush()
    }

    fn durable(&mut self, wait: bool) -> io::Result<bool> {
        self.0.durable(wait)
    }

    fn tick(&mut self) {
        self.0.tick()
    }
}

/// The file a line comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    /// Index into [`TailConfig::sources`].
    pub source: usize,
    /// The path the file was discovered at (kept after it was rotated away or deleted).
    pub path: PathBuf,
}

/// Counters and gauges of a [`Tailer`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TailStats {
    /// Lines delivered.
    pub lines: u64,
    /// Bytes read.
    pub bytes: u64,
    /// Files open now (active + draining).
    pub files_tracked: u64,
    /// Of which rotated away or deleted, being drained.
    pub files_draining: u64,
    /// Files restarted at 0 because they shrank or their head changed.
    pub truncations: u64,
    /// Files that left their path (rotated or deleted).
    pub rotations: u64,
    /// Lines cut at `max_line_bytes`.
    pub long_lines: u64,
    /// Files resumed from a checkpoint.
    pub resumed: u64,
    /// Rotated copies of truncated files (copytruncate) read from where the file was left.
    pub copies: u64,
    /// Checkpoints written.
    pub checkpoints: u64,
    /// Failed opens or reads (each retried later).
    pub errors: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    lines: AtomicU64,
    bytes: AtomicU64,
    files_tracked: AtomicU64,
    files_draining: AtomicU64,
    truncations: AtomicU64,
    rotations: AtomicU64,
    long_lines: AtomicU64,
    resumed: AtomicU64,
    copies: AtomicU64,
    checkpoints: AtomicU64,
    errors: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> TailStats {
        TailStats {
            lines: self.lines.load(Relaxed),
            bytes: self.bytes.load(Relaxed),
            files_tracked: self.files_tracked.load(Relaxed),
            files_draining: self.files_draining.load(Relaxed),
            truncations: self.truncations.load(Relaxed),
            rotations: self.rotations.load(Relaxed),
            long_lines: self.long_lines.load(Relaxed),
            resumed: self.resumed.load(Relaxed),
            copies: self.copies.load(Relaxed),
            checkpoints: self.checkpoints.load(Relaxed),
            errors: self.errors.load(Relaxed),
        }
    }
}

/// A cloneable view of a [`Tailer`]'s stats, readable while it runs in another thread.
#[derive(Debug, Clone)]
pub struct TailStatsHandle(Arc<Counters>);

impl TailStatsHandle {
    pub fn snapshot(&self) -> TailStats {
        self.0.snapshot()
    }
}

/// Read chunk size.
const CHUNK: usize = 128 * 1024;
/// Bytes read from one file before moving to the next: one busy log cannot starve others.
const PER_FILE_BUDGET: u64 = 1 << 20;
/// Longest stretch spent reading before looking at events, checkpoints and the stop flag.
const PUMP_SLICE: Duration = Duration::from_millis(100);
/// Longest wait for events, so that the stop flag is seen in time.
const MAX_WAIT: Duration = Duration::from_millis(200);
/// How often a deferred checkpoint looks whether the sink's flush became durable.
const DEFERRED_POLL: Duration = Duration::from_millis(20);

/// The live file tailer.
pub struct Tailer {
    cfg: TailConfig,
    patterns: Patterns,
    store: CheckpointStore,
    files: HashMap<FileKey, Followed>,
    /// Paths of followed files, for classifying events.
    tracked_paths: HashSet<PathBuf>,
    /// Checkpoint entries not (yet) matched to an open file: at start-up all of them; later
    /// only those whose directory was missing (kept, so that a file system mounted late
    /// still resumes).
    pending: Vec<FileCheckpoint>,
    /// Sources named in the loaded checkpoint.
    known_sources: HashSet<String>,
    /// Rotated copies already read to their end (checkpointed).
    copies_read: Vec<CopyRead>,
    sink_mark: Option<Mark>,
    /// Initial discovery done.
    started: bool,
    /// Paths present at start-up that could not be opened: they keep the start policy.
    initial_failed: HashSet<PathBuf>,
    /// Paths already warned about, so a persistent problem logs once.
    warned: HashSet<PathBuf>,
    /// Something besides file positions changed (a file closed, a reset): checkpoint.
    dirty: bool,
    /// Checkpoint at once (after a truncation reset).
    urgent: bool,
    /// A checkpoint taken at a flush whose effects the sink is still making durable: written
    /// as soon as they are (see [`LineSink::durable`]); no other is taken meanwhile.
    deferred: Option<Checkpoints>,
    counters: Arc<Counters>,
    buf: Vec<u8>,
}

impl Tailer {
    /// Validates the patterns and loads the checkpoints. A corrupt checkpoint file is an error.
    pub fn new(cfg: TailConfig) -> anyhow::Result<Tailer> {
        let patterns = Patterns::compile(&cfg.sources)?;
        let store = CheckpointStore::open(&cfg.state_dir)?;
        let loaded = store.load()?;
        let (pending, known_sources, sink_mark, copies_read) = match loaded {
            Some(doc) => (doc.files, doc.sources.into_iter().collect(), doc.sink_mark, doc.copies_read),
            None => (Vec::new(), HashSet::new(), None, Vec::new()),
        };
        Ok(Tailer {
            patterns,
            store,
            files: HashMap::new(),
            tracked_paths: HashSet::new(),
            pending,
            known_sources,
            copies_read,
            sink_mark,
            started: false,
            initial_failed: HashSet::new(),
            warned: HashSet::new(),
            dirty: true,
            urgent: false,
            deferred: None,
            counters: Arc::new(Counters::default()),
            buf: vec![0; CHUNK],
            cfg,
        })
    }

    /// The mark stored by the last checkpoint (loaded or written), if any.
    pub fn sink_mark(&self) -> Option<&Mark> {
        self.sink_mark.as_ref()
    }

    pub fn stats(&self) -> TailStats {
        self.counters.snapshot()
    }

    /// A handle to read the stats while [`Tailer::run`] holds the tailer.
    pub fn stats_handle(&self) -> TailStatsHandle {
        TailStatsHandle(self.counters.clone())
    }

    /// Follows the files until `stop` is set, then reads once more, flushes the sink,
    /// checkpoints and returns (within about 300 ms, unless the final flush is slow).
    pub fn run(&mut self, sink: &mut dyn LineSink, stop: &AtomicBool) -> anyhow::Result<()> {
        let mut watch = Watch::new();
        if !self.started {
            self.rediscover(true);
            self.recover_rotated();
            self.started = true;
            // Before the first line: the start positions, and the sink's mark before any of
            // its effects. Without it, a crash (or a sink that fails for good) before the
            // first periodic checkpoint would restart from the start policy with no mark, and
            // the replay could not be told from new output.
            if let Err(e) = self.checkpoint(sink, true) {
                warn!(error = format!("{e:#}"), "checkpoint failed; retrying");
            }
        } else {
            self.rediscover(false);
        }
        if watch.sync(&self.watch_dirs()) {
            self.rediscover(false);
        }
        let mut next_poll = Instant::now() + self.cfg.poll_interval;
        let mut next_checkpoint = Instant::now();
        let mut wake = Wake { any: true, rediscover: false };
        while !stop.load(Relaxed) {
            let now = Instant::now();
            let poll = now >= next_poll;
            if poll {
                next_poll = now + self.cfg.poll_interval;
            }
            if poll || wake.rediscover {
                self.rediscover(false);
                if watch.sync(&self.watch_dirs()) {
                    self.rediscover(false);
                }
            }
            if poll || wake.any {
                self.check_all(poll);
            }
            // A sink error ends the run here, before any checkpoint could pass the line.
            let more = self.pump(sink, stop, Instant::now() + PUMP_SLICE)?;
            self.close_drained(sink)?;
            self.update_gauges();
            sink.tick();
            if let Err(e) = self.finish_deferred(sink, false) {
                warn!(error = format!("{e:#}"), "checkpoint failed; retrying");
            }
            let now = Instant::now();
            let dirty = self.is_dirty();
            if self.urgent || (dirty && now >= next_checkpoint) {
                if let Err(e) = self.checkpoint(sink, self.urgent) {
                    warn!(error = format!("{e:#}"), "checkpoint failed; retrying");
                }
                next_checkpoint = now + self.cfg.checkpoint_interval;
            }
            let mut until = next_poll.min(now + MAX_WAIT);
            if self.is_dirty() {
                until = until.min(next_checkpoint);
            }
            if self.deferred.is_some() {
                until = until.min(now + DEFERRED_POLL);
            }
            let timeout = if more { Duration::ZERO } else { until.saturating_duration_since(now) };
            let patterns = &self.patterns;
            let tracked = &self.tracked_paths;
            wake = watch.wait(timeout, |p| patterns.is_relevant(p), |p| tracked.contains(p));
        }
        // Final read: one bounded pass, so that stopping stays prompt under a backlog (the
        // rest is read after the restart, from the checkpoint).
        self.check_all(false);
        self.pump(sink, stop, Instant::now())?;
        self.update_gauges();
        self.checkpoint(sink, true)
    }

    /// Re-runs discovery: opens new files, notices files that left their path.
    fn rediscover(&mut self, initial: bool) {
        let mut errors = Vec::new();
        let found = self.patterns.discover(|p, e| errors.push((p.to_path_buf(), e.kind(), e.to_string())));
        for (path, kind, msg) in errors {
            if initial && kind == io::ErrorKind::PermissionDenied {
                self.initial_failed.insert(path.clone());
            }
            self.warn_once(&path, &msg);
        }
        let mut live: HashSet<FileKey> = HashSet::with_capacity(found.len());
        for f in found {
            if let Some(t) = self.files.get_mut(&f.key) {
                live.insert(f.key);
                if t.info.path != f.path {
                    // Renamed to another matching name: same file, keep its position.
                    debug!(from = %t.info.path.display(), to = %f.path.display(), "file renamed");
                    t.info.path = f.path;
                    t.info.source = f.source;
                    t.dirty = true;
                }
                if t.phase != Phase::Active {
                    t.phase = Phase::Active;
                }
                continue;
            }
            if let Some(key) = self.open_new(&f, initial) {
                live.insert(key);
            }
        }
        let now = Instant::now();
        for t in self.files.values_mut() {
            if t.phase == Phase::Active && !live.contains(&t.key) {
                info!(path = %t.info.path.display(), "file rotated or removed; draining it");
                t.phase = Phase::Draining(now);
                self.counters.rotations.fetch_add(1, Relaxed);
            }
        }
        self.tracked_paths = self.files.values().map(|t| t.info.path.clone()).collect();
    }

    /// Opens a newly discovered file and decides where to start in it.
    fn open_new(&mut self, f: &Found, initial: bool) -> Option<FileKey> {
        let mut t = match Followed::open(&f.path, f.source, self.cfg.max_line_bytes) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None, // vanished meanwhile
            Err(e) => {
                if initial {
                    self.initial_failed.insert(f.path.clone());
                }
                self.counters.errors.fetch_add(1, Relaxed);
                self.warn_once(&f.path, &format!("cannot open: {e}"));
                return None;
            }
        };
        self.warned.remove(&f.path);
        if self.files.contains_key(&t.key) {
            return Some(t.key); // replaced between stat and open by a file we already follow
        }
        let (source_name, start) = {
            let s = &self.cfg.sources[f.source];
            (s.name.clone(), s.start)
        };
        let was_initial = initial || self.initial_failed.remove(&f.path);
        if let Some(i) = self.pending.iter().position(|cp| t.matches(cp)) {
            let cp = self.pending.swap_remove(i);
            t.resume(&cp);
            self.counters.resumed.fetch_add(1, Relaxed);
            info!(path = %f.path.display(), offset = cp.offset, "resuming from checkpoint");
        } else if was_initial && !self.known_sources.contains(&source_name) {
            match start {
                StartAt::Beginning => {}
                StartAt::End => {
                    if let Err(e) = t.seek_to_end(&mut self.buf) {
                        self.warn_once(&f.path, &format!("cannot read: {e}"));
                        return None;
                    }
                }
            }
            info!(path = %f.path.display(), offset = t.offset(), "following");
        } else {
            // Appeared while running, or while trapline was down: everything in it is new.
            info!(path = %f.path.display(), "following new file from the start");
        }
        let key = t.key;
        self.files.insert(key, t);
        Some(key)
    }

    /// After the first discovery: checkpointed files not found at any discovered path may
    /// have been rotated while trapline was down (`a.log` → `a.log.1`). Look for them in their
    /// old directory by identity and drain them from their offset, so that a restart spanning
    /// a rotation loses nothing.
    fn recover_rotated(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        let now = Instant::now();
        for cp in pending {
            let Some(source) = self.cfg.sources.iter().position(|s| s.name == cp.source) else {
                info!(path = %cp.path, source = %cp.source, "source no longer configured; forgetting file");
                continue;
            };
            let old = PathBuf::from(&cp.path);
            let Some(dir) = old.parent().filter(|d| d.is_dir()) else {
                // Directory missing (unmounted?): keep the entry for when it comes back.
                self.pending.push(cp);
                continue;
            };
            match self.find_in_dir(dir, source, &cp) {
                Some(mut t) => {
                    info!(was = %cp.path, now = %t.info.path.display(), offset = cp.offset,
                        "draining file rotated while stopped");
                    t.resume(&cp);
                    t.phase = Phase::Draining(now);
                    self.counters.resumed.fetch_add(1, Relaxed);
                    self.files.insert(t.key, t);
                }
                None if self.files.get(&(cp.dev, cp.ino)).is_some_and(|t| t.info.path == old) => {
                    // Same file at the same path, but no longer holding the checkpointed
                    // content: truncated in place while we were down (copytruncate). The
                    // rest of the old content may be in a rotated copy.
                    self.adopt_copy(&old, source, &Position::from(&cp), (cp.dev, cp.ino));
                }
                None => info!(path = %cp.path, "checkpointed file is gone; forgetting it"),
            }
        }
        self.tracked_paths = self.files.values().map(|t| t.info.path.clone()).collect();
    }

    /// `truncated` (followed at `path`) lost the content `pos` describes. If a rotated copy
    /// of that content sits next to it, read the copy from `pos` to its end, and hold
    /// `truncated` until then so that old lines come before new ones.
    fn adopt_copy(&mut self, path: &Path, source: usize, pos: &Position, truncated: FileKey) {
        let files = &self.files;
        let found =
            copies::find(path, source, self.cfg.max_line_bytes, pos, |k| files.contains_key(&k), &self.copies_read);
        let Some(mut copy) = found else {
            info!(path = %path.display(), offset = pos.offset, "no rotated copy of the truncated content found");
            return;
        };
        info!(path = %path.display(), copy = %copy.info.path.display(), offset = pos.offset,
            "reading the rest of the truncated content from its rotated copy");
        copy.phase = Phase::Draining(Instant::now());
        if let Some(t) = self.files.get_mut(&truncated) {
            t.after = Some(copy.key);
        }
        self.tracked_paths.insert(copy.info.path.clone());
        self.files.insert(copy.key, copy);
        self.counters.copies.fetch_add(1, Relaxed);
        self.dirty = true;
    }

    fn find_in_dir(&self, dir: &Path, source: usize, cp: &FileCheckpoint) -> Option<Followed> {
        for entry in fs::read_dir(dir).ok()?.flatten() {
            let Ok(md) = entry.metadata() else { continue };
            if (md.dev(), md.ino()) != (cp.dev, cp.ino) || self.files.contains_key(&(cp.dev, cp.ino)) {
                continue;
            }
            let path = entry.path();
            if let Ok(t) = Followed::open(&path, source, self.cfg.max_line_bytes)
                && t.matches(cp)
            {
                return Some(t);
            }
        }
        None
    }

    /// The truncation check on every followed file.
    fn check_all(&mut self, poll: bool) {
        let mut resets = Vec::new();
        for t in self.files.values_mut() {
            match t.check(poll) {
                Ok(Change::Reset(before)) => {
                    warn!(path = %t.info.path.display(), "file truncated or rewritten; reading it from the start");
                    self.counters.truncations.fetch_add(1, Relaxed);
                    // Persist the reset at once: otherwise a restart would resume at the old
                    // offset inside the new content.
                    self.urgent = true;
                    // A rotated copy is not truncated itself; anything else may have one.
                    if !t.is_copy {
                        resets.push((t.info.path.clone(), t.info.source, before, t.key));
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    self.counters.errors.fetch_add(1, Relaxed);
                    debug!(path = %t.info.path.display(), error = %e, "fstat failed");
                }
            }
        }
        // Before the urgent checkpoint: the copy is in it, so a crash resumes the copy too.
        for (path, source, before, key) in resets {
            self.adopt_copy(&path, source, &before, key);
        }
    }

    /// Reads all files round-robin, at most [`PER_FILE_BUDGET`] each per pass, until all are
    /// caught up, `stop` is set or `deadline` passes. Returns whether data is left, or the
    /// sink's error.
    fn pump(&mut self, sink: &mut dyn LineSink, stop: &AtomicBool, deadline: Instant) -> anyhow::Result<bool> {
        loop {
            let mut more = false;
            // A truncated file waits for its rotated copy (rare: usually nothing is held).
            let held: Vec<FileKey> = self
                .files
                .values()
                .filter(|t| t.after.and_then(|k| self.files.get(&k)).is_some_and(|c| !c.at_eof))
                .map(|t| t.key)
                .collect();
            // Files at EOF are skipped until `check` sees them grow: no read syscall per
            // idle file per wake-up.
            for t in self.files.values_mut().filter(|t| !t.at_eof && !held.contains(&t.key)) {
                match t.read(&mut self.buf, PER_FILE_BUDGET, sink, &self.counters) {
                    Ok(ReadOutcome { halt: Some(e), .. }) => return Err(e),
                    Ok(o) => more |= !o.eof,
                    Err(e) => {
                        self.counters.errors.fetch_add(1, Relaxed);
                        if self.warned.insert(t.info.path.clone()) {
                            warn!(path = %t.info.path.display(), error = %e, "read failed; retrying");
                        }
                    }
                }
            }
            // A copy that reached its end releases its truncated file: one more pass.
            more |= held.iter().any(|k| {
                self.files.get(k).and_then(|t| t.after).and_then(|c| self.files.get(&c)).is_none_or(|c| c.at_eof)
            });
            if !more || stop.load(Relaxed) || Instant::now() >= deadline {
                return Ok(more);
            }
        }
    }

    /// Closes rotated or deleted files once `rotate_wait` has passed and they are at EOF,
    /// delivering a final line without '\n' if there is one.
    fn close_drained(&mut self, sink: &mut dyn LineSink) -> anyhow::Result<()> {
        let wait = self.cfg.rotate_wait;
        let done: Vec<FileKey> = self
            .files
            .values()
            .filter(|t| matches!(t.phase, Phase::Draining(since) if since.elapsed() >= wait && t.at_eof))
            .map(|t| t.key)
            .collect();
        for key in done {
            if let Some(mut t) = self.files.remove(&key) {
                // One last look: the writer may have appended since the last read.
                if let Ok(ReadOutcome { halt: Some(e), .. }) = t.read(&mut self.buf, u64::MAX, sink, &self.counters) {
                    return Err(e);
                }
                t.finish(sink, &self.counters)?;
                info!(path = %t.info.path.display(), "closed rotated file");
                if t.is_copy
                    && let Ok(size) = t.size()
                {
                    let (dev, ino) = t.key;
                    let path = t.info.path.to_string_lossy().into_owned();
                    copies::remember(&mut self.copies_read, CopyRead { path, dev, ino, size });
                }
                // Its inode may be reused by a file that must hold nothing back.
                for f in self.files.values_mut().filter(|f| f.after == Some(key)) {
                    f.after = None;
                }
                self.tracked_paths.remove(&t.info.path);
                self.dirty = true;
            }
        }
        Ok(())
    }

    fn is_dirty(&self) -> bool {
        self.dirty || self.urgent || self.files.values().any(|t| t.dirty)
    }

    /// Flushes the sink and takes a checkpoint: written at once when the sink's effects are
    /// durable, else as soon as they are (with `wait`, before returning). Nothing is written
    /// if the flush fails. While an earlier checkpoint still waits, no new one is taken (with
    /// `wait`, the earlier one is finished first).
    fn checkpoint(&mut self, sink: &mut dyn LineSink, wait: bool) -> anyhow::Result<()> {
        if !self.finish_deferred(sink, wait)? {
            return Ok(());
        }
        let mark = sink.flush().map_err(|e| anyhow::anyhow!("sink flush failed: {e}"))?;
        let mut files: Vec<FileCheckpoint> =
            self.files.values().map(|t| t.checkpoint(&self.cfg.sources[t.info.source].name)).collect();
        files.extend(self.pending.iter().cloned());
        files.sort_by(|a, b| a.path.cmp(&b.path));
        self.deferred = Some(Checkpoints {
            version: VERSION,
            sink_mark: Some(mark),
            sources: self.cfg.sources.iter().map(|s| s.name.clone()).collect(),
            files,
            copies_read: self.copies_read.clone(),
        });
        // The checkpoint holds everything up to here: what changes next is the next one's.
        self.dirty = false;
        self.urgent = false;
        for t in self.files.values_mut() {
            t.dirty = false;
        }
        self.finish_deferred(sink, wait)?;
        Ok(())
    }

    /// Writes the deferred checkpoint once the sink says its flush is durable. Returns whether
    /// none is left waiting. On an error the checkpoint is dropped and the next one starts
    /// over from a new flush.
    fn finish_deferred(&mut self, sink: &mut dyn LineSink, wait: bool) -> anyhow::Result<bool> {
        if self.deferred.is_none() {
            return Ok(true);
        }
        let written = match sink.durable(wait) {
            Ok(false) => return Ok(false),
            Ok(true) => {
                let doc = self.deferred.take().expect("checked above");
                self.store
                    .save(&doc)
                    .map(|()| doc)
                    .map_err(|e| anyhow::anyhow!("cannot write checkpoint {}: {e}", self.store.path().display()))
            }
            Err(e) => Err(anyhow::anyhow!("sink flush failed: {e}")),
        };
        match written {
            Ok(doc) => {
                self.sink_mark = doc.sink_mark;
                self.counters.checkpoints.fetch_add(1, Relaxed);
                Ok(true)
            }
            Err(e) => {
                self.deferred = None;
                self.dirty = true;
                Err(e)
            }
        }
    }

    /// Directories to watch: the patterns' base directories and those of followed files.
    fn watch_dirs(&self) -> HashSet<PathBuf> {
        let mut dirs = self.patterns.watch_dirs();
        for t in self.files.values() {
            if let Some(d) = t.info.path.parent() {
                dirs.insert(d.to_path_buf());
            }
        }
        dirs
    }

    fn update_gauges(&self) {
        let draining = self.files.values().filter(|t| t.phase != Phase::Active).count();
        self.counters.files_tracked.store(self.files.len() as u64, Relaxed);
        self.counters.files_draining.store(draining as u64, Relaxed);
    }

    fn warn_once(&mut self, path: &Path, msg: &str) {
        if self.warned.insert(path.to_path_buf()) {
            warn!(path = %path.display(), "{msg}; will retry");
        }
    }
}
