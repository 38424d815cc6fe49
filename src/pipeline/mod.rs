//! **pipeline**: events in, detections out — the one path every command uses.
//!
//! ```text
//! Event ──▶ parse (the source's format) + the source's own fields
//!       ──▶ RuleSet::match_event   (stateless: prefilter, conditions; any thread)
//!       ──▶ Detector::decide       (ordered: thresholds, suppression, on event time)
//!       ──▶ Detection ──▶ DetectionSink (the actions of `run`, the printer of `scan`,
//!                                         the collector of `test`)
//! ```
//!
//! [`Pipeline::process`] does all of it for one event. `scan` splits it in two to keep every
//! core busy: [`batch::match_block`] runs the stateless part on blocks in parallel, and
//! [`Pipeline::decide_block`] the ordered part in file order. Both give the same detections.
//!
//! - [`setup`]: config → parsers → compiled rules (a [`Setup`]);
//! - [`batch`]: the parallel stage over newline-aligned blocks;
//! - [`redact`]: secrets (passwords, tokens, session ids) masked in every detection before any
//!   sink sees it; rules are evaluated on the real values.

pub mod batch;
pub mod redact;
pub mod setup;

use std::sync::Arc;

use anyhow::Result;

pub use setup::{AdHoc, Setup, SourceSetup};

use crate::engine::{Detection, Detector, Fired, HitKeys, RuleSet, Scratch, SourceInfo};
use crate::event::Event;

/// How many matching lines ahead [`Pipeline::decide_block`] touches the windows of
/// ([`Detector::touch`]).
const TOUCH_AHEAD: usize = 4;

/// Where detections go. Returning an error stops the caller before it moves past the event
/// (a checkpoint never passes an event whose detections were not handled).
pub trait DetectionSink {
    fn detection(&mut self, d: Detection) -> Result<()>;

    /// Whether this sink reads the detections handed to it. One that does not (`scan -q`
    /// only prints the counts) gets none: building a detection (the line, every field, the
    /// redaction) costs more than matching the line did, and it would be dropped unread.
    fn wants_detections(&self) -> bool {
        true
    }
}

/// A sink that reads no detection: the pipeline only counts them.
pub struct CountOnly;

impl DetectionSink for CountOnly {
    fn detection(&mut self, _: Detection) -> Result<()> {
        Ok(())
    }

    fn wants_detections(&self) -> bool {
        false
    }
}

impl<F: FnMut(Detection) -> Result<()>> DetectionSink for F {
    fn detection(&mut self, d: Detection) -> Result<()> {
        self(d)
    }
}

/// Counters of a pipeline.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counts {
    pub events: u64,
    /// Events whose raw bytes the source's format did not recognise.
    pub unparsed: u64,
    pub detections: u64,
}

/// A compiled rule set with its cross-line state: turns events into detections.
pub struct Pipeline {
    setup: Arc<Setup>,
    detector: Detector,
    scratch: Scratch,
    keys: Vec<HitKeys>,
    fired: Vec<Fired>,
    /// The detections of the event being handled.
    out: Vec<Detection>,
    max_keys: usize,
    pub counts: Counts,
}

impl Pipeline {
    /// `max_keys`: most group keys tracked per threshold or suppression rule.
    pub fn new(setup: Setup, max_keys: usize) -> Pipeline {
        let detector = Detector::new(Arc::clone(&setup.rules), max_keys);
        let scratch = setup.rules.scratch();
        Pipeline {
            setup: Arc::new(setup),
            detector,
            scratch,
            keys: Vec::new(),
            fired: Vec::new(),
            out: Vec::new(),
            max_keys,
            counts: Counts::default(),
        }
    }

    /// The rules and sources, shareable with threads that match in parallel.
    pub fn setup(&self) -> &Arc<Setup> {
        &self.setup
    }

    pub fn rules(&self) -> &Arc<RuleSet> {
        &self.setup.rules
    }

    pub fn sources(&self) -> &[SourceSetup] {
        &self.setup.sources
    }

    pub fn detector(&self) -> &Detector {
        &self.detector
    }

    pub fn detector_mut(&mut self) -> &mut Detector {
        &mut self.detector
    }

