//! From the rule *model* to the *compiled* form: conditions become [`Node`]s over interned
//! views, lists are expanded, regexes are built once, and each rule yields its prefilter
//! [`Requirement`]. Every problem is reported with the YAML path of the offending value, which
//! [`crate::rule::Loaded::rule_error`] turns into file:line:col.

use std::collections::BTreeSet;
use std::time::Duration;

use aho_corasick::AhoCorasickBuilder;
use regex::bytes::RegexBuilder;

use super::condition::{Leaf, Node, Op, Strings};
use super::literal;
use super::prefilter::Requirement;
use super::view::{View, ViewId, Views};
use crate::parse::{FieldId, FieldRegistry, std_fields};
use crate::rule::{Condition, ErrorKind, Loaded, LoadedRule, RuleError, Severity, ValueItem, Values};

/// Regex limits. The NFA limit bounds compile time and memory per regex; the lazy DFA cache is
/// raised from the 2 MiB default because a thrashing cache makes matching hundreds of times
/// slower (the cliff documented for large rule sets).
const REGEX_SIZE_LIMIT: usize = 8 << 20;
const REGEX_DFA_LIMIT: usize = 8 << 20;

/// A rule ready to run.
#[derive(Debug)]
pub struct CompiledRule {
    pub id: String,
    pub title: String,
    pub description: String,
    pub severity: Severity,
    /// Attack class (`other` when the rule names none).
    pub class: String,
    pub tags: Vec<String>,
    pub actions: Vec<String>,
    pub enabled: bool,
    /// Empty: all formats.
    pub formats: Vec<String>,
    /// Empty: all sources.
    pub sources: Vec<String>,
    pub node: Node,
    /// The rule's `extract`, run before `node` on candidate lines.
    pub extract: Option<super::extract::Extracts>,
    pub threshold: Option<ThresholdSpec>,
    pub suppress: Option<SuppressSpec>,
    /// Where the rule was loaded from (for messages), and its position in that file's `rules:`
    /// (for positions of its parts: `rules[index].match.any[1]`).
    pub origin: String,
    pub index: usize,
    /// Hash of everything that decides which lines match and how they are grouped (condition,
    /// the lists it uses, threshold, suppression, scope). A reload keeps a rule's window and
    /// suppression state only when this is unchanged.
    pub fingerprint: u64,
    /// What every detection of the rule says about it, built once and shared.
    pub info: std::sync::Arc<super::detection::RuleInfo>,
    /// For a step of a sequence rule: which step, and the key. A sequence of N steps compiles
    /// to N consecutive rules sharing id and info, so each step has its own scope, condition
    /// and prefilter literals; the first step's entry holds the sequence's state.
    pub sequence: Option<SeqStep>,
    /// The exceptions that hold this rule's matching events back (indexes into
    /// [`super::RuleSet::exceptions`]), evaluated in order only after `node` matched. A
    /// sequence has them on its last step.
    pub except: Vec<u32>,
}

/// An exception ready to run: a rule's own `except`, an override's, or a shared one.
#[derive(Debug)]
pub struct CompiledException {
    /// Index into [`super::RuleSet::exception_names`]: what it is counted under.
    pub name: u32,
    pub kind: crate::rule::ExceptionKind,
    pub node: Node,
}

/// The compiled exceptions of a rule set, in [`Loaded::exceptions`] order (`None` for one with
/// errors), and the distinct names they are counted under.
#[derive(Debug, Default)]
pub struct Exceptions {
    pub list: Vec<Option<CompiledException>>,
    pub names: Vec<String>,
}

/// One step of a compiled sequence rule.
#[derive(Debug, Clone)]
pub struct SeqStep {
    /// 0-based position; the first step's rule is `index - step`.
    pub step: usize,
    pub steps: usize,
    pub within: Duration,
    /// The key fields, each with its transforms.
    pub key: Vec<(FieldId, Vec<crate::rule::Transform>)>,
}

impl SeqStep {
    pub fn is_last(&self) -> bool {
        self.step + 1 == self.steps
    }
}

#[derive(Debug, Clone)]
pub struct ThresholdSpec {
    pub count: u32,
    pub window: Duration,
    pub group_by: Vec<FieldId>,
    pub distinct: Option<FieldId>,
}

#[derive(Debug, Clone)]
pub struct SuppressSpec {
    pub duration: Duration,
    pub group_by: Vec<FieldId>,
}

