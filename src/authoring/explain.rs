//! Why a rule matches a line or not, and what its examples exercise: the engine's compiled
//! conditions walked by path (`match.any[1].not`), for `trapline explain` and
//! `trapline test --coverage`. Not on the per-line path.

use crate::engine::condition::{Ctx, EventTime, Node, Op};
use crate::engine::{RuleSet, Scratch};
use crate::parse::Parser;

impl RuleSet {
    /// Evaluates one rule's condition only (no prefilter, no thresholds), explaining a miss
    /// with the YAML path of the condition that failed.
    pub fn explain_rule(&self, rule: usize, parser: &Parser, line: &[u8], s: &mut Scratch) -> Result<(), String> {
        parser.parse(line, &mut s.record, self.registry.len());
        s.cache.next_line(self.views.len());
        if let Err(i) = self.extract(rule, line, &mut s.record, &mut s.extract) {
            return Err(format!("extract[{i}]"));
        }
        let time = EventTime::Parse(parser);
        let mut cx = Ctx { line, record: &s.record, views: &self.views, cache: &mut s.cache, time };
        self.rules[rule].node.explain(&mut cx, "match")
    }

    /// The first exception of rule `rule` that holds back the line last given to
    /// [`RuleSet::explain_rule`] (an index into [`RuleSet::exceptions`]); with `own_only`,
    /// only the rule's own `except` counts (what its inline examples test).
    pub fn holding_exception(&self, rule: usize, line: &[u8], s: &mut Scratch, own_only: bool) -> Option<u32> {
        let mut cx = Ctx { line, record: &s.record, views: &self.views, cache: &mut s.cache, time: EventTime::Now };
        self.rules[rule].except.iter().copied().find(|&e| {
            let x = &self.exceptions[e as usize];
            (!own_only || x.kind == crate::rule::ExceptionKind::Own) && x.node.eval(&mut cx)
        })
    }

    /// For an explanation: the value the condition at `path` (as returned by
    /// [`RuleSet::explain_rule`]) looked at on the line last given to `explain_rule`, as
    /// `field[transforms] = "value"`, or `field absent`.
    pub fn describe_condition(&self, rule: usize, path: &str, line: &[u8], s: &mut Scratch) -> Option<String> {
        if let Some(i) = path.strip_prefix("extract[").and_then(|p| p.strip_suffix(']')?.parse::<usize>().ok()) {
            // An extract that did not match: what its regex read.
            let st = self.rules[rule].extract.as_ref()?.steps.get(i)?;
            let name = self.registry.name(st.from);
            return Some(match s.record.get(line, st.from) {
                Some(v) => format!("{name} = {:?}, which its regex does not match", String::from_utf8_lossy(v)),
                None => format!("{name} is absent"),
            });
        }
        let Node::Leaf(leaf) = self.node_at(rule, path)? else { return None };
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
        fn walk(n: &Node, path: &str, out: &mut Vec<CoveragePoint>) {
            match n {
                Node::Any(v) => {
                    for (i, c) in v.iter().enumerate() {
                        let p = format!("{path}.any[{i}]");
                        out.push(CoveragePoint::Alternative(p.clone()));
                        walk(c, &p, out);
                    }
                }
                Node::All(v) => {
                    for (i, c) in v.iter().enumerate() {
                        walk(c, &format!("{path}.all[{i}]"), out);
                    }
                }
                Node::Leaf(l) => {
                    if let Some((op, s)) = l.op.literal_values().filter(|(_, s)| s.values.len() > 1) {
                        for (i, v) in s.values.iter().enumerate() {
                            let value = String::from_utf8_lossy(v).into_owned();
                            out.push(CoveragePoint::Value { path: path.to_string(), op, index: i, value });
                        }
                    }
                }
                Node::Not(_) => {}
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
                let Some(Node::Leaf(leaf)) = self.node_at(rule, path) else { return false };
                let holds = |v: Option<&[u8]>| v.is_some_and(|v| leaf.op.value_holds(*index, v));
                if leaf.each {
                    return s.cache.any_element(leaf.view, &self.views, line, &s.record, holds);
                }
                holds(s.cache.get(leaf.view, &self.views, line, &s.record))
            }
        }
    }