    /// The rules that matched the last event given to [`Pipeline::process`] (ascending), and
    /// its parsed record.
    pub fn last_match(&self) -> (&[u32], &crate::parse::Record) {
        (&self.scratch.hits, &self.scratch.record)
    }

    /// Swaps in a new rule set, keeping the threshold and suppression state of every rule
    /// whose matching and grouping did not change. Returns how many rules kept their state.
    pub fn replace(&mut self, setup: Setup) -> usize {
        // The old rules' evaluation counts go with their stats (carried over by id).
        self.drain_profile();
        let every = self.scratch.profile.as_ref().map(|p| p.every);
        let mut detector = Detector::new(Arc::clone(&setup.rules), self.max_keys);
        let old = std::mem::replace(&mut self.detector, Detector::new(Arc::clone(&setup.rules), 1));
        let kept = detector.carry_over(old);
        self.detector = detector;
        self.scratch = setup.rules.scratch();
        if let Some(every) = every {
            self.scratch.profile = Some(crate::engine::Profile::new(setup.rules.rules.len(), every));
        }
        self.setup = Arc::new(setup);
        kept
    }

    /// Counts every rule evaluation and times those of one event in `every` (see
    /// [`crate::engine::Profile`]); [`Pipeline::drain_profile`] moves the figures into the
    /// rules' stats.
    pub fn profile_rules(&mut self, every: u32) {
        self.scratch.profile = Some(crate::engine::Profile::new(self.setup.rules.rules.len(), every));
    }

    /// Adds the evaluation counts and estimated times gathered since the last call to the
    /// detector's per-rule stats.
    pub fn drain_profile(&mut self) {
        let Some(p) = &mut self.scratch.profile else { return };
        let every = p.every as u64;
        let (evals, nanos) = p.take();
        for ((st, e), n) in self.detector.stats.iter_mut().zip(evals).zip(nanos) {
            st.evaluations += e;
            st.eval_nanos += n * every;
        }
    }

    /// One event of source `src` (an index into [`Pipeline::sources`]): match, thresholds,
    /// suppression; every detection goes to `sink`, in rule order. Stops at the first error
    /// of the sink.
    pub fn process(
        &mut self,
        src: usize,
        info: &SourceInfo,
        ev: &Event<'_>,
        sink: &mut (impl DetectionSink + ?Sized),
    ) -> Result<()> {
        self.counts.events += 1;
        let rules = &self.setup.rules;
        let source = &self.setup.sources[src];
        let s = &mut self.scratch;
        // An event made of the source's own fields (a file change) has nothing to parse.
        if !rules.match_event(&source.parser, &source.applicable, ev, s) && ev.fields.is_empty() {
            self.counts.unparsed += 1;
        }
        self.detector.count_held(&s.held);
        if s.hits.is_empty() {
            return Ok(());
        }
        let event = ev.time.or_else(|| s.time.event_time(&source.parser, ev.raw, &s.record));
        self.keys.clear();
        rules.hit_keys(ev.raw, &s.record, &s.hits, &mut s.key_buf, &mut self.keys);
        self.detector.decide(event.map(|t| t.timestamp_millis()), ev.arrival, &s.hits, &self.keys, &mut self.fired);
        if self.detector.wants_values() {
            self.detector.record_values(ev.raw, &s.record);
        }
        if !sink.wants_detections() {
            self.counts.detections += self.emitted();
            return Ok(());
        }
        self.out.clear();
        for f in &self.fired {
            self.out.push(self.detector.detection(f, event, info, ev, &s.record));
        }
        self.emit(sink)
    }

    /// Hands the detections of one event in `out` to `sink`: merged per class (when set),
    /// redacted, counted.
    fn emit(&mut self, sink: &mut (impl DetectionSink + ?Sized)) -> Result<()> {
        if self.setup.one_per_class && self.out.len() > 1 {
            merge_classes(&mut self.out);
        }
        for mut d in self.out.drain(..) {
            self.counts.detections += 1;
            self.setup.redact.apply(&mut d);
            sink.detection(d)?;
        }
        Ok(())
    }

