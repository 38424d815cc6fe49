//! Integration tests for the live tailer: real files in a temporary directory, the tailer in a
//! thread, a recording sink. Tests wait for expected results with a generous deadline and
//! never assert on timing.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use trapline::source::tail::{FileInfo, LineSink, StartAt, TailConfig, TailSource, TailStats, Tailer};
use trapline::source::{LinePos, Mark};
use xxhash_rust::xxh3::xxh3_64;

const DEADLINE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
struct Got {
    path: PathBuf,
    line: Vec<u8>,
    pos: LinePos,
}

/// Records every line; `flush` returns `base + lines recorded` as the mark.
#[derive(Clone, Default)]
struct Rec {
    got: Arc<Mutex<Vec<Got>>>,
    base: u64,
    last_mark: Arc<Mutex<Option<u64>>>,
}

impl LineSink for Rec {
    fn line(&mut self, file: &FileInfo, line: &[u8], pos: LinePos) -> anyhow::Result<()> {
        self.got.lock().unwrap().push(Got { path: file.path.clone(), line: line.to_vec(), pos });
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<Mark> {
        let mark = self.base + self.got.lock().unwrap().len() as u64;
        *self.last_mark.lock().unwrap() = Some(mark);
        Ok(mark.into())
    }
}

impl Rec {
    fn all(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }

    fn lines(&self) -> Vec<String> {
        self.all().iter().map(|g| String::from_utf8_lossy(&g.line).into_owned()).collect()
    }

