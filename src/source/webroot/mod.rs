//! **webroot**: the files under web roots as a source of events.
//!
//! Every change of a file's state — created, modified, deleted, renamed, attributes — is an
//! event made of fields (`change`, `path`, `ext`, `sha256`, `class`...), evaluated by the same
//! rules as log lines (format `webroot`).
//!
//! - **Baseline** (`baseline.rs`): every file's last known state in SQLite in the state
//!   directory, sealed with a keyed MAC checked at start. The first start builds it silently;
//!   every later start compares the disk with it and reports what changed while trapline was
//!   down. It is the source's checkpoint: a change is written to it only after the sink made
//!   the change's detections durable, so a crash reports the change again (same idempotency
//!   key) rather than never.
//! - **Scanning** (`scan.rs`): lstat first, SHA-256 only when size, times or inode changed;
//!   symbolic links are recorded, never followed; hashing is rate-limited and skips files
//!   above a size.
//! - **Watching** (`watch.rs`): notifications only name directories to compare again; a full
//!   comparison runs every `rescan`, and at once after lost notifications. When the kernel's
//!   watch limit is too small for the tree, the source polls.
//!
//! Renames are paired by inode; a file renamed over another (atomic replace) is `modified`.
//! Changes inside a maintenance window are recorded in the baseline and its history, not
//! reported; a file that keeps changing gives one event per `flap_window`.

pub mod baseline;
pub mod scan;
pub mod watch;

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use chrono::{DateTime, Utc};
use globset::{Glob, GlobSet, GlobSetBuilder};

use self::baseline::{Baseline, HistoryRow, Integrity};
use self::scan::{Change, Filter, Hasher, Kind};
use self::watch::Watch;
use super::{EventSink, Source, Whence};
use crate::config::{self, SourceKind};
use crate::content::Scanner;
use crate::engine::when::When;
use crate::event::{Event, Origin};
use crate::rule::Severity;

/// The format name rules use for file changes (`formats: [webroot]`).
pub const FORMAT: &str = "webroot";

/// Every field a file change carries.
pub const FIELDS: &[&str] = &[
    "change",
    "path",
    "dir",
    "name",
    "ext",
    "old_path",
    "old_ext",
    "size",
    "old_size",
    "size_delta",
    "sha256",
    "old_sha256",
    "mode",
    "old_mode",
    "owner",
    "old_owner",
    "class",
    "root",
    "mtime",
    "content",
    "file_type",
    "url_path",
    "content_rules",
    "content_severity",
    "content_title",
    "content_excerpt",
    "content_error",
];

/// The parser of format `webroot`. A file change carries its fields itself (its raw bytes are
/// empty); written as a JSON object of those fields — a rule's inline examples, `trapline
/// scan --format webroot` of recorded changes — it is read as JSON lines.
pub fn parser(time: crate::parse::TimeSettings) -> crate::parse::Parser {
    crate::parse::Parser::json(FORMAT, &[], time, &mut crate::parse::FieldRegistry::default())
}

/// Forces polling whatever the config says (tests, file systems without notifications).
pub const POLL_ENV: &str = "TRAPLINE_WEBROOT_POLL";

/// How long events may keep coming before a burst is compared.
const SETTLE: Duration = Duration::from_millis(100);
/// How long one step waits for notifications before ticking.
const WAIT: Duration = Duration::from_millis(200);

/// One configured web-root source, ready to scan.
pub struct Settings {
    pub source: usize,
    pub name: String,
    pub roots: Vec<PathBuf>,
    classes: Vec<(String, GlobSet)>,
    filter: Filter,
    max_hash_bytes: u64,
    hash_rate: u64,
    rescan: Duration,
    poll: bool,
    poll_interval: Duration,
    flap_window: Duration,
    maintenance: Vec<When>,
    /// `url_prefix` without its trailing `/`.
    url_prefix: Vec<u8>,
}

