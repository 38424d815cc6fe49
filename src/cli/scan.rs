//! `trapline scan`: the production engine over existing files.
//!
//! Matching runs in parallel over newline-aligned blocks (rayon); the cross-line state
//! (thresholds, suppression) then runs over the hits in file order, on event time, so the
//! result is the same as tailing the file live, and independent of the thread count.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use chrono::Utc;
use clap::Args;

use super::setup::InputArgs;
use crate::action::console::Console;
use crate::config;
use crate::engine::Detection;
use crate::pipeline::batch::{self, BlockHits};
use crate::pipeline::{CountOnly, DetectionSink, Pipeline};
use crate::source::read::{Block, BlockReader};

#[derive(Debug, Args)]
pub struct ScanArgs {
    /// Files to scan (`-` for stdin; `.gz` is decompressed).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    #[command(flatten)]
    pub input: InputArgs,
    /// Print detections as JSON lines.
    #[arg(long)]
    pub json: bool,
    /// Exit with status 1 when anything was detected.
    #[arg(long)]
    pub fail_on_match: bool,
    /// Only print the summary.
    #[arg(long, short)]
    pub quiet: bool,
    /// Matching threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Longer lines are cut to this many bytes.
    #[arg(long, default_value_t = 1 << 20)]
    pub max_line_bytes: usize,
}

/// Bytes per block handed to one matching thread.
const BLOCK: usize = 256 << 10;

/// A block being matched: its result arrives on the receiver.
type Pending = std::io::Result<crossbeam_channel::Receiver<(Block, BlockHits)>>;

pub fn scan(a: ScanArgs) -> Result<i32> {
    let (cfg, _, setup) = a.input.setup("scan")?;
    let pool = rayon::ThreadPoolBuilder::new().num_threads(a.threads.unwrap_or(0)).build()?;
    let max_keys = cfg.as_ref().map_or(crate::engine::DEFAULT_MAX_KEYS, |c| c.config.max_keys);
    let mut pipeline = Pipeline::new(setup, max_keys);
    let setup = Arc::clone(pipeline.setup());
    let (rules, source) = (&setup.rules, &setup.sources[0]);
    let console = Console::for_stdout();
    let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
    let started = Instant::now();
    let mut bytes = 0u64;
    for file in &a.files {
        let mut reader = BlockReader::open(file).with_context(|| format!("cannot open {}", file.display()))?;
        let path = file.display().to_string();
        let info = source.info(&path);
        let content = xxhash_rust::xxh3::xxh3_64(path.as_bytes());
        // Two stages, overlapped: a reader thread reads blocks and hands each to the pool to
        // be matched, as a task of its own; this thread applies thresholds and suppression to
        // the hits, in file order, as each block's result arrives. There is no batch barrier:
        // the pool always has blocks queued, so a matching thread never idles while the
        // other finishes a batch, and this thread's work shares the cores with it.
        let in_flight = pool.current_num_threads() * 4;
        let (tx, rx) = crossbeam_channel::bounded::<Pending>(in_flight);
        // Blocks done with go back to the reader, whose next block reuses their buffer.
        let (done_tx, done_rx) = crossbeam_channel::bounded::<Vec<u8>>(in_flight + 2);
        let scratches = std::sync::Mutex::new(Vec::new());
        let max_line = a.max_line_bytes;
        std::thread::scope(|scope| -> Result<()> {
            // Owned by each side, so that either side finishing (or failing) ends the other:
            // a dropped sender ends the receiving loop, a dropped receiver fails the send.
            let rx = rx;
            let (reader, scratches, pool) = (&mut reader, &scratches, &pool);
            scope.spawn(move || {
                let tx = tx;
                pool.in_place_scope(|tasks| {
                    loop {
                        let reuse = done_rx.try_recv().unwrap_or_default();
                        let b = match reader.next_block_in(BLOCK, reuse) {
                            Ok(Some(b)) => b,
                            Ok(None) => return,
                            Err(e) => {
                                let _ = tx.send(Err(e));
                                return;
                            }
                        };
                        let (one_tx, one_rx) = crossbeam_channel::bounded(1);
                        // In file order: the receiver takes results in the order blocks were read.
                        if tx.send(Ok(one_rx)).is_err() {
                            return;
                        }
                        tasks.spawn(move |_| {
                            let mut s =
                                scratches.lock().ok().and_then(|mut v| v.pop()).unwrap_or_else(|| rules.scratch());
                            let hits = batch::match_block(rules, source, &b, max_line, &mut s);
                            if let Ok(mut v) = scratches.lock() {
                                v.push(s);
                            }
                            let _ = one_tx.send((b, hits));
                        });
                    }
                });
            });
            let mut printer = |d: Detection| -> Result<()> { print(&mut stdout, &console, &d, a.json) };
            // Quiet, only the counts are printed: no detection needs building.
            let sink: &mut dyn DetectionSink = if a.quiet { &mut CountOnly } else { &mut printer };
            for msg in rx.iter() {
                let one = msg.with_context(|| format!("cannot read {}", file.display()))?;
                // A task that panicked dropped its sender: stop rather than skip its lines.
                let (b, r) = one.recv().context("matching a block failed")?;
                bytes += b.data.len() as u64;
                pipeline.decide_block(0, &info, &b, &r, content, Utc::now(), sink)?;
                let _ = done_tx.try_send(b.data);
            }
            Ok(())
        })?;
    }
    stdout.flush()?;
    drop(stdout);
    summary(&pipeline, bytes, started.elapsed().as_secs_f64());
    Ok(if a.fail_on_match && pipeline.counts.detections > 0 { 1 } else { 0 })
}

