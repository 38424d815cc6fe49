//! The multi-pattern prefilter: one automaton over the literals of every rule, so the cost of
//! a line grows with the number of *candidate* rules, not with the number of rules.
//!
//! Each rule contributes a *requirement*: a set of (view, literal) pairs of which at least one
//! must occur if the rule's condition can be true (see [`super::compile`]). Rules without one
//! (pure field predicates, `not`, literal-free regexes) are "always candidates".
//!
//! On a line:
//! 1. one scan of the raw line with the global automaton (all literals, ASCII
//!    case-insensitive, overlapping so no literal hides another);
//! 2. for each view whose value on this line is *not* a verbatim slice of the raw line (it was
//!    URL-decoded, unescaped by the parser, ...), a scan of that value with the automaton of
//!    that view's literals. For most lines every view is verbatim and this step is a few
//!    `memchr` calls;
//! 3. the candidate rules are then confirmed by evaluating their full condition.
//!
//! This is a superset filter by construction: it can only produce extra candidates, never
//! lose one, because every literal also sits in the global automaton and each non-verbatim
//! view is scanned with its own.

use aho_corasick::automaton::{Automaton, OverlappingState};
use aho_corasick::dfa::DFA;
use aho_corasick::{Input, MatchKind};

use super::view::{ViewCache, ViewId, Views};
use crate::parse::Record;

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
        let ac = DFA::builder()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .build(&patterns)
            .expect("literal automaton within size limits");
        Scanner { ac, rules }
    }

    #[inline]
    fn scan(&self, hay: &[u8], out: &mut Bits) {
        let input = Input::new(hay);
        let mut state = OverlappingState::start();
        // Errors are impossible for an unanchored search of a Standard automaton; stopping
        // early on one would only lose candidates, so it is treated as the end of the scan.
        while let Ok(()) = self.ac.try_find_overlapping(&input, &mut state) {
            let Some(m) = state.get_match() else { break };
            for r in &self.rules[m.pattern().as_usize()] {
                out.set(*r as usize);
            }
        }
    }
}

/// The compiled prefilter of a rule set.
#[derive(Debug)]
pub struct Prefilter {
    global: Option<Scanner>,
    /// Per view with literals: its own scanner, used when the view is not verbatim.
    views: Vec<(ViewId, Scanner)>,
    always: Bits,
    /// Number of distinct literals (for reporting).
    pub literals: usize,
}

/// A rule's prefilter requirement.
pub enum Requirement {
    /// At least one of these (view, lower-cased literal) pairs occurs whenever the rule matches.
    AnyOf(Vec<(ViewId, Vec<u8>)>),
    /// No literal is required: evaluate on every line.
    Always,
}

impl Requirement {
    /// Short human form, for debugging rule sets: the literals, or `always`.
    pub fn describe(&self) -> String {
        match self {
            Requirement::Always => "always (no required literal)".to_string(),
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
    pub fn build(reqs: &[Requirement], rule_count: usize) -> Prefilter {
        let mut always = Bits::new(rule_count);
        let mut all: Vec<(Vec<u8>, u32)> = Vec::new();
        let mut per_view: std::collections::BTreeMap<ViewId, Vec<(Vec<u8>, u32)>> = Default::default();
        for (rule, req) in reqs.iter().enumerate() {
            match req {
                Requirement::Always => always.set(rule),
                Requirement::AnyOf(lits) => {
                    for (view, lit) in lits {
                        all.push((lit.clone(), rule as u32));
                        per_view.entry(*view).or_default().push((lit.clone(), rule as u32));
                    }
                }
            }
        }
        let literals = {
            let mut l: Vec<&Vec<u8>> = all.iter().map(|(l, _)| l).collect();
            l.sort();
            l.dedup();
            l.len()
        };
        let global = (!all.is_empty()).then(|| Scanner::build(&all));
        let views = per_view.into_iter().map(|(v, lits)| (v, Scanner::build(&lits))).collect();
        Prefilter { global, views, always, literals }
    }

    /// Sets `out` to the candidate rules for this line.
    pub fn candidates(&self, line: &[u8], rec: &Record, views: &Views, cache: &mut ViewCache, out: &mut Bits) {
        out.copy_from(&self.always);
        if let Some(g) = &self.global {
            g.scan(line, out);
        }
        for (view, scanner) in &self.views {
            if ViewCache::covered_by_raw(views, *view, line, rec) {
                continue;
            }
            if let Some(v) = cache.get(*view, views, line, rec) {
                scanner.scan(v, out);
            }
        }
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
}
