//! **engine**: the compiled rule set and the decision for each line.
//!
//! - [`compile`]: model → compiled rules (conditions over views, thresholds, suppression).
//! - [`prefilter`]: one literal automaton across all rules; picks candidate rules per line.
//! - [`condition`], [`view`], [`transform`], [`literal`]: evaluating a candidate rule.
//! - [`window`]: thresholds and suppression across lines; [`sequence`]: steps of sequence
//!   rules in order; [`detector`]: the ordered stage that steps them and builds detections.
//! - [`detection`]: what comes out.
//! - [`content`]: `content:` rules over a file's bytes, name and size (their own literal
//!   prefilter; nothing of it runs per log line).
//!
//! The split between [`RuleSet`] (immutable, shared by all threads) and [`Detector`] (the
//! cross-line state, owned by one thread) is what lets `scan` match in parallel and still
//! apply thresholds in file order.

pub mod compile;
pub mod condition;
pub mod content;
pub mod detection;
pub mod detector;
pub mod extract;
pub mod literal;
pub mod prefilter;
pub mod sequence;
pub mod transform;
pub mod view;
pub mod when;
pub mod window;

pub use compile::{CompileOptions, CompiledRule};
use condition::{Ctx, EventTime};
pub use detection::Detection;
pub use detector::{DEFAULT_MAX_KEYS, Detector, Fired, HitKeys, RuleStats, SourceInfo, TimeCache};
use prefilter::{Bits, Prefilter, PrefilterScratch, Requirement};
use view::{ViewCache, Views};

use crate::parse::{FieldRegistry, Parser, Record};
use crate::rule::{Loaded, RuleErrors};

/// An immutable, compiled set of rules. Share it with `Arc`; swap it whole to reload.
#[derive(Debug)]
pub struct RuleSet {
    pub rules: Vec<CompiledRule>,
    /// Every exception, once each (rules refer to them by index: [`CompiledRule::except`]).
    pub exceptions: Vec<compile::CompiledException>,
    /// The names exceptions are counted under ([`compile::CompiledException::name`]).
    pub exception_names: Vec<String>,
    pub registry: FieldRegistry,
    pub(crate) views: Views,
    prefilter: Prefilter,
}

/// Per-thread scratch space for matching. Reused across lines.
#[derive(Debug, Default)]
pub struct Scratch {
    pub record: Record,
    pub(crate) cache: ViewCache,
    cand: Bits,
    /// Rules whose condition matched the last line.
    pub hits: Vec<u32>,
    /// Rules whose condition matched the last line but an exception held back: (rule,
    /// exception), both indexes.
    pub held: Vec<(u32, u32)>,
    /// For callers that prepare the cross-line stage on this thread (see [`detector`]).
    pub time: TimeCache,
    pub key_buf: Vec<u8>,
    prefilter: PrefilterScratch,
    /// Capture locations of the rules' `extract` regexes.
    pub extract: extract::ExtractScratch,
    /// Per-rule evaluation counts and sampled times, when asked for ([`Scratch::profile`]).
    pub profile: Option<Profile>,
}

/// What evaluating each rule costs, measured without timing every evaluation: every
/// candidate evaluation is counted, and on one line in `every` each is timed. Reading the
/// clock twice per rule per line would cost more than most rules do (about 20 ns a read);
/// one line in 64 keeps that near 1 %, and the sum of the sampled times times `every` is an
/// unbiased estimate of the total.
///
/// A rule is charged for what its evaluation did, including a transformed view of a field
/// (URL-decoded, lower-cased) it was the first to need on that line; later rules find the
/// view cached.
#[derive(Debug, Clone, Default)]
pub struct Profile {
    pub every: u32,
    left: u32,
    /// Per rule: evaluations (the prefilter made it a candidate), and the nanoseconds of
    /// those timed.
    pub evaluations: Vec<u64>,
    pub nanos: Vec<u64>,
}

impl Profile {
    pub fn new(rules: usize, every: u32) -> Profile {
        Profile { every: every.max(1), left: 0, evaluations: vec![0; rules], nanos: vec![0; rules] }
    }

    /// Whether this line is one of those timed.
    fn sample(&mut self) -> bool {
        if self.left == 0 {
            self.left = self.every - 1;
            true
        } else {
            self.left -= 1;
            false
        }
    }

    /// Takes the counts gathered so far, leaving zeros.
    pub fn take(&mut self) -> (Vec<u64>, Vec<u64>) {
        let n = self.evaluations.len();
        (std::mem::replace(&mut self.evaluations, vec![0; n]), std::mem::replace(&mut self.nanos, vec![0; n]))
    }
}

