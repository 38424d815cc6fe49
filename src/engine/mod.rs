//! **engine**: the compiled rule set and the decision for each line.
//!
//! - [`compile`]: model → compiled rules (conditions over views, thresholds, suppression).
//! - [`prefilter`]: one literal automaton across all rules; picks candidate rules per line.
//! - [`condition`], [`view`], [`transform`], [`literal`]: evaluating a candidate rule.
//! - [`analysis`]: proving parts of a condition can never be true (for `trapline lint`).
//! - [`window`]: thresholds and suppression across lines; [`detector`]: the ordered stage
//!   that steps them and builds detections.
//! - [`detection`]: what comes out.
//!
//! The split between [`RuleSet`] (immutable, shared by all threads) and [`Detector`] (the
//! cross-line state, owned by one thread) is what lets `scan` match in parallel and still
//! apply thresholds in file order.

pub mod analysis;
pub mod compile;
pub mod condition;
pub mod detection;
pub mod detector;
pub mod examples;
pub mod literal;
pub mod prefilter;
pub mod transform;
pub mod view;
pub mod window;

pub use compile::{CompileOptions, CompiledRule};
use condition::Ctx;
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
    pub registry: FieldRegistry,
    views: Views,
    prefilter: Prefilter,
}

/// Per-thread scratch space for matching. Reused across lines.
#[derive(Debug, Default)]
pub struct Scratch {
    pub record: Record,
    cache: ViewCache,
    cand: Bits,
    /// Rules whose condition matched the last line.
    pub hits: Vec<u32>,
    /// For callers that prepare the cross-line stage on this thread (see [`detector`]).
    pub time: TimeCache,
    pub key_buf: Vec<u8>,
    prefilter: PrefilterScratch,
}

impl RuleSet {
    /// Compiles every rule of `loaded`. `registry` holds the field names formats already
    /// produce (custom captures); rule field names are added to it.
    pub fn compile(loaded: &Loaded, opts: &CompileOptions, registry: FieldRegistry) -> Result<RuleSet, RuleErrors> {
        let mut registry = registry;
        let mut views = Views::default();
        let (compiled, errors) = compile::compile_rules(loaded, opts, &mut registry, &mut views);
        if !errors.is_empty() {
            return Err(RuleErrors(errors));
        }
        let mut rules = Vec::new();
        let mut reqs = Vec::new();
        for (rule, req) in compiled.into_iter().flatten() {
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
        Ok(RuleSet { rules, registry, views, prefilter })
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
            time: TimeCache::default(),
            key_buf: Vec::new(),
            prefilter: PrefilterScratch::default(),
        }
    }

    /// Parses `line` and evaluates the rules in `applicable` against it. The matching rules are
    /// left in `s.hits` (ascending), the parsed record in `s.record`. Returns whether the line
    /// parsed.
    pub fn match_line(&self, parser: &Parser, applicable: &Bits, line: &[u8], s: &mut Scratch) -> bool {
        parser.parse(line, &mut s.record, self.registry.len());
        self.match_parsed(applicable, line, s)
    }

    /// The matching part of [`RuleSet::match_line`], on a record already filled.
    fn match_parsed(&self, applicable: &Bits, line: &[u8], s: &mut Scratch) -> bool {
        s.hits.clear();
        s.cache.next_line(self.views.len());
        self.prefilter.candidates(line, &s.record, &self.views, &mut s.cache, &mut s.prefilter, &mut s.cand);
        s.cand.and(applicable);
        if s.cand.is_empty() {
            return s.record.parsed;
        }
        for i in s.cand.ones() {
            let mut cx = Ctx { line, record: &s.record, views: &self.views, cache: &mut s.cache };
            if self.rules[i].node.eval(&mut cx) {
                s.hits.push(i as u32);
            }
        }
        s.record.parsed
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
        self.match_parsed(applicable, ev.raw, s)
    }

    /// Evaluates one rule's condition only (no prefilter, no thresholds), explaining a miss
    /// with the YAML path of the condition that failed.
    pub fn explain_rule(&self, rule: usize, parser: &Parser, line: &[u8], s: &mut Scratch) -> Result<(), String> {
        parser.parse(line, &mut s.record, self.registry.len());
        s.cache.next_line(self.views.len());
        let mut cx = Ctx { line, record: &s.record, views: &self.views, cache: &mut s.cache };
        self.rules[rule].node.explain(&mut cx, "match")
    }