    /// Waits until `pred` holds for the recorded lines; panics with them after the deadline.
    fn wait_until(&self, what: &str, pred: impl Fn(&[String]) -> bool) {
        let start = Instant::now();
        loop {
            let lines = self.lines();
            if pred(&lines) {
                return;
            }
            if start.elapsed() > DEADLINE {
                panic!("timed out waiting for {what}; got {} lines: {lines:?}", lines.len());
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_all(&self, expected: &[String]) {
        self.wait_until(&format!("{} expected lines", expected.len()), |got| expected.iter().all(|e| got.contains(e)));
    }
}

struct Running {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<(Tailer, anyhow::Result<()>)>>,
    stats: trapline::source::tail::TailStatsHandle,
}

impl Running {
    fn start(cfg: TailConfig, rec: &Rec) -> Running {
        Running::start_with(cfg, rec.clone())
    }

    fn start_with(cfg: TailConfig, sink: impl LineSink + Send + 'static) -> Running {
        let mut tailer = Tailer::new(cfg).expect("tailer");
        let stats = tailer.stats_handle();
        let stop = Arc::new(AtomicBool::new(false));
        let (s, mut sink) = (stop.clone(), sink);
        let handle = thread::spawn(move || {
            let r = tailer.run(&mut sink, &s);
            (tailer, r)
        });
        let r = Running { stop, handle: Some(handle), stats };
        // The first checkpoint is written right after initial discovery.
        r.wait_stats("start-up", |s| s.checkpoints >= 1);
        r
    }

    fn stats(&self) -> TailStats {
        self.stats.snapshot()
    }

    fn wait_stats(&self, what: &str, pred: impl Fn(&TailStats) -> bool) {
        let start = Instant::now();
        while !pred(&self.stats()) {
            assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}: {:?}", self.stats());
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(mut self) -> Tailer {
        self.stop.store(true, Ordering::Relaxed);
        let (tailer, r) = self.handle.take().unwrap().join().expect("tailer thread panicked");
        r.expect("run failed");
        tailer
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn config(dir: &Path, patterns: &[String], start: StartAt) -> TailConfig {
    TailConfig {
        sources: vec![TailSource { name: "test".into(), patterns: patterns.to_vec(), start }],
        state_dir: dir.join("state"),
        poll_interval: Duration::from_millis(50),
        rotate_wait: Duration::from_millis(500),
        checkpoint_interval: Duration::from_millis(100),
        ..TailConfig::default()
    }
}

fn pat(p: &Path) -> Vec<String> {
    vec![p.display().to_string()]
}

fn append(path: &Path, data: &[u8]) {
    let mut f = OpenOptions::new().create(true).append(true).open(path).unwrap();
    f.write_all(data).unwrap();
}

fn numbered(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{prefix}-{i:05} payload")).collect()
}

fn joined(lines: &[String]) -> Vec<u8> {
    lines.iter().flat_map(|l| format!("{l}\n").into_bytes()).collect()
}

/// Every expected line exactly once, nothing else.
fn assert_exactly_once(got: &[String], expected: &[String]) {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for g in got {
        *counts.entry(g.as_str()).or_default() += 1;
    }
    for e in expected {
        assert_eq!(counts.get(e.as_str()), Some(&1), "line {e:?} not seen exactly once in {got:?}");
    }
    assert_eq!(got.len(), expected.len(), "unexpected extra lines in {got:?}");
}

/// The lines of `group` (written in this order to one file) arrive in this order.
fn assert_in_order(got: &[String], group: &[String]) {
    let idx: Vec<usize> =
        group.iter().map(|l| got.iter().position(|g| g == l).unwrap_or_else(|| panic!("{l} missing"))).collect();
    assert!(idx.windows(2).all(|w| w[0] < w[1]), "out of order: {group:?} in {got:?}");
}

#[test]
fn appended_lines_arrive_once_in_order_with_positions() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    let mut expected = numbered("old", 0..3);
    fs::write(&log, joined(&expected)).unwrap();
    let rec = Rec::default();
    let run = Running::start(config(dir.path(), &pat(&log), StartAt::Beginning), &rec);
    for batch in 0..10 {
        let lines = numbered(&format!("b{batch}"), 0..40);
        append(&log, &joined(&lines));
        expected.extend(lines);
    }
    rec.wait_all(&expected);
    run.stop();
    assert_eq!(rec.lines(), expected);

    // Positions: offsets, 1-based line numbers, origin = xxh3 of min(4096, line end) bytes.
    let content = fs::read(&log).unwrap();
    assert!(content.len() > 4096, "test needs lines past the first 4 KiB");
    let mut offset = 0u64;
    for (i, g) in rec.all().iter().enumerate() {
        assert_eq!(g.pos.offset, offset);
        assert_eq!(g.pos.line_number, i as u64 + 1);
        assert!(!g.pos.truncated);
        let end = (offset as usize + g.line.len() + 1).min(4096);
        assert_eq!(g.pos.origin, xxh3_64(&content[..end]), "origin of line {i}");
        offset += g.line.len() as u64 + 1;
    }
}

#[test]
fn partial_line_waits_for_its_newline() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    fs::write(&log, b"").unwrap();
    let rec = Rec::default();
    let run = Running::start(config(dir.path(), &pat(&log), StartAt::Beginning), &rec);
    append(&log, b"first\nsec");
    rec.wait_until("first line", |l| l == ["first"]);
    // Several polls pass; the partial line must not be delivered.
    thread::sleep(Duration::from_millis(300));
    assert_eq!(rec.lines(), ["first"]);
    append(&log, b"ond half");
    thread::sleep(Duration::from_millis(150));
    assert_eq!(rec.lines(), ["first"]);
    append(&log, b"\nthird\n");
    rec.wait_until("all lines", |l| l.len() == 3);
    run.stop();
    assert_eq!(rec.lines(), ["first", "second half", "third"]);
    assert_eq!(rec.all()[1].pos.offset, 6);
}

#[test]
fn rename_and_create_rotation_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    let rotated = dir.path().join("app.log.1");
    let mut writer = OpenOptions::new().create(true).append(true).open(&log).unwrap();
    let rec = Rec::default();
    let mut cfg = config(dir.path(), &pat(&log), StartAt::Beginning);
    // Generous, so the late writes below surely land while the old file is still drained.
    cfg.rotate_wait = Duration::from_secs(2);
    let run = Running::start(cfg, &rec);
    run.wait_stats("file tracked", |s| s.files_tracked == 1);

    let before = numbered("before", 0..50);
    writer.write_all(&joined(&before)).unwrap();
    fs::rename(&log, &rotated).unwrap();
    // The writer has not reopened yet: these land in the rotated file.
    let late = numbered("late-old", 0..20);
    writer.write_all(&joined(&late)).unwrap();
    let new = numbered("new", 0..50);
    append(&log, &joined(&new));
    // Still in the old file, after the new one appeared.
    let later = numbered("later-old", 0..5);
    writer.write_all(&joined(&later)).unwrap();
    // A final line without '\n' is delivered when the rotated file is closed.
    writer.write_all(b"unterminated").unwrap();

    let mut expected = [before.clone(), late.clone(), new.clone(), later.clone()].concat();
    expected.push("unterminated".into());
    rec.wait_all(&expected);
    run.wait_stats("rotated file closed", |s| s.files_tracked == 1 && s.rotations >= 1);
    let stats = run.stats();
    run.stop();
    let got = rec.lines();
    assert_exactly_once(&got, &expected);
    assert_in_order(&got, &[&before[..], &late, &later, &["unterminated".to_string()]].concat());
    assert_in_order(&got, &new);
    assert_eq!(stats.truncations, 0);
}

#[test]
fn copytruncate_sees_new_lines_without_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    let mut writer = OpenOptions::new().create(true).append(true).open(&log).unwrap();
    let rec = Rec::default();
    let run = Running::start(config(dir.path(), &pat(&log), StartAt::Beginning), &rec);

    let before = numbered("before", 0..50);
    writer.write_all(&joined(&before)).unwrap();
    rec.wait_all(&before);
    // logrotate copytruncate: copy, truncate in place; the writer (O_APPEND) goes on.
    fs::copy(&log, dir.path().join("app.log.1")).unwrap();
    OpenOptions::new().write(true).open(&log).unwrap().set_len(0).unwrap();
    let after = numbered("after", 0..30);
    for l in &after {
        writer.write_all(format!("{l}\n").as_bytes()).unwrap();
    }
    rec.wait_all(&after);
    let stats = run.stats();
    run.stop();
    assert_exactly_once(&rec.lines(), &[before, after.clone()].concat());
    assert!(stats.truncations >= 1, "{stats:?}");
    let first_after = rec.all().into_iter().find(|g| g.line == after[0].as_bytes()).unwrap();
    assert_eq!((first_after.pos.offset, first_after.pos.line_number), (0, 1));
}

#[test]
fn truncate_in_place_then_regrow_past_old_offset() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    let rec = Rec::default();
    fs::write(&log, b"").unwrap();
    let run = Running::start(config(dir.path(), &pat(&log), StartAt::Beginning), &rec);
    let old = numbered("old", 0..20);
    append(&log, &joined(&old));
    rec.wait_all(&old);
    // Truncate and, in the same breath, write more than there was: the size check alone
    // cannot see this; the head fingerprint does.
    let new = numbered("NEW-CONTENT", 0..40);
    fs::write(&log, joined(&new)).unwrap();
    rec.wait_all(&new);
    let stats = run.stats();
    run.stop();
    assert_exactly_once(&rec.lines(), &[old, new].concat());
    assert!(stats.truncations >= 1, "{stats:?}");
}

#[test]
fn delete_and_recreate_starts_at_zero() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    let first = numbered("first", 0..10);
    fs::write(&log, joined(&first)).unwrap();
    let rec = Rec::default();
    let run = Running::start(config(dir.path(), &pat(&log), StartAt::Beginning), &rec);
    rec.wait_all(&first);
    fs::remove_file(&log).unwrap();
    let second = numbered("second", 0..4);
    fs::write(&log, joined(&second)).unwrap();
    rec.wait_all(&second);
    run.stop();
    assert_exactly_once(&rec.lines(), &[first, second].concat());
}

#[test]
fn glob_picks_up_files_created_later() {
    let dir = tempfile::tempdir().unwrap();
    let rec = Rec::default();
    let pattern = vec![format!("{}/*.log", dir.path().display())];
    let run = Running::start(config(dir.path(), &pattern, StartAt::End), &rec);
    let a = numbered("a", 0..10);
    let b = numbered("b", 0..10);
    // New files are read from 0 even with StartAt::End, including content written before
    // the tailer noticed them.
    fs::write(dir.path().join("a.log"), joined(&a)).unwrap();
    fs::write(dir.path().join("ignored.txt"), b"not me\n").unwrap();
    fs::write(dir.path().join("b.log"), joined(&b)).unwrap();
    let expected = [a, b].concat();
    rec.wait_all(&expected);
    thread::sleep(Duration::from_millis(200));
    run.stop();
    assert_exactly_once(&rec.lines(), &expected);
    for g in rec.all() {
        let name = g.path.file_name().unwrap().as_encoded_bytes();
        assert_eq!(name[0], g.line[0], "{} from {}", String::from_utf8_lossy(&g.line), g.path.display());
    }
}

#[test]
fn directory_that_appears_later() {
    let dir = tempfile::tempdir().unwrap();
    let rec = Rec::default();
    let pattern = vec![format!("{}/later/deeper/*.log", dir.path().display())];
    let run = Running::start(config(dir.path(), &pattern, StartAt::Beginning), &rec);
    fs::create_dir_all(dir.path().join("later/deeper")).unwrap();
    let lines = numbered("x", 0..5);
    fs::write(dir.path().join("later/deeper/x.log"), joined(&lines)).unwrap();
    rec.wait_all(&lines);
    let more = numbered("y", 0..5);
    append(&dir.path().join("later/deeper/x.log"), &joined(&more));
    rec.wait_all(&more);
    run.stop();
    assert_eq!(rec.lines(), [lines, more].concat());
}

#[test]
fn invalid_utf8_and_cr_are_delivered_as_is() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    fs::write(&log, b"").unwrap();
    let rec = Rec::default();
    let run = Running::start(config(dir.path(), &pat(&log), StartAt::Beginning), &rec);
    append(&log, b"ok\n\xff\xfe\x00bad \xc3\x28\nwin\r\n\n");
    rec.wait_until("4 lines", |l| l.len() == 4);
    run.stop();
    let got: Vec<Vec<u8>> = rec.all().into_iter().map(|g| g.line).collect();
    assert_eq!(got, vec![b"ok".to_vec(), b"\xff\xfe\x00bad \xc3\x28".to_vec(), b"win\r".to_vec(), Vec::new()]);
}

