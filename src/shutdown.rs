//! **shutdown**: the one stop signal of a process.
//!
//! Ctrl-C, SIGTERM, or a command's own decision trigger it once; everything that runs until
//! stopped (the reading loop, retries of a failing action, background delivery on the tokio
//! runtime) looks at the same [`Shutdown`]. Blocking code polls [`Shutdown::is_triggered`] or
//! sleeps with [`Shutdown::wait_timeout`]; async code awaits [`Shutdown::wait`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    flag: Arc<AtomicBool>,
    lock: Mutex<()>,
    cv: Condvar,
    notify: Notify,
}

/// How often blocking waiters look at a flag set from a signal handler (which cannot take a
/// lock or notify a condition variable).
const SIGNAL_POLL: Duration = Duration::from_millis(50);

impl Shutdown {
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// Triggers on SIGINT and SIGTERM. The handler only sets the flag (async-signal-safe);
    /// waiters see it within 50 ms, and a watcher thread wakes the async ones.
    pub fn on_signals(&self) -> std::io::Result<()> {
        for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            signal_hook::flag::register(sig, Arc::clone(&self.inner.flag))?;
        }
        let me = self.clone();
        std::thread::Builder::new().name("shutdown".into()).spawn(move || {
            while !me.is_triggered() {
                std::thread::sleep(SIGNAL_POLL);
            }
            me.trigger();
        })?;
        Ok(())
    }

    /// Requests the stop. Idempotent.
    pub fn trigger(&self) {
        self.inner.flag.store(true, Ordering::SeqCst);
        let _guard = self.inner.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.inner.cv.notify_all();
        self.inner.notify.notify_waiters();
    }

    pub fn is_triggered(&self) -> bool {
        self.inner.flag.load(Ordering::SeqCst)
    }

    /// The flag itself, for loops that take an `&AtomicBool`.
    pub fn flag(&self) -> &AtomicBool {
        &self.inner.flag
    }

    /// Sleeps up to `d`; returns early, with `true`, when the stop is requested.
    pub fn wait_timeout(&self, d: Duration) -> bool {
        let deadline = std::time::Instant::now() + d;
        let mut guard = self.inner.lock.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if self.is_triggered() {
                return true;
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                return false;
            }
            let step = (deadline - now).min(SIGNAL_POLL);
            guard = self.inner.cv.wait_timeout(guard, step).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    /// Completes when the stop is requested.
    pub async fn wait(&self) {
        loop {
            let notified = self.inner.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_triggered() {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiters_of_both_kinds_wake_on_trigger() {
        let s = Shutdown::new();
        assert!(!s.wait_timeout(Duration::from_millis(1)));
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let s2 = s.clone();
        let t = std::thread::spawn(move || s2.wait_timeout(Duration::from_secs(30)));
        let s3 = s.clone();
        let task = rt.spawn(async move { s3.wait().await });
        std::thread::sleep(Duration::from_millis(20));
        s.trigger();
        assert!(t.join().unwrap());
        rt.block_on(task).unwrap();
        assert!(s.is_triggered());
    }
}