impl Settings {
    /// The settings of configured source `i` (a `type: webroot` source, validated).
    pub fn from_config(cfg: &config::Loaded, i: usize) -> Result<Settings> {
        let s = &cfg.config.sources[i];
        let globs = |list: &[String]| -> Result<GlobSet> {
            let mut b = GlobSetBuilder::new();
            for g in list {
                b.add(Glob::new(g).with_context(|| format!("source {:?}: glob {g:?}", s.name))?);
            }
            Ok(b.build()?)
        };
        let roots = s
            .paths
            .iter()
            .map(|p| {
                let r = cfg.resolve(Path::new(p));
                // Canonical, so that event paths do not depend on how the root was written.
                std::fs::canonicalize(&r).with_context(|| format!("source {:?}: web root {}", s.name, r.display()))
            })
            .collect::<Result<Vec<_>>>()?;
        let classes = s.classes.iter().map(|c| Ok((c.name.clone(), globs(&c.paths)?))).collect::<Result<Vec<_>>>()?;
        let maintenance = s.maintenance.iter().map(|w| When::new(w).map_err(|e| anyhow!(e))).collect::<Result<_>>()?;
        let dur = |d: &Option<crate::rule::model::DurationText>, default: u64| {
            d.as_ref().map_or(Duration::from_secs(default), |d| d.0)
        };
        Ok(Settings {
            source: i,
            name: s.name.clone(),
            roots,
            classes,
            filter: Filter { ignore: globs(&s.ignore)? },
            max_hash_bytes: s.max_hash_bytes.unwrap_or(64 << 20),
            hash_rate: s.hash_bytes_per_second.unwrap_or(64 << 20),
            rescan: dur(&s.rescan, 3600),
            poll: s.poll || std::env::var_os(POLL_ENV).is_some_and(|v| !v.is_empty() && v != "0"),
            poll_interval: dur(&s.poll_interval, 5),
            flap_window: dur(&s.flap_window, 60),
            maintenance,
            url_prefix: {
                let p = s.url_prefix.as_deref().unwrap_or("/").trim_end_matches('/');
                if p.is_empty() || p.starts_with('/') { p.as_bytes().to_vec() } else { format!("/{p}").into_bytes() }
            },
        })
    }

    /// The class of a path: the first class whose globs match it relative to its root.
    fn class_of(&self, root: &Path, path: &Path) -> &str {
        let Ok(rel) = path.strip_prefix(root) else { return "other" };
        self.classes.iter().find(|(_, g)| g.is_match(rel)).map_or("other", |(n, _)| n.as_str())
    }

    fn root_of(&self, path: &[u8]) -> Option<&PathBuf> {
        self.roots.iter().find(|r| Path::new(std::ffi::OsStr::from_bytes(path)).starts_with(r))
    }
}

/// The indices of the configured web-root sources.
pub fn configured(cfg: &config::Loaded) -> Vec<usize> {
    (0..cfg.config.sources.len()).filter(|&i| cfg.config.sources[i].kind == SourceKind::Webroot).collect()
}

/// One source's tree: settings, baseline, watches.
struct Tree {
    s: Settings,
    base: Baseline,
    hasher: Hasher,
    integrity: Integrity,
    watch: Option<Watch>,
    last_full: Instant,
    /// When each flapping path last gave an event.
    reported: HashMap<Vec<u8>, Instant>,
    /// The last comparison failed (its changes were not all reported, so the baseline was
    /// not updated): the next one compares everything, not just what the next event names.
    failed: bool,
}

/// Every configured web root, as one [`Source`].
pub struct WebrootSource {
    trees: Vec<Tree>,
}

impl WebrootSource {
    /// Opens the baselines of the web-root sources `indices` of `cfg` (the caller holds the
    /// state directory's lock).
    pub fn open(cfg: &config::Loaded, indices: &[usize]) -> Result<WebrootSource> {
        let state = cfg.resolve(&cfg.config.state_dir);
        let mut trees = Vec::new();
        for &i in indices {
            let s = Settings::from_config(cfg, i)?;
            let (base, integrity) = Baseline::open(&state, &s.name)?;
            let hasher = Hasher::new(s.max_hash_bytes, s.hash_rate);
            trees.push(Tree {
                s,
                base,
                hasher,
                integrity,
                watch: None,
                last_full: Instant::now(),
                reported: HashMap::new(),
                failed: false,
            });
        }
        Ok(WebrootSource { trees })
    }