#[test]
fn over_long_line_is_cut_and_following_lines_are_fine() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    fs::write(&log, b"").unwrap();
    let rec = Rec::default();
    let mut cfg = config(dir.path(), &pat(&log), StartAt::Beginning);
    cfg.max_line_bytes = 100;
    let run = Running::start(cfg, &rec);
    // One long line in one write, another dribbled in pieces across reads.
    append(&log, &[vec![b'a'; 1000], b"\nshort\n".to_vec()].concat());
    rec.wait_until("2 lines", |l| l.len() == 2);
    for _ in 0..5 {
        append(&log, &[b'b'; 70]);
        thread::sleep(Duration::from_millis(30));
    }
    append(&log, b"\nend\n");
    rec.wait_until("4 lines", |l| l.len() == 4);
    let stats = run.stats();
    run.stop();
    let got = rec.all();
    assert_eq!(got[0].line, vec![b'a'; 100]);
    assert!(got[0].pos.truncated);
    assert_eq!(got[1].line, b"short");
    assert_eq!((got[1].pos.offset, got[1].pos.line_number), (1001, 2));
    assert!(!got[1].pos.truncated);
    assert_eq!(got[2].line, vec![b'b'; 100]);
    assert!(got[2].pos.truncated);
    assert_eq!(got[3].line, b"end");
    assert_eq!((got[3].pos.offset, got[3].pos.line_number), (1007 + 351, 4));
    assert_eq!(stats.long_lines, 2);
}