/// What the compiler must know about the world outside the rule files.
#[derive(Debug, Clone)]
pub struct CompileOptions {
    /// Format names a rule may name (built-in plus configured custom formats).
    pub formats: BTreeSet<String>,
    /// Action names a rule may name.
    pub actions: BTreeSet<String>,
}

impl Default for CompileOptions {
    fn default() -> Self {
        CompileOptions {
            formats: crate::parse::FormatKind::ALL.iter().map(|(n, _)| n.to_string()).collect(),
            // The engine knows no action by name: whoever compiles for actions lists them
            // (`pipeline::setup::compile_options`).
            actions: BTreeSet::new(),
        }
    }
}

pub(crate) struct Compiler<'a> {
    pub loaded: &'a Loaded,
    pub opts: &'a CompileOptions,
    pub registry: &'a mut FieldRegistry,
    pub views: &'a mut Views,
    pub errors: Vec<RuleError>,
    /// Lists referenced by the rule being compiled (for its fingerprint).
    pub used_lists: Vec<String>,
    /// Named conditions referenced by the rule being compiled (for its fingerprint), and how
    /// deep the current reference is (a condition that refers to itself must end).
    pub used_conditions: Vec<String>,
    pub ref_depth: usize,
    /// The fields the current rule's `extract` captures: (name, scoped id, the field they are
    /// ultimately taken from).
    pub extracted: Vec<(String, FieldId, FieldId)>,
    /// The last extract scope handed out.
    pub scopes: u32,
}

type Compiled = (Node, Requirement);

/// Where the condition being compiled was written, for errors at file:line:col: inside a rule
/// (paths relative to it), or anywhere in a file (an exception outside any rule).
pub(crate) struct At<'a> {
    file: usize,
    /// YAML path the paths given are relative to (`rules[3]`); empty: they are complete.
    base: String,
    rule: Option<&'a str>,
}

impl<'a> At<'a> {
    fn rule(r: &'a LoadedRule) -> At<'a> {
        At { file: r.file, base: format!("rules[{}]", r.index), rule: Some(&r.rule.id) }
    }

    fn error(&self, loaded: &Loaded, sub: &str, msg: impl Into<String>) -> RuleError {
        let path = match (self.base.is_empty(), sub.is_empty()) {
            (true, _) => sub.to_string(),
            (false, true) => self.base.clone(),
            (false, false) => format!("{}.{sub}", self.base),
        };
        loaded.error_at(self.file, &path, self.rule, msg)
    }
}

impl Compiler<'_> {
    fn err(&mut self, r: &At<'_>, path: &str, msg: impl Into<String>) {
        self.err_of(ErrorKind::InvalidValue, r, path, msg);
    }

    fn err_of(&mut self, kind: ErrorKind, r: &At<'_>, path: &str, msg: impl Into<String>) {
        let e = r.error(self.loaded, path, msg).kind(kind);
        self.errors.push(e);
    }

    fn field(&mut self, r: &At<'_>, path: &str, name: &str) -> Option<FieldId> {
        if let Some((_, id, _)) = self.extracted.iter().find(|(n, _, _)| n == name) {
            return Some(*id);
        }
        if !valid_field_name(name) {
            self.err_of(ErrorKind::UnknownReference, r, path, format!("invalid field name {name:?}"));
            return None;
        }
        if let Err(e) = crate::parse::json::parse_path(name) {
            self.err_of(ErrorKind::UnknownReference, r, path, format!("invalid field path {name:?}: {e}"));
            return None;
        }
        Some(self.registry.intern(name))
    }

    /// For a field one of the rule's extracts captures: the field its value is a part of,
    /// which the prefilter can scan (the captured field itself is filled only after it).
    fn extract_root(&self, id: FieldId) -> Option<FieldId> {
        self.extracted.iter().find(|(_, i, _)| *i == id).map(|(_, _, root)| *root)
    }