impl RuleSet {
    /// Compiles every rule of `loaded`. `registry` holds the field names formats already
    /// produce (custom captures); rule field names are added to it.
    pub fn compile(loaded: &Loaded, opts: &CompileOptions, registry: FieldRegistry) -> Result<RuleSet, RuleErrors> {
        let mut registry = registry;
        let mut views = Views::default();
        let (compiled, exceptions, errors) = compile::compile_rules(loaded, opts, &mut registry, &mut views);
        if !errors.is_empty() {
            return Err(RuleErrors(errors));
        }
        // Without errors every exception compiled.
        let exception_names = exceptions.names;
        let exceptions: Vec<_> = exceptions.list.into_iter().flatten().collect();
        let mut rules = Vec::new();
        let mut reqs = Vec::new();
        let mut slots = 0;
        for (mut rule, req) in compiled.into_iter().flatten().flatten() {
            for st in rule.extract.iter_mut().flat_map(|x| x.steps.iter_mut()) {
                st.slot = slots;
                slots += 1;
            }
            // A disabled rule is validated, then kept out of the prefilter entirely.
            let req = if rule.enabled { req } else { Requirement::AnyOf(Vec::new()) };
            if tracing::enabled!(tracing::Level::DEBUG) {
                tracing::debug!(rule = %rule.id, prefilter = %req.describe(), "compiled");
            }
            reqs.push(req);
            rules.push(rule);
        }
        let prefilter = Prefilter::build(&reqs, rules.len(), &views);
        if tracing::enabled!(tracing::Level::DEBUG) {
            for l in prefilter.layout(&registry, &views) {
                tracing::debug!("prefilter {l}");
            }
        }
        Ok(RuleSet { rules, exceptions, exception_names, registry, views, prefilter })
    }

    /// Rules that apply to a source with this name and format.
    pub fn applicable(&self, source: &str, format: &str) -> Bits {
        let mut b = Bits::new(self.rules.len());
        for (i, r) in self.rules.iter().enumerate() {
            let fmt_ok = r.formats.is_empty() || r.formats.iter().any(|f| f == format);
            let src_ok = r.sources.is_empty() || r.sources.iter().any(|s| s == source);
            if r.enabled && fmt_ok && src_ok {
                b.set(i);
            }
        }
        b
    }

    /// Rules that name this source or this format: for sources whose events only rules
    /// written for them understand.
    pub fn applicable_explicitly(&self, source: &str, format: &str) -> Bits {
        let mut b = Bits::new(self.rules.len());
        for (i, r) in self.rules.iter().enumerate() {
            let named = r.formats.iter().any(|f| f == format) || r.sources.iter().any(|s| s == source);
            let fmt_ok = r.formats.is_empty() || r.formats.iter().any(|f| f == format);
            let src_ok = r.sources.is_empty() || r.sources.iter().any(|s| s == source);
            if r.enabled && named && fmt_ok && src_ok {
                b.set(i);
            }
        }
        b
    }

    /// Number of distinct literals in the prefilter, and of rules evaluated on every line.
    pub fn prefilter_stats(&self) -> (usize, usize) {
        (self.prefilter.literals, self.prefilter.always().ones().count())
    }

    pub fn scratch(&self) -> Scratch {
        Scratch {
            record: Record::new(self.registry.len()),
            cache: ViewCache::default(),
            cand: Bits::new(self.rules.len()),
            hits: Vec::new(),
            held: Vec::new(),
            time: TimeCache::default(),
            key_buf: Vec::new(),
            prefilter: PrefilterScratch::default(),
            profile: None,
            extract: extract::ExtractScratch::new(
                self.rules.iter().flat_map(|r| r.extract.iter().flat_map(|x| x.steps.iter().map(|s| &s.re))),
            ),
        }
    }

    /// Runs rule `rule`'s `extract` on a parsed record (nothing without one). `Err(i)`: its
    /// step `i` did not match, so neither does the rule.
    pub fn extract(
        &self,
        rule: usize,
        line: &[u8],
        rec: &mut Record,
        s: &mut extract::ExtractScratch,
    ) -> Result<(), usize> {
        match &self.rules[rule].extract {
            Some(x) => x.apply(line, rec, s),
            None => Ok(()),
        }
    }

    /// Whether a detection of rule `rule` shows field `id`: a rule sees its own captures in
    /// place of the parsed fields of the same names, and no other rule's.
    pub fn shows_field(&self, rule: usize, id: crate::parse::FieldId) -> bool {
        let scope = self.registry.scope(id);
        match &self.rules[rule].extract {
            Some(x) => x.shows(scope, self.registry.name(id)),
            None => scope == 0,
        }
    }

