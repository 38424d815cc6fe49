//! The multi-pattern prefilter: one automaton over the literals of every rule, so the cost of
//! a line grows with the number of *candidate* rules, not with the number of rules.
//!
//! Each rule contributes a *requirement*: a set of (view, literal) pairs of which at least one
//! must occur if the rule's condition can be true (see [`super::compile`]). Rules without one
//! (pure field predicates, `not`, literal-free regexes) are "always candidates".
//!
//! On a line:
//! 1. for each field some rule's literals aim at (`uri`, `user_agent`, the whole `line`, ...),
//!    one scan of that field's value with the automaton of all those literals (ASCII
//!    case-insensitive, overlapping so no literal hides another);
//! 2. for each view whose transforms change the value on this line (URL-decoding a `%`,
//!    normalising a `/../`), a scan of the transformed value with that view's automaton. For
//!    most lines nothing is encoded and this step is a few `memchr` calls;
//! 3. the candidate rules are then confirmed by evaluating their full condition. Rules with
//!    no useful literal at all are always candidates.
//!
//! This is a superset filter by construction: it can only produce extra candidates, never
//! lose one, because every literal sits in its field's automaton (which sees the value a
//! transform-free view sees) and every changed view is scanned with its own.

use aho_corasick::automaton::{Automaton, StateID};
use aho_corasick::dfa::DFA;
use aho_corasick::{Anchored, MatchKind, Span, StartKind, packed};

use super::transform;
use super::view::{ViewCache, ViewId, Views};
use crate::parse::{FieldId, Record, std_fields};

/// A fixed-size set of rule indexes.
#[derive(Debug, Clone, Default)]
pub struct Bits(Vec<u64>);

impl Bits {
    pub fn new(n: usize) -> Bits {
        Bits(vec![0; n.div_ceil(64)])
    }
    #[inline]
    pub fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    pub fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }
    #[inline]
    pub fn get(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }
    pub fn copy_from(&mut self, other: &Bits) {
        self.0.clear();
        self.0.extend_from_slice(&other.0);
    }
    pub fn and(&mut self, other: &Bits) {
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            *a &= *b;
        }
    }
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|w| *w == 0)
    }
    /// Indexes of set bits, ascending.
    pub fn ones(&self) -> impl Iterator<Item = usize> + '_ {
        self.0.iter().enumerate().flat_map(|(wi, &w)| {
            let mut w = w;
            std::iter::from_fn(move || {
                if w == 0 {
                    return None;
                }
                let b = w.trailing_zeros() as usize;
                w &= w - 1;
                Some(wi * 64 + b)
            })
        })
    }
}

/// An automaton and, per pattern, the rules it makes candidates.
///
/// It holds the concrete `dfa::DFA` rather than the `AhoCorasick` wrapper: the wrapper
/// dispatches every state transition through a trait object, which on this hot loop (one
/// transition per byte of every line) costs about half the matching time.
#[derive(Debug)]
struct Scanner {
    ac: DFA,
    /// For sets small enough for a packed SIMD searcher (Teddy, up to 128 literals): it finds
    /// where a literal may start, many bytes per instruction, and only those positions are
    /// walked with the (then anchored) DFA. Teddy is case-sensitive, so it runs over a
    /// lower-cased copy of the value, against the lower-cased literals.
    packed: Option<packed::Searcher>,
    rules: Vec<Vec<u32>>,
}

impl Scanner {
    fn build(lits: &[(Vec<u8>, u32)]) -> Scanner {
        let mut patterns: Vec<&[u8]> = Vec::new();
        let mut rules: Vec<Vec<u32>> = Vec::new();
        let mut index = std::collections::HashMap::new();
        for (lit, rule) in lits {
            let i = *index.entry(lit.as_slice()).or_insert_with(|| {
                patterns.push(lit);
                rules.push(Vec::new());
                patterns.len() - 1
            });
            if !rules[i].contains(rule) {
                rules[i].push(*rule);
            }
        }
        // Literals arrive lower-cased (see `Requirement`); the packed searcher needs them so.
        let lower: Vec<Vec<u8>> = patterns.iter().map(|p| p.to_ascii_lowercase()).collect();
        let packed =
            packed::Config::new().match_kind(packed::MatchKind::LeftmostFirst).builder().extend(&lower).build();
        let start = if packed.is_some() { StartKind::Anchored } else { StartKind::Unanchored };
        let ac = DFA::builder()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .start_kind(start)
            // The crate's own skip-ahead prefilters are not used: with ASCII case-insensitivity
            // they cannot use Teddy, and over hundreds of literals with common bytes they fire
            // at nearly every position (measured: ~20% of match time).
            .prefilter(false)
            .build(&patterns)
            .expect("literal automaton within size limits");
        Scanner { ac, packed, rules }
    }