    /// The ordered stage for the events of one block matched by [`batch::match_block`]:
    /// thresholds and suppression in order; an event that emits a detection is parsed again
    /// (the only time the ordered stage parses).
    #[allow(clippy::too_many_arguments)]
    pub fn decide_block(
        &mut self,
        src: usize,
        info: &SourceInfo,
        block: &crate::source::read::Block,
        hits: &batch::BlockHits,
        content: u64,
        arrival: chrono::DateTime<chrono::Utc>,
        sink: &mut (impl DetectionSink + ?Sized),
    ) -> Result<()> {
        self.counts.events += hits.lines;
        self.counts.unparsed += hits.unparsed;
        self.detector.count_held(&hits.held);
        let setup = Arc::clone(&self.setup);
        let (rules, source) = (&setup.rules, &setup.sources[src]);
        for (i, h) in hits.hits.iter().enumerate() {
            if let Some(ahead) = hits.hits.get(i + TOUCH_AHEAD) {
                let r = ahead.rules.clone();
                self.detector.touch(&hits.rules[r.clone()], &hits.keys[r]);
            }
            let range = h.rules.clone();
            self.detector.decide(h.time, arrival, &hits.rules[range.clone()], &hits.keys[range], &mut self.fired);
            // The texts of new distinct values are for detections: a sink that reads none
            // needs none, and the line is not parsed again for them.
            let values = self.detector.wants_values() && sink.wants_detections();
            if self.fired.is_empty() && !values {
                continue;
            }
            if !sink.wants_detections() {
                self.counts.detections += self.emitted();
                continue;
            }
            let (raw, truncated) = batch::cap(&block.data[h.start..h.end], hits.max_line_bytes);
            source.parser.parse(raw, &mut self.scratch.record, rules.registry.len());
            // The fields the line's matching rules extracted when it was matched (for their
            // distinct values and detections).
            for &ri in &hits.rules[h.rules.clone()] {
                let s = &mut self.scratch;
                let _ = rules.extract(ri as usize, raw, &mut s.record, &mut s.extract);
            }
            if values {
                self.detector.record_values(raw, &self.scratch.record);
            }
            if self.fired.is_empty() {
                continue;
            }
            let origin =
                crate::event::Origin::Line { content, offset: block.offset + h.start as u64, line_number: h.line };
            let ev = Event::line(raw, origin, arrival, truncated);
            let event = h.time.and_then(chrono::DateTime::from_timestamp_millis);
            self.out.clear();
            for f in &self.fired {
                self.out.push(self.detector.detection(f, event, info, &ev, &self.scratch.record));
            }
            self.emit(sink)?;
        }
        Ok(())
    }
}

impl Pipeline {
    /// How many detections [`Pipeline::emit`] would hand on for the rules in `self.fired`:
    /// the same count as building and merging them, without building any.
    fn emitted(&self) -> u64 {
        let n = self.fired.len();
        if !self.setup.one_per_class || n < 2 {
            return n as u64;
        }
        let rules = &self.setup.rules.rules;
        let class = |f: &Fired| -> Option<&str> {
            let c = rules[f.rule as usize].info.class.as_str();
            // What `merge_classes` leaves alone: thresholds and sequences (both carry
            // `threshold`), and rules without a class.
            (f.threshold.is_none() && c != "other").then_some(c)
        };
        // Every unmergeable detection, plus one per class among the mergeable ones.
        self.fired
            .iter()
            .enumerate()
            .filter(|&(i, f)| match class(f) {
                None => true,
                Some(c) => !self.fired[..i].iter().any(|g| class(g) == Some(c)),
            })
            .count() as u64
    }
}

