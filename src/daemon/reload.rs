//! Hot reload for `trapline run`: watch the rule and template directories, and SIGHUP.
//!
//! Events are debounced (editors save in several steps: write a temporary file, rename it,
//! touch the directory), then the caller rebuilds the *complete* rule set and swaps it in one
//! step between two lines, or keeps the running set when anything is invalid. Nothing here is
//! on the per-line path: the tailer calls [`Reloader::due`] on each turn of its loop.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use notify::{EventKind, RecursiveMode, Watcher};

/// Quiet time after the last change before reloading.
const DEBOUNCE: Duration = Duration::from_millis(250);

pub struct Reloader {
    // Kept alive for its callbacks.
    _watcher: Option<notify::RecommendedWatcher>,
    changed: Arc<AtomicBool>,
    hup: Arc<AtomicBool>,
    last_change: Option<Instant>,
}

impl Reloader {
    /// Watches `paths` (files or directories, recursively; missing ones are skipped with a
    /// warning) and SIGHUP.
    pub fn new(paths: &[PathBuf]) -> Reloader {
        let changed = Arc::new(AtomicBool::new(false));
        let hup = Arc::new(AtomicBool::new(false));
        if let Err(e) = signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&hup)) {
            tracing::warn!(error = %e, "cannot install SIGHUP handler; reload on SIGHUP disabled");
        }
        let flag = Arc::clone(&changed);
        let watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
            // Reads (and errors, which may hide changes) are not edits; anything else may be.
            match ev {
                Ok(e) if matches!(e.kind, EventKind::Access(_)) => {}
                _ => flag.store(true, Ordering::Relaxed),
            }
        });
        let watcher = match watcher {
            Ok(mut w) => {
                // Built-in rules and templates are part of the binary: they never change.
                for p in paths.iter().filter(|p| !crate::assets::is_builtin(p)) {
                    if let Err(e) = w.watch(p, RecursiveMode::Recursive) {
                        tracing::warn!(path = %p.display(), error = %e, "cannot watch for hot reload");
                    }
                }
                Some(w)
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch rule directories; reload with SIGHUP");
                None
            }
        };
        Reloader { _watcher: watcher, changed, hup, last_change: None }
    }

    /// True when a reload should run now: SIGHUP arrived, or files changed and have been
    /// quiet for the debounce time.
    pub fn due(&mut self) -> bool {
        if self.changed.swap(false, Ordering::Relaxed) {
            self.last_change = Some(Instant::now());
        }
        if self.hup.swap(false, Ordering::Relaxed) {
            self.last_change = None;
            return true;
        }
        match self.last_change {
            Some(t) if t.elapsed() >= DEBOUNCE => {
                self.last_change = None;
                true
            }
            _ => false,
        }
    }
}