#[test]
fn restart_resumes_without_loss_or_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    fs::write(&log, b"").unwrap();
    let rec = Rec::default();
    let cfg = config(dir.path(), &pat(&log), StartAt::End);

    let run = Running::start(cfg.clone(), &rec);
    let one = numbered("one", 0..100);
    append(&log, &joined(&one));
    rec.wait_all(&one);
    // Possibly read before the stop, possibly not: either way exactly once overall.
    let racing = numbered("racing", 0..50);
    append(&log, &joined(&racing));
    run.stop();

    // Written while stopped, ending with a partial line.
    let stopped = numbered("stopped", 0..50);
    append(&log, &joined(&stopped));
    append(&log, b"partial-");

    let run = Running::start(cfg, &rec);
    append(&log, b"completed\n");
    let two = numbered("two", 0..50);
    append(&log, &joined(&two));
    let mut expected = [one, racing, stopped].concat();
    expected.push("partial-completed".into());
    expected.extend(two);
    rec.wait_all(&expected);
    run.stop();
    let got = rec.lines();
    assert_eq!(got, expected);
    for (i, g) in rec.all().iter().enumerate() {
        assert_eq!(g.pos.line_number, i as u64 + 1, "line numbers continue across restarts");
    }
}

#[test]
fn restart_spanning_a_rotation_drains_the_rotated_file() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    let rec = Rec::default();
    let cfg = config(dir.path(), &pat(&log), StartAt::End);
    fs::write(&log, b"").unwrap();

    let run = Running::start(cfg.clone(), &rec);
    let one = numbered("one", 0..50);
    append(&log, &joined(&one));
    rec.wait_all(&one);
    run.stop();

    // While stopped: more lines, rotation, new file with content.
    let unread = numbered("unread-old", 0..30);
    append(&log, &joined(&unread));
    fs::rename(&log, dir.path().join("app.log.1")).unwrap();
    let new = numbered("new", 0..20);
    fs::write(&log, joined(&new)).unwrap();

    let run = Running::start(cfg, &rec);
    let expected = [one, unread, new].concat();
    rec.wait_all(&expected);
    run.wait_stats("rotated file closed", |s| s.files_tracked == 1);
    let stats = run.stats();
    run.stop();
    assert_exactly_once(&rec.lines(), &expected);
    assert_eq!(stats.resumed, 1, "{stats:?}");
}