    /// Parses `line` and evaluates the rules in `applicable` against it. The matching rules are
    /// left in `s.hits` (ascending), the parsed record in `s.record`. Returns whether the line
    /// parsed.
    pub fn match_line(&self, parser: &Parser, applicable: &Bits, line: &[u8], s: &mut Scratch) -> bool {
        parser.parse(line, &mut s.record, self.registry.len());
        self.match_parsed(applicable, line, EventTime::Parse(parser), s)
    }

    /// The matching part of [`RuleSet::match_line`], on a record already filled.
    fn match_parsed(&self, applicable: &Bits, line: &[u8], time: EventTime<'_>, s: &mut Scratch) -> bool {
        s.hits.clear();
        s.held.clear();
        s.cache.next_line(self.views.len());
        self.prefilter.candidates(line, &s.record, &self.views, &mut s.cache, &mut s.prefilter, &mut s.cand);
        s.cand.and(applicable);
        if s.cand.is_empty() {
            return s.record.parsed;
        }
        let Some(p) = &mut s.profile else {
            for i in s.cand.ones() {
                // Only now, for a candidate: other lines never pay for a rule's extract.
                if let Some(x) = &self.rules[i].extract
                    && x.apply(line, &mut s.record, &mut s.extract).is_err()
                {
                    continue;
                }
                let mut cx = Ctx { line, record: &s.record, views: &self.views, cache: &mut s.cache, time };
                self.decide_rule(i, &mut cx, &mut s.hits, &mut s.held);
            }
            return s.record.parsed;
        };
        let timed = p.sample();
        for i in s.cand.ones() {
            p.evaluations[i] += 1;
            // The extract is part of what evaluating the rule costs.
            let started = timed.then(std::time::Instant::now);
            let extracted = match &self.rules[i].extract {
                Some(x) => x.apply(line, &mut s.record, &mut s.extract).is_ok(),
                None => true,
            };
            if extracted {
                let mut cx = Ctx { line, record: &s.record, views: &self.views, cache: &mut s.cache, time };
                self.decide_rule(i, &mut cx, &mut s.hits, &mut s.held);
            }
            if let Some(t) = started {
                p.nanos[i] += t.elapsed().as_nanos() as u64;
            }
        }
        s.record.parsed
    }

    /// Candidate rule `i` on this line: a hit, held back by one of its exceptions, or nothing.
    #[inline]
    fn decide_rule(&self, i: usize, cx: &mut Ctx<'_>, hits: &mut Vec<u32>, held: &mut Vec<(u32, u32)>) {
        let rule = &self.rules[i];
        if rule.node.eval(cx) {
            // Exceptions only after the condition matched: lines no rule wants cost nothing.
            match rule.except.iter().find(|&&e| self.exceptions[e as usize].node.eval(cx)) {
                None => hits.push(i as u32),
                Some(&e) => held.push((i as u32, e)),
            }
        }
    }

    /// [`RuleSet::match_line`] for an event: its raw bytes are parsed, then the fields the
    /// source produced itself are added (they win over parsed ones of the same name). Fields
    /// no rule names are not stored: nothing could look at them.
    pub fn match_event(
        &self,
        parser: &Parser,
        applicable: &Bits,
        ev: &crate::event::Event<'_>,
        s: &mut Scratch,
    ) -> bool {
        if ev.fields.is_empty() {
            return self.match_line(parser, applicable, ev.raw, s);
        }
        parser.parse(ev.raw, &mut s.record, self.registry.len());
        for (name, value) in ev.fields {
            if let Some(id) = self.registry.get(name) {
                s.record.set_owned(id, value);
            }
        }
        let time = ev.time.map_or(EventTime::Parse(parser), EventTime::Known);
        self.match_parsed(applicable, ev.raw, time, s)
    }

    /// The name exception `e` (an index into [`RuleSet::exceptions`]) is counted under.
    pub fn exception_name(&self, e: u32) -> &str {
        &self.exception_names[self.exceptions[e as usize].name as usize]
    }

    /// Exception `e` as `explain` names it: `the rule's except` for a rule's own, else
    /// `exception NAME`.
    pub fn describe_exception(&self, e: u32) -> String {
        match self.exceptions[e as usize].kind {
            crate::rule::ExceptionKind::Own => "the rule's `except`".to_string(),
            crate::rule::ExceptionKind::Override => format!("the `except` of override {}", self.exception_name(e)),
            crate::rule::ExceptionKind::Shared => format!("exception {}", self.exception_name(e)),
        }
    }

    pub fn rule_index(&self, id: &str) -> Option<usize> {
        self.rules.iter().position(|r| r.id == id)
    }
}
