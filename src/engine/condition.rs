//! Compiled conditions and their evaluation on one parsed line.

use aho_corasick::AhoCorasick;
use chrono::{DateTime, Utc};
use ipnet::IpNet;
use regex::bytes::Regex;

use super::view::{ViewCache, ViewId, Views};
use crate::parse::Record;

/// A compiled condition tree.
#[derive(Debug)]
pub enum Node {
    Any(Vec<Node>),
    All(Vec<Node>),
    Not(Box<Node>),
    Leaf(Leaf),
}

/// An operator applied to one view (a field after its transforms).
#[derive(Debug)]
pub struct Leaf {
    pub view: ViewId,
    pub op: Op,
    /// The field is a list (`[*]`): the leaf holds when the operator holds for at least one
    /// element.
    pub each: bool,
}

#[derive(Debug)]
pub enum Op {
    /// Any of several substrings (one automaton for the whole list; the values are kept for
    /// static analysis).
    Contains {
        ac: AhoCorasick,
        values: Strings,
    },
    Equals(Strings),
    StartsWith(Strings),
    EndsWith(Strings),
    /// Any of several regexes, compiled as one alternation.
    Regex {
        re: Regex,
        case_sensitive: bool,
        /// When the pattern is a fixed run of bytes and byte classes anchored at both ends
        /// (`^4\d\d$` on a status): the class of each byte, tested without the regex engine,
        /// whose set-up per call costs more than such a test.
        shape: Option<Box<[ByteSet]>>,
    },
    Count {
        needle: Vec<u8>,
        case_sensitive: bool,
        at_least: u32,
    },
    Number {
        gt: Option<f64>,
        gte: Option<f64>,
        lt: Option<f64>,
        lte: Option<f64>,
    },
    Cidr(Vec<IpNet>),
    Exists(bool),
    /// The event's time falls inside these days and hours (looks at no field).
    Time(super::when::When),
}

impl Op {
    /// The operator of a compiled regex (`case_sensitive` as it was compiled with).
    pub fn regex(re: Regex, case_sensitive: bool) -> Op {
        let shape = fixed_shape(re.as_str(), case_sensitive);
        Op::Regex { re, case_sensitive, shape }
    }
}

/// A set of bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ByteSet([u64; 4]);

impl ByteSet {
    fn add(&mut self, b: u8) {
        self.0[usize::from(b >> 6)] |= 1 << (b & 63);
    }
    #[inline]
    fn has(&self, b: u8) -> bool {
        self.0[usize::from(b >> 6)] >> (b & 63) & 1 != 0
    }
}

/// The byte sets of a pattern that matches exactly the values of one fixed length whose every
/// byte is in its set: `^`, then literal bytes and byte classes only, then `$`. Parsed as the
/// engine compiles it (no Unicode: a class matches one byte; case folded unless
/// `case_sensitive`), so the sets accept exactly what the regex accepts. `None` for any other
/// pattern.
fn fixed_shape(pattern: &str, case_sensitive: bool) -> Option<Box<[ByteSet]>> {
    use regex_syntax::hir::{Class, HirKind, Look};
    // Most patterns are not anchored at the start: skip parsing them a second time.
    if !pattern.trim_start_matches("(?:").starts_with('^') {
        return None;
    }
    let hir = regex_syntax::ParserBuilder::new()
        .unicode(false)
        .utf8(false)
        .case_insensitive(!case_sensitive)
        .build()
        .parse(pattern)
        .ok()?;
    let HirKind::Concat(items) = hir.kind() else { return None };
    let (first, rest) = items.split_first()?;
    let (last, middle) = rest.split_last()?;
    if *first.kind() != HirKind::Look(Look::Start) || *last.kind() != HirKind::Look(Look::End) {
        return None;
    }
    let mut sets = Vec::new();
    for h in middle {
        match h.kind() {
            HirKind::Literal(lit) => sets.extend(lit.0.iter().map(|&b| {
                let mut s = ByteSet::default();
                s.add(b);
                s
            })),
            HirKind::Class(Class::Bytes(c)) => {
                let mut s = ByteSet::default();
                for r in c.ranges() {
                    for b in r.start()..=r.end() {
                        s.add(b);
                    }
                }
                sets.push(s);
            }
            _ => return None,
        }
    }
    Some(sets.into_boxed_slice())
}

/// Literal values of contains / equals / starts_with / ends_with, compared ignoring ASCII case
/// unless `case_sensitive`.
#[derive(Debug)]
pub struct Strings {
    pub values: Vec<Vec<u8>>,
    pub case_sensitive: bool,
}

