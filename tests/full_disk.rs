//! A full disk under the output file, for real: a 16 KiB tmpfs mounted over the output
//! directory (needs root), filled by detections, trapline stopped and started again while it
//! is full, then grown. Nothing may be lost, nothing written twice, and the output must never
//! hold a partial record.
//!
//! Without the rights to mount, the test is reported as ignored, unless
//! `TRAPLINE_E2E_REQUIRED=1` is set (as in CI), in which case it fails.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::attacks::{Env, write};
use common::{Daemon, wait_for};

/// A small tmpfs mounted over a directory for the life of the guard (needs root).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs", dir.to_str().unwrap()])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(dir.to_path_buf()))
    }
    fn resize(&self, size: &str) {
        let s = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={size}"), self.0.to_str().unwrap()])
            .status()
            .unwrap();
        assert!(s.success(), "cannot resize the tmpfs");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn full_disk_pauses_loses_nothing_and_never_writes_a_partial_record(env: Env, fs: Tmpfs) {
    write(&env.log(), 0..1000);
    let mut d = Daemon::start(&env.config());
    assert!(
        wait_for(Duration::from_secs(15), || d.stderr().contains("reading is paused")),
        "no write failure reported:\n{}",
        d.stderr()
    );
    // Mid-outage: whole records only (detections() fails on a fragment).
    let during = env.counts().len();
    assert!(during < 1000, "the disk was not full ({during} written)");
    // Stopped during the outage: promptly, and without a checkpoint past the failing line.
    let took = d.signal("TERM");
    assert!(took < Duration::from_secs(3), "SIGTERM during the outage took {took:?}");
    let mut d = Daemon::start(&env.config());
    assert!(wait_for(Duration::from_secs(15), || d.stderr().contains("reading is paused")), "{}", d.stderr());
    // The operator sees why nothing moves.
    let status = common::trapline(&["status", "--config", env.config().to_str().unwrap()]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert_eq!(status.status.code(), Some(1), "{text}");
    assert!(text.contains("action log FAILING") && text.contains("No space left"), "{text}");
    // Space comes back: everything held back is written, once.
    fs.resize("64m");
    env.wait_all(1000);
    assert!(d.stderr().contains("action recovered"), "{}", d.stderr());
    let status = common::trapline(&["status", "--config", env.config().to_str().unwrap()]);
    assert_eq!(status.status.code(), Some(0), "{}", String::from_utf8_lossy(&status.stdout));
    d.signal("TERM");
    env.assert_exactly_once(1000);
    // Unmount before the temporary directory holding the mount point goes.
    drop(fs);
    drop(env);
}

fn main() {
    let args = libtest_mimic::Arguments::from_args();
    let required = std::env::var("TRAPLINE_E2E_REQUIRED").is_ok_and(|v| v == "1");
    let env = Env::new("beginning");
    let fs = Tmpfs::mount(&env.root.join("out"), "16k");
    // Required but impossible: not ignored, so that the trial runs and fails with the reason.
    let ignored = fs.is_none() && !required;
    let trial = libtest_mimic::Trial::test(
        "full_disk_pauses_loses_nothing_and_never_writes_a_partial_record",
        move || match fs {
            Some(fs) => {
                full_disk_pauses_loses_nothing_and_never_writes_a_partial_record(env, fs);
                Ok(())
            }
            None => Err("cannot mount a tmpfs (root needed)".into()),
        },
    )
    .with_ignored_flag(ignored);
    libtest_mimic::run(&args, vec![trial]).exit();
}