#[test]
fn restart_after_delete_and_recreate_reads_the_new_file_from_zero() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    let rec = Rec::default();
    let cfg = config(dir.path(), &pat(&log), StartAt::End);
    fs::write(&log, b"").unwrap();
    let run = Running::start(cfg.clone(), &rec);
    let one = numbered("one", 0..10);
    append(&log, &joined(&one));
    rec.wait_all(&one);
    run.stop();

    // Recreated while stopped, longer than the old offset (the inode may well be reused).
    fs::remove_file(&log).unwrap();
    let two = numbered("two", 0..30);
    fs::write(&log, joined(&two)).unwrap();
    // A file that appeared while stopped is new too.
    let other = dir.path().join("other.log");
    let three = numbered("three", 0..3);
    fs::write(&other, joined(&three)).unwrap();

    let mut cfg2 = cfg;
    cfg2.sources[0].patterns.push(other.display().to_string());
    let run = Running::start(cfg2, &rec);
    let expected = [one, two, three].concat();
    rec.wait_all(&expected);
    run.stop();
    assert_exactly_once(&rec.lines(), &expected);
}

#[test]
fn start_at_end_skips_existing_content() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    let old = numbered("old", 0..10);
    fs::write(&log, [joined(&old), b"in-progress-".to_vec()].concat()).unwrap();
    let rec = Rec::default();
    let run = Running::start(config(dir.path(), &pat(&log), StartAt::End), &rec);
    append(&log, b"line\n");
    let new = numbered("new", 0..5);
    append(&log, &joined(&new));
    let mut expected = vec!["in-progress-line".to_string()];
    expected.extend(new);
    rec.wait_all(&expected);
    run.stop();
    assert_eq!(rec.lines(), expected);
    // Line numbers count the skipped lines.
    assert_eq!(rec.all()[0].pos.line_number, 11);
    assert_eq!(rec.all()[0].pos.offset, joined(&old).len() as u64);
}

#[test]
fn sink_mark_round_trips_and_corrupt_checkpoint_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    fs::write(&log, b"a\nb\n").unwrap();
    let cfg = config(dir.path(), &pat(&log), StartAt::Beginning);
    assert_eq!(Tailer::new(cfg.clone()).unwrap().sink_mark(), None);

    let rec = Rec { base: 1000, ..Rec::default() };
    let run = Running::start(cfg.clone(), &rec);
    rec.wait_until("2 lines", |l| l.len() == 2);
    let tailer = run.stop();
    let last = rec.last_mark.lock().unwrap().expect("flushed");
    assert_eq!(last, 1002);
    assert_eq!(tailer.sink_mark(), Some(&Mark::from(last)));
    assert_eq!(Tailer::new(cfg.clone()).unwrap().sink_mark(), Some(&Mark::from(last)));

    let state = dir.path().join("state");
    let ckpt = fs::read_dir(&state).unwrap().next().unwrap().unwrap().path();
    fs::write(&ckpt, b"{ not json").unwrap();
    let err = format!("{:#}", Tailer::new(cfg).err().expect("corrupt checkpoint must fail"));
    assert!(err.contains("corrupt checkpoint"), "{err}");
}

#[test]
fn many_files_are_read_fairly_and_completely() {
    let dir = tempfile::tempdir().unwrap();
    let rec = Rec::default();
    let pattern = vec![format!("{}/*.log", dir.path().display())];
    let mut expected = Vec::new();
    for f in 0..20 {
        let lines = numbered(&format!("f{f}"), 0..200);
        fs::write(dir.path().join(format!("{f}.log")), joined(&lines)).unwrap();
        expected.extend(lines);
    }
    let run = Running::start(config(dir.path(), &pattern, StartAt::Beginning), &rec);
    rec.wait_all(&expected);
    assert_eq!(run.stats().files_tracked, 20);
    run.stop();
    assert_exactly_once(&rec.lines(), &expected);
}