impl Strings {
    fn eq(&self, a: &[u8], b: &[u8]) -> bool {
        if self.case_sensitive { a == b } else { a.eq_ignore_ascii_case(b) }
    }
    fn equals_one(&self, s: &[u8], v: &[u8]) -> bool {
        s.len() == v.len() && self.eq(s, v)
    }
    fn starts_one(&self, s: &[u8], v: &[u8]) -> bool {
        v.len() >= s.len() && self.eq(s, &v[..s.len()])
    }
    fn ends_one(&self, s: &[u8], v: &[u8]) -> bool {
        v.len() >= s.len() && self.eq(s, &v[v.len() - s.len()..])
    }
    fn contains_one(&self, s: &[u8], v: &[u8]) -> bool {
        s.is_empty() || v.windows(s.len()).any(|w| self.eq(w, s))
    }
    fn equals(&self, v: &[u8]) -> bool {
        self.values.iter().any(|s| self.equals_one(s, v))
    }
    fn starts(&self, v: &[u8]) -> bool {
        self.values.iter().any(|s| self.starts_one(s, v))
    }
    fn ends(&self, v: &[u8]) -> bool {
        self.values.iter().any(|s| self.ends_one(s, v))
    }
}

/// What evaluation needs about the current line.
pub struct Ctx<'a> {
    pub line: &'a [u8],
    pub record: &'a Record,
    pub views: &'a Views,
    pub cache: &'a mut ViewCache,
    /// Where the `time` operator finds the event's time.
    pub time: EventTime<'a>,
}

/// The event time as the `time` operator sees it. Log lines parse their `time` field only
/// when a rule asks (most rules never do).
#[derive(Clone, Copy)]
pub enum EventTime<'a> {
    /// Given by the source (a file change's time).
    Known(DateTime<Utc>),
    /// The line's parsed `time` field, else the arrival time (now).
    Parse(&'a crate::parse::Parser),
    /// Nothing to go by: now.
    Now,
}

impl Ctx<'_> {
    fn time(&self) -> DateTime<Utc> {
        match self.time {
            EventTime::Known(t) => t,
            EventTime::Parse(p) => p.event_time(self.line, self.record).unwrap_or_else(Utc::now),
            EventTime::Now => Utc::now(),
        }
    }
}

impl Node {
    pub fn eval(&self, cx: &mut Ctx<'_>) -> bool {
        match self {
            Node::Any(ns) => ns.iter().any(|n| n.eval(cx)),
            Node::All(ns) => ns.iter().all(|n| n.eval(cx)),
            Node::Not(n) => !n.eval(cx),
            Node::Leaf(l) => l.eval(cx),
        }
    }

    /// Like [`Node::eval`], but records the path of the first failing leaf (for explanations
    /// and example failures): returns `Err(path)` when false.
    pub fn explain(&self, cx: &mut Ctx<'_>, path: &str) -> Result<(), String> {
        match self {
            Node::Any(ns) => {
                let mut last = format!("{path}.any");
                for (i, n) in ns.iter().enumerate() {
                    match n.explain(cx, &format!("{path}.any[{i}]")) {
                        Ok(()) => return Ok(()),
                        Err(p) => last = p,
                    }
                }
                Err(last)
            }
            Node::All(ns) => {
                for (i, n) in ns.iter().enumerate() {
                    n.explain(cx, &format!("{path}.all[{i}]"))?;
                }
                Ok(())
            }
            Node::Not(n) => match n.explain(cx, &format!("{path}.not")) {
                Ok(()) => Err(format!("{path}.not")),
                Err(_) => Ok(()),
            },
            Node::Leaf(l) => {
                if l.eval(cx) {
                    Ok(())
                } else {
                    Err(path.to_string())
                }
            }
        }
    }
}

impl Leaf {
    fn eval(&self, cx: &mut Ctx<'_>) -> bool {
        if let Op::Time(w) = &self.op {
            return w.contains(cx.time());
        }
        if self.each {
            return cx.cache.any_element(self.view, cx.views, cx.line, cx.record, |v| self.op.test(v));
        }
        self.op.test(cx.cache.get(self.view, cx.views, cx.line, cx.record))
    }
}

impl Op {
    /// For an operator with a list of literal values (`contains`, `equals`, `starts_with`,
    /// `ends_with`): its name and the values. `None` for the others.
    pub fn literal_values(&self) -> Option<(&'static str, &Strings)> {
        match self {
            Op::Contains { values, .. } => Some(("contains", values)),
            Op::Equals(s) => Some(("equals", s)),
            Op::StartsWith(s) => Some(("starts_with", s)),
            Op::EndsWith(s) => Some(("ends_with", s)),
            _ => None,
        }
    }

    /// For a literal-list operator: whether its `i`-th value alone holds for `value` (for
    /// coverage reports, not the hot path).
    pub fn value_holds(&self, i: usize, value: &[u8]) -> bool {
        let Some((_, s)) = self.literal_values() else { return false };
        let Some(want) = s.values.get(i) else { return false };
        match self {
            Op::Contains { .. } => s.contains_one(want, value),
            Op::Equals(_) => s.equals_one(want, value),
            Op::StartsWith(_) => s.starts_one(want, value),
            Op::EndsWith(_) => s.ends_one(want, value),
            _ => false,
        }
    }

