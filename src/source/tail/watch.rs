//! Change notification: non-recursive `notify` watches on directories.
//!
//! Directories, not files: a directory watch reports writes to the files inside it *and*
//! creations, deletions and renames, and it survives the files being recreated (a file watch
//! dies with its inode). Events only say "look now"; the tailer re-derives everything from
//! `stat`/`fstat`, so a lost or merged event costs latency (bounded by the polling backstop),
//! never data.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use notify::event::{EventKind, ModifyKind};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tracing::{debug, warn};

use super::file::FileKey;

/// What the events received while waiting ask for.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Wake {
    /// Something happened: check and read the followed files.
    pub any: bool,
    /// Files may have appeared, vanished or been renamed (or events were lost): rediscover.
    pub rediscover: bool,
}

pub(crate) struct Watch {
    watcher: Option<RecommendedWatcher>,
    rx: Receiver<notify::Result<notify::Event>>,
    /// Set by the watcher thread when the channel was full and an event was dropped.
    overflow: Arc<AtomicBool>,
    /// Watched directories, with their identity when the watch was added: a directory that
    /// was deleted and recreated needs a new watch.
    dirs: HashMap<PathBuf, FileKey>,
    warned: HashSet<PathBuf>,
}

impl Watch {
    /// Creates the watcher; when that fails, warns and leaves the tailer on polling alone.
    pub(crate) fn new() -> Watch {
        let (tx, rx) = crossbeam_channel::bounded(4096);
        let overflow = Arc::new(AtomicBool::new(false));
        let watcher = match make_watcher(tx, overflow.clone()) {
            Ok(w) => Some(w),
            Err(e) => {
                warn!(error = %e, "cannot create a file-system watcher; relying on polling");
                None
            }
        };
        Watch { watcher, rx, overflow, dirs: HashMap::new(), warned: HashSet::new() }
    }

    /// Watches exactly `wanted`. Returns whether a watch was added: files may have appeared
    /// in that directory before the watch existed, so the caller should rediscover.
    pub(crate) fn sync(&mut self, wanted: &HashSet<PathBuf>) -> bool {
        let Some(w) = self.watcher.as_mut() else {
            return false;
        };
        let stale: Vec<PathBuf> = self
            .dirs
            .iter()
            .filter(|(d, key)| !wanted.contains(*d) || dir_key(d) != Some(**key))
            .map(|(d, _)| d.clone())
            .collect();
        for d in stale {
            let _ = w.unwatch(&d); // may already be gone with the directory
            self.dirs.remove(&d);
        }
        let mut added = false;
        for d in wanted {
            if self.dirs.contains_key(d) {
                continue;
            }
            let Some(key) = dir_key(d) else { continue };
            match w.watch(d, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    debug!(dir = %d.display(), "watching");
                    self.dirs.insert(d.clone(), key);
                    self.warned.remove(d);
                    added = true;
                }
                Err(e) => {
                    // E.g. inotify's max_user_watches: polling still covers this directory.
                    if self.warned.insert(d.clone()) {
                        warn!(dir = %d.display(), error = %e, "cannot watch directory; polling it");
                    }
                }
            }
        }
        added
    }

    /// Waits up to `timeout` for events and classifies everything queued. `relevant` says
    /// whether an event on a path could change discovery; `tracked` whether the path is a
    /// followed file.
    pub(crate) fn wait(
        &self,
        timeout: Duration,
        relevant: impl Fn(&Path) -> bool,
        tracked: impl Fn(&Path) -> bool,
    ) -> Wake {
        let mut wake = Wake::default();
        let first = match self.rx.recv_timeout(timeout) {
            Ok(ev) => ev,
            Err(RecvTimeoutError::Timeout) => return self.take_overflow(wake),
            Err(RecvTimeoutError::Disconnected) => {
                // No watcher: the wait is just the polling interval.
                std::thread::sleep(timeout);
                return self.take_overflow(wake);
            }
        };
        classify(&mut wake, first, &relevant, &tracked);
        while let Ok(ev) = self.rx.try_recv() {
            classify(&mut wake, ev, &relevant, &tracked);
        }
        self.take_overflow(wake)
    }

    fn take_overflow(&self, mut wake: Wake) -> Wake {
        if self.overflow.swap(false, Ordering::Relaxed) {
            wake.any = true;
            wake.rediscover = true;
        }
        wake
    }
}

fn make_watcher(
    tx: Sender<notify::Result<notify::Event>>,
    overflow: Arc<AtomicBool>,
) -> notify::Result<RecommendedWatcher> {
    notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        // Never block the watcher thread: a dropped event becomes "rescan everything".
        if let Err(TrySendError::Full(_)) = tx.try_send(ev) {
            overflow.store(true, Ordering::Relaxed);
        }
    })
}

fn dir_key(d: &Path) -> Option<FileKey> {
    fs::metadata(d).ok().filter(|m| m.is_dir()).map(|m| (m.dev(), m.ino()))
}

fn classify(
    wake: &mut Wake,
    ev: notify::Result<notify::Event>,
    relevant: &impl Fn(&Path) -> bool,
    tracked: &impl Fn(&Path) -> bool,
) {
    wake.any = true;
    let ev = match ev {
        Ok(ev) => ev,
        Err(e) => {
            debug!(error = %e, "watcher error; rescanning");
            wake.rediscover = true;
            return;
        }
    };
    // Queue overflow (Rescan), often without any path: assume anything may have changed.
    if ev.need_rescan() || ev.paths.is_empty() {
        wake.rediscover = true;
        return;
    }
    let data_only = matches!(
        ev.kind,
        EventKind::Access(_) | EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Metadata(_) | ModifyKind::Any)
    );
    for p in &ev.paths {
        let known = tracked(p);
        // Writes to a followed file only need a read; anything else on a path the patterns
        // care about (create, remove, rename, or a write to a file not yet followed) may
        // change which files exist.
        if (known && !data_only) || (!known && relevant(p)) {
            wake.rediscover = true;
        }
    }
}