    /// The start: tampering reported, the baseline built (first start) or compared with the
    /// disk (what changed while trapline was down), then watches set up.
    /// A stop asked for during the first build leaves no baseline: the next start builds it.
    pub fn start(&mut self, sink: &mut dyn EventSink, stop: &AtomicBool) -> Result<()> {
        for t in &mut self.trees {
            if let Integrity::Tampered(why) = &t.integrity {
                tracing::error!(
                    source = %t.s.name,
                    baseline = %t.base.path.display(),
                    "web root baseline TAMPERED: {why}; run `trapline webroot accept` once the tree is verified"
                );
                report_tamper(t, why, sink)?;
            }
            if !t.base.is_built()? {
                if !build(t, stop)? {
                    return Ok(());
                }
            } else {
                let started = Instant::now();
                let n = full(t, sink)?;
                tracing::info!(source = %t.s.name, changes = n, ms = started.elapsed().as_millis() as u64, "web root compared with its baseline");
            }
            setup_watch(t);
            if t.watch.is_some() {
                // What changed between the walk above and the watches sent no event.
                full(t, sink)?;
            }
            t.last_full = Instant::now();
        }
        tracing::info!(roots = self.trees.iter().map(|t| t.s.roots.len()).sum::<usize>(), "web root ready");
        Ok(())
    }

    /// One round: waits up to `wait` for notifications, compares what they name (or the whole
    /// tree when due), reports the changes.
    pub fn step(&mut self, sink: &mut dyn EventSink, wait: Duration) -> Result<()> {
        let per = wait / self.trees.len().max(1) as u32;
        for t in &mut self.trees {
            let due = t.failed
                || t.last_full.elapsed()
                    >= if t.watch.is_some() { t.s.rescan } else { t.s.poll_interval.min(t.s.rescan) };
            let hint = match &t.watch {
                Some(w) if !due => w.wait(per, SETTLE),
                _ => {
                    if !due {
                        std::thread::sleep(per);
                    }
                    watch::Hint { rescan: due, ..Default::default() }
                }
            };
            t.failed = true;
            if hint.rescan || due {
                full(t, sink)?;
                t.last_full = Instant::now();
            } else if !hint.dirs.is_empty() {
                partial(t, hint.dirs.into_iter().collect(), sink)?;
            }
            t.failed = false;
        }
        Ok(())
    }
}

impl WebrootSource {
    /// Compares at once what the notifications waiting now name, without letting a burst
    /// settle: called before each log line when web roots run beside logs, so that a file's
    /// change reaches the rules before a request for it read later (the upload, then the
    /// request of what was uploaded: the kernel queued the notification before the request
    /// was even logged). Costs one check of each tree's queue when nothing changed.
    pub fn catch_up(&mut self, sink: &mut dyn EventSink) -> Result<()> {
        for t in &mut self.trees {
            let Some(w) = &t.watch else { continue };
            if t.failed || !w.pending() {
                continue;
            }
            let hint = w.drain();
            t.failed = true;
            if hint.rescan {
                full(t, sink)?;
                t.last_full = Instant::now();
            } else if !hint.dirs.is_empty() {
                partial(t, hint.dirs.into_iter().collect(), sink)?;
            }
            t.failed = false;
        }
        Ok(())
    }
}

impl Source for WebrootSource {
    fn run(&mut self, sink: &mut dyn EventSink, stop: &AtomicBool) -> Result<()> {
        self.start(sink, stop)?;
        while !stop.load(Ordering::Relaxed) {
            self.step(sink, WAIT)?;
            sink.tick();
        }
        sink.flush()?;
        Ok(())
    }
}

/// Web roots beside log files: the tailer runs, and the web roots are compared between its
/// lines, when it ticks.
pub struct WithLogs<S: Source> {
    pub logs: S,
    pub web: WebrootSource,
}

impl<S: Source> Source for WithLogs<S> {
    fn run(&mut self, sink: &mut dyn EventSink, stop: &AtomicBool) -> Result<()> {
        self.web.start(sink, stop)?;
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        let mut both = Piggyback { inner: sink, web: &mut self.web };
        self.logs.run(&mut both, stop)
    }
    fn checkpoints(&self) -> bool {
        self.logs.checkpoints()
    }
    fn mark(&self) -> Option<&super::Mark> {
        self.logs.mark()
    }
}

struct Piggyback<'a> {
    inner: &'a mut dyn EventSink,
    web: &'a mut WebrootSource,
}

