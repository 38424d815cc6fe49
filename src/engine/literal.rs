//! Required literals of a regex: a set of strings at least one of which must occur in any text
//! the regex matches. They let a regex rule take part in the shared literal prefilter, so it
//! is only run on lines that could match.
//!
//! The analysis is conservative: when it cannot prove a literal is required it returns `None`
//! and the rule is evaluated on every line instead. A wrong answer here would be a missed
//! detection, so every rule is "when in doubt, give up".

use regex_syntax::hir::{Class, Hir, HirKind};

/// Upper bound on alternatives kept in a literal set (long alternations of names are common
/// in rules and make good sets); products of sets are bounded by [`MAX_PRODUCT`].
const MAX_ALTERNATIVES: usize = 512;
const MAX_PRODUCT: usize = 256;

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

/// The complete, small, finite language of `h` (case-folded), when it has one: every string
/// the node can match. `""` is in it when the node can match the empty string.
fn exact(h: &Hir) -> Option<Vec<Vec<u8>>> {
    let set = match h.kind() {
        HirKind::Literal(l) => vec![l.0.to_ascii_lowercase()],
        HirKind::Class(_) => match single_byte(h) {
            Some(b) => vec![vec![b]],
            None => small_class(h)?,
        },
        HirKind::Capture(c) => exact(&c.sub)?,
        HirKind::Look(_) | HirKind::Empty => vec![Vec::new()],
        HirKind::Repetition(r) if r.min == 0 && r.max == Some(1) => {
            let mut v = exact(&r.sub)?;
            v.push(Vec::new());
            v
        }
        HirKind::Repetition(r) if r.min == 1 && r.max == Some(1) => exact(&r.sub)?,
        HirKind::Repetition(_) => return None,
        HirKind::Alternation(alts) => {
            let mut out = Vec::new();
            for a in alts {
                out.extend(exact(a)?);
                if out.len() > MAX_ALTERNATIVES {
                    return None;
                }
            }
            out
        }
        HirKind::Concat(parts) => {
            let mut acc: Vec<Vec<u8>> = vec![Vec::new()];
            for p in parts {
                acc = product(&acc, &exact(p)?)?;
            }
            acc
        }
    };
    let mut set = set;
    set.sort();
    set.dedup();
    Some(set)
}

/// Every byte of a class with at most 10 distinct (case-folded) members (`[/\\]`, `\d`), so
/// that `\.php\d?` still yields `.php5`-style literals.
fn small_class(h: &Hir) -> Option<Vec<Vec<u8>>> {
    let HirKind::Class(Class::Bytes(c)) = h.kind() else { return None };
    let mut out: Vec<Vec<u8>> = Vec::new();
    for r in c.ranges() {
        if (r.end() - r.start()) as usize >= 10 {
            return None;
        }
        for b in r.start()..=r.end() {
            let v = vec![b.to_ascii_lowercase()];
            if !out.contains(&v) {
                out.push(v);
            }
            if out.len() > 10 {
                return None;
            }
        }
    }
    Some(out)
}

/// `a × b` (concatenation of every pair), or `None` when too large to be worth keeping.
fn product(a: &[Vec<u8>], b: &[Vec<u8>]) -> Option<Vec<Vec<u8>>> {
    if a.len() * b.len() > MAX_PRODUCT {
        return None;
    }
    let mut out = Vec::with_capacity(a.len() * b.len());
    for x in a {
        for y in b {
            let mut v = x.clone();
            v.extend_from_slice(y);
            if v.len() > 64 {
                return None;
            }
            out.push(v);
        }
    }
    Some(out)
}