#[test]
fn repeated_rotations_under_continuous_writes() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    let rec = Rec::default();
    fs::write(&log, b"").unwrap();
    let mut cfg = config(dir.path(), &pat(&log), StartAt::Beginning);
    cfg.rotate_wait = Duration::from_secs(1);
    let run = Running::start(cfg, &rec);
    let mut writer = OpenOptions::new().append(true).open(&log).unwrap();
    let mut expected = Vec::new();
    for round in 0..8 {
        let lines = numbered(&format!("r{round}"), 0..400);
        for chunk in lines.chunks(7) {
            writer.write_all(&joined(chunk)).unwrap();
        }
        expected.extend(lines.iter().cloned());
        // Rotate only once the tailer follows the current file (a file created and rotated
        // away before discovery ever sees it is a known limit).
        let first = lines[0].clone();
        rec.wait_until("current file followed", |l| l.contains(&first));
        // A few lines race with the rename: written to the old file right after it.
        fs::rename(&log, dir.path().join(format!("app.log.{round}"))).unwrap();
        let late = numbered(&format!("late{round}"), 0..3);
        writer.write_all(&joined(&late)).unwrap();
        expected.extend(late);
        writer = OpenOptions::new().create(true).append(true).open(&log).unwrap();
    }
    rec.wait_all(&expected);
    run.stop();
    assert_exactly_once(&rec.lines(), &expected);
}

/// A [`Rec`] that, on the line `trigger`, tells the test and then waits until the test lets
/// it go: the tailer is stopped mid-read at a known point, for as long as the test needs.
struct Gated {
    rec: Rec,
    trigger: Vec<u8>,
    entered: std::sync::mpsc::Sender<()>,
    release: std::sync::mpsc::Receiver<()>,
}

