//! Required literals of a regex: a set of strings at least one of which must occur in any text
//! the regex matches. They let a regex rule take part in the shared literal prefilter, so it
//! is only run on lines that could match.
//!
//! The analysis is conservative: when it cannot prove a literal is required it returns `None`
//! and the rule is evaluated on every line instead. A wrong answer here would be a missed
//! detection, so every rule is "when in doubt, give up".

use regex_syntax::hir::{Class, Hir, HirKind};

/// Upper bound on alternatives kept; beyond it the set is too weak to be worth it.
const MAX_ALTERNATIVES: usize = 64;

/// Lower-cased required literals of `pattern`, or `None` when there is no useful set.
/// `case_insensitive` must match how the regex itself is compiled.
pub fn required_literals(pattern: &str, case_insensitive: bool) -> Option<Vec<Vec<u8>>> {
    let hir = regex_syntax::ParserBuilder::new()
        .unicode(false)
        .utf8(false)
        .case_insensitive(case_insensitive)
        .build()
        .parse(pattern)
        .ok()?;
    let set = required(&hir)?;
    if set.is_empty() || set.iter().any(|l| l.is_empty()) {
        return None;
    }
    Some(set)
}

/// A single byte the node always matches, up to ASCII case; `None` otherwise.
fn single_byte(h: &Hir) -> Option<u8> {
    match h.kind() {
        HirKind::Literal(l) if l.0.len() == 1 => Some(l.0[0].to_ascii_lowercase()),
        HirKind::Class(Class::Bytes(c)) => {
            let mut bytes = c.ranges().iter().flat_map(|r| r.start()..=r.end());
            let first = bytes.next()?.to_ascii_lowercase();
            bytes.all(|b| b.to_ascii_lowercase() == first).then_some(first)
        }
        HirKind::Class(Class::Unicode(c)) => {
            let mut chars = c.ranges().iter().flat_map(|r| r.start()..=r.end());
            let first = chars.next()?;
            if !first.is_ascii() {
                return None;
            }
            let first = first.to_ascii_lowercase();
            chars.all(|ch| ch.to_ascii_lowercase() == first).then_some(first as u8)
        }
        _ => None,
    }
}

/// Nodes that match the empty string without consuming anything (anchors, empty).
fn transparent(h: &Hir) -> bool {
    matches!(h.kind(), HirKind::Look(_) | HirKind::Empty)
}

fn required(h: &Hir) -> Option<Vec<Vec<u8>>> {
    match h.kind() {
        HirKind::Literal(l) => Some(vec![l.0.to_ascii_lowercase()]),
        HirKind::Class(_) => single_byte(h).map(|b| vec![vec![b]]),
        HirKind::Capture(c) => required(&c.sub),
        HirKind::Repetition(r) if r.min >= 1 => required(&r.sub),
        HirKind::Repetition(_) | HirKind::Look(_) | HirKind::Empty => None,
        HirKind::Alternation(alts) => {
            let mut out = Vec::new();
            for a in alts {
                out.extend(required(a)?);
                if out.len() > MAX_ALTERNATIVES {
                    return None;
                }
            }
            out.sort();
            out.dedup();
            Some(out)
        }
        HirKind::Concat(parts) => {
            // Runs of single bytes form one literal; every other part is a candidate of its
            // own. Any one candidate is required, so keep the most selective.
            let mut best: Option<Vec<Vec<u8>>> = None;
            let mut run: Vec<u8> = Vec::new();
            let consider = |best: &mut Option<Vec<Vec<u8>>>, cand: Vec<Vec<u8>>| {
                if score(&cand) > best.as_ref().map_or(0, |b| score(b)) {
                    *best = Some(cand);
                }
            };
            for p in parts {
                if let HirKind::Literal(l) = p.kind() {
                    run.extend(l.0.iter().map(u8::to_ascii_lowercase));
                } else if let Some(b) = single_byte(p) {
                    run.push(b);
                } else if transparent(p) {
                } else {
                    if !run.is_empty() {
                        consider(&mut best, vec![std::mem::take(&mut run)]);
                    }
                    if let Some(c) = required(p) {
                        consider(&mut best, c);
                    }
                }
            }
            if !run.is_empty() {
                consider(&mut best, vec![run]);
            }
            best
        }
    }
}

/// Selectivity of a literal set: longer shortest literal first, fewer alternatives second.
fn score(set: &[Vec<u8>]) -> usize {
    let min = set.iter().map(Vec::len).min().unwrap_or(0);
    if min == 0 {
        return 0;
    }
    min.min(16) * 1000 - set.len().min(999)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lits(p: &str) -> Option<Vec<String>> {
        required_literals(p, true).map(|v| v.into_iter().map(|l| String::from_utf8(l).unwrap()).collect())
    }

    #[test]
    fn extracts_inner_literals() {
        assert_eq!(lits(r"union\s+select"), Some(vec!["select".into()]));
        assert_eq!(lits(r"(?:etc|proc)/passwd"), Some(vec!["/passwd".into()]));
        assert_eq!(lits(r"^/wp-(admin|login)"), Some(vec!["admin".into(), "login".into()]));
        assert_eq!(lits(r"(sqlmap|nikto)"), Some(vec!["nikto".into(), "sqlmap".into()]));
        assert_eq!(lits(r"\$\{jndi:"), Some(vec!["${jndi:".into()]));
    }

    #[test]
    fn gives_up_when_nothing_is_required() {
        assert_eq!(lits(r"a*"), None);
        assert_eq!(lits(r"[0-9]{3}"), None);
        assert_eq!(lits(r"(foo|\d+)"), None);
        assert_eq!(lits(r"x?"), None);
    }

    #[test]
    fn case_folded_classes_are_literals() {
        assert_eq!(required_literals("SeLeCt", false), Some(vec![b"select".to_vec()]));
        assert_eq!(lits("[Ss][Ee][Ll]ect"), Some(vec!["select".into()]));
    }
}
