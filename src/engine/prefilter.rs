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
    pub fn or(&mut self, other: &Bits) {
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            *a |= *b;
        }
    }
    /// Clears every bit, sized to `words` words.
    fn zero(&mut self, words: usize) {
        self.0.clear();
        self.0.resize(words, 0);
    }
    fn len_words(&self) -> usize {
        self.0.len()
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
    /// For sets small enough for a packed SIMD searcher (Teddy, up to 64 literals, and up to
    /// 16 when one is a single byte): it finds where a literal may start, many bytes per
    /// instruction, and only those positions are walked with the (then anchored) DFA. Teddy is
    /// case-sensitive, so it runs over a lower-cased copy of the value, against the
    /// lower-cased literals. The crate's limits stay: beyond them the literals' first bytes
    /// occur nearly everywhere in log text, and verifying Teddy's candidates costs several
    /// times the DFA walk (measured: the 89 user-agent literals, 7k instructions a line).
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
        // A copy lower-cased in place: the in-place loop vectorises, the mapping iterator
        // went byte by byte.
        lower.clear();
        lower.extend_from_slice(hay);
        lower.make_ascii_lowercase();
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

    /// How it searches, for [`Prefilter::layout`].
    fn kind(&self) -> &'static str {
        if self.packed.is_some() { " (packed)" } else { " (DFA walk)" }
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
    /// The slot of `uri` in `view_fields`, if some view is over it, with the union of the
    /// change bits of every view field: `path` and `query` are usually parts of `uri`, and a
    /// part of a value in which no transform changes anything needs no classifying of its own.
    uri_slot: Option<(usize, u8)>,
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
    /// Whether results are remembered per value ([`Memo`]): for `user_agent`, whose values
    /// repeat from line to line (a few browsers and tools make most of the traffic) and whose
    /// literals are too many for the packed searcher, so each scan walks every byte.
    memo: bool,
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
    memo: Memo,
}

/// The candidate rules of recently scanned values of memoised fields, in a small
/// direct-mapped table: a value seen again costs a hash and a comparison instead of a scan.
/// The result of a scan depends only on the value's bytes, so a hit gives exactly what the
/// scan would.
#[derive(Debug, Default)]
struct Memo {
    entries: Vec<MemoEntry>,
    /// The rules found by the scan of a value not in the table.
    found: Bits,
}

#[derive(Debug, Default)]
struct MemoEntry {
    /// Hash of (field, value).
    hash: u64,
    field: FieldId,
    value: Vec<u8>,
    rules: Bits,
}

/// Entries of [`Memo`] (a power of two).
const MEMO_ENTRIES: usize = 64;

impl Memo {
    fn scan(&mut self, field: FieldId, scanner: &Scanner, v: &[u8], lower: &mut Vec<u8>, out: &mut Bits) {
        if self.entries.is_empty() {
            self.entries.resize_with(MEMO_ENTRIES, MemoEntry::default);
        }
        let hash = xxhash_rust::xxh3::xxh3_64_with_seed(v, u64::from(field));
        let e = &mut self.entries[hash as usize % MEMO_ENTRIES];
        // (An unused entry can only "hit" an empty value, in which nothing is found anyway.)
        if e.hash == hash && e.field == field && e.value == v {
            out.or(&e.rules);
            return;
        }
        self.found.zero(out.len_words());
        scanner.scan(v, lower, &mut self.found);
        out.or(&self.found);
        e.hash = hash;
        e.field = field;
        e.value.clear();
        e.value.extend_from_slice(v);
        e.rules.copy_from(&self.found);
    }
}

/// A rule's prefilter requirement.
pub enum Requirement {
    /// At least one of these (view, lower-cased literal) pairs occurs whenever the rule matches.
    AnyOf(Vec<(ViewId, Vec<u8>)>),
    /// No literal is required: evaluate on every line.
    Always,
}