impl LineSink for Gated {
    fn line(&mut self, file: &FileInfo, line: &[u8], pos: LinePos) -> anyhow::Result<()> {
        self.rec.line(file, line, pos)?;
        if line == self.trigger.as_slice() {
            let _ = self.entered.send(());
            let _ = self.release.recv_timeout(DEADLINE);
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<Mark> {
        self.rec.flush()
    }
}

/// What logrotate's `copytruncate` does: copy the file, then truncate it in place.
fn copytruncate(log: &Path, copy: &Path) {
    fs::copy(log, copy).unwrap();
    OpenOptions::new().write(true).open(log).unwrap().set_len(0).unwrap();
}

fn logrotate_bin() -> Option<PathBuf> {
    ["/usr/sbin/logrotate", "/sbin/logrotate", "/usr/bin/logrotate"].into_iter().map(PathBuf::from).find(|p| p.exists())
}

/// Runs the real logrotate, forced, with `copytruncate` on `log` (no compression: the copy is
/// `log.1`, older copies shift to `.2`, ...). The tests that use it are `#[ignore]`d, so that a
/// machine without logrotate reports them as ignored rather than passed; CI installs logrotate
/// and runs them (`cargo test --test tail -- --ignored`).
fn logrotate_copytruncate(dir: &Path, log: &Path) {
    let bin = logrotate_bin().expect("logrotate is not installed (.ci/setup.sh installs it)");
    let conf = dir.join("logrotate.conf");
    fs::write(&conf, format!("{} {{\n\trotate 5\n\tcopytruncate\n\tmissingok\n}}\n", log.display())).unwrap();
    let out = std::process::Command::new(bin)
        .arg("-f")
        .arg("-s")
        .arg(dir.join("logrotate.state"))
        .arg(&conf)
        .output()
        .expect("run logrotate");
    assert!(
        out.status.success(),
        "logrotate failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fs::metadata(log).unwrap().len(), 0, "logrotate did not truncate {}", log.display());
}

/// Stopped with a checkpoint, 1,000 lines appended, `rotate` copies and truncates, restarted:
/// the 1,000 lines come from the copy, then the truncated file from 0; a second restart reads
/// nothing again.
fn restart_across_copytruncate(rotate: impl FnOnce(&Path, &Path)) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let rec = Rec::default();
    let cfg = config(dir.path(), &pat(&log), StartAt::Beginning);
    // More than the 4 KiB fingerprint, as real logs are after a while.
    let one = numbered("one", 0..300);
    fs::write(&log, joined(&one)).unwrap();
    let run = Running::start(cfg.clone(), &rec);
    rec.wait_all(&one);
    run.stop();

    let unread = numbered("unread", 0..1000);
    append(&log, &joined(&unread));
    rotate(dir.path(), &log);
    let new = numbered("new", 0..20);
    append(&log, &joined(&new));

    let run = Running::start(cfg.clone(), &rec);
    let expected = [one.clone(), unread.clone(), new.clone()].concat();
    rec.wait_all(&expected);
    run.wait_stats("copy closed", |s| s.files_tracked == 1);
    let stats = run.stats();
    run.stop();
    let got = rec.lines();
    assert_exactly_once(&got, &expected);
    // The copy is read before the truncated file continues.
    assert_in_order(&got, &[&unread[..], &new].concat());
    assert_eq!(stats.copies, 1, "{stats:?}");
    let from_copy = rec.all().into_iter().find(|g| g.line == unread[0].as_bytes()).unwrap();
    assert_eq!(from_copy.path, dir.path().join("access.log.1"));
    assert_eq!(from_copy.pos.line_number, 301, "line numbers continue in the copy");

    // Restarting again reads neither the copy nor anything else twice.
    let more = numbered("more", 0..5);
    append(&log, &joined(&more));
    let run = Running::start(cfg, &rec);
    rec.wait_all(&more);
    run.stop();
    assert_exactly_once(&rec.lines(), &[expected, more].concat());
}

#[test]
fn restart_across_copytruncate_reads_the_copy_from_the_checkpoint() {
    restart_across_copytruncate(|dir, log| copytruncate(log, &dir.join("access.log.1")));
}

#[test]
#[ignore = "needs logrotate; CI runs it"]
fn restart_across_real_logrotate_copytruncate_loses_nothing() {
    restart_across_copytruncate(logrotate_copytruncate);
}

/// Lines appended while the tailer is busy, then copied and truncated before it reads them.
fn copytruncate_while_running(rotate: impl FnOnce(&Path, &Path)) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let rec = Rec::default();
    fs::write(&log, b"").unwrap();
    let (entered_tx, entered) = std::sync::mpsc::channel();
    let (release, release_rx) = std::sync::mpsc::channel();
    let sink = Gated { rec: rec.clone(), trigger: b"gate".to_vec(), entered: entered_tx, release: release_rx };
    let run = Running::start_with(config(dir.path(), &pat(&log), StartAt::Beginning), sink);
    let mut writer = OpenOptions::new().append(true).open(&log).unwrap();

    let before = numbered("before", 0..100);
    writer.write_all(&joined(&before)).unwrap();
    writer.write_all(b"gate\n").unwrap();
    entered.recv_timeout(DEADLINE).expect("tailer reached the gate");
    // The tailer is inside the sink: nothing below is read before the truncation.
    let unread = numbered("unread", 0..1000);
    for chunk in unread.chunks(10) {
        writer.write_all(&joined(chunk)).unwrap();
    }
    rotate(dir.path(), &log);
    let after = numbered("after", 0..30);
    writer.write_all(&joined(&after)).unwrap();
    release.send(()).unwrap();

    let expected = [before, vec!["gate".to_string()], unread.clone(), after.clone()].concat();
    rec.wait_all(&expected);
    run.wait_stats("copy closed", |s| s.files_tracked == 1);
    let stats = run.stats();
    run.stop();
    let got = rec.lines();
    assert_in_order(&got, &[&unread[..], &after].concat());
    assert_exactly_once(&got, &expected);
    assert!(stats.truncations >= 1 && stats.copies == 1, "{stats:?}");
}

#[test]
fn copytruncate_while_running_reads_unread_lines_from_the_copy() {
    copytruncate_while_running(|dir, log| copytruncate(log, &dir.join("access.log-20261201")));
}

#[test]
#[ignore = "needs logrotate; CI runs it"]
fn real_logrotate_copytruncate_while_running_loses_nothing() {
    copytruncate_while_running(logrotate_copytruncate);
}

#[test]
fn a_copy_already_read_is_not_read_again_for_a_later_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let rec = Rec::default();
    // Every generation of this log starts with the same header, so a later truncation sees
    // the old copy's head match again.
    fs::write(&log, b"#header\n").unwrap();
    let cfg = config(dir.path(), &pat(&log), StartAt::Beginning);
    let run = Running::start(cfg.clone(), &rec);
    rec.wait_until("header", |l| l.len() == 1);
    run.stop();
    let old = numbered("old", 0..10);
    append(&log, &joined(&old));
    copytruncate(&log, &dir.path().join("access.log.1"));
    let run = Running::start(cfg.clone(), &rec);
    rec.wait_all(&old);
    append(&log, b"#header\n");
    rec.wait_until("second header", |l| l.len() == 12);
    run.wait_stats("copy closed", |s| s.files_tracked == 1);
    assert_eq!(run.stats().copies, 1);
    run.stop();

