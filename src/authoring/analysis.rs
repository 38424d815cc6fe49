//! Static analysis of compiled conditions: parts that can never be true.
//!
//! A rule that can never match fails silently in production: no error, no detection, and a
//! reviewer reading the YAML sees nothing odd. `trapline lint` therefore proves what it can
//! from the compiled tree alone (no log needed):
//!
//! - a leaf that holds for no value: a regex that matches no input, an empty number range, a
//!   case-sensitive literal with capitals on a view that was lower-cased, `exists: false` on
//!   the raw line;
//! - an `all` whose members contradict each other on the same field: `equals` values that the
//!   other members reject (evaluated with the real operators, so `equals: [GET]` next to
//!   `regex: ^P` is caught), number ranges with an empty intersection, disjoint networks,
//!   `exists: false` next to a test that needs the field;
//! - an `any` whose alternatives are all impossible, and a `not` of something always true.
//!
//! The analysis is conservative: it reports only what it can prove, never a guess, so a clean
//! result does not mean a rule is useful, but a finding always means a real defect.

use ipnet::IpNet;

use crate::engine::condition::{Leaf, Node, Op};
use crate::engine::view::{View, Views};
use crate::parse::std_fields;
use crate::rule::Transform;

/// A part of a condition that can never be true.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Impossible {
    /// YAML path of the condition, relative to the rule (`match.all[1]`).
    pub path: String,
    pub reason: String,
}

/// What the analysis found for one rule.
#[derive(Debug, Default)]
pub struct Report {
    /// Set when the whole condition can never be true: the rule never matches.
    pub never: Option<Impossible>,
    /// Alternatives of an `any` that can never be true while the rule as a whole can: dead
    /// code that usually hides a mistake (a typo'd value, a transform in the wrong order).
    pub dead: Vec<Impossible>,
}

/// Analyses the condition tree `node` of a rule (`match` at the top).
pub fn analyse(node: &Node, views: &Views) -> Report {
    analyse_at(node, views, "match")
}

/// [`analyse`] for a condition written at `root` (an exception's `rules[2].except`).
pub fn analyse_at(node: &Node, views: &Views, root: &str) -> Report {
    let mut report = Report::default();
    report.never = never(node, views, root, &mut report.dead);
    if report.never.is_some() {
        // Everything below is moot; the rule-level finding says it all.
        report.dead.clear();
    }
    report
}

/// Why `node` (at `path`) can never be true, if it provably cannot. Dead alternatives of
/// `any`s found along the way go to `dead`.
fn never(node: &Node, views: &Views, path: &str, dead: &mut Vec<Impossible>) -> Option<Impossible> {
    match node {
        Node::Leaf(l) => leaf_never(l, views).map(|reason| Impossible { path: path.to_string(), reason }),
        Node::Not(inner) => always(inner, views).then(|| Impossible {
            path: path.to_string(),
            reason: "`not` of a condition that is always true".to_string(),
        }),
        Node::Any(alts) => {
            let mut found = Vec::new();
            for (i, a) in alts.iter().enumerate() {
                if let Some(x) = never(a, views, &format!("{path}.any[{i}]"), dead) {
                    found.push(x);
                }
            }
            if found.len() == alts.len() {
                let why: Vec<String> = found.iter().map(|x| format!("{}: {}", x.path, x.reason)).collect();
                return Some(Impossible {
                    path: format!("{path}.any"),
                    reason: format!("no alternative can be true ({})", why.join("; ")),
                });
            }
            dead.extend(found);
            None
        }
        Node::All(members) => {
            for (i, m) in members.iter().enumerate() {
                if let Some(x) = never(m, views, &format!("{path}.all[{i}]"), dead) {
                    return Some(x);
                }
            }
            contradiction(members, views, path)
        }
    }
}

/// Whether `node` is true on every line.
/// Whether `node` is provably true on every line (an exception that holds every event back).
pub fn always(node: &Node, views: &Views) -> bool {
    match node {
        Node::Leaf(l) => leaf_always(l, views),
        Node::Not(inner) => never(inner, views, "", &mut Vec::new()).is_some(),
        Node::Any(alts) => alts.iter().any(|a| always(a, views)),
        Node::All(members) => members.iter().all(|m| always(m, views)),
    }
}

fn leaf_always(l: &Leaf, views: &Views) -> bool {
    // Only the raw line is present on every line; any parsed field may be missing.
    if views.get(l.view).field != std_fields::LINE {
        return false;
    }
    match &l.op {
        Op::Exists(want) => *want,
        Op::Count { at_least, .. } => *at_least == 0,
        Op::Regex { re, .. } => regex_hir(re.as_str())
            .is_some_and(|h| h.properties().minimum_len() == Some(0) && h.properties().look_set().is_empty()),
        _ => false,
    }
}