    /// Whether the operator holds for a view's value (`None`: the field is absent).
    pub fn test(&self, value: Option<&[u8]>) -> bool {
        match (self, value) {
            (Op::Exists(want), v) => v.is_some() == *want,
            // Decided on the event's time by `Leaf::eval`, never on a value.
            (Op::Time(_), _) => false,
            (_, None) => false,
            (Op::Contains { ac, .. }, Some(v)) => ac.is_match(v),
            (Op::Equals(s), Some(v)) => s.equals(v),
            (Op::StartsWith(s), Some(v)) => s.starts(v),
            (Op::EndsWith(s), Some(v)) => s.ends(v),
            (Op::Regex { shape: Some(shape), .. }, Some(v)) => {
                v.len() == shape.len() && v.iter().zip(shape.iter()).all(|(&b, set)| set.has(b))
            }
            (Op::Regex { re, .. }, Some(v)) => re.is_match(v),
            (Op::Count { needle, case_sensitive, at_least }, Some(v)) => count(v, needle, *case_sensitive) >= *at_least,
            (Op::Number { gt, gte, lt, lte }, Some(v)) => match parse_number(v) {
                Some(n) => {
                    gt.is_none_or(|x| n > x)
                        && gte.is_none_or(|x| n >= x)
                        && lt.is_none_or(|x| n < x)
                        && lte.is_none_or(|x| n <= x)
                }
                None => false,
            },
            (Op::Cidr(nets), Some(v)) => parse_ip(v).is_some_and(|ip| nets.iter().any(|n| n.contains(&ip))),
        }
    }
}

/// Non-overlapping occurrences of `needle` in `hay`, stopping early is not worth it: values are short.
fn count(hay: &[u8], needle: &[u8], case_sensitive: bool) -> u32 {
    if needle.is_empty() || hay.len() < needle.len() {
        return 0;
    }
    let mut n = 0;
    let mut i = 0;
    while i + needle.len() <= hay.len() {
        let w = &hay[i..i + needle.len()];
        let hit = if case_sensitive { w == needle } else { w.eq_ignore_ascii_case(needle) };
        if hit {
            n += 1;
            i += needle.len();
        } else {
            i += 1;
        }
    }
    n
}

fn parse_number(v: &[u8]) -> Option<f64> {
    std::str::from_utf8(v).ok()?.trim().parse::<f64>().ok()
}

fn parse_ip(v: &[u8]) -> Option<std::net::IpAddr> {
    let s = std::str::from_utf8(v).ok()?;
    // Tolerate `[v6]`, `v4:port` and `[v6]:port` as written by some formats.
    let s = s.trim();
    if let Ok(ip) = s.parse() {
        return Some(ip);
    }
    if let Some(rest) = s.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    s.rsplit_once(':').and_then(|(h, _)| h.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_is_non_overlapping_and_case_aware() {
        assert_eq!(count(b"../../..", b"..", true), 3);
        assert_eq!(count(b"%%%%", b"%%", true), 2);
        assert_eq!(count(b"AbAB", b"ab", false), 2);
        assert_eq!(count(b"AbAB", b"ab", true), 0);
        assert_eq!(count(b"", b"x", true), 0);
    }

    /// A pattern taken as a fixed shape accepts exactly what its regex accepts; other
    /// patterns are left to the regex.
    #[test]
    fn fixed_shapes_agree_with_the_regex() {
        for (pattern, cs, shaped) in [
            (r"(?:^4\d\d$)", true, true),
            (r"^GeT$", false, true),
            (r"^[a-c]x\.[^0-9]$", true, true),
            (r"^[ab]\xff$", true, true),
            (r"^4\d+$", true, false),
            (r"4\d\d$", true, false),
            (r"(?:^4\d\d$)|(?:^5\d\d$)", true, false),
            (r"(?m)^4\d\d$", true, false),
        ] {
            let re = crate::engine::compile::build_regex(pattern, cs).unwrap();
            let op = Op::regex(re.clone(), cs);
            let Op::Regex { shape, .. } = &op else { unreachable!() };
            assert_eq!(shape.is_some(), shaped, "{pattern}");
            let alphabet: &[u8] = b"045GgEeTtabcxX.9\xff\n";
            let mut rng = fastrand::Rng::with_seed(11);
            for _ in 0..20_000 {
                let v: Vec<u8> = (0..rng.usize(0..6)).map(|_| alphabet[rng.usize(..alphabet.len())]).collect();
                assert_eq!(op.test(Some(&v)), re.is_match(&v), "{pattern} on {:?}", String::from_utf8_lossy(&v));
            }
        }
    }

    #[test]
    fn ip_forms() {
        assert!(parse_ip(b"10.1.2.3").is_some());
        assert!(parse_ip(b"[2001:db8::1]:443").is_some());
        assert!(parse_ip(b"10.1.2.3:8080").is_some());
        assert!(parse_ip(b"not an ip").is_none());
    }
}