/// One detection per attack class among the detections of one line: the most severe of each
/// class (the first on a tie, i.e. in rule order) names the others in `also` and takes their
/// actions. Threshold and sequence detections (a count crossed, a chain completed: not a
/// request's content) and rules without a class are left alone.
fn merge_classes(dets: &mut Vec<Detection>) {
    let mergeable = |d: &Detection| d.threshold.is_none() && d.sequence.is_none() && d.rule.class != "other";
    let mut i = 0;
    while i < dets.len() {
        if mergeable(&dets[i]) {
            let mut j = i + 1;
            while j < dets.len() {
                if mergeable(&dets[j]) && dets[j].rule.class == dets[i].rule.class {
                    let mut other = dets.remove(j);
                    if other.rule.severity > dets[i].rule.severity {
                        std::mem::swap(&mut dets[i], &mut other);
                    }
                    let keep = &mut dets[i];
                    keep.also.push(other.rule.id.clone());
                    keep.also.append(&mut other.also);
                    for a in other.actions {
                        if !keep.actions.contains(&a) {
                            keep.actions.push(a);
                        }
                    }
                } else {
                    j += 1;
                }
            }
        }
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Origin;

    /// What exceptions held back is counted per name, and a reload keeps the counts of the
    /// names that remain.
    #[test]
    fn held_back_counts_survive_a_reload_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let rules = |extra: &str| {
            format!(
                "exceptions:\n  - name: scanner\n    match: {{field: client_ip, cidr: 192.0.2.10}}\n{extra}rules:\n  - id: t.admin\n    title: t\n    severity: high\n    match: {{field: path, starts_with: /admin}}\n"
            )
        };
        std::fs::write(dir.path().join("r.yml"), rules("")).unwrap();
        let adhoc = [AdHoc { name: "web", format: "combined", timezone: None }];
        let build = || setup::build(None, &[dir.path().to_path_buf()], &adhoc).unwrap();
        let mut p = Pipeline::new(build(), 16);
        let info = p.sources()[0].info("/x");
        let line = b"192.0.2.10 - - [10/Oct/2024:13:55:36 +0000] \"GET /admin HTTP/1.1\" 200 1 \"-\" \"-\"";
        let ev = Event::line(line, Origin::Line { content: 0, offset: 0, line_number: 1 }, chrono::Utc::now(), false);
        let mut n = 0;
        p.process(0, &info, &ev, &mut |_: Detection| {
            n += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(n, 0);
        assert_eq!(p.detector().held_back().collect::<Vec<_>>(), [("scanner", 1)]);
        assert_eq!(p.detector().stats[0].excepted, 1);
        std::fs::write(
            dir.path().join("r.yml"),
            rules("  - name: health\n    match: {field: path, equals: /admin/health}\n"),
        )
        .unwrap();
        p.replace(build());
        assert_eq!(p.detector().held_back().collect::<Vec<_>>(), [("scanner", 1), ("health", 0)]);
    }

    /// An event made of fields the source produced itself (a file-state change, say) is
    /// evaluated like a parsed line; the source's fields win over what the format parsed.
    #[test]
    fn fields_from_the_source_are_matched_and_win_over_parsed_ones() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("r.yml"),
            "rules:\n  - id: t.upload\n    title: t\n    severity: high\n    class: webshell\n    match: {all: [{field: path, ends_with: .php}, {field: kind, equals: created}]}\n",
        )
        .unwrap();
        let adhoc = [AdHoc { name: "web", format: "combined", timezone: None }];
        let setup = setup::build(None, &[dir.path().to_path_buf()], &adhoc).unwrap();
        let info = setup.sources[0].info("/srv/www");
        let mut p = Pipeline::new(setup, 16);
        let mut got = Vec::new();
        let t = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let fields: [(&str, &[u8]); 2] = [("path", b"/uploads/x.php"), ("kind", b"created")];
        let ev = Event {
            origin: Origin::Object { object: 1, version: 2 },
            raw: b"",
            fields: &fields,
            time: Some(t),
            arrival: t,
            truncated: false,
        };
        p.process(0, &info, &ev, &mut |d: Detection| {
            got.push(d);
            Ok(())
        })
        .unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].fields["path"], "/uploads/x.php");
        assert_eq!(got[0].event_time, t);
        assert_eq!(got[0].key, Origin::Object { object: 1, version: 2 }.idempotency_key("t.upload"));
        // A parsed line whose own path is not .php, with the source saying it is: the source wins.
        let line = b"203.0.113.7 - - [10/Oct/2024:13:55:36 +0000] \"GET /a.txt HTTP/1.1\" 200 1 \"-\" \"-\"";
        let ev = Event { raw: line, origin: Origin::Line { content: 0, offset: 0, line_number: 1 }, ..ev };
        got.clear();
        p.process(0, &info, &ev, &mut |d: Detection| {
            got.push(d);
            Ok(())
        })
        .unwrap();
        assert_eq!(got.len(), 1, "fields of the source replace the parsed path");
        assert_eq!(got[0].fields["client_ip"], "203.0.113.7");
    }
}