    // Truncated again while stopped, without a new copy: the old one must not be taken for it.
    OpenOptions::new().write(true).open(&log).unwrap().set_len(0).unwrap();
    let new = numbered("new", 0..3);
    append(&log, &joined(&new));
    let run = Running::start(cfg, &rec);
    rec.wait_all(&new);
    let stats = run.stats();
    run.stop();
    assert_eq!(stats.copies, 0, "{stats:?}");
    let expected = [vec!["#header".to_string()], old, vec!["#header".to_string()], new].concat();
    assert_eq!(rec.lines(), expected);
}

/// A [`Rec`] whose flushes become durable only when the test says so (a waiting caller is
/// told they are, as a sink that finishes its work before answering would).
#[derive(Clone, Default)]
struct SlowDurable {
    rec: Rec,
    durable: Arc<AtomicBool>,
    asked: Arc<Mutex<u64>>,
}

impl LineSink for SlowDurable {
    fn line(&mut self, file: &FileInfo, line: &[u8], pos: LinePos) -> anyhow::Result<()> {
        self.rec.line(file, line, pos)
    }

    fn flush(&mut self) -> std::io::Result<Mark> {
        self.rec.flush()
    }

    fn durable(&mut self, wait: bool) -> std::io::Result<bool> {
        *self.asked.lock().unwrap() += 1;
        Ok(wait || self.durable.load(Ordering::SeqCst))
    }
}

fn checkpoint_mark(dir: &Path) -> serde_json::Value {
    let text = fs::read(dir.join("state").join("tail-checkpoints.json")).unwrap();
    serde_json::from_slice::<serde_json::Value>(&text).unwrap()["sink_mark"].clone()
}

/// While the sink's flush is not durable, the tailer keeps reading, takes no new flush and
/// leaves the checkpoint on disk alone; once it is, the checkpoint of that flush is written,
/// and a restart re-reads nothing.
#[test]
fn a_checkpoint_waits_for_the_sinks_flush_to_be_durable_while_reading_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    fs::write(&log, "").unwrap();
    let cfg = config(dir.path(), &pat(&log), StartAt::Beginning);
    let sink = SlowDurable::default();
    let run = Running::start_with(cfg.clone(), sink.clone());
    let on_disk = checkpoint_mark(dir.path());
    assert_eq!(on_disk, serde_json::json!(0), "start-up checkpoint, before any line");

    sink.durable.store(false, Ordering::SeqCst);
    let first = numbered("first", 0..10);
    append(&log, &joined(&first));
    sink.rec.wait_all(&first);
    // The periodic checkpoint flushes once, then waits.
    let asked = *sink.asked.lock().unwrap();
    let start = Instant::now();
    while *sink.asked.lock().unwrap() < asked + 3 {
        assert!(start.elapsed() < DEADLINE, "the tailer never asked whether its flush was durable");
        thread::sleep(Duration::from_millis(10));
    }
    let flushed = *sink.rec.last_mark.lock().unwrap();
    assert_eq!(flushed, Some(10), "flushed after the first lines");
    let second = numbered("second", 0..10);
    append(&log, &joined(&second));
    sink.rec.wait_all(&second);
    thread::sleep(Duration::from_millis(300));
    assert_eq!(*sink.rec.last_mark.lock().unwrap(), flushed, "no new flush while one is pending");
    assert_eq!(checkpoint_mark(dir.path()), on_disk, "nothing written while the flush is not durable");

    let written = run.stats().checkpoints;
    sink.durable.store(true, Ordering::SeqCst);
    run.wait_stats("the deferred checkpoint", |s| s.checkpoints > written);
    run.stop();
    assert_eq!(checkpoint_mark(dir.path()), serde_json::json!(20), "the final checkpoint covers every line");

    let again = Rec::default();
    let run = Running::start(cfg, &again);
    thread::sleep(Duration::from_millis(300));
    run.stop();
    assert!(again.lines().is_empty(), "nothing read twice: {:?}", again.lines());
}