/// Whether `part` lies within `whole` in memory. The change bits of a value are those of its
/// bytes and of pairs of adjacent bytes (see [`transform::change_mask`]), plus a leading `.`:
/// a part of a value without any has none either, unless it starts with a `.`.
fn part_of(part: &[u8], whole: &[u8]) -> bool {
    let (p, w) = (part.as_ptr() as usize, whole.as_ptr() as usize);
    p >= w && p + part.len() <= w + whole.len()
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
            .map(|(field, lits)| {
                let memo = field == std_fields::USER_AGENT;
                FieldScan { field, scanner: Scanner::build(&lits), only_without_uri: false, memo }
            })
            .collect();
        fields.extend(fallback.into_iter().map(|(field, lits)| FieldScan {
            field,
            scanner: Scanner::build(&lits),
            only_without_uri: true,
            memo: false,
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
        let all_bits = view_fields.iter().fold(0, |m, (_, b)| m | b);
        let uri_slot = view_fields.iter().position(|(f, _)| *f == std_fields::URI).map(|i| (i, all_bits));
        Prefilter { fields, views, view_fields, uri_slot, always, literals: distinct.len() }
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
                if fs.memo {
                    s.memo.scan(fs.field, &fs.scanner, v, &mut s.lower, out);
                } else {
                    fs.scanner.scan(v, &mut s.lower, out);
                }
            }
        }
        s.masks.clear();
        // `uri` first: when nothing in it would change, neither would anything in a part of it.
        let (mut uri_slot, mut uri_mask, mut clean_uri) = (usize::MAX, 0, None);
        if let Some((slot, bits)) = self.uri_slot
            && let Some(v) = rec.get(line, std_fields::URI)
        {
            (uri_slot, uri_mask) = (slot, transform::change_mask(v, bits));
            clean_uri = (uri_mask == 0).then_some(v);
        }
        s.masks.extend(self.view_fields.iter().enumerate().map(|(slot, &(f, needed))| match rec.get(line, f) {
            _ if slot == uri_slot => uri_mask & needed,
            None => 0, // absent: no view of it to scan
            Some(v) if clean_uri.is_some_and(|u| part_of(v, u)) && v.first() != Some(&b'.') => 0,
            Some(v) => transform::change_mask(v, needed),
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
                format!("field {}{when}: {} literals{}", reg.name(f.field), f.scanner.rules.len(), f.scanner.kind())
            })
            .collect();
        out.extend(
            self.views
                .iter()
                .map(|v| format!("view {}: {} literals{}", view_name(v.view), v.scanner.rules.len(), v.scanner.kind())),
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

    /// A value seen again gets from the memo exactly what scanning it gives, whether its entry
    /// is still there or was taken by another value (or another field) meanwhile.
    #[test]
    fn memo_gives_what_the_scan_gives() {
        let lits: Vec<(Vec<u8>, u32)> = [&b"curl/"[..], b"sqlmap", b"nikto", b"%"]
            .iter()
            .enumerate()
            .map(|(i, w)| (w.to_vec(), i as u32))
            .collect();
        let scanner = Scanner::build(&lits);
        let values: Vec<String> = (0..300)
            .map(|i| match i % 5 {
                0 => format!("curl/{i}"),
                1 => format!("Mozilla/5.0 (X11; rv:{i}) sqlMap"),
                2 => format!("%{i}"),
                3 => String::new(),
                _ => format!("browser {i}"),
            })
            .collect();
        let (mut memo, mut lower) = (Memo::default(), Vec::new());
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..5000 {
            let v = values[rng.usize(..values.len())].as_bytes();
            let field = rng.u16(0..2);
            let (mut want, mut got) = (Bits::new(70), Bits::new(70));
            scanner.scan(v, &mut lower, &mut want);
            got.set(69); // what other fields found stays
            memo.scan(field, &scanner, v, &mut lower, &mut got);
            want.set(69);
            assert_eq!(
                got.ones().collect::<Vec<_>>(),
                want.ones().collect::<Vec<_>>(),
                "{:?}",
                String::from_utf8_lossy(v)
            );
        }
    }
}