    /// For an explanation: the value the condition at `path` (as returned by
    /// [`RuleSet::explain_rule`]) looked at on the line last given to `explain_rule`, as
    /// `field[transforms] = "value"`, or `field absent`.
    pub fn describe_condition(&self, rule: usize, path: &str, line: &[u8], s: &mut Scratch) -> Option<String> {
        let condition::Node::Leaf(leaf) = self.node_at(rule, path)? else { return None };
        let v = self.views.get(leaf.view);
        let t: Vec<&str> = v.transforms.iter().map(|t| t.as_str()).collect();
        let name = if t.is_empty() {
            self.registry.name(v.field).to_string()
        } else {
            format!("{}[{}]", self.registry.name(v.field), t.join(","))
        };
        Some(match s.cache.get(leaf.view, &self.views, line, &s.record) {
            Some(val) => format!("{name} = {:?}", String::from_utf8_lossy(val)),
            None => format!("{name} is absent"),
        })
    }

    /// What coverage asks a rule's `match` examples to exercise: every alternative of an
    /// `any`, and every value of a literal list with two or more values, in the parts of the
    /// condition that must be true for the rule to match (not under a `not`).
    pub fn coverage_points(&self, rule: usize) -> Vec<CoveragePoint> {
        fn walk(n: &condition::Node, path: &str, out: &mut Vec<CoveragePoint>) {
            match n {
                condition::Node::Any(v) => {
                    for (i, c) in v.iter().enumerate() {
                        let p = format!("{path}.any[{i}]");
                        out.push(CoveragePoint::Alternative(p.clone()));
                        walk(c, &p, out);
                    }
                }
                condition::Node::All(v) => {
                    for (i, c) in v.iter().enumerate() {
                        walk(c, &format!("{path}.all[{i}]"), out);
                    }
                }
                condition::Node::Leaf(l) => {
                    if let Some((op, s)) = l.op.literal_values().filter(|(_, s)| s.values.len() > 1) {
                        for (i, v) in s.values.iter().enumerate() {
                            let value = String::from_utf8_lossy(v).into_owned();
                            out.push(CoveragePoint::Value { path: path.to_string(), op, index: i, value });
                        }
                    }
                }
                condition::Node::Not(_) => {}
            }
        }
        let mut out = Vec::new();
        walk(&self.rules[rule].node, "match", &mut out);
        out
    }

    /// Whether coverage point `p` of rule `rule` is exercised by the line last given to
    /// [`RuleSet::explain_rule`].
    pub fn exercises(&self, rule: usize, p: &CoveragePoint, line: &[u8], s: &mut Scratch) -> bool {
        match p {
            CoveragePoint::Alternative(path) => self.eval_at(rule, path, line, s) == Some(true),
            CoveragePoint::Value { path, index, .. } => {
                let Some(condition::Node::Leaf(leaf)) = self.node_at(rule, path) else { return false };
                s.cache.get(leaf.view, &self.views, line, &s.record).is_some_and(|v| leaf.op.value_holds(*index, v))
            }
        }
    }

    /// Evaluates the part of a rule's condition at `path` (`match.any[1]`) on the line last
    /// given to [`RuleSet::explain_rule`]. `None` when there is no such part.
    pub fn eval_at(&self, rule: usize, path: &str, line: &[u8], s: &mut Scratch) -> Option<bool> {
        let node = self.node_at(rule, path)?;
        let mut cx = Ctx { line, record: &s.record, views: &self.views, cache: &mut s.cache };
        Some(node.eval(&mut cx))
    }

    /// The part of rule `rule`'s condition at a YAML path relative to the rule.
    fn node_at(&self, rule: usize, path: &str) -> Option<&condition::Node> {
        let mut node = &self.rules[rule].node;
        let mut rest = path.strip_prefix("match")?;
        while !rest.is_empty() {
            let (next, tail) = if let Some(r) = rest.strip_prefix(".not") {
                match node {
                    condition::Node::Not(n) => (&**n, r),
                    _ => return None,
                }
            } else {
                let r = rest.strip_prefix(".any[").or_else(|| rest.strip_prefix(".all["))?;
                let end = r.find(']')?;
                let i: usize = r[..end].parse().ok()?;
                let child = match node {
                    condition::Node::Any(v) | condition::Node::All(v) => v.get(i)?,
                    _ => return None,
                };
                (child, &r[end + 1..])
            };
            node = next;
            rest = tail;
        }
        Some(node)
    }

    pub fn rule_index(&self, id: &str) -> Option<usize> {
        self.rules.iter().position(|r| r.id == id)
    }
}

/// Something a rule's examples should exercise (see [`RuleSet::coverage_points`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoveragePoint {
    /// An alternative of an `any`, by its path (`match.any[2]`).
    Alternative(String),
    /// One value of a literal list: the leaf's path, the operator, the value's index and text.
    Value { path: String, op: &'static str, index: usize, value: String },
}