fn leaf_never(l: &Leaf, views: &Views) -> Option<String> {
    let view = views.get(l.view);
    match &l.op {
        Op::Exists(false) if view.field == std_fields::LINE => {
            return Some("`exists: false` on the raw line, which always exists".into());
        }
        Op::Regex { re, .. } if regex_hir(re.as_str()).is_some_and(|h| h.properties().minimum_len().is_none()) => {
            return Some("the regex matches no input at all".into());
        }
        Op::Number { gt, gte, lt, lte } => {
            if let Some(why) = empty_range(&Bounds::of(*gt, *gte, *lt, *lte)) {
                return Some(why);
            }
        }
        Op::Cidr(nets) if nets.is_empty() => return Some("no network to match".into()),
        _ => {}
    }
    if lowercased(view) {
        let capitals = |vals: &[Vec<u8>]| vals.iter().all(|v| v.iter().any(u8::is_ascii_uppercase));
        let hopeless = match &l.op {
            Op::Contains { values: s, .. } | Op::Equals(s) | Op::StartsWith(s) | Op::EndsWith(s) => {
                s.case_sensitive && capitals(&s.values)
            }
            Op::Count { needle, case_sensitive, at_least } => {
                *case_sensitive && *at_least > 0 && needle.iter().any(u8::is_ascii_uppercase)
            }
            _ => false,
        };
        if hopeless {
            return Some(
                "case-sensitive value with capital letters on a view the `lowercase` transform has lower-cased".into(),
            );
        }
    }
    None
}

/// Whether every value of `view` is lower case: `lowercase` is applied and no later transform
/// can bring a capital back (URL or HTML decoding can: `%41`, `&#65;`).
fn lowercased(view: &View) -> bool {
    match view.transforms.iter().rposition(|t| *t == Transform::Lowercase) {
        Some(i) => view.transforms[i + 1..]
            .iter()
            .all(|t| matches!(t, Transform::NormalizePath | Transform::CompressWhitespace)),
        None => false,
    }
}

/// Contradictions between the members of one `all`, field by field.
fn contradiction(members: &[Node], views: &Views, path: &str) -> Option<Impossible> {
    // Direct leaf members, and `not: <leaf>` members (which must be false).
    let mut pos: Vec<(usize, &Leaf)> = Vec::new();
    let mut neg: Vec<(usize, &Leaf)> = Vec::new();
    // Leaves over every element of a list (`[*]`) are left out: two of them may hold for
    // different elements of one line.
    for (i, m) in members.iter().enumerate() {
        match m {
            Node::Leaf(l) if !l.each => pos.push((i, l)),
            Node::Not(inner) => {
                if let Node::Leaf(l) = &**inner
                    && !l.each
                {
                    neg.push((i, l));
                }
            }
            _ => {}
        }
    }
    let at = |i: usize| format!("{path}.all[{i}]");
    let field = |l: &Leaf| views.get(l.view).field;

    // `exists: false` next to anything that needs the same field present.
    for (i, a) in &pos {
        if !matches!(a.op, Op::Exists(false)) {
            continue;
        }
        if let Some((j, _)) = pos.iter().find(|(_, b)| field(b) == field(a) && !matches!(b.op, Op::Exists(false))) {
            return Some(Impossible {
                path: at(*j),
                reason: format!("needs a field that {} requires to be absent", at(*i)),
            });
        }
    }

    // Number ranges on the same view.
    for (i, a) in &pos {
        let Op::Number { gt, gte, lt, lte } = a.op else { continue };
        let mut b = Bounds::of(gt, gte, lt, lte);
        for (j, c) in pos.iter().filter(|(j, c)| j > i && c.view == a.view) {
            if let Op::Number { gt, gte, lt, lte } = c.op {
                b = b.and(&Bounds::of(gt, gte, lt, lte));
                if let Some(why) = empty_range(&b) {
                    return Some(Impossible { path: at(*j), reason: format!("with {}: {why}", at(*i)) });
                }
            }
        }
    }

    // Networks on the same view that do not overlap.
    for (i, a) in &pos {
        let Op::Cidr(x) = &a.op else { continue };
        for (j, c) in pos.iter().filter(|(j, c)| j > i && c.view == a.view) {
            if let Op::Cidr(y) = &c.op
                && !x.iter().any(|n| y.iter().any(|m| overlap(n, m)))
            {
                return Some(Impossible { path: at(*j), reason: format!("no address is in both this and {}", at(*i)) });
            }
        }
    }

    // `equals`: the field can only hold one of its values; test each against the other members
    // on the same view with the real operators.
    for (i, a) in &pos {
        let Op::Equals(eq) = &a.op else { continue };
        let mut left: Vec<&Vec<u8>> = eq.values.iter().collect();
        let others = pos.iter().map(|(j, l)| (*j, *l, true)).chain(neg.iter().map(|(j, l)| (*j, *l, false)));
        for (j, b, must) in others {
            if j == *i || b.view != a.view || !(eq.case_sensitive || case_blind(&b.op)) {
                // A case-insensitive `equals` admits every capitalisation of its values; only
                // operators that ignore case too can be tested on one spelling.
                continue;
            }
            left.retain(|v| b.op.test(Some(v)) == must);
            if left.is_empty() {
                let what = if must { "rejects" } else { "is excluded by the `not`" };
                return Some(Impossible {
                    path: at(j),
                    reason: format!("every value {} can take ({}) {what} here", at(*i), quoted(&eq.values)),
                });
            }
        }
    }
    None
}