    /// Evaluates the part of a rule's condition at `path` (`match.any[1]`) on the line last
    /// given to [`RuleSet::explain_rule`]. `None` when there is no such part.
    pub fn eval_at(&self, rule: usize, path: &str, line: &[u8], s: &mut Scratch) -> Option<bool> {
        let node = self.node_at(rule, path)?;
        let mut cx = Ctx { line, record: &s.record, views: &self.views, cache: &mut s.cache, time: EventTime::Now };
        Some(node.eval(&mut cx))
    }

    /// The part of rule `rule`'s condition at a YAML path relative to the rule.
    fn node_at(&self, rule: usize, path: &str) -> Option<&Node> {
        let mut node = &self.rules[rule].node;
        let mut rest = path.strip_prefix("match")?;
        while !rest.is_empty() {
            let (next, tail) = if let Some(r) = rest.strip_prefix(".not") {
                match node {
                    Node::Not(n) => (&**n, r),
                    _ => return None,
                }
            } else {
                let r = rest.strip_prefix(".any[").or_else(|| rest.strip_prefix(".all["))?;
                let end = r.find(']')?;
                let i: usize = r[..end].parse().ok()?;
                let child = match node {
                    Node::Any(v) | Node::All(v) => v.get(i)?,
                    _ => return None,
                };
                (child, &r[end + 1..])
            };
            node = next;
            rest = tail;
        }
        Some(node)
    }
}

/// One condition of a rule with its verdict on a line: what `explain --rule` prints, every
/// alternative of every `any` included (not only the one that decided).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceStep {
    /// Nesting depth below the rule's `match`.
    pub depth: usize,
    /// YAML path relative to the rule (`match.any[1]`, `sequence.steps[0].match`).
    pub path: String,
    /// `any`, `all`, `not`, or the test: `path[url_decode] contains ["/etc/passwd"]`.
    pub label: String,
    pub verdict: bool,
    /// For a test: the value it looked at (`path = "/x"`, `path is absent`).
    pub looked: Option<String>,
}

