//! **engine**: the compiled rule set and the decision for each line.
//!
//! - [`compile`]: model → compiled rules (conditions over views, thresholds, suppression).
//! - [`prefilter`]: one literal automaton across all rules; picks candidate rules per line.
//! - [`condition`], [`view`], [`transform`], [`literal`]: evaluating a candidate rule.
//! - [`analysis`]: proving parts of a condition can never be true (for `trapline lint`).
//! - [`window`]: thresholds and suppression across lines.
//! - [`detection`]: what comes out.
//!
//! The split between [`RuleSet`] (immutable, shared by all threads) and [`Detector`] (the
//! cross-line state, owned by one thread) is what lets `scan` match in parallel and still
//! apply thresholds in file order.

pub mod analysis;
pub mod compile;
pub mod condition;
pub mod detection;
pub mod examples;
pub mod literal;
pub mod prefilter;
pub mod transform;
pub mod view;
pub mod window;

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};

pub use compile::{CompileOptions, CompiledRule};
use condition::Ctx;
pub use detection::Detection;
use detection::{RuleInfo, SourceRef, ThresholdInfo};
use prefilter::{Bits, Prefilter, Requirement};
use view::{ViewCache, Views};
use window::{Step, Suppressor, Windows};

use crate::parse::{FieldId, FieldRegistry, Parser, Record};
use crate::rule::{Loaded, RuleErrors};
use crate::source::LinePos;

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
        }
    }

    /// Parses `line` and evaluates the rules in `applicable` against it. The matching rules are
    /// left in `s.hits` (ascending), the parsed record in `s.record`. Returns whether the line
    /// parsed.
    pub fn match_line(&self, parser: &Parser, applicable: &Bits, line: &[u8], s: &mut Scratch) -> bool {
        parser.parse(line, &mut s.record, self.registry.len());
        s.hits.clear();
        s.cache.next_line(self.views.len());
        self.prefilter.candidates(line, &s.record, &self.views, &mut s.cache, &mut s.cand);
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

/// Where a line came from, for detections and idempotency keys.
#[derive(Debug, Clone)]
pub struct SourceInfo {
    pub name: String,
    pub path: String,
    pub format: String,
}

/// Per-rule counters.
#[derive(Debug, Clone, Default)]
pub struct RuleStats {
    /// Lines whose condition matched.
    pub hits: u64,
    /// Detections emitted.
    pub detections: u64,
    /// Detections held back by suppression.
    pub suppressed: u64,
}

/// Cross-line state (thresholds, suppression) and counters, owned by one thread.
#[derive(Debug)]
pub struct Detector {
    rules: Arc<RuleSet>,
    windows: Vec<Option<Windows>>,
    suppress: Vec<Option<Suppressor>>,
    pub stats: Vec<RuleStats>,
    key_buf: Vec<u8>,
    /// The last timestamp text parsed, per parser: consecutive lines mostly share their second,
    /// and calendar parsing is the costly part of a threshold hit.
    time_cache: (usize, Vec<u8>, Option<DateTime<Utc>>),
}

/// Default bound on tracked keys per rule.
pub const DEFAULT_MAX_KEYS: usize = 100_000;

impl Detector {
    pub fn new(rules: Arc<RuleSet>, max_keys: usize) -> Detector {
        let windows = rules
            .rules
            .iter()
            .map(|r| {
                r.threshold
                    .as_ref()
                    .map(|t| Windows::new(t.count, t.window.as_millis() as i64, t.distinct.is_some(), max_keys))
            })
            .collect();
        let suppress = rules
            .rules
            .iter()
            .map(|r| r.suppress.as_ref().map(|s| Suppressor::new(s.duration.as_millis() as i64, max_keys)))
            .collect();
        let stats = vec![RuleStats::default(); rules.rules.len()];
        Detector { rules, windows, suppress, stats, key_buf: Vec::new(), time_cache: (0, Vec::new(), None) }
    }

    pub fn rules(&self) -> &Arc<RuleSet> {
        &self.rules
    }

    /// Takes over the threshold and suppression state of `old` for every rule whose id and
    /// fingerprint (matching and grouping) are unchanged, so a reload does not reset a brute
    /// force count or re-open a suppressed key. Counters are carried over by id as well.
    /// Returns how many rules kept their state.
    pub fn carry_over(&mut self, old: Detector) -> usize {
        let mut kept = 0;
        let Detector { rules: old_rules, windows, suppress, stats, .. } = old;
        let mut windows: Vec<Option<Windows>> = windows;
        let mut suppress: Vec<Option<Suppressor>> = suppress;
        for (i, r) in self.rules.rules.iter().enumerate() {
            let Some(j) = old_rules.rule_index(&r.id) else { continue };
            self.stats[i] = stats[j].clone();
            if old_rules.rules[j].fingerprint == r.fingerprint {
                self.windows[i] = windows[j].take();
                self.suppress[i] = suppress[j].take();
                kept += 1;
            }
        }
        kept
    }

    /// Feeds the rules that matched one line (`hits`, from [`RuleSet::match_line`] with the
    /// same record) and appends the resulting detections to `out`.
    #[allow(clippy::too_many_arguments)]
    pub fn on_hits(
        &mut self,
        parser: &Parser,
        src: &SourceInfo,
        meta: &LinePos,
        line: &[u8],
        rec: &Record,
        hits: &[u32],
        out: &mut Vec<Detection>,
    ) {
        if hits.is_empty() {
            return;
        }
        let (event_time, time_source) = match self.event_time(parser, line, rec) {
            Some(t) => (t, "event"),
            None => (meta.arrival, "arrival"),
        };
        let t = event_time.timestamp_millis();
        let rules = Arc::clone(&self.rules);
        for &ri in hits {
            let ri = ri as usize;
            let rule = &rules.rules[ri];
            self.stats[ri].hits += 1;
            let mut threshold = None;
            if let (Some(spec), Some(w)) = (&rule.threshold, self.windows[ri].as_mut()) {
                // A line without a group field does not count: lumping all such lines under
                // one empty key would make unrelated lines reach the threshold together.
                let Some(key) = group_hash(&mut self.key_buf, &spec.group_by, line, rec) else { continue };
                let value = spec.distinct.map_or(0, |d| xxhash_rust::xxh3::xxh3_64(rec.get(line, d).unwrap_or(b"")));
                match w.step(key, t, value) {
                    Step::Pending { .. } => continue,
                    Step::Fire { count, first_seen, last_seen } => {
                        threshold = Some(ThresholdInfo {
                            count,
                            within_seconds: spec.window.as_secs_f64(),
                            group: group_map(&rules.registry, &spec.group_by, line, rec),
                            distinct: spec.distinct.map(|d| rules.registry.name(d).to_string()),
                            first_seen: millis(first_seen),
                            last_seen: millis(last_seen),
                        });
                    }
                }
            }
            let mut suppressed = 0;
            if let (Some(spec), Some(s)) = (&rule.suppress, self.suppress[ri].as_mut()) {
                // Absent fields count as empty here: suppression must never drop a detection
                // merely because the key is incomplete, only hold it back with its peers.
                let key = group_hash(&mut self.key_buf, &spec.group_by, line, rec).unwrap_or(0);
                match s.admit(key, t) {
                    Some(n) => suppressed = n,
                    None => {
                        self.stats[ri].suppressed += 1;
                        continue;
                    }
                }
            }
            self.stats[ri].detections += 1;
            out.push(Detection {
                key: idempotency_key(meta.origin, meta.offset, &rule.id),
                rule: RuleInfo {
                    id: rule.id.clone(),
                    title: rule.title.clone(),
                    severity: rule.severity,
                    tags: rule.tags.clone(),
                },
                source: SourceRef {
                    name: src.name.clone(),
                    path: src.path.clone(),
                    format: src.format.clone(),
                    line_number: meta.line_number,
                    offset: meta.offset,
                },
                event_time,
                time_source,
                detected_at: Utc::now(),
                fields: rec
                    .iter(line)
                    .map(|(id, v)| (rules.registry.name(id).to_string(), String::from_utf8_lossy(v).into_owned()))
                    .collect(),
                line: String::from_utf8_lossy(line).into_owned(),
                line_truncated: meta.truncated,
                threshold,
                suppressed,
                actions: rule.actions.clone(),
            });
        }
    }

    fn event_time(&mut self, parser: &Parser, line: &[u8], rec: &Record) -> Option<DateTime<Utc>> {
        let raw = rec.get(line, crate::parse::std_fields::TIME)?;
        let id = parser as *const Parser as usize;
        if self.time_cache.0 != id || self.time_cache.1 != raw {
            let t = parser.event_time(line, rec);
            self.time_cache = (id, raw.to_vec(), t);
        }
        self.time_cache.2
    }

    /// Threshold state of rule `ri` for the key of this line: (count, oldest, window ms).
    /// Until when (ms since the epoch) detections of rule `ri` for this line's key are held back.
    pub fn suppressed_until(&mut self, ri: usize, line: &[u8], rec: &Record) -> Option<i64> {
        let spec = self.rules.rules[ri].suppress.clone()?;
        let key = group_hash(&mut self.key_buf, &spec.group_by, line, rec).unwrap_or(0);
        self.suppress[ri].as_ref()?.until(key)
    }

    pub fn window_state(&mut self, ri: usize, line: &[u8], rec: &Record) -> Option<(u32, Option<i64>, i64)> {
        let spec = self.rules.rules[ri].threshold.clone()?;
        let key = group_hash(&mut self.key_buf, &spec.group_by, line, rec)?;
        let w = self.windows[ri].as_ref()?;
        let (n, oldest) = w.peek(key).unwrap_or((0, None));
        Some((n, oldest, w.window_ms()))
    }
}

/// Hash of the group-key fields of a line; `None` when one of them is absent.
fn group_hash(buf: &mut Vec<u8>, fields: &[FieldId], line: &[u8], rec: &Record) -> Option<u64> {
    buf.clear();
    for f in fields {
        let v = rec.get(line, *f)?;
        buf.extend_from_slice(&(v.len() as u32).to_le_bytes());
        buf.extend_from_slice(v);
    }
    Some(xxhash_rust::xxh3::xxh3_64(buf))
}

fn group_map(reg: &FieldRegistry, fields: &[FieldId], line: &[u8], rec: &Record) -> BTreeMap<String, String> {
    fields
        .iter()
        .map(|f| {
            (
                reg.name(*f).to_string(),
                rec.get(line, *f).map(|v| String::from_utf8_lossy(v).into_owned()).unwrap_or_default(),
            )
        })
        .collect()
}

fn millis(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

/// `(origin, offset, rule id)` → 16 hex digits.
pub fn idempotency_key(origin: u64, offset: u64, rule: &str) -> String {
    let mut buf = Vec::with_capacity(16 + rule.len());
    buf.extend_from_slice(&origin.to_le_bytes());
    buf.extend_from_slice(&offset.to_le_bytes());
    buf.extend_from_slice(rule.as_bytes());
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&buf))
}
