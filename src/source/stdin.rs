//! Lines of standard input, as a [`Source`] for the daemon.
//!
//! Standard input is a stream: what was read cannot be read again, so there is no checkpoint
//! and each line is a message of this run ([`Origin::Message`] with a stream identity drawn
//! at start). A reader thread does the blocking reads, so that the loop still sees the stop
//! flag and calls `tick` while no input comes. The end of input ends the source (after a
//! last flush).

use std::io::{BufRead, Read};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use crossbeam_channel::RecvTimeoutError;

use super::{EventSink, Source, Whence};
use crate::event::{Event, Origin};

/// How long the loop waits for a line before it looks at the stop flag and ticks.
const WAIT: Duration = Duration::from_millis(200);
/// How often effects are made durable while lines come.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

pub struct StdinSource {
    source: usize,
    max_line_bytes: usize,
}

impl StdinSource {
    /// Lines of standard input for configured source `source`, cut at `max_line_bytes`.
    pub fn new(source: usize, max_line_bytes: usize) -> StdinSource {
        StdinSource { source, max_line_bytes: max_line_bytes.max(1) }
    }
}

/// A line read, and whether it was cut.
type Line = (Vec<u8>, bool);

impl Source for StdinSource {
    fn run(&mut self, sink: &mut dyn EventSink, stop: &AtomicBool) -> anyhow::Result<()> {
        let (tx, rx) = crossbeam_channel::bounded::<std::io::Result<Line>>(1024);
        let max = self.max_line_bytes;
        // Detached: a thread blocked in read(2) on a terminal cannot be woken; it ends with
        // the process.
        std::thread::Builder::new().name("stdin".into()).spawn(move || {
            let mut input = std::io::stdin().lock();
            loop {
                match read_line(&mut input, max) {
                    Ok(Some(l)) => {
                        if tx.send(Ok(l)).is_err() {
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                }
            }
        })?;
        let stream = fastrand::u64(..);
        let at = Whence { source: self.source, path: Path::new("-"), host: None };
        let mut sequence = 0u64;
        let mut deliver = |sink: &mut dyn EventSink, line: &[u8], truncated: bool| {
            sequence += 1;
            let origin = Origin::Message { stream, sequence };
            sink.event(&at, &Event::line(line, origin, Utc::now(), truncated))
        };
        let (mut flushed, mut ticked) = (Instant::now(), Instant::now());
        while !stop.load(Ordering::Relaxed) {
            match rx.recv_timeout(WAIT) {
                Ok(Ok((line, truncated))) => deliver(sink, &line, truncated)?,
                Ok(Err(e)) => {
                    sink.flush()?;
                    return Err(anyhow::Error::new(e).context("cannot read standard input"));
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            // Periodic work between lines, not after each one: a busy pipe delivers thousands
            // of lines per tick.
            if flushed.elapsed() >= FLUSH_EVERY {
                // A failed flush (disk full) is retried at the next interval: the stream
                // cannot be read again, so stopping would lose it.
                if let Err(e) = sink.flush() {
                    tracing::warn!(error = %e, "flush failed; retrying");
                }
                flushed = Instant::now();
            }
            if ticked.elapsed() >= WAIT {
                sink.tick();
                ticked = Instant::now();
            }
        }
        // Lines already read from the pipe cannot be read again: handle them before stopping.
        for msg in rx.try_iter() {
            match msg {
                Ok((line, truncated)) => deliver(sink, &line, truncated)?,
                Err(_) => break,
            }
        }
        sink.flush()?;
        Ok(())
    }
}

/// One line without its newline (a '\r' before it is kept, as the tailer does), cut at `max`
/// bytes with the rest of the line skipped; `None` at the end of input. A last line without
/// a newline is delivered.
fn read_line(input: &mut impl BufRead, max: usize) -> std::io::Result<Option<Line>> {
    let mut line = Vec::new();
    let n = input.by_ref().take((max as u64).saturating_add(1)).read_until(b'\n', &mut line)?;
    if n == 0 {
        return Ok(None);
    }
    if line.last() == Some(&b'\n') {
        line.pop();
        return Ok(Some((line, false)));
    }
    if line.len() <= max {
        return Ok(Some((line, false))); // end of input without a newline
    }
    line.truncate(max);
    // Skip the rest of the over-long line.
    let mut rest = Vec::new();
    loop {
        rest.clear();
        let n = input.by_ref().take(64 << 10).read_until(b'\n', &mut rest)?;
        if n == 0 || rest.last() == Some(&b'\n') {
            break;
        }
    }
    Ok(Some((line, true)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_split_cut_and_the_last_one_kept() {
        let long = "x".repeat(100);
        let data = format!("a\r\n{long}\nb\nlast");
        let mut input = std::io::Cursor::new(data.into_bytes());
        let mut got = Vec::new();
        while let Some(l) = read_line(&mut input, 10).unwrap() {
            got.push(l);
        }
        let want: Vec<Line> = vec![
            (b"a\r".to_vec(), false),
            (b"xxxxxxxxxx".to_vec(), true),
            (b"b".to_vec(), false),
            (b"last".to_vec(), false),
        ];
        assert_eq!(got, want);
    }
}