/// Whether the operator gives the same answer for every capitalisation of a value.
fn case_blind(op: &Op) -> bool {
    match op {
        Op::Contains { values: s, .. } | Op::Equals(s) | Op::StartsWith(s) | Op::EndsWith(s) => !s.case_sensitive,
        Op::Regex { case_sensitive, .. } => !case_sensitive,
        Op::Count { case_sensitive, .. } => !case_sensitive,
        Op::Number { .. } | Op::Cidr(_) | Op::Exists(_) | Op::Time(_) => true,
    }
}

fn overlap(a: &IpNet, b: &IpNet) -> bool {
    a.contains(b) || b.contains(a)
}

fn quoted(values: &[Vec<u8>]) -> String {
    let v: Vec<String> = values.iter().take(5).map(|v| format!("{:?}", String::from_utf8_lossy(v))).collect();
    if values.len() > 5 { format!("{}, ...", v.join(", ")) } else { v.join(", ") }
}

/// A numeric interval: lower and upper bound, each with whether it is strict.
#[derive(Debug, Clone, Copy)]
struct Bounds {
    lo: Option<(f64, bool)>,
    hi: Option<(f64, bool)>,
}

impl Bounds {
    fn of(gt: Option<f64>, gte: Option<f64>, lt: Option<f64>, lte: Option<f64>) -> Bounds {
        let lo = tighter(gt.map(|x| (x, true)), gte.map(|x| (x, false)), true);
        let hi = tighter(lt.map(|x| (x, true)), lte.map(|x| (x, false)), false);
        Bounds { lo, hi }
    }

    fn and(&self, o: &Bounds) -> Bounds {
        Bounds { lo: tighter(self.lo, o.lo, true), hi: tighter(self.hi, o.hi, false) }
    }
}

/// The tighter of two bounds (the larger lower bound, or the smaller upper bound).
fn tighter(a: Option<(f64, bool)>, b: Option<(f64, bool)>, lower: bool) -> Option<(f64, bool)> {
    match (a, b) {
        (Some(x), Some(y)) => {
            if x.0 == y.0 {
                Some((x.0, x.1 || y.1))
            } else if (x.0 > y.0) == lower {
                Some(x)
            } else {
                Some(y)
            }
        }
        (x, None) => x,
        (None, y) => y,
    }
}

fn empty_range(b: &Bounds) -> Option<String> {
    let (Some((lo, lo_strict)), Some((hi, hi_strict))) = (b.lo, b.hi) else { return None };
    let empty = lo > hi || (lo == hi && (lo_strict || hi_strict));
    empty.then(|| {
        let l = if lo_strict { ">" } else { ">=" };
        let h = if hi_strict { "<" } else { "<=" };
        format!("no number is {l} {lo} and {h} {hi}")
    })
}