/// The rule paths a command uses: the ones given, else the config's, else `rules/`.
pub fn rule_paths(given: &[PathBuf], cfg: Option<&config::Loaded>) -> Vec<PathBuf> {
    if !given.is_empty() {
        given.to_vec()
    } else if let Some(c) = cfg {
        c.config.rules.iter().map(|r| c.resolve(r)).collect()
    } else {
        vec![PathBuf::from("rules")]
    }
}

fn print(out: &mut impl Write, console: &Console, d: &Detection, json: bool) -> Result<()> {
    let r = if json {
        serde_json::to_writer(&mut *out, d).map_err(std::io::Error::from).and_then(|_| out.write_all(b"\n"))
    } else {
        writeln!(out, "{}", console.format(d))
    };
    match r {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}

fn summary(p: &Pipeline, bytes: u64, secs: f64) {
    let (rules, det) = (p.rules(), p.detector());
    let crate::pipeline::Counts { events: lines, unparsed, detections } = p.counts;
    let mut e = std::io::stderr().lock();
    let secs = secs.max(1e-9);
    let _ = writeln!(e, "\n{:<44} {:>10} {:>10} {:>10} {:>10}", "rule", "hits", "detected", "suppressed", "excepted");
    let mut any = false;
    for (r, st) in rules.rules.iter().zip(&det.stats) {
        if st.hits > 0 || st.excepted > 0 {
            any = true;
            let _ = writeln!(
                e,
                "{:<44} {:>10} {:>10} {:>10} {:>10}",
                r.id, st.hits, st.detections, st.suppressed, st.excepted
            );
        }
    }
    if !any {
        let _ = writeln!(e, "(no rule matched)");
    }
    let held: Vec<String> = det.held_back().filter(|(_, n)| *n > 0).map(|(name, n)| format!("{name} {n}")).collect();
    if !held.is_empty() {
        let _ = writeln!(e, "\nheld back by exceptions: {}", held.join(", "));
    }
    let _ = writeln!(
        e,
        "\n{lines} lines ({unparsed} unparsed), {:.1} MB in {secs:.3} s: {:.0} lines/s, {:.1} MB/s; {detections} detections from {} rules",
        bytes as f64 / 1e6,
        lines as f64 / secs,
        bytes as f64 / 1e6 / secs,
        rules.rules.len()
    );
}