impl RuleSet {
    /// Every condition of rule `rule` with its verdict on the line last given to
    /// [`RuleSet::explain_rule`], in the order written; `root` is the path of the rule's
    /// condition (`match`, or a sequence step's `sequence.steps[1].match`).
    pub fn trace(&self, rule: usize, root: &str, line: &[u8], s: &mut Scratch, time: EventTime<'_>) -> Vec<TraceStep> {
        let mut out = Vec::new();
        // The rule's extracts first, up to the one that did not match: what each read or took.
        if let Some(x) = &self.rules[rule].extract {
            let failed = x.apply(line, &mut s.record, &mut s.extract).err();
            for (i, st) in x.steps.iter().enumerate().take(failed.map_or(usize::MAX, |f| f + 1)) {
                let ok = failed != Some(i);
                let shown = |id| match s.record.get(line, id) {
                    Some(v) => format!("{} = \"{}\"", self.registry.name(id), String::from_utf8_lossy(v)),
                    None => format!("{} is absent", self.registry.name(id)),
                };
                let looked = if ok {
                    st.groups.iter().map(|(_, id)| shown(*id)).collect::<Vec<_>>().join(", ")
                } else {
                    shown(st.from)
                };
                let label = format!("extract from {} regex /{}/", self.registry.name(st.from), st.re.as_str());
                out.push(TraceStep {
                    depth: 0,
                    path: format!("extract[{i}].regex"),
                    label,
                    verdict: ok,
                    looked: Some(looked),
                });
            }
        }
        self.trace_node(&self.rules[rule].node, root, 0, line, s, time, &mut out);
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn trace_node(
        &self,
        n: &Node,
        path: &str,
        depth: usize,
        line: &[u8],
        s: &mut Scratch,
        time: EventTime<'_>,
        out: &mut Vec<TraceStep>,
    ) {
        let verdict = {
            let mut cx = Ctx { line, record: &s.record, views: &self.views, cache: &mut s.cache, time };
            n.eval(&mut cx)
        };
        match n {
            Node::Any(v) | Node::All(v) => {
                let (word, key) = if matches!(n, Node::Any(_)) { ("any", "any") } else { ("all", "all") };
                out.push(TraceStep { depth, path: path.to_string(), label: word.into(), verdict, looked: None });
                for (i, c) in v.iter().enumerate() {
                    self.trace_node(c, &format!("{path}.{key}[{i}]"), depth + 1, line, s, time, out);
                }
            }
            Node::Not(c) => {
                out.push(TraceStep { depth, path: path.to_string(), label: "not".into(), verdict, looked: None });
                self.trace_node(c, &format!("{path}.not"), depth + 1, line, s, time, out);
            }
            Node::Leaf(l) => {
                let v = self.views.get(l.view);
                let t: Vec<&str> = v.transforms.iter().map(|t| t.as_str()).collect();
                let name = if t.is_empty() {
                    self.registry.name(v.field).to_string()
                } else {
                    format!("{}[{}]", self.registry.name(v.field), t.join(","))
                };
                let looked = match &l.op {
                    Op::Time(_) => None,
                    _ => Some(match s.cache.get(l.view, &self.views, line, &s.record) {
                        // Raw here: the printer escapes once for the terminal.
                        Some(val) => format!("{name} = \"{}\"", String::from_utf8_lossy(val)),
                        None => format!("{name} is absent"),
                    }),
                };
                let label = match &l.op {
                    Op::Time(_) => "time (the event's day and hour)".to_string(),
                    op => format!("{name} {}", describe(op)),
                };
                out.push(TraceStep { depth, path: path.to_string(), label, verdict, looked });
            }
        }
    }
}

/// An operator and its values, shortened for a terminal.
fn describe(op: &Op) -> String {
    fn list(values: &[Vec<u8>]) -> String {
        let shown: Vec<String> = values
            .iter()
            .take(4)
            .map(|v| format!("\"{}\"", String::from_utf8_lossy(v).chars().take(60).collect::<String>()))
            .collect();
        let more = if values.len() > 4 { format!(", … {} more", values.len() - 4) } else { String::new() };
        format!("[{}{more}]", shown.join(", "))
    }
    let cs = |c: bool| if c { " (case-sensitive)" } else { "" };
    match op {
        Op::Contains { values, .. } => format!("contains {}{}", list(&values.values), cs(values.case_sensitive)),
        Op::Equals(v) => format!("equals {}{}", list(&v.values), cs(v.case_sensitive)),
        Op::StartsWith(v) => format!("starts_with {}{}", list(&v.values), cs(v.case_sensitive)),
        Op::EndsWith(v) => format!("ends_with {}{}", list(&v.values), cs(v.case_sensitive)),
        Op::Regex { re, case_sensitive, .. } => {
            let p: String = re.as_str().chars().take(80).collect();
            format!("regex /{p}/{}", cs(*case_sensitive))
        }
        Op::Count { needle, case_sensitive, at_least } => {
            format!("count \"{}\" at least {at_least}{}", String::from_utf8_lossy(needle), cs(*case_sensitive))
        }
        Op::Number { gt, gte, lt, lte } => {
            let parts: Vec<String> = [("gt", gt), ("gte", gte), ("lt", lt), ("lte", lte)]
                .iter()
                .filter_map(|(k, v)| v.map(|v| format!("{k} {v}")))
                .collect();
            parts.join(", ")
        }
        Op::Cidr(nets) => {
            let shown: Vec<String> = nets.iter().take(4).map(|n| n.to_string()).collect();
            let more = if nets.len() > 4 { format!(", … {} more", nets.len() - 4) } else { String::new() };
            format!("cidr [{}{more}]", shown.join(", "))
        }
        Op::Exists(true) => "exists".into(),
        Op::Exists(false) => "is absent (exists: false)".into(),
        Op::Time(_) => "time".into(),
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