/// The compiled form of a pattern (bytes, no Unicode, as the engine builds it).
fn regex_hir(pattern: &str) -> Option<regex_syntax::hir::Hir> {
    regex_syntax::ParserBuilder::new().unicode(false).utf8(false).build().parse(pattern).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::CompileOptions;
    use crate::engine::compile::compile_rules;
    use crate::parse::FieldRegistry;
    use crate::rule::load::{SourceFile, load_sources};

    /// Compiles one rule whose `match:` is `condition` (YAML flow) and analyses it.
    fn report(condition: &str) -> Report {
        let text = format!("version: 1\nrules:\n  - id: r\n    title: t\n    severity: low\n    match: {condition}\n");
        let loaded = load_sources(vec![SourceFile { path: "r.yml".into(), text }]).expect("loads");
        let mut views = Views::default();
        let mut opts = CompileOptions::default();
        opts.actions.insert("log".into());
        let (rules, _, errors) = compile_rules(&loaded, &opts, &mut FieldRegistry::default(), &mut views);
        assert!(errors.is_empty(), "{errors:?}");
        let (rule, _) = rules.into_iter().next().flatten().and_then(|e| e.into_iter().next()).expect("compiles");
        analyse(&rule.node, &views)
    }

    fn never_at(condition: &str) -> String {
        match report(condition).never {
            Some(x) => x.path,
            None => panic!("{condition} was not found impossible"),
        }
    }

    fn possible(condition: &str) {
        let r = report(condition);
        assert!(r.never.is_none() && r.dead.is_empty(), "{condition}: {r:?}");
    }

    #[test]
    fn impossible_leaves() {
        assert_eq!(never_at(r#"{regex: '[^\x00-\xff]'}"#), "match");
        assert_eq!(never_at("{field: status, gt: 500, lt: 400}"), "match");
        assert_eq!(never_at("{field: status, gt: 5, lte: 5}"), "match");
        assert_eq!(never_at("{exists: false}"), "match");
        assert_eq!(
            never_at("{field: path, transforms: [lowercase], case_sensitive: true, contains: [UNION, SELECT]}"),
            "match"
        );
        assert_eq!(never_at("{not: {count: {of: a, at_least: 0}}}"), "match");
        assert_eq!(never_at("{not: {regex: '.*'}}"), "match");
    }

    #[test]
    fn contradictions_within_all() {
        let p = never_at("{all: [{field: method, equals: GET}, {field: method, equals: POST}]}");
        assert_eq!(p, "match.all[1]");
        assert_eq!(
            never_at("{all: [{field: method, equals: [GET, HEAD]}, {field: method, regex: '^P'}]}"),
            "match.all[1]"
        );
        assert_eq!(
            never_at("{all: [{field: method, equals: GET}, {not: {field: method, equals: get}}]}"),
            "match.all[1]"
        );
        assert_eq!(never_at("{all: [{field: status, gte: 500}, {field: status, lt: 500}]}"), "match.all[1]");
        assert_eq!(
            never_at("{all: [{field: client_ip, cidr: 10.0.0.0/8}, {field: client_ip, cidr: 192.168.0.0/16}]}"),
            "match.all[1]"
        );
        assert_eq!(never_at("{all: [{field: user, exists: false}, {field: user, equals: root}]}"), "match.all[1]");
        // Nested: the impossible member is reported where it is.
        assert_eq!(never_at("{all: [{contains: a}, {all: [{field: status, gt: 2, lt: 1}]}]}"), "match.all[1].all[0]");
    }

    #[test]
    fn any_is_impossible_only_when_every_alternative_is() {
        assert_eq!(never_at("{any: [{field: status, gt: 2, lt: 1}, {exists: false}]}"), "match.any");
        let r = report("{any: [{field: status, gt: 2, lt: 1}, {contains: x}]}");
        assert!(r.never.is_none());
        assert_eq!(r.dead.iter().map(|d| d.path.as_str()).collect::<Vec<_>>(), ["match.any[0]"]);
    }

    #[test]
    fn satisfiable_conditions_are_left_alone() {
        possible("{all: [{field: method, equals: [GET, POST]}, {field: method, regex: '^P'}]}");
        possible("{all: [{field: status, gte: 400}, {field: status, lt: 500}]}");
        possible("{all: [{field: client_ip, cidr: 10.0.0.0/8}, {field: client_ip, cidr: 10.1.0.0/16}]}");
        possible("{field: path, transforms: [lowercase], contains: UNION}");
        // url_decode after lowercase can bring a capital back (%41).
        possible("{field: path, transforms: [lowercase, url_decode], case_sensitive: true, contains: A}");
        // A case-insensitive equals admits `Post`; a case-sensitive sibling cannot be judged on one spelling.
        possible("{all: [{field: method, equals: post}, {field: method, case_sensitive: true, contains: Po}]}");
        // Different views of the same field are different values.
        possible("{all: [{field: path, equals: '/a%2e'}, {field: path, transforms: [url_decode], equals: /a.}]}");
        possible("{not: {field: user_agent, regex: '.*'}}");
        possible("{regex: '^$'}");
    }
}
