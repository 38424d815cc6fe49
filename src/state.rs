//! **state**: the state directory — one process at a time, files replaced atomically.
//!
//! Two `trapline run` on the same state directory would both resume the same checkpoints and
//! write every detection twice. [`StateLock`] is an exclusive `flock(2)` on `<state>/lock`,
//! held for the life of the process: the kernel releases it when the process ends, however it
//! ends (kill -9 included), so there is no stale lock to clean up. The holder writes its pid
//! into the file, so that the one refused can say who holds it. The pid is only trusted while
//! the lock is held; the file itself is never removed (removing it would let a second process
//! lock a fresh file while the first still holds the old one).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Name of the lock file in the state directory.
pub const LOCK_FILE: &str = "lock";

/// How long [`StateLock::acquire`] keeps trying: long enough to outlast a [`holder`] probe
/// (which holds a shared lock for microseconds), far shorter than any real holder.
const PATIENCE: Duration = Duration::from_millis(250);

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "state directory {} is in use by another trapline{}; stop it first, or give this instance its own state_dir",
        dir.display(),
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    Held { dir: PathBuf, pid: Option<u32> },
    #[error("cannot lock state directory {}: {source}", dir.display())]
    Io { dir: PathBuf, source: io::Error },
}

/// The exclusive lock on a state directory; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct StateLock {
    /// Keeps the lock: it belongs to this open file description.
    _file: File,
    path: PathBuf,
}

impl StateLock {
    /// Takes the lock on `dir` (created if missing) and records this process's pid in it, or
    /// says who holds it.
    pub fn acquire(dir: &Path) -> Result<StateLock, LockError> {
        let io_err = |source| LockError::Io { dir: dir.to_path_buf(), source };
        fs::create_dir_all(dir).map_err(io_err)?;
        let path = dir.join(LOCK_FILE);
        // No truncation on open: until we hold the lock, the pid in the file is the holder's.
        let mut file =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(io_err)?;
        let deadline = Instant::now() + PATIENCE;
        loop {
            match try_flock(&file, libc::LOCK_EX) {
                Ok(true) => break,
                Ok(false) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                Ok(false) => return Err(LockError::Held { dir: dir.to_path_buf(), pid: read_pid(&mut file) }),
                Err(e) => return Err(io_err(e)),
            }
        }
        let pid = format!("{}\n", std::process::id());
        (|| {
            file.set_len(0)?;
            file.rewind()?;
            file.write_all(pid.as_bytes())
        })()
        .map_err(io_err)?;
        Ok(StateLock { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The process holding the lock on `dir`: `None` when nobody does, `Some(pid)` when one does
/// (`Some(None)` if its pid could not be read). Never creates anything.
pub fn holder(dir: &Path) -> io::Result<Option<Option<u32>>> {
    let mut file = match File::open(dir.join(LOCK_FILE)) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    // A shared lock conflicts with the holder's exclusive one; taken, it is released at once
    // when `file` is dropped.
    if try_flock(&file, libc::LOCK_SH)? {
        return Ok(None);
    }
    Ok(Some(read_pid(&mut file)))
}

/// `flock(fd, op | LOCK_NB)`: `Ok(false)` when someone else holds a conflicting lock.
fn try_flock(file: &File, op: libc::c_int) -> io::Result<bool> {
    loop {
        // SAFETY: flock(2) on a descriptor we own; no memory is passed.
        if unsafe { libc::flock(file.as_raw_fd(), op | libc::LOCK_NB) } == 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EWOULDBLOCK) => return Ok(false),
            Some(libc::EINTR) => continue,
            _ => return Err(e),
        }
    }
}

/// The pid written in the lock file, if it reads as one.
fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.take(32).read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, then rename.
/// With `sync`, the data and the directory entry are fsynced.
pub fn write_atomic(path: &Path, bytes: &[u8], sync: bool) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{}.tmp", path.file_name().and_then(|n| n.to_str()).unwrap_or("x")));
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        if sync {
            f.sync_data()?;
        }
    }
    std::fs::rename(&tmp, path)?;
    if sync {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_with_the_holders_pid_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        assert_eq!(holder(&state).unwrap(), None);
        let lock = StateLock::acquire(&state).unwrap();
        let me = std::process::id();
        assert_eq!(fs::read_to_string(lock.path()).unwrap(), format!("{me}\n"));
        assert_eq!(holder(&state).unwrap(), Some(Some(me)));

        // flock locks belong to the open file description: a second open in the same process
        // conflicts just as another process would.
        match StateLock::acquire(&state) {
            Err(e @ LockError::Held { pid: Some(p), .. }) => {
                assert_eq!(p, me);
                let msg = e.to_string();
                assert!(msg.contains(&format!("pid {me}")) && msg.contains(&state.display().to_string()), "{msg}");
            }
            other => panic!("expected Held, got {other:?}"),
        }
        // The refused attempt did not clobber the holder's pid.
        assert_eq!(fs::read_to_string(lock.path()).unwrap(), format!("{me}\n"));

        drop(lock);
        assert_eq!(holder(&state).unwrap(), None);
        let again = StateLock::acquire(&state).unwrap();
        assert_eq!(fs::read_to_string(again.path()).unwrap(), format!("{me}\n"));
    }
}
