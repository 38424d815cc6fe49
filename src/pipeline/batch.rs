//! The stateless stage over whole blocks of lines, for running on many threads at once.
//!
//! Matching a block yields everything the ordered stage ([`super::Pipeline::decide_block`])
//! needs: per matching line its place, event time and the hashed threshold and suppression
//! keys of each matching rule. The ordered stage then never parses a line unless that line
//! emits a detection.

use crate::engine::{HitKeys, RuleSet, Scratch};
use crate::source::read::Block;

use super::SourceSetup;

/// A line with matches: where it is in its block, its line number, its event time (ms since
/// the epoch, `None` when it has none), and its range in [`BlockHits::rules`] and
/// [`BlockHits::keys`].
#[derive(Debug)]
pub struct Hit {
    pub start: usize,
    pub end: usize,
    pub line: u64,
    pub time: Option<i64>,
    pub rules: std::ops::Range<usize>,
}

/// The matching stage's result for one block.
#[derive(Debug, Default)]
pub struct BlockHits {
    pub lines: u64,
    pub unparsed: u64,
    pub hits: Vec<Hit>,
    /// Matching rule indexes of all hits, back to back (one allocation per block, not per hit).
    pub rules: Vec<u32>,
    /// The threshold and suppression keys of each entry of `rules`.
    pub keys: Vec<HitKeys>,
    /// (rule, exception) of every line an exception held back, for the counts.
    pub held: Vec<(u32, u32)>,
    /// Lines were cut to this many bytes.
    pub max_line_bytes: usize,
}

/// `line` cut to `max` bytes, and whether it was cut.
pub fn cap(line: &[u8], max: usize) -> (&[u8], bool) {
    if line.len() > max { (&line[..max], true) } else { (line, false) }
}

/// Matches every line of `b` (cut to `max` bytes) against the rules that apply to `src`.
pub fn match_block(rules: &RuleSet, src: &SourceSetup, b: &Block, max: usize, s: &mut Scratch) -> BlockHits {
    let mut out = BlockHits { max_line_bytes: max, ..BlockHits::default() };
    for (i, (start, line)) in b.lines().enumerate() {
        let (line, _) = cap(line, max);
        out.lines += 1;
        if !rules.match_line(&src.parser, &src.applicable, line, s) {
            out.unparsed += 1;
        }
        out.held.extend_from_slice(&s.held);
        if !s.hits.is_empty() {
            let full = start + line.len();
            let from = out.rules.len();
            out.rules.extend_from_slice(&s.hits);
            rules.hit_keys(line, &s.record, &s.hits, &mut s.key_buf, &mut out.keys);
            let time = s.time.event_time(&src.parser, line, &s.record).map(|t| t.timestamp_millis());
            out.hits.push(Hit { start, end: full, line: b.first_line + i as u64, time, rules: from..out.rules.len() });
        }
    }
    out
}