impl EventSink for Piggyback<'_> {
    fn event(&mut self, at: &Whence<'_>, ev: &Event<'_>) -> Result<()> {
        if let Err(e) = self.web.catch_up(self.inner) {
            // As in `tick`: the baseline is left as it was, the next comparison finds it.
            tracing::error!(error = format!("{e:#}"), "web root: changes not reported yet; retrying");
        }
        self.inner.event(at, ev)
    }
    fn flush(&mut self) -> std::io::Result<super::Mark> {
        self.inner.flush()
    }
    fn durable(&mut self, wait: bool) -> std::io::Result<bool> {
        self.inner.durable(wait)
    }
    fn content_scanner(&self) -> Option<std::sync::Arc<Scanner>> {
        self.inner.content_scanner()
    }
    fn measure(&mut self, source: usize, what: &'static str, value: f64) {
        self.inner.measure(source, what, value)
    }
    fn tick(&mut self) {
        self.inner.tick();
        // A failure leaves the baseline as it was: the same changes are found and reported
        // at the next comparison.
        if let Err(e) = self.web.step(self.inner, Duration::ZERO) {
            tracing::error!(error = format!("{e:#}"), "web root: changes not reported yet; retrying");
        }
    }
}

/// The first start: every file's state stored, nothing reported. Returns false when `stop`
/// ended it early (nothing is stored then).
fn build(t: &mut Tree, stop: &AtomicBool) -> Result<bool> {
    let started = Instant::now();
    tracing::info!(source = %t.s.name, roots = ?t.s.roots, "building the web root baseline (first start)");
    let mut seen = Vec::new();
    let mut errors = Vec::new();
    let empty = Default::default();
    for r in &t.s.roots {
        scan::walk(r, r, true, &t.s.filter, &empty, &mut seen, &mut errors);
    }
    for e in &errors {
        tracing::warn!(source = %t.s.name, "web root: cannot read {e}");
    }
    let total = seen.len();
    let mut updates = Vec::with_capacity(total);
    let mut last = Instant::now();
    for (n, (p, m)) in seen.iter().enumerate() {
        if n % 1024 == 0 && stop.load(Ordering::Relaxed) {
            tracing::info!(source = %t.s.name, files = n, of = total, "baseline build interrupted; it starts again next time");
            return Ok(false);
        }
        let e = scan::entry(p, m, None, &mut t.hasher);
        updates.push((e.path.clone(), Some(e)));
        if last.elapsed() >= Duration::from_secs(2) {
            tracing::info!(source = %t.s.name, files = n, of = total, "building the baseline");
            last = Instant::now();
        }
    }
    t.base.apply(updates, &[])?;
    t.base.mark_built()?;
    tracing::info!(
        source = %t.s.name,
        files = total,
        hashed = t.hasher.hashed_files,
        bytes = t.hasher.hashed_bytes,
        ms = started.elapsed().as_millis() as u64,
        "web root baseline built"
    );
    Ok(true)
}

/// Compares every root with the baseline. Returns how many changes were found.
fn full(t: &mut Tree, sink: &mut dyn EventSink) -> Result<usize> {
    let started = Instant::now();
    let roots = t.s.roots.clone();
    let n = scan_dirs(t, roots.into_iter().map(|r| (r, true)).collect(), sink)?;
    sink.measure(t.s.source, "webroot_scan_seconds", started.elapsed().as_secs_f64());
    sink.measure(t.s.source, "webroot_files", t.base.rows.len() as f64);
    sink.measure(t.s.source, "webroot_watches", t.watch.as_ref().map_or(0, |w| w.len()) as f64);
    Ok(n)
}

/// Compares the named directories (non-recursively) with the baseline.
fn partial(t: &mut Tree, dirs: Vec<PathBuf>, sink: &mut dyn EventSink) -> Result<usize> {
    let dirs = dirs
        .into_iter()
        .filter(|d| t.s.roots.iter().any(|r| d.starts_with(r)))
        .filter(|d| !t.s.roots.iter().any(|r| t.s.filter.ignored(r, d)))
        .map(|d| (d, false))
        .collect();
    scan_dirs(t, dirs, sink)
}