    /// Marks the rules of every literal that occurs in `hay` (overlapping occurrences
    /// included). `lower` is scratch space.
    #[inline]
    fn scan(&self, hay: &[u8], lower: &mut Vec<u8>, out: &mut Bits) {
        match &self.packed {
            Some(p) => self.scan_packed(p, hay, lower, out),
            None => self.scan_dfa(hay, out),
        }
    }

    /// A hand-written walk over the DFA: in an unanchored Standard DFA every position's state
    /// already lists all literals ending there, so one table lookup per byte, plus a check of
    /// the rare match states, finds every literal. That is several times fewer instructions per
    /// byte than the crate's general overlapping-iterator protocol.
    fn scan_dfa(&self, hay: &[u8], out: &mut Bits) {
        let Ok(mut sid) = self.ac.start_state(Anchored::No) else { return };
        for &b in hay {
            sid = self.ac.next_state(Anchored::No, sid, b);
            if self.ac.is_special(sid) && self.ac.is_match(sid) {
                self.mark(sid, out);
            }
        }
    }

    /// Every position where some literal starts is found by the packed searcher (leftmost
    /// match, then again from the next byte); from each, an anchored DFA walk reports every
    /// literal starting there, so overlapping and nested literals are all found.
    fn scan_packed(&self, p: &packed::Searcher, hay: &[u8], lower: &mut Vec<u8>, out: &mut Bits) {
        lower.clear();
        lower.extend(hay.iter().map(u8::to_ascii_lowercase));
        let Ok(start) = self.ac.start_state(Anchored::Yes) else { return };
        let mut at = 0;
        while at < lower.len() {
            let Some(m) = p.find_in(&lower[..], Span::from(at..lower.len())) else { break };
            let mut sid = start;
            for &b in &hay[m.start()..] {
                sid = self.ac.next_state(Anchored::Yes, sid, b);
                if self.ac.is_special(sid) {
                    if self.ac.is_dead(sid) {
                        break;
                    }
                    if self.ac.is_match(sid) {
                        self.mark(sid, out);
                    }
                }
            }
            at = m.start() + 1;
        }
    }

    #[inline]
    fn mark(&self, sid: StateID, out: &mut Bits) {
        for i in 0..self.ac.match_len(sid) {
            for r in &self.rules[self.ac.match_pattern(sid, i).as_usize()] {
                out.set(*r as usize);
            }
        }
    }
}

/// The compiled prefilter of a rule set.
#[derive(Debug)]
pub struct Prefilter {
    /// Per scanned field (the raw line counts as the field `line`): one automaton over the
    /// literals of every rule that looks at that field, run over the field's value. Scanning
    /// the field rather than the whole line keeps text elsewhere on the line (a user agent
    /// saying "Windows", a referer with "http://") from making URL rules candidates.
    fields: Vec<FieldScan>,
    /// Per view with transforms: its own scanner, used when the transforms change the value.
    views: Vec<ViewScan>,
    /// The fields under those views, with the union of their views' change bits: each is
    /// tested once per line.
    view_fields: Vec<(FieldId, u8)>,
    always: Bits,
    /// Number of distinct literals (for reporting).
    pub literals: usize,
}

#[derive(Debug)]
struct FieldScan {
    field: FieldId,
    scanner: Scanner,
    /// Set for the scans of `path` and `query` when they were folded into `uri`: they run only
    /// on lines that have no `uri` (custom formats that capture only a path).
    only_without_uri: bool,
}

#[derive(Debug)]
struct ViewScan {
    view: ViewId,
    scanner: Scanner,
    /// Index of the view's field in [`Prefilter::view_fields`].
    field_slot: usize,
    /// The [`transform::change`] bits of the view's transforms: the view differs from its
    /// field's value (and must be scanned on its own) only when one of them is set on the line.
    /// URL-decoding a `+` counts only when some literal contains a space.
    mask: u8,
}