fn required(h: &Hir) -> Option<Vec<Vec<u8>>> {
    if let Some(set) = exact(h)
        && !set.iter().any(Vec::is_empty)
    {
        return Some(set);
    }
    match h.kind() {
        HirKind::Literal(_) | HirKind::Class(_) | HirKind::Look(_) | HirKind::Empty => None,
        HirKind::Capture(c) => required(&c.sub),
        HirKind::Repetition(r) if r.min >= 1 => required(&r.sub),
        HirKind::Repetition(_) => None,
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
            // Consecutive parts with a small exact language multiply into one literal set
            // (`\.(bak|old)` → `.bak`, `.old`); any other part ends the run and offers its own
            // required set. Any one candidate is required, so keep the most selective.
            let mut best: Option<Vec<Vec<u8>>> = None;
            let consider = |best: &mut Option<Vec<Vec<u8>>>, cand: Vec<Vec<u8>>| {
                if score(&cand) > best.as_ref().map_or(0, |b| score(b)) {
                    *best = Some(cand);
                }
            };
            // The run is kept as its parts, so that when a new part would make the product
            // too large, the oldest parts are dropped until it fits: `[\s"']on(error|load|..)`
            // keeps `onerror`, `onload` rather than falling back to `error`, `load`.
            let mut run: std::collections::VecDeque<Vec<Vec<u8>>> = Default::default();
            let product_of = |run: &std::collections::VecDeque<Vec<Vec<u8>>>| -> Option<Vec<Vec<u8>>> {
                run.iter().try_fold(vec![Vec::new()], |acc, set| product(&acc, set))
            };
            for p in parts {
                // `x+` of a small exact language: its first occurrence still continues the run
                // (`or\s+` → `or `, `or\t`, ...) and its last one starts the next
                // (`\s+select` → ` select`, ...): both are contiguous in any match.
                if let HirKind::Repetition(r) = p.kind()
                    && r.min >= 1
                    && let Some(set) = exact(&r.sub).filter(|s| !s.iter().any(Vec::is_empty))
                    && exact(p).is_none()
                {
                    run.push_back(set.clone());
                    while run.len() > 1 && product_of(&run).is_none() {
                        run.pop_front();
                    }
                    if let Some(done) = product_of(&run) {
                        consider(&mut best, done);
                    }
                    run.clear();
                    run.push_back(set);
                    continue;
                }
                match exact(p) {
                    Some(set) => {
                        run.push_back(set);
                        if product_of(&run).is_none() {
                            let last = run.pop_back().unwrap_or_default();
                            if let Some(done) = product_of(&run) {
                                consider(&mut best, done);
                            }
                            run.push_back(last);
                            while run.len() > 1 && product_of(&run).is_none() {
                                run.pop_front();
                            }
                            if product_of(&run).is_none() {
                                run.clear();
                            }
                        }
                    }
                    None => {
                        if let Some(done) = product_of(&run) {
                            consider(&mut best, done);
                        }
                        run.clear();
                        if let Some(c) = required(p) {
                            consider(&mut best, c);
                        }
                    }
                }
            }
            if let Some(done) = product_of(&run) {
                consider(&mut best, done);
            }
            best
        }
    }
}

/// Selectivity of a literal set: longer shortest literal first, fewer alternatives second.
fn score(set: &[Vec<u8>]) -> usize {
    set_score(set.iter().map(Vec::as_slice))
}

/// How unlikely a literal is to occur in ordinary log text, roughly in "letters": a letter or
/// digit counts 2, URL punctuation 1 (it is everywhere in requests), other punctuation 6
/// (`;`, `'`, `<`, `$(` are rare outside attacks). Used to pick which of several required
/// literal sets the prefilter should look for: `;` beats `id`, `/etc/passwd` beats `;`.
pub fn rarity(lit: &[u8]) -> usize {
    let base: usize = lit
        .iter()
        .map(|&b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' => 2,
            b'/' | b'.' | b'-' | b'_' | b'=' | b'&' | b'?' | b'%' | b'+' | b' ' | b',' | b':' => 1,
            _ => 6,
        })
        .sum();
    // Runs of punctuation (`&&`, `||`, `--`) are much rarer than their bytes alone.
    let all_punct = lit.len() >= 2 && !lit.iter().any(u8::is_ascii_alphanumeric);
    base + if all_punct { 4 } else { 0 }
}