fn scan_dirs(t: &mut Tree, dirs: Vec<(PathBuf, bool)>, sink: &mut dyn EventSink) -> Result<usize> {
    let mut changes = Vec::new();
    for (d, recursive) in dirs {
        let Some(root) = t.s.roots.iter().find(|r| d.starts_with(r)).cloned() else { continue };
        let mut errors = Vec::new();
        changes.extend(scan::compare(&root, &d, recursive, &t.s.filter, &t.base.rows, &mut t.hasher, &mut errors));
        for e in &errors {
            tracing::warn!(source = %t.s.name, "web root: cannot read {e}");
        }
    }
    // A directory and its parent compared in one batch both account for the subtree of a
    // directory that vanished or appeared: each change once.
    let mut once = std::collections::HashSet::new();
    changes.retain(|c| once.insert((c.old.as_ref().map(|e| e.path.clone()), c.new.as_ref().map(|e| e.path.clone()))));
    let n = changes.iter().filter(|c| c.kind.is_some()).count();
    if changes.is_empty() {
        return Ok(0);
    }
    let new_dirs: Vec<PathBuf> = changes
        .iter()
        .filter_map(|c| c.new.as_ref().filter(|e| e.is_dir() && c.old.as_ref().is_none_or(|o| !o.is_dir())))
        .map(|e| PathBuf::from(std::ffi::OsStr::from_bytes(&e.path)))
        .collect();
    deliver(t, changes, sink)?;
    if !new_dirs.is_empty() && t.watch.is_some() {
        add_watches(t, new_dirs.clone());
        // Files created in a new directory between its walk and its watch sent no event:
        // compare the new directories once more, now that they are watched.
        return Ok(n + scan_dirs(t, new_dirs.into_iter().map(|d| (d, true)).collect(), sink)?);
    }
    Ok(n)
}

/// Reports the changes (unless in a maintenance window or flapping), makes the sink durable,
/// then stores them in the baseline.
fn deliver(t: &mut Tree, changes: Vec<Change>, sink: &mut dyn EventSink) -> Result<()> {
    let now = Utc::now();
    let mut history = Vec::new();
    let mut updates = Vec::new();
    let mut delivered = false;
    let scanner = sink.content_scanner().filter(|s| !s.is_empty());
    for c in changes {
        if let Some(kind) = c.kind {
            let path = c.new.as_ref().or(c.old.as_ref()).map(|e| e.path.clone()).unwrap_or_default();
            let flapping = matches!(kind, Kind::Modified | Kind::Attributes)
                && t.reported.get(&path).is_some_and(|at| at.elapsed() < t.s.flap_window);
            // The change's own time: a deploy made in its window while trapline was down is
            // found at the next start, outside the window, and is still a deploy.
            let at = change_time(kind, &c);
            let content = match (&scanner, &c.new) {
                (Some(sc), Some(new))
                    if new.is_file() && matches!(kind, Kind::Created | Kind::Modified | Kind::Renamed) =>
                {
                    scan_content(sc, &new.path)
                }
                _ => ContentFields::default(),
            };
            // A web shell is news whenever it is written: a deploy window or a file that keeps
            // changing (created empty, then written) mutes the change, not what it contains.
            let note = if content.severity >= Some(Severity::High) {
                None
            } else if t.s.maintenance.iter().any(|w| w.contains(at)) {
                Some("maintenance window")
            } else if flapping {
                Some("flapping: one event per window")
            } else {
                None
            };
            if note.is_none() {
                emit(&t.s, kind, &c, &content.fields, sink)?;
                delivered = true;
                t.reported.insert(path.clone(), Instant::now());
            } else {
                tracing::debug!(path = %scan::display(&path), change = kind.as_str(), why = note, "recorded, not reported");
            }
            history.push(HistoryRow::of(
                now.to_rfc3339(),
                kind.as_str(),
                c.old.as_ref(),
                c.new.as_ref(),
                note.is_none(),
                note,
            ));
        }
        if let Some(old) = &c.old
            && c.new.as_ref().is_none_or(|n| n.path != old.path)
        {
            updates.push((old.path.clone(), None));
        }
        if let Some(new) = c.new {
            updates.push((new.path.clone(), Some(new)));
        }
    }
    // Forget flapping marks that are over, so the map stays as small as the busy set.
    let window = t.s.flap_window;
    t.reported.retain(|_, at| at.elapsed() < window);
    if delivered {
        sink.flush().context("cannot make web root detections durable")?;
    }
    t.base.apply(updates, &history)
}

fn time_of(ns: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(ns.div_euclid(1_000_000_000), ns.rem_euclid(1_000_000_000) as u32).unwrap_or_default()
}

/// `user:group` by name where the system knows them (`www-data:www-data`), else by number.
/// Names are looked up once per id: a scan of many files of one owner asks once.
fn owner(uid: u32, gid: u32) -> String {
    thread_local! {
        static NAMES: std::cell::RefCell<HashMap<(bool, u32), String>> = Default::default();
    }
    let name = |group: bool, id: u32| {
        NAMES.with(|n| {
            n.borrow_mut()
                .entry((group, id))
                .or_insert_with(|| lookup(group, id).unwrap_or_else(|| id.to_string()))
                .clone()
        })
    };
    format!("{}:{}", name(false, uid), name(true, gid))
}