/// Per-line scratch space of the prefilter, reused from line to line.
#[derive(Debug, Default)]
pub struct PrefilterScratch {
    /// Lower-cased copy of a value, for the packed searchers.
    lower: Vec<u8>,
    /// Per entry of [`Prefilter::view_fields`]: the change bits of the field on this line.
    masks: Vec<u8>,
}

/// A rule's prefilter requirement.
pub enum Requirement {
    /// At least one of these (view, lower-cased literal) pairs occurs whenever the rule matches.
    AnyOf(Vec<(ViewId, Vec<u8>)>),
    /// No literal is required: evaluate on every line.
    Always,
}

/// Fields that are part of `uri`: their literals are searched in the `uri` scan, so the bytes
/// of a request target are walked once, not once per field.
fn folded_into_uri(f: FieldId) -> bool {
    f == std_fields::PATH || f == std_fields::QUERY
}

impl Requirement {
    /// Drops requirements that would cost more in the automata than they save: a single
    /// letter, digit or URL punctuation (it occurs in nearly every value, and every occurrence
    /// costs a report), and literals aimed only at short token fields (status, method, ...),
    /// where comparing the parsed field directly is cheaper than scanning for `404`.
    pub fn worth_it(self, views: &Views) -> Requirement {
        use std_fields::*;
        const TOKEN_FIELDS: &[FieldId] = &[STATUS, METHOD, PROTOCOL, BYTES, IDENT, USER, PID, LEVEL];
        match self {
            Requirement::AnyOf(l) if l.is_empty() => Requirement::AnyOf(l),
            Requirement::AnyOf(l) => {
                let tokens = l.iter().all(|(v, _)| TOKEN_FIELDS.contains(&views.get(*v).field));
                let useless = l
                    .iter()
                    .any(|(_, s)| s.len() == 1 && (s[0].is_ascii_alphanumeric() || b"/.-_=&?:+ ,".contains(&s[0])));
                if tokens || useless { Requirement::Always } else { Requirement::AnyOf(l) }
            }
            Requirement::Always => Requirement::Always,
        }
    }

    /// Short human form, for debugging rule sets: the literals, or `always`.
    pub fn describe(&self) -> String {
        match self {
            Requirement::Always => "always (no useful required literal)".to_string(),
            Requirement::AnyOf(l) => {
                let mut v: Vec<String> = l.iter().map(|(_, s)| format!("{:?}", String::from_utf8_lossy(s))).collect();
                v.sort();
                v.dedup();
                format!("any of [{}]", v.join(", "))
            }
        }
    }
}

impl Prefilter {
    pub fn build(reqs: &[Requirement], rule_count: usize, view_table: &Views) -> Prefilter {
        type Lits = Vec<(Vec<u8>, u32)>;
        let mut always = Bits::new(rule_count);
        let mut per_field: std::collections::BTreeMap<FieldId, Lits> = Default::default();
        let mut fallback: std::collections::BTreeMap<FieldId, Lits> = Default::default();
        let mut per_view: std::collections::BTreeMap<ViewId, Lits> = Default::default();
        let mut distinct = std::collections::BTreeSet::new();
        for (rule, req) in reqs.iter().enumerate() {
            match req {
                Requirement::Always => always.set(rule),
                Requirement::AnyOf(lits) => {
                    for (view, lit) in lits {
                        distinct.insert(lit.clone());
                        let v = view_table.get(*view);
                        let entry = (lit.clone(), rule as u32);
                        if folded_into_uri(v.field) {
                            per_field.entry(std_fields::URI).or_default().push(entry.clone());
                            fallback.entry(v.field).or_default().push(entry.clone());
                        } else {
                            per_field.entry(v.field).or_default().push(entry.clone());
                        }
                        if !v.transforms.is_empty() {
                            per_view.entry(*view).or_default().push(entry);
                        }
                    }
                }
            }
        }
        let mut fields: Vec<FieldScan> = per_field
            .into_iter()
            .map(|(field, lits)| FieldScan { field, scanner: Scanner::build(&lits), only_without_uri: false })
            .collect();
        fields.extend(fallback.into_iter().map(|(field, lits)| FieldScan {
            field,
            scanner: Scanner::build(&lits),
            only_without_uri: true,
        }));
        let mut view_fields: Vec<(FieldId, u8)> = Vec::new();
        let views = per_view
            .into_iter()
            .map(|(view, lits)| {
                let v = view_table.get(view);
                let plus_matters = lits.iter().any(|(l, _)| l.contains(&b' '));
                let mask = transform::chain_mask(&v.transforms, plus_matters);
                let field_slot = match view_fields.iter().position(|(f, _)| *f == v.field) {
                    Some(i) => i,
                    None => {
                        view_fields.push((v.field, 0));
                        view_fields.len() - 1
                    }
                };
                view_fields[field_slot].1 |= mask;
                ViewScan { view, field_slot, mask, scanner: Scanner::build(&lits) }
            })
            .collect();
        Prefilter { fields, views, view_fields, always, literals: distinct.len() }
    }