    /// A rule's `extract`: its compiled steps and the prefilter requirement of each regex
    /// (every one must match for the rule to match). Capture names become fields of the rule
    /// from here on.
    fn extracts(&mut self, r: &LoadedRule) -> Option<(super::extract::Extracts, Vec<Requirement>)> {
        let at = At::rule(r);
        self.scopes += 1;
        let scope = self.scopes;
        let mut steps = Vec::new();
        let mut reqs = Vec::new();
        let mut names = Vec::new();
        let mut ok = true;
        for (i, x) in r.rule.extract.iter().enumerate() {
            let path = format!("extract[{i}]");
            let from = match &x.field {
                Some(f) => match self.field(&at, &format!("{path}.field"), f) {
                    Some(id) => id,
                    None => {
                        ok = false;
                        continue;
                    }
                },
                None => std_fields::LINE,
            };
            let cs = x.case_sensitive.unwrap_or(false);
            let re = match build_regex(&x.regex, cs) {
                Ok(re) => re,
                Err(e) => {
                    let msg = format!("invalid regex: {}", one_line(&e.to_string()));
                    self.err_of(ErrorKind::Regex, &at, &format!("{path}.regex"), msg);
                    ok = false;
                    continue;
                }
            };
            let root = self.extract_root(from).unwrap_or(from);
            let view = self.views.intern(View { field: root, transforms: Vec::new() });
            reqs.push(match literal::required_literals(&x.regex, !cs) {
                Some(l) if !l.is_empty() => Requirement::AnyOf(l.into_iter().map(|l| (view, l)).collect()),
                _ => Requirement::Always,
            });
            let mut groups = Vec::new();
            for (g, name) in re.capture_names().enumerate() {
                let Some(name) = name else { continue };
                let problem = if name == "line" {
                    Some("`line` is the raw line itself and cannot be captured".to_string())
                } else if !valid_field_name(name) || name.contains(['[', ']', '*']) {
                    Some(format!("capture name {name:?} is not a field name (letters, digits, _ . - @)"))
                } else if self.extracted.iter().any(|(n, _, _)| n == name) {
                    Some(format!("field {name:?} is captured by an earlier extract of this rule"))
                } else {
                    None
                };
                if let Some(msg) = problem {
                    self.err(&at, &format!("{path}.regex"), msg);
                    ok = false;
                    continue;
                }
                let id = self.registry.intern_scoped(scope, name);
                self.extracted.push((name.to_string(), id, root));
                names.push(std::sync::Arc::<str>::from(name));
                groups.push((g, id));
            }
            if groups.is_empty() && ok {
                self.err(
                    &at,
                    &format!("{path}.regex"),
                    "an extract regex needs a named capture, e.g. (?P<client_ip>[0-9a-f.:]+)",
                );
                ok = false;
            }
            steps.push(super::extract::ExtractStep { from, re, slot: 0, groups });
        }
        ok.then_some((super::extract::Extracts { scope, steps, names }, reqs))
    }