/// The user (or group) name of an id, from the system's databases (files, LDAP...).
fn lookup(group: bool, id: u32) -> Option<String> {
    let mut buf = vec![0 as libc::c_char; 16 << 10];
    let mut found: *mut libc::c_void = std::ptr::null_mut();
    // SAFETY: the buffers outlive the calls, their lengths are passed, and the name is read
    // only when the call succeeded and set `found` (then it points into `buf`).
    unsafe {
        if group {
            let mut g: libc::group = std::mem::zeroed();
            let mut out: *mut libc::group = std::ptr::null_mut();
            let rc = libc::getgrgid_r(id, &mut g, buf.as_mut_ptr(), buf.len(), &mut out);
            if rc != 0 || out.is_null() || g.gr_name.is_null() {
                return None;
            }
            found = g.gr_name.cast();
        } else {
            let mut p: libc::passwd = std::mem::zeroed();
            let mut out: *mut libc::passwd = std::ptr::null_mut();
            let rc = libc::getpwuid_r(id, &mut p, buf.as_mut_ptr(), buf.len(), &mut out);
            if rc == 0 && !out.is_null() && !p.pw_name.is_null() {
                found = p.pw_name.cast();
            }
        }
        if found.is_null() {
            return None;
        }
        Some(std::ffi::CStr::from_ptr(found.cast()).to_string_lossy().into_owned())
    }
}

/// When a change happened: the inode change time (not settable from user space, unlike
/// mtime); a deletion leaves none, so it is when it was noticed.
fn change_time(kind: Kind, c: &Change) -> DateTime<Utc> {
    match (kind, &c.new) {
        (Kind::Deleted, _) | (_, None) => Utc::now(),
        (_, Some(new)) => time_of(new.ctime_ns),
    }
}