    /// Sets `out` to the candidate rules for this line.
    pub fn candidates(
        &self,
        line: &[u8],
        rec: &Record,
        views: &Views,
        cache: &mut ViewCache,
        s: &mut PrefilterScratch,
        out: &mut Bits,
    ) {
        out.copy_from(&self.always);
        let has_uri = rec.get(line, std_fields::URI).is_some();
        for fs in &self.fields {
            if fs.only_without_uri && has_uri {
                continue;
            }
            if let Some(v) = rec.get(line, fs.field) {
                fs.scanner.scan(v, &mut s.lower, out);
            }
        }
        s.masks.clear();
        s.masks.extend(self.view_fields.iter().map(|&(f, needed)| match rec.get(line, f) {
            Some(v) => transform::change_mask(v, needed),
            None => 0, // absent: no view of it to scan
        }));
        for vs in &self.views {
            // Unchanged up to ASCII case: the field's own scan already covered the view.
            if s.masks[vs.field_slot] & vs.mask == 0 {
                continue;
            }
            if let Some(v) = cache.get(vs.view, views, line, rec) {
                vs.scanner.scan(v, &mut s.lower, out);
            }
        }
    }

    /// One line per automaton, for debugging rule sets: what it scans and how many literals.
    pub fn layout(&self, reg: &crate::parse::FieldRegistry, views: &Views) -> Vec<String> {
        let view_name = |v: ViewId| {
            let v = views.get(v);
            let t: Vec<&str> = v.transforms.iter().map(|t| t.as_str()).collect();
            format!("{}[{}]", reg.name(v.field), t.join(","))
        };
        let mut out: Vec<String> = self
            .fields
            .iter()
            .map(|f| {
                let when = if f.only_without_uri { " (lines without uri)" } else { "" };
                format!("field {}{when}: {} literals", reg.name(f.field), f.scanner.rules.len())
            })
            .collect();
        out.extend(
            self.views.iter().map(|v| format!("view {}: {} literals", view_name(v.view), v.scanner.rules.len())),
        );
        out
    }

    /// Rules evaluated on every line.
    pub fn always(&self) -> &Bits {
        &self.always
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_roundtrip() {
        let mut b = Bits::new(130);
        for i in [0, 63, 64, 129] {
            b.set(i);
        }
        assert_eq!(b.ones().collect::<Vec<_>>(), vec![0, 63, 64, 129]);
        assert!(b.get(64) && !b.get(65));
    }

    /// Both scanning strategies find every literal, overlapping and nested ones included,
    /// case-insensitively, on short values (below the SIMD block size) and long ones.
    #[test]
    fn scanners_find_overlapping_literals_in_any_case() {
        let words: &[&[u8]] = &[b"()", b"() {", b"{", b"hellothinkphp", b"think", b"%"];
        let few: Vec<(Vec<u8>, u32)> = words.iter().enumerate().map(|(i, w)| (w.to_vec(), i as u32)).collect();
        // Over 128 literals: no packed searcher, the plain DFA walk.
        let mut many = few.clone();
        many.extend((0..200).map(|i| (format!("zz{i:03}q").into_bytes(), 6 + i)));
        let mut lower = Vec::new();
        for (lits, packed) in [(&few, true), (&many, false)] {
            let s = Scanner::build(lits);
            assert_eq!(s.packed.is_some(), packed);
            for pad in [0, 5, 40, 300] {
                let hay = format!("{}x() {{ HelloThinkPHP %41{}", "a".repeat(pad), "b".repeat(pad));
                let mut out = Bits::new(lits.len());
                s.scan(hay.as_bytes(), &mut lower, &mut out);
                assert_eq!(out.ones().collect::<Vec<_>>(), [0, 1, 2, 3, 4, 5], "pad {pad}, packed {packed}");
                let mut out = Bits::new(lits.len());
                s.scan(b"nothing to see", &mut lower, &mut out);
                assert!(out.is_empty());
            }
        }
    }
}