/// Selectivity of a literal set: the rarity of its most common member first (a set is only
/// as selective as its weakest literal), fewer members second.
pub fn set_score<'a>(set: impl Iterator<Item = &'a [u8]>) -> usize {
    let (mut min, mut n) = (usize::MAX, 0usize);
    for l in set {
        min = min.min(rarity(l));
        n += 1;
    }
    if n == 0 || min == 0 {
        return 0;
    }
    min.min(64) * 1000 - n.min(999)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lits(p: &str) -> Option<Vec<String>> {
        required_literals(p, true).map(|v| v.into_iter().map(|l| String::from_utf8(l).unwrap()).collect())
    }

    #[test]
    fn extracts_inner_literals() {
        // White space on either side makes a literal much rarer than the word alone.
        assert_eq!(
            lits(r"union\s+select"),
            Some(vec![
                "\tselect".into(),
                "\nselect".into(),
                "\x0bselect".into(),
                "\x0cselect".into(),
                "\rselect".into(),
                " select".into()
            ])
        );
        assert_eq!(
            lits(r"(?:or|and)\s+\d"),
            Some(vec![
                "and\t".into(),
                "and\n".into(),
                "and\x0b".into(),
                "and\x0c".into(),
                "and\r".into(),
                "and ".into(),
                "or\t".into(),
                "or\n".into(),
                "or\x0b".into(),
                "or\x0c".into(),
                "or\r".into(),
                "or ".into()
            ])
        );
        assert_eq!(lits(r"(?:etc|proc)/passwd"), Some(vec!["etc/passwd".into(), "proc/passwd".into()]));
        assert_eq!(lits(r"^/wp-(admin|login)"), Some(vec!["/wp-admin".into(), "/wp-login".into()]));
        assert_eq!(lits(r"\.(bak|old)$"), Some(vec![".bak".into(), ".old".into()]));
        assert_eq!(lits(r"on(error|load)\s*="), Some(vec!["onerror".into(), "onload".into()]));
        assert_eq!(
            lits(r"[;'/](?:on)(?:error|load)"),
            Some(vec![
                "'onerror".into(),
                "'onload".into(),
                "/onerror".into(),
                "/onload".into(),
                ";onerror".into(),
                ";onload".into()
            ])
        );
        assert_eq!(lits(r"etc[/\\]passwd"), Some(vec!["etc/passwd".into(), "etc\\passwd".into()]));
        assert_eq!(lits(r"https?://"), Some(vec!["http://".into(), "https://".into()]));
        // Rare punctuation beats common short words.
        assert_eq!(lits(r"(?:;|&&)\s*(?:id|ls)\b"), Some(vec!["&&".into(), ";".into()]));
        assert_eq!(lits(r"(sqlmap|nikto)"), Some(vec!["nikto".into(), "sqlmap".into()]));
        assert_eq!(lits(r"\$\{jndi:"), Some(vec!["${jndi:".into()]));
    }

    /// Whatever a regex matches contains one of its required literals: checked on generated
    /// text for patterns with repetitions, classes and alternations.
    #[test]
    fn every_match_holds_a_required_literal() {
        let patterns = [
            r"(?:or|and)\s+\d",
            r"['\x22)]\s*(?:or|and|xor|&&|\|\|)[\s'\x22(]+\w*[\s')]*(?:=|<>|like\s*')",
            r"(?:^|[^a-z])(?:or|and)\s+'[^']{0,20}'\s*=\s*'",
            r"union\s+(?:all\s+)?select",
            r"a[/\\]+b\d+c",
            r"x(?:ab)+y",
        ];
        let parts = [
            "or",
            "OR",
            "and",
            " ",
            "\t",
            "'",
            "\"",
            ")",
            "(",
            "1",
            "=",
            "union",
            "select",
            "all",
            "a",
            "b",
            "c",
            "/",
            "\\",
            "x",
            "ab",
            "y",
            "like",
            "&&",
            "xor",
            "z",
            "'1'",
            "='",
            " or ",
            " AND\t'a'",
            "or '1'",
            "union ",
            " select",
            "a/",
            "b1",
            "1c",
            "xab",
        ];
        let mut rng = fastrand::Rng::with_seed(11);
        for p in patterns {
            let re = crate::engine::compile::build_regex(p, false).unwrap();
            let lits = required_literals(p, true).unwrap_or_else(|| panic!("{p} has literals"));
            let mut matched = 0;
            for _ in 0..100_000 {
                let s: String = (0..rng.usize(1..10)).map(|_| parts[rng.usize(..parts.len())]).collect();
                if re.is_match(s.as_bytes()) {
                    matched += 1;
                    let lower = s.to_ascii_lowercase();
                    assert!(
                        lits.iter().any(|l| lower.as_bytes().windows(l.len()).any(|w| w == l.as_slice())),
                        "{p} matches {s:?} without any of {lits:?}"
                    );
                }
            }
            assert!(matched >= 10, "{p}: the generated text matches ({matched})");
        }
    }

    #[test]
    fn gives_up_when_nothing_is_required() {
        assert_eq!(lits(r"a*"), None);
        assert_eq!(lits(r"[a-z]{3}"), None);
        assert_eq!(lits(r"(foo|[a-z]+)"), None);
        assert_eq!(lits(r"x?"), None);
    }

    #[test]
    fn case_folded_classes_are_literals() {
        assert_eq!(required_literals("SeLeCt", false), Some(vec![b"select".to_vec()]));
        assert_eq!(lits("[Ss][Ee][Ll]ect"), Some(vec!["select".into()]));
    }
}
