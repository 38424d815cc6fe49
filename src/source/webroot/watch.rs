//! Notifications as a hint: one non-recursive `notify` watch per directory that is not
//! ignored (a recursive watch would also add watches inside ignored directories until the
//! kernel's limit is exhausted). An event names the directories to compare again; a queue
//! overflow or a watcher error asks for a full rescan. When the tree has more directories
//! than `max_user_watches` allows, or a watch cannot be added, the source says so with the
//! numbers and polls instead.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, TrySendError};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};

/// What the events received ask for.
#[derive(Debug, Default)]
pub struct Hint {
    /// Directories whose entries may have changed.
    pub dirs: HashSet<PathBuf>,
    /// Events were lost or the watcher failed: compare everything.
    pub rescan: bool,
}

/// Why watching was given up for polling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooMany {
    pub dirs: usize,
    pub limit: u64,
}

pub struct Watch {
    watcher: RecommendedWatcher,
    rx: Receiver<notify::Result<notify::Event>>,
    overflow: Arc<AtomicBool>,
    watched: HashSet<PathBuf>,
}

/// Overrides the watch limit read from the kernel (to try the polling fallback without
/// changing a system-wide setting).
pub const MAX_WATCHES_ENV: &str = "TRAPLINE_WEBROOT_MAX_WATCHES";

/// The kernel's per-user inotify watch limit, when it can be read.
pub fn max_user_watches() -> Option<u64> {
    if let Some(n) = std::env::var(MAX_WATCHES_ENV).ok().and_then(|v| v.parse().ok()) {
        return Some(n);
    }
    std::fs::read_to_string("/proc/sys/fs/inotify/max_user_watches").ok()?.trim().parse().ok()
}

impl Watch {
    pub fn new() -> notify::Result<Watch> {
        let (tx, rx) = crossbeam_channel::bounded(8192);
        let overflow = Arc::new(AtomicBool::new(false));
        let flag = overflow.clone();
        let watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
            // Never block the watcher thread: a dropped event becomes a full rescan.
            if let Err(TrySendError::Full(_)) = tx.try_send(ev) {
                flag.store(true, Ordering::Relaxed);
            }
        })?;
        Ok(Watch { watcher, rx, overflow, watched: HashSet::new() })
    }

    /// Adds a watch on each of `dirs` not watched yet. An error (the watch limit reached)
    /// is returned with the number of watches held, for the caller to fall back to polling.
    pub fn add(&mut self, dirs: impl IntoIterator<Item = PathBuf>) -> Result<(), (usize, notify::Error)> {
        for d in dirs {
            if self.watched.contains(&d) {
                continue;
            }
            match self.watcher.watch(&d, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    self.watched.insert(d);
                }
                // Gone since it was listed: its parent's event covers it.
                Err(notify::Error { kind: notify::ErrorKind::PathNotFound, .. }) => {}
                Err(e) if matches!(&e.kind, notify::ErrorKind::Io(io) if io.kind() == std::io::ErrorKind::NotFound) => {
                }
                Err(e) => return Err((self.watched.len(), e)),
            }
        }
        Ok(())
    }

    /// Forgets watches of directories that no longer exist (the kernel dropped them).
    pub fn forget_below(&mut self, dir: &Path) {
        self.watched.retain(|d| !d.starts_with(dir) || d.is_dir());
    }

    pub fn len(&self) -> usize {
        self.watched.len()
    }

    pub fn is_empty(&self) -> bool {
        self.watched.is_empty()
    }

    /// Whether notifications are waiting.
    pub fn pending(&self) -> bool {
        !self.rx.is_empty()
    }

    /// The notifications waiting now, without waiting for more.
    pub fn drain(&self) -> Hint {
        let mut hint = Hint::default();
        while let Ok(ev) = self.rx.try_recv() {
            add(&mut hint, ev);
        }
        self.overflowed(hint)
    }

    /// Waits up to `timeout` for a first event, then collects what follows within `settle`
    /// (a burst of writes is compared once).
    pub fn wait(&self, timeout: Duration, settle: Duration) -> Hint {
        let mut hint = Hint::default();
        match self.rx.recv_timeout(timeout) {
            Ok(ev) => add(&mut hint, ev),
            Err(RecvTimeoutError::Timeout) => return self.overflowed(hint),
            Err(RecvTimeoutError::Disconnected) => {
                hint.rescan = true;
                return hint;
            }
        }
        let until = std::time::Instant::now() + settle;
        while let Some(left) = until.checked_duration_since(std::time::Instant::now()) {
            match self.rx.recv_timeout(left) {
                Ok(ev) => add(&mut hint, ev),
                Err(_) => break,
            }
        }
        self.overflowed(hint)
    }

    fn overflowed(&self, mut hint: Hint) -> Hint {
        if self.overflow.swap(false, Ordering::Relaxed) {
            tracing::warn!("web root: notification queue overflowed; comparing the whole tree");
            hint.rescan = true;
        }
        hint
    }
}

fn add(hint: &mut Hint, ev: notify::Result<notify::Event>) {
    let ev = match ev {
        Ok(ev) => ev,
        Err(e) => {
            tracing::warn!(error = %e, "web root: watcher error; comparing the whole tree");
            hint.rescan = true;
            return;
        }
    };
    if ev.need_rescan() || ev.paths.is_empty() {
        tracing::warn!("web root: the kernel dropped notifications; comparing the whole tree");
        hint.rescan = true;
        return;
    }
    for p in ev.paths {
        // An event on an entry: its directory is compared. On a watched directory itself
        // (deleted, moved): its parent is.
        if let Some(parent) = p.parent() {
            hint.dirs.insert(parent.to_path_buf());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, EventKind, Flag};

    #[test]
    fn events_name_directories_and_lost_events_ask_for_a_rescan() {
        let mut h = Hint::default();
        add(&mut h, Ok(notify::Event::new(EventKind::Create(CreateKind::File)).add_path("/w/up/x.php".into())));
        assert_eq!(h.dirs.iter().collect::<Vec<_>>(), [Path::new("/w/up")]);
        assert!(!h.rescan);
        add(&mut h, Ok(notify::Event::new(EventKind::Other).set_flag(Flag::Rescan)));
        assert!(h.rescan);
        let mut h = Hint::default();
        add(&mut h, Err(notify::Error::generic("queue overflow")));
        assert!(h.rescan);
    }
}