/// What content scanning said about one file, as fields of its change.
#[derive(Default)]
struct ContentFields {
    /// The most severe match.
    severity: Option<Severity>,
    fields: Vec<(&'static str, Vec<u8>)>,
}

/// Scans a file created, modified or renamed with the content and YARA rules: `content_rules`
/// (the ids that matched, most severe first), `content_severity`, and the title and excerpt
/// of the most severe match; `content_error` when the file could not be scanned (too large,
/// gone again, unreadable) so that a rule can still say so.
fn scan_content(scanner: &Scanner, path: &[u8]) -> ContentFields {
    let mut out = ContentFields::default();
    match scanner.scan_file(Path::new(std::ffi::OsStr::from_bytes(path))) {
        Ok(mut matches) => {
            if matches.is_empty() {
                return out;
            }
            matches.sort_by(|a, b| b.severity.cmp(&a.severity).then_with(|| a.rule.cmp(&b.rule)));
            matches.dedup_by(|a, b| a.rule == b.rule);
            let top = &matches[0];
            out.severity = Some(top.severity);
            let ids: Vec<&str> = matches.iter().map(|m| m.rule.as_str()).collect();
            out.fields.push(("content_rules", ids.join(" ").into_bytes()));
            out.fields.push(("content_severity", top.severity.as_str().into()));
            out.fields.push(("content_title", top.title.clone().into_bytes()));
            if let Some(x) = &top.excerpt {
                out.fields.push(("content_excerpt", x.clone().into_bytes()));
            }
        }
        Err(e) => out.fields.push(("content_error", e.to_string().into_bytes())),
    }
    out
}

/// The event of one change, with the fields content scanning added.
fn emit(
    s: &Settings,
    kind: Kind,
    c: &Change,
    content: &[(&'static str, Vec<u8>)],
    sink: &mut dyn EventSink,
) -> Result<()> {
    let cur = c.new.as_ref().or(c.old.as_ref()).expect("a change has a state");
    let root = s.root_of(&cur.path).cloned().unwrap_or_default();
    let path = Path::new(std::ffi::OsStr::from_bytes(&cur.path));
    let mut f: Vec<(&str, Vec<u8>)> = Vec::with_capacity(24);
    f.push(("change", kind.as_str().into()));
    f.push(("path", cur.path.clone()));
    f.push(("dir", path.parent().map(|p| p.as_os_str().as_bytes().to_vec()).unwrap_or_default()));
    f.push(("name", path.file_name().map(|n| n.as_bytes().to_vec()).unwrap_or_default()));
    f.push(("ext", scan::extension(&cur.path).into_bytes()));
    f.push(("root", root.as_os_str().as_bytes().to_vec()));
    if let Ok(rel) = path.strip_prefix(&root) {
        let mut u = s.url_prefix.clone();
        u.push(b'/');
        u.extend_from_slice(rel.as_os_str().as_bytes());
        f.push(("url_path", u));
    }
    f.push(("class", s.class_of(&root, path).as_bytes().to_vec()));
    f.push(("file_type", cur.kind().into()));
    f.push(("content", cur.content.clone().into_bytes()));
    f.push(("size", cur.size.to_string().into_bytes()));
    f.push(("mode", format!("{:04o}", cur.mode & 0o7777).into_bytes()));
    f.push(("owner", owner(cur.uid, cur.gid).into_bytes()));
    f.push(("mtime", time_of(cur.mtime_ns).to_rfc3339().into_bytes()));
    if let Some(h) = &cur.sha256 {
        f.push(("sha256", h.clone().into_bytes()));
    }
    if let (Some(old), Some(new)) = (&c.old, &c.new) {
        if old.path != new.path {
            f.push(("old_path", old.path.clone()));
            f.push(("old_ext", scan::extension(&old.path).into_bytes()));
        }
        f.push(("old_size", old.size.to_string().into_bytes()));
        f.push(("size_delta", (new.size as i128 - old.size as i128).to_string().into_bytes()));
        f.push(("old_mode", format!("{:04o}", old.mode & 0o7777).into_bytes()));
        f.push(("old_owner", owner(old.uid, old.gid).into_bytes()));
        if let Some(h) = &old.sha256 {
            f.push(("old_sha256", h.clone().into_bytes()));
        }
    } else if kind == Kind::Deleted {
        f.push(("size_delta", format!("-{}", cur.size).into_bytes()));
    } else {
        f.push(("size_delta", cur.size.to_string().into_bytes()));
    }
    f.extend(content.iter().cloned());
    let time = change_time(kind, c);
    // Idempotency: the same change found again after a crash (the baseline not yet updated)
    // has the same key; another change of the same path has another.
    let mut v = Vec::with_capacity(128);
    v.extend_from_slice(kind.as_str().as_bytes());
    for e in [&c.old, &c.new] {
        match e {
            Some(e) => {
                v.extend_from_slice(&e.path);
                v.extend_from_slice(&e.ino.to_le_bytes());
                v.extend_from_slice(&e.size.to_le_bytes());
                v.extend_from_slice(&e.ctime_ns.to_le_bytes());
                v.extend_from_slice(&e.mode.to_le_bytes());
                v.extend_from_slice(e.sha256.as_deref().unwrap_or("").as_bytes());
            }
            None => v.push(0),
        }
    }
    let origin =
        Origin::Object { object: xxhash_rust::xxh3::xxh3_64(&cur.path), version: xxhash_rust::xxh3::xxh3_64(&v) };
    let fields: Vec<(&str, &[u8])> = f.iter().map(|(k, v)| (*k, v.as_slice())).collect();
    let ev = Event { origin, raw: b"", fields: &fields, time: Some(time), arrival: Utc::now(), truncated: false };
    sink.event(&Whence { source: s.source, path: &root, host: None }, &ev)
}

/// The start-up report of a baseline that fails its MAC check: an event of its own
/// (`change: tampered`) so that a rule makes it a critical detection.
fn report_tamper(t: &Tree, why: &str, sink: &mut dyn EventSink) -> Result<()> {
    let db = t.base.path.as_os_str().as_bytes().to_vec();
    let root = t.s.roots.first().cloned().unwrap_or_default();
    let fields: [(&str, &[u8]); 4] =
        [("change", b"tampered"), ("path", &db), ("root", root.as_os_str().as_bytes()), ("content", why.as_bytes())];
    let now = Utc::now();
    let origin = Origin::Object {
        object: xxhash_rust::xxh3::xxh3_64(&db),
        version: now.timestamp_nanos_opt().unwrap_or_default() as u64,
    };
    let ev = Event { origin, raw: b"", fields: &fields, time: Some(now), arrival: now, truncated: false };
    sink.event(&Whence { source: t.s.source, path: &root, host: None }, &ev)?;
    sink.flush()?;
    Ok(())
}

/// Watches every directory of the baseline, unless polling is asked for or the kernel's
/// limit is too small for the tree.
fn setup_watch(t: &mut Tree) {
    if t.s.poll {
        tracing::info!(source = %t.s.name, every = ?t.s.poll_interval, "web root: polling (as configured)");
        return;
    }
    let mut dirs: Vec<PathBuf> = t.s.roots.clone();
    dirs.extend(
        t.base.rows.values().filter(|e| e.is_dir()).map(|e| PathBuf::from(std::ffi::OsStr::from_bytes(&e.path))),
    );
    if let Some(limit) = watch::max_user_watches()
        && dirs.len() as u64 > limit
    {
        tracing::warn!(
            source = %t.s.name,
            directories = dirs.len(),
            max_user_watches = limit,
            "web root: {} directories need as many watches but fs.inotify.max_user_watches is {limit}; polling every {:?} instead (raise it with `sysctl fs.inotify.max_user_watches={}`)",
            dirs.len(),
            t.s.poll_interval,
            (dirs.len() as u64 * 2).max(limit * 2)
        );
        return;
    }
    match Watch::new() {
        Ok(w) => t.watch = Some(w),
        Err(e) => {
            tracing::warn!(source = %t.s.name, error = %e, "web root: cannot watch; polling instead");
            return;
        }
    }
    add_watches(t, dirs);
    if let Some(w) = &t.watch {
        tracing::info!(source = %t.s.name, watches = w.len(), "web root: watching");
    }
}

fn add_watches(t: &mut Tree, dirs: Vec<PathBuf>) {
    let Some(w) = &mut t.watch else { return };
    if let Err((held, e)) = w.add(dirs) {
        tracing::warn!(
            source = %t.s.name,
            watches = held,
            max_user_watches = watch::max_user_watches(),
            error = %e,
            "web root: cannot add another watch after {held} (fs.inotify.max_user_watches too small?); polling every {:?} instead",
            t.s.poll_interval
        );
        t.watch = None;
    }
}

/// `trapline webroot accept`: stores the current state of all files (or of those under
/// `only`) as the baseline without reporting, and records who did it. Returns, per source,
/// how many changes were accepted.
pub fn accept(cfg: &config::Loaded, only: &[PathBuf], who: &str) -> Result<Vec<(String, usize)>> {
    let state = cfg.resolve(&cfg.config.state_dir);
    let only: Vec<PathBuf> = only
        .iter()
        .map(|p| std::fs::canonicalize(p).or_else(|_| std::path::absolute(p)))
        .collect::<std::io::Result<_>>()?;
    let mut out = Vec::new();
    for i in configured(cfg) {
        let s = Settings::from_config(cfg, i)?;
        let (mut base, _) = Baseline::open(&state, &s.name)?;
        let mut hasher = Hasher::new(s.max_hash_bytes, 0);
        let mut changes = Vec::new();
        for r in &s.roots {
            let mut errors = Vec::new();
            changes.extend(scan::compare(r, r, true, &s.filter, &base.rows, &mut hasher, &mut errors));
            for e in errors {
                tracing::warn!("cannot read {e}");
            }
        }
        let under = |e: &Option<scan::Entry>| {
            e.as_ref()
                .is_some_and(|e| only.iter().any(|o| Path::new(std::ffi::OsStr::from_bytes(&e.path)).starts_with(o)))
        };
        let changes: Vec<Change> =
            changes.into_iter().filter(|c| only.is_empty() || under(&c.old) || under(&c.new)).collect();
        let now = Utc::now().to_rfc3339();
        let mut updates = Vec::new();
        let mut history = Vec::new();
        for c in &changes {
            if let Some(kind) = c.kind {
                history.push(HistoryRow::of(
                    now.clone(),
                    kind.as_str(),
                    c.old.as_ref(),
                    c.new.as_ref(),
                    false,
                    Some("accepted"),
                ));
            }
            if let Some(old) = &c.old
                && c.new.as_ref().is_none_or(|n| n.path != old.path)
            {
                updates.push((old.path.clone(), None));
            }
            if let Some(new) = &c.new {
                updates.push((new.path.clone(), Some(new.clone())));
            }
        }
        let n = history.len();
        base.apply(updates, &history)?;
        if !base.is_built()? {
            base.mark_built()?;
        }
        let paths = if only.is_empty() {
            "*".to_string()
        } else {
            only.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" ")
        };
        base.record_accept(who, &paths, n, only.is_empty())?;
        out.push((s.name.clone(), n));
    }
    if out.is_empty() {
        anyhow::bail!("{}: no `type: webroot` source configured", cfg.path.display());
    }
    Ok(out)
}