    /// The compiled form of one rule: one entry, or one per step of a sequence.
    pub fn rule(&mut self, r: &LoadedRule) -> Option<Entries> {
        let a = At::rule(r);
        let before = self.errors.len();
        self.used_lists.clear();
        self.used_conditions.clear();
        self.extracted.clear();
        let rule = &r.rule;
        if rule.title.trim().is_empty() {
            self.err(&a, "title", "title must not be empty");
        }
        if let Some(c) = &rule.class
            && !(c.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                && c.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'))
        {
            self.err(
                &a,
                "class",
                format!("class {c:?}: use lower-case letters, digits and '-' (e.g. sqli, brute-force)"),
            );
        }
        for (i, f) in rule.formats.iter().enumerate() {
            if !self.opts.formats.contains(f) {
                let known: Vec<&str> = self.opts.formats.iter().map(String::as_str).collect();
                self.err_of(
                    ErrorKind::UnknownReference,
                    &a,
                    &format!("formats[{i}]"),
                    format!("unknown format {f:?} (known: {})", known.join(", ")),
                );
            }
        }
        for (i, action) in rule.actions.iter().enumerate() {
            if !self.opts.actions.contains(action) {
                let known: Vec<&str> = self.opts.actions.iter().map(String::as_str).collect();
                self.err_of(
                    ErrorKind::UnknownReference,
                    &a,
                    &format!("actions[{i}]"),
                    format!("unknown action {action:?} (known: {})", known.join(", ")),
                );
            }
        }
        if let Some(seq) = &rule.sequence {
            return self.sequence(r, seq, before);
        }
        // Before the condition: its fields may be captured ones.
        let extract = if rule.extract.is_empty() { None } else { self.extracts(r) };
        // Content rules are kept apart at load (`Loaded::content`); a rule here has `match`.
        let compiled = match &rule.condition {
            Some(c) => self.condition(&a, c, "match"),
            None => {
                self.err_of(ErrorKind::Syntax, &a, "", "a rule over events needs `match`");
                None
            }
        };
        let threshold = rule.threshold.as_ref().and_then(|t| {
            if t.count == 0 {
                self.err(&a, "threshold.count", "threshold count must be at least 1");
            }
            let group_by: Vec<FieldId> = t
                .group_by
                .iter()
                .enumerate()
                .filter_map(|(i, f)| self.field(&a, &format!("threshold.group_by[{i}]"), f))
                .collect();
            let distinct = match &t.distinct {
                Some(d) => Some(self.field(&a, "threshold.distinct", d)?),
                None => None,
            };
            Some(ThresholdSpec { count: t.count.max(1), window: t.within.0, group_by, distinct })
        });
        let suppress = self.suppress(r, threshold.as_ref());
        let (node, req) = compiled?;
        if self.errors.len() > before {
            return None;
        }
        // Every extract regex must match too: the most selective requirement of all wins.
        let (extract, req) = match extract {
            Some((x, mut reqs)) => {
                reqs.push(req);
                (Some(x), best(reqs))
            }
            None => (None, req),
        };
        let fingerprint = self.fingerprint(rule);
        let base = self.base(r, fingerprint, std::sync::Arc::new(self.info(rule)));
        Some(vec![(
            CompiledRule {
                formats: rule.formats.clone(),
                sources: rule.sources.clone(),
                node,
                extract,
                threshold,
                suppress,
                ..base
            },
            req,
        )])
    }

    fn info(&self, rule: &crate::rule::Rule) -> super::detection::RuleInfo {
        super::detection::RuleInfo {
            id: rule.id.clone(),
            title: rule.title.clone(),
            severity: rule.severity,
            class: rule.class.clone().unwrap_or_else(|| "other".to_string()),
            tags: rule.tags.clone(),
        }
    }

    /// The parts every entry of a rule shares; scope, condition and windows are the caller's.
    fn base(&self, r: &LoadedRule, fingerprint: u64, info: std::sync::Arc<super::detection::RuleInfo>) -> CompiledRule {
        let rule = &r.rule;
        CompiledRule {
            id: rule.id.clone(),
            title: rule.title.clone(),
            description: rule.description.clone(),
            severity: rule.severity,
            class: info.class.clone(),
            info,
            tags: rule.tags.clone(),
            actions: rule.actions.clone(),
            enabled: rule.enabled,
            formats: Vec::new(),
            sources: Vec::new(),
            node: Node::Any(Vec::new()),
            extract: None,
            threshold: None,
            suppress: None,
            origin: format!("{}", self.loaded.files[r.file].path.display()),
            index: r.index,
            fingerprint,
            sequence: None,
            except: r.exceptions.iter().map(|&e| e as u32).collect(),
        }
    }

    fn suppress(&mut self, r: &LoadedRule, threshold: Option<&ThresholdSpec>) -> Option<SuppressSpec> {
        let a = At::rule(r);
        let s = r.rule.suppress.as_ref()?;
        let group_by = match &s.group_by {
            Some(g) => g
                .iter()
                .enumerate()
                .filter_map(|(i, f)| self.field(&a, &format!("suppress.group_by[{i}]"), f))
                .collect(),
            None => match threshold {
                Some(t) if !t.group_by.is_empty() => t.group_by.clone(),
                // The rule's own `client_ip` when its extract captures one.
                _ => vec![
                    self.extracted
                        .iter()
                        .find(|(n, _, _)| n == "client_ip")
                        .map_or(std_fields::CLIENT_IP, |(_, id, _)| *id),
                ],
            },
        };
        Some(SuppressSpec { duration: s.duration.0, group_by })
    }

    /// A sequence rule: one entry per step, in order. Suppression applies where the
    /// detection is made, on the last step's event.
    fn sequence(&mut self, r: &LoadedRule, seq: &crate::rule::Sequence, before: usize) -> Option<Entries> {
        let a = At::rule(r);
        let rule = &r.rule;
        let mut steps = Vec::new();
        for (i, st) in seq.steps.iter().enumerate() {
            let path = format!("sequence.steps[{i}]");
            for (j, f) in st.formats.iter().enumerate() {
                if !self.opts.formats.contains(f) {
                    let known: Vec<&str> = self.opts.formats.iter().map(String::as_str).collect();
                    self.err_of(
                        ErrorKind::UnknownReference,
                        &a,
                        &format!("{path}.formats[{j}]"),
                        format!("unknown format {f:?} (known: {})", known.join(", ")),
                    );
                }
            }
            let key: Vec<_> = st
                .key
                .fields()
                .iter()
                .enumerate()
                .filter_map(|(j, k)| {
                    let at = match st.key {
                        crate::rule::SequenceKey::One(_) => format!("{path}.key"),
                        crate::rule::SequenceKey::Many(_) => format!("{path}.key[{j}]"),
                    };
                    Some((self.field(&a, &at, k.name())?, k.transforms().to_vec()))
                })
                .collect();
            if key.is_empty() && st.key.fields().is_empty() {
                self.err(&a, &format!("{path}.key"), "a key needs at least one field");
            }
            let compiled = self.condition(&a, &st.condition, &format!("{path}.match"));
            steps.push((st, key, compiled));
        }
        let n = steps.len();
        let suppress = self.suppress(r, None);
        if self.errors.len() > before {
            return None;
        }
        let fingerprint = self.fingerprint(rule);
        let info = std::sync::Arc::new(self.info(rule));
        let mut out = Vec::new();
        for (i, (st, key, compiled)) in steps.into_iter().enumerate() {
            let (node, req) = compiled?;
            let base = self.base(r, fingerprint, std::sync::Arc::clone(&info));
            out.push((
                CompiledRule {
                    formats: st.formats.clone(),
                    sources: st.sources.clone(),
                    node,
                    suppress: if i + 1 == n { suppress.clone() } else { None },
                    // The exception asks whether a detection may be made, which happens on
                    // the last step's event.
                    except: if i + 1 == n { base.except.clone() } else { Vec::new() },
                    sequence: Some(SeqStep { step: i, steps: n, within: seq.within.0, key }),
                    ..base
                },
                req,
            ));
        }
        Some(out)
    }

    /// Compiles every exception of the rule set, once each, whatever the number of rules it
    /// applies to.
    fn exceptions(&mut self) -> Exceptions {
        // Exceptions are shared between rules: they see the parsed fields, never one rule's
        // `extract` captures (whose names would otherwise resolve to the last rule's).
        self.extracted.clear();
        let mut out = Exceptions::default();
        for e in &self.loaded.exceptions {
            let name = match out.names.iter().position(|n| *n == e.name) {
                Some(i) => i,
                None => {
                    out.names.push(e.name.clone());
                    out.names.len() - 1
                }
            };
            let at = At { file: e.file, base: String::new(), rule: e.rule.as_deref() };
            let before = self.errors.len();
            let compiled = self.condition(&at, &e.condition, &e.at);
            if e.rule.is_none() {
                for err in &mut self.errors[before..] {
                    err.message = format!("exception {:?}: {}", e.name, err.message);
                }
            }
            out.list.push(compiled.map(|(node, _)| CompiledException { name: name as u32, kind: e.kind, node }));
        }
        out
    }

    fn fingerprint(&self, rule: &crate::rule::Rule) -> u64 {
        let lists: Vec<(&String, Option<&Vec<String>>)> =
            self.used_lists.iter().map(|n| (n, self.loaded.lists.get(n))).collect();
        let conditions: Vec<(&String, Option<&Condition>)> =
            self.used_conditions.iter().map(|n| (n, self.loaded.conditions.get(n))).collect();
        let key = (
            &rule.condition,
            &rule.threshold,
            &rule.suppress,
            &rule.formats,
            &rule.sources,
            lists,
            &rule.sequence,
            conditions,
        );
        let mut bytes = serde_json::to_vec(&key).unwrap_or_default();
        // Only when given, so that the fingerprints of rules without it (and the state saved
        // under them) stay what they were.
        if !rule.extract.is_empty() {
            bytes.extend(serde_json::to_vec(&rule.extract).unwrap_or_default());
        }
        xxhash_rust::xxh3::xxh3_64(&bytes)
    }

    fn condition(&mut self, r: &At<'_>, c: &Condition, path: &str) -> Option<Compiled> {
        let combinators = [c.any.is_some(), c.all.is_some(), c.not.is_some()].iter().filter(|b| **b).count();
        let numeric = c.gt.is_some() || c.gte.is_some() || c.lt.is_some() || c.lte.is_some();
        let operators = [
            c.contains.is_some(),
            c.equals.is_some(),
            c.starts_with.is_some(),
            c.ends_with.is_some(),
            c.regex.is_some(),
            c.count.is_some(),
            numeric,
            c.cidr.is_some(),
            c.exists.is_some(),
            c.time.is_some(),
            c.reference.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        let leaf_keys = c.field.is_some() || !c.transforms.is_empty() || c.case_sensitive.is_some();
        if combinators + operators != 1 {
            let msg = if combinators + operators == 0 {
                "a condition needs one of any, all, not, contains, equals, starts_with, ends_with, regex, count, gt/gte/lt/lte, cidr, exists or time"
            } else {
                "a condition has exactly one of any, all, not or one operator; nest them with all/any to combine"
            };
            self.err(r, path, msg);
            return None;
        }
        if combinators == 1 && leaf_keys {
            self.err(r, path, "field, transforms and case_sensitive belong on an operator, not on any/all/not");
            return None;
        }
        if let Some(name) = &c.reference {
            if leaf_keys {
                self.err(r, path, "`ref` stands alone: field, transforms and case_sensitive go in the named condition");
                return None;
            }
            let Some(def) = self.loaded.conditions.get(name).cloned() else {
                let known: Vec<&str> = self.loaded.conditions.keys().map(String::as_str).collect();
                self.err_of(
                    ErrorKind::UnknownReference,
                    r,
                    &format!("{path}.ref"),
                    format!(
                        "unknown condition {name:?} (defined: {})",
                        if known.is_empty() { "none".into() } else { known.join(", ") }
                    ),
                );
                return None;
            };
            if self.ref_depth >= 16 {
                self.err(r, &format!("{path}.ref"), format!("condition {name:?} refers to itself (16 levels deep)"));
                return None;
            }
            if !self.used_conditions.contains(name) {
                self.used_conditions.push(name.clone());
            }
            // Errors inside the named condition are reported where it is used, with its name.
            let before = self.errors.len();
            self.ref_depth += 1;
            let out = self.condition(r, &def, &format!("{path}.ref"));
            self.ref_depth -= 1;
            for e in &mut self.errors[before..] {
                if !e.message.starts_with("in condition ") {
                    e.message = format!("in condition {name:?}: {}", e.message);
                }
            }
            return out;
        }
        if let Some(list) = &c.any {
            return self.list(r, list, &format!("{path}.any"), true);
        }
        if let Some(list) = &c.all {
            return self.list(r, list, &format!("{path}.all"), false);
        }
        if let Some(inner) = &c.not {
            let (n, _) = self.condition(r, inner, &format!("{path}.not"))?;
            return Some((Node::Not(Box::new(n)), Requirement::Always));
        }
        self.leaf(r, c, path)
    }

    fn list(&mut self, r: &At<'_>, list: &[Condition], path: &str, any: bool) -> Option<Compiled> {
        if list.is_empty() {
            self.err(r, path, "an empty list of conditions");
            return None;
        }
        let mut nodes = Vec::new();
        let mut reqs = Vec::new();
        for (i, c) in list.iter().enumerate() {
            if let Some((n, q)) = self.condition(r, c, &format!("{path}[{i}]")) {
                nodes.push(n);
                reqs.push(q);
            }
        }
        if nodes.len() != list.len() {
            return None;
        }
        let req = if any { union(reqs) } else { best(reqs) };
        Some((if any { Node::Any(nodes) } else { Node::All(nodes) }, req))
    }

    fn leaf(&mut self, r: &At<'_>, c: &Condition, path: &str) -> Option<Compiled> {
        if let Some(w) = &c.time {
            if c.field.is_some() || !c.transforms.is_empty() {
                self.err(r, &format!("{path}.time"), "time looks at the event's time: it takes no field or transforms");
                return None;
            }
            let when = match super::when::When::new(w) {
                Ok(when) => when,
                Err(e) => {
                    self.err(r, &format!("{path}.time"), e);
                    return None;
                }
            };
            let view = self.views.intern(View { field: std_fields::LINE, transforms: Vec::new() });
            return Some((Node::Leaf(Leaf { view, op: Op::Time(when), each: false }), Requirement::Always));
        }
        let field = match &c.field {
            Some(f) => self.field(r, &format!("{path}.field"), f)?,
            None => std_fields::LINE,
        };
        let view = self.views.intern(View { field, transforms: c.transforms.clone() });
        let cs = c.case_sensitive.unwrap_or(false);
        let (op, req) = if let Some(v) = &c.contains {
            let vals = self.values(r, v, &format!("{path}.contains"))?;
            let ac = AhoCorasickBuilder::new().ascii_case_insensitive(!cs).build(&vals).ok()?;
            let req = literal_req(view, &vals);
            (Op::Contains { ac, values: strings(vals, cs) }, req)
        } else if let Some(v) = &c.equals {
            let vals = self.values(r, v, &format!("{path}.equals"))?;
            let req = literal_req(view, &vals);
            (Op::Equals(strings(vals, cs)), req)
        } else if let Some(v) = &c.starts_with {
            let vals = self.values(r, v, &format!("{path}.starts_with"))?;
            let req = literal_req(view, &vals);
            (Op::StartsWith(strings(vals, cs)), req)
        } else if let Some(v) = &c.ends_with {
            let vals = self.values(r, v, &format!("{path}.ends_with"))?;
            let req = literal_req(view, &vals);
            (Op::EndsWith(strings(vals, cs)), req)
        } else if let Some(v) = &c.regex {
            self.regex(r, v, view, cs, &format!("{path}.regex"))?
        } else if let Some(cnt) = &c.count {
            if cnt.of.is_empty() {
                self.err(r, &format!("{path}.count.of"), "count needs a non-empty substring");
                return None;
            }
            let req = if cnt.at_least >= 1 {
                Requirement::AnyOf(vec![(view, cnt.of.as_bytes().to_ascii_lowercase())])
            } else {
                Requirement::Always
            };
            (Op::Count { needle: cnt.of.as_bytes().to_vec(), case_sensitive: cs, at_least: cnt.at_least }, req)
        } else if let Some(v) = &c.cidr {
            let vals = self.values(r, v, &format!("{path}.cidr"))?;
            let mut nets = Vec::new();
            for (i, s) in vals.iter().enumerate() {
                let s = String::from_utf8_lossy(s);
                let net = s.parse::<ipnet::IpNet>().or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
                match net {
                    Ok(n) => nets.push(n),
                    Err(_) => self.err(
                        r,
                        &format!("{path}.cidr[{i}]"),
                        format!("{s:?} is not an IP network (e.g. 10.0.0.0/8) or address"),
                    ),
                }
            }
            (Op::Cidr(nets), Requirement::Always)
        } else if let Some(e) = c.exists {
            (Op::Exists(e), Requirement::Always)
        } else {
            (Op::Number { gt: c.gt, gte: c.gte, lt: c.lt, lte: c.lte }, Requirement::Always)
        };
        // A captured field is filled after the prefilter ran: its literals are looked for in
        // the field it is a part of (a literal of the part is one of the whole), and through
        // transforms (which may not treat a part as they treat the whole) not at all.
        // Over the elements of a list, the literals are looked for in the elements' joined
        // text, which holds each element as it is, but not as a transform turns it.
        let each = c.field.as_deref().is_some_and(|f| f.ends_with("[*]"));
        let req = if each && !c.transforms.is_empty() { Requirement::Always } else { req };
        let req = match (self.extract_root(field), req) {
            (None, req) | (Some(_), req @ Requirement::Always) => req,
            (Some(root), Requirement::AnyOf(lits)) if c.transforms.is_empty() => {
                let root = self.views.intern(View { field: root, transforms: Vec::new() });
                Requirement::AnyOf(lits.into_iter().map(|(_, l)| (root, l)).collect())
            }
            (Some(_), Requirement::AnyOf(_)) => Requirement::Always,
        };
        Some((Node::Leaf(Leaf { view, op, each }), req))
    }

    fn regex(&mut self, r: &At<'_>, v: &Values, view: ViewId, cs: bool, path: &str) -> Option<(Op, Requirement)> {
        let pats = self.values(r, v, path)?;
        let mut ok = true;
        let mut lits = Some(Vec::new());
        let mut texts = Vec::new();
        for (i, p) in pats.iter().enumerate() {
            let p = String::from_utf8_lossy(p).into_owned();
            if let Err(e) = build_regex(&p, cs) {
                let msg = format!("invalid regex: {}", one_line(&e.to_string()));
                self.err_of(ErrorKind::Regex, r, &format!("{path}[{i}]"), msg);
                ok = false;
                continue;
            }
            match (literal::required_literals(&p, !cs), &mut lits) {
                (Some(l), Some(acc)) => acc.extend(l.into_iter().map(|l| (view, l))),
                _ => lits = None,
            }
            texts.push(format!("(?:{p})"));
        }
        if !ok {
            return None;
        }
        let re = build_regex(&texts.join("|"), cs).ok()?;
        let req = match lits {
            Some(l) if !l.is_empty() => Requirement::AnyOf(l),
            _ => Requirement::Always,
        };
        Some((Op::regex(re, cs), req))
    }

    /// Expands a value list (strings and `{list: NAME}`), reporting unknown lists.
    fn values(&mut self, r: &At<'_>, v: &Values, path: &str) -> Option<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        let mut ok = true;
        for (i, item) in v.0.iter().enumerate() {
            match item {
                ValueItem::Text(s) => out.push(s.as_bytes().to_vec()),
                ValueItem::List { list } => match self.loaded.lists.get(list) {
                    Some(items) => {
                        self.used_lists.push(list.clone());
                        out.extend(items.iter().map(|s| s.as_bytes().to_vec()))
                    }
                    None => {
                        let p = if v.0.len() == 1 { path.to_string() } else { format!("{path}[{i}]") };
                        let known: Vec<&str> = self.loaded.lists.keys().map(String::as_str).collect();
                        self.err_of(
                            ErrorKind::UnknownReference,
                            r,
                            &p,
                            format!(
                                "unknown list {list:?} (defined lists: {})",
                                if known.is_empty() { "none".to_string() } else { known.join(", ") }
                            ),
                        );
                        ok = false;
                    }
                },
            }
        }
        if ok && out.is_empty() {
            self.err(r, path, "needs at least one value");
            return None;
        }
        ok.then_some(out)
    }
}

/// Compiles every rule of `loaded`, each on its own: one entry per rule (`None` for a rule
/// with errors), its prefilter requirement already filed by [`Requirement::worth_it`], and
/// every error found. [`super::RuleSet::compile`] turns this into an all-or-nothing rule set;
/// `trapline lint` keeps going past broken rules.
/// The compiled entries of one rule, each with its prefilter requirement.
pub type Entries = Vec<(CompiledRule, Requirement)>;

/// Compiles every rule of `loaded`: for each, its entries (one, or one per step of a
/// sequence), or `None` when it has errors; and every exception.
pub fn compile_rules(
    loaded: &Loaded,
    opts: &CompileOptions,
    registry: &mut FieldRegistry,
    views: &mut Views,
) -> (Vec<Option<Entries>>, Exceptions, Vec<RuleError>) {
    let mut c = Compiler {
        loaded,
        opts,
        registry,
        views,
        errors: Vec::new(),
        used_lists: Vec::new(),
        used_conditions: Vec::new(),
        ref_depth: 0,
        extracted: Vec::new(),
        scopes: 0,
    };
    let rules = loaded
        .rules
        .iter()
        .map(|r| c.rule(r).map(|e| e.into_iter().map(|(rule, req)| (rule, req.worth_it(c.views))).collect()))
        .collect();
    let exceptions = c.exceptions();
    (rules, exceptions, c.errors)
}

pub(crate) fn build_regex(p: &str, case_sensitive: bool) -> Result<regex::bytes::Regex, regex::Error> {
    // Unicode mode off: `.` and classes match any byte, so invalid UTF-8 that an attacker
    // slips into a request cannot make a pattern silently fail.
    RegexBuilder::new(p)
        .unicode(false)
        .case_insensitive(!case_sensitive)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_DFA_LIMIT)
        .build()
}

/// Letters, digits and `_ . - @`: what field names (JSON keys, captures) are made of, and
/// `[N]` / `[*]` for JSON array elements (checked by [`crate::parse::json::parse_path`]).
fn valid_field_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'@' | b'[' | b']' | b'*'))
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn strings(values: Vec<Vec<u8>>, case_sensitive: bool) -> Strings {
    Strings { values, case_sensitive }
}

fn literal_req(view: ViewId, vals: &[Vec<u8>]) -> Requirement {
    if vals.iter().any(|v| v.is_empty()) {
        return Requirement::Always;
    }
    Requirement::AnyOf(vals.iter().map(|v| (view, v.to_ascii_lowercase())).collect())
}

fn union(reqs: Vec<Requirement>) -> Requirement {
    let mut out = Vec::new();
    for r in reqs {
        match r {
            Requirement::Always => return Requirement::Always,
            Requirement::AnyOf(l) => out.extend(l),
        }
    }
    Requirement::AnyOf(out)
}

/// For `all`: any child's requirement is a requirement of the whole; keep the most selective.
fn best(reqs: Vec<Requirement>) -> Requirement {
    reqs.into_iter()
        .filter_map(|r| match r {
            Requirement::AnyOf(l) if !l.is_empty() => Some(l),
            _ => None,
        })
        .max_by_key(|l| literal::set_score(l.iter().map(|(_, s)| s.as_slice())))
        .map_or(Requirement::Always, Requirement::AnyOf)
}
