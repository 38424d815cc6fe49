//! The compiled form of `content:` rules: what a file's bytes, name and size must look like.
//!
//! One Aho-Corasick automaton holds the required literals of every content rule (from
//! [`super::literal`]); a file is read by it once, and only the rules whose literals occur (or
//! that have none) run their regexes. Name, extension, size and magic bytes are checked before
//! that, since they cost nothing. Like the log engine, the set is immutable and shared by all
//! threads; [`ContentScratch`] is the per-thread state.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use regex::bytes::{Regex, RegexBuilder};

use super::literal;
use crate::rule::{
    ContentCondition, ErrorKind, Loaded, LoadedRule, RuleError, RuleErrors, Severity, ValueItem, Values,
};

/// Regex limits, as for log rules: bounded compile size, a DFA cache large enough not to thrash
/// over megabytes of content.
const REGEX_SIZE_LIMIT: usize = 8 << 20;
const REGEX_DFA_LIMIT: usize = 16 << 20;
/// Smallest entropy window: below it, a window's entropy says more about its length than about
/// its bytes (at most log2(len) bits).
pub const MIN_ENTROPY_WINDOW: u32 = 256;

/// Signatures of the file types a rule may name in `magic:`.
pub const KNOWN_MAGIC: &[(&str, &[&[u8]])] = &[
    ("gif", &[b"GIF87a", b"GIF89a"]),
    ("png", &[b"\x89PNG\r\n\x1a\n"]),
    ("jpeg", &[b"\xff\xd8\xff"]),
    ("bmp", &[b"BM"]),
    ("webp", &[b"RIFF"]),
    ("ico", &[b"\x00\x00\x01\x00"]),
    ("pdf", &[b"%PDF-"]),
    ("zip", &[b"PK\x03\x04"]),
    ("gzip", &[b"\x1f\x8b"]),
    ("elf", &[b"\x7fELF"]),
    ("pe", &[b"MZ"]),
];

/// A content rule ready to run.
#[derive(Debug)]
pub struct ContentRule {
    pub id: String,
    pub title: String,
    pub description: String,
    pub severity: Severity,
    /// Attack class (`other` when the rule names none).
    pub class: String,
    pub tags: Vec<String>,
    pub actions: Vec<String>,
    pub enabled: bool,
    /// Where the rule was loaded from (for messages).
    pub origin: String,
    any: Vec<Regex>,
    all: Vec<Regex>,
    none: Vec<Regex>,
    magic: Vec<Vec<u8>>,
    magic_not: bool,
    /// Lower-case.
    ext: Vec<Vec<u8>>,
    /// Lower-case.
    name: Vec<Vec<u8>>,
    size: (Option<u64>, Option<u64>),
    entropy: Option<Entropy>,
    /// Prefilter: at least one of these pattern ids occurs (empty: the rule always runs).
    literals: Vec<usize>,
}

#[derive(Debug, Clone, Copy)]
struct Entropy {
    min: Option<f64>,
    max: Option<f64>,
    window: Option<usize>,
}

/// What a file is, besides its bytes.
#[derive(Debug, Clone, Copy)]
pub struct FileFacts<'a> {
    /// The file name (last path component), as bytes: names need not be UTF-8.
    pub name: &'a [u8],
    /// Size on disk (may exceed the bytes given when content is cut).
    pub size: u64,
}

/// A content rule that matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentHit {
    /// Index into [`ContentRuleSet::rules`].
    pub rule: usize,
    /// Where the first regex that decided the match matched, when one did.
    pub span: Option<(usize, usize)>,
}

/// Per-thread scratch: which prefilter literals occurred in the current file.
#[derive(Debug, Default)]
pub struct ContentScratch {
    seen: Vec<bool>,
}

/// Every content rule, compiled, with the shared literal prefilter.
#[derive(Debug, Default)]
pub struct ContentRuleSet {
    pub rules: Vec<ContentRule>,
    prefilter: Option<AhoCorasick>,
    patterns: usize,
}

impl ContentRuleSet {
    /// Compiles the content rules of `loaded`, all or nothing, errors positioned in their files.
    pub fn compile(loaded: &Loaded) -> Result<ContentRuleSet, RuleErrors> {
        let (set, errors) = Self::compile_lenient(loaded);
        if errors.is_empty() { Ok(set) } else { Err(RuleErrors(errors)) }
    }

    /// Compiles what compiles, and every error (for lint, which goes on past a broken rule).
    pub fn compile_lenient(loaded: &Loaded) -> (ContentRuleSet, Vec<RuleError>) {
        let mut errors = Vec::new();
        let mut literals: Vec<Vec<u8>> = Vec::new();
        let mut index: std::collections::HashMap<Vec<u8>, usize> = Default::default();
        let mut rules = Vec::new();
        for lr in &loaded.content {
            let Some(c) = &lr.rule.content else { continue };
            let before = errors.len();
            let compiled = compile_rule(loaded, lr, c, &mut errors);
            if errors.len() > before {
                continue;
            }
            let Some((mut rule, lits)) = compiled else { continue };
            if rule.enabled {
                for l in lits {
                    let next = literals.len();
                    let id = *index.entry(l.clone()).or_insert(next);
                    if id == next {
                        literals.push(l);
                    }
                    rule.literals.push(id);
                }
            }
            rules.push(rule);
        }
        let prefilter = if literals.is_empty() {
            None
        } else {
            // Standard semantics with overlapping search: every literal that occurs is seen,
            // also inside a longer one.
            AhoCorasickBuilder::new()
                .ascii_case_insensitive(true)
                .match_kind(MatchKind::Standard)
                .build(&literals)
                .map_err(|e| {
                    errors.push(RuleError {
                        file: Default::default(),
                        line: 0,
                        col: 0,
                        rule: None,
                        message: format!("content prefilter: {e}"),
                        kind: ErrorKind::InvalidValue,
                    })
                })
                .ok()
        };
        (ContentRuleSet { rules, prefilter, patterns: literals.len() }, errors)
    }

    /// Number of distinct prefilter literals, and of enabled rules that run on every file.
    pub fn prefilter_stats(&self) -> (usize, usize) {
        (self.patterns, self.rules.iter().filter(|r| r.enabled && r.literals.is_empty()).count())
    }

    pub fn scratch(&self) -> ContentScratch {
        ContentScratch { seen: vec![false; self.patterns] }
    }

    /// The rules `data` (the file's content, possibly cut) matches, in rule order.
    pub fn matches(&self, facts: FileFacts<'_>, data: &[u8], s: &mut ContentScratch) -> Vec<ContentHit> {
        let name = facts.name.to_ascii_lowercase();
        let ext: &[u8] = match name.iter().rposition(|&b| b == b'.') {
            Some(i) if i + 1 < name.len() => &name[i + 1..],
            _ => b"",
        };
        let eligible: Vec<usize> = (0..self.rules.len())
            .filter(|&i| {
                let r = &self.rules[i];
                r.enabled
                    && (r.ext.is_empty() || r.ext.iter().any(|e| e.as_slice() == ext))
                    && (r.name.is_empty() || r.name.iter().any(|n| n.as_slice() == name.as_slice()))
                    && r.size.0.is_none_or(|m| facts.size >= m)
                    && r.size.1.is_none_or(|m| facts.size <= m)
                    && (r.magic.is_empty() || r.magic.iter().any(|m| data.starts_with(m)) != r.magic_not)
            })
            .collect();
        if eligible.is_empty() {
            return Vec::new();
        }
        if s.seen.len() != self.patterns {
            s.seen = vec![false; self.patterns];
        }
        s.seen.iter_mut().for_each(|b| *b = false);
        if let Some(ac) = &self.prefilter
            && eligible.iter().any(|&i| !self.rules[i].literals.is_empty())
        {
            let mut left = self.patterns;
            for m in ac.find_overlapping_iter(data) {
                let id = m.pattern().as_usize();
                if !s.seen[id] {
                    s.seen[id] = true;
                    left -= 1;
                    if left == 0 {
                        break;
                    }
                }
            }
        }
        let mut out = Vec::new();
        for i in eligible {
            let r = &self.rules[i];
            if !r.literals.is_empty() && !r.literals.iter().any(|&l| s.seen[l]) {
                continue;
            }
            if let Some(span) = r.eval(data) {
                out.push(ContentHit { rule: i, span });
            }
        }
        out
    }
}

impl ContentRule {
    /// Whether the rule's regexes run over every file: enabled, with regexes but no prefilter
    /// literal, and nothing (extension, name, magic) narrowing the files first.
    pub fn runs_on_every_file(&self) -> bool {
        self.enabled
            && !(self.any.is_empty() && self.all.is_empty() && self.none.is_empty())
            && self.literals.is_empty()
            && self.ext.is_empty()
            && self.name.is_empty()
            && self.magic.is_empty()
    }

    /// The regex and entropy part of the rule (names, size and magic already hold). `Some`
    /// when it matches, with the span of the regex that decided it.
    fn eval(&self, data: &[u8]) -> Option<Option<(usize, usize)>> {
        let mut span = None;
        for re in &self.all {
            let m = re.find(data)?;
            span.get_or_insert((m.start(), m.end()));
        }
        if !self.any.is_empty() {
            let m = self.any.iter().find_map(|re| re.find(data))?;
            span = Some((m.start(), m.end()));
        }
        if self.none.iter().any(|re| re.is_match(data)) {
            return None;
        }
        if let Some(e) = self.entropy {
            let h = match e.window {
                Some(w) => max_window_entropy(data, w),
                None => shannon(data),
            };
            if e.min.is_some_and(|m| h < m) || e.max.is_some_and(|m| h > m) {
                return None;
            }
        }
        Some(span)
    }
}

/// Shannon entropy of `data` in bits per byte (0 for empty data).
pub fn shannon(data: &[u8]) -> f64 {
    let mut counts = [0u64; 256];
    for &b in data {
        counts[b as usize] += 1;
    }
    entropy_of(&counts, data.len())
}

fn entropy_of(counts: &[u64; 256], n: usize) -> f64 {
    if n == 0 {
        return 0.0;
    }
    let n = n as f64;
    counts.iter().filter(|&&c| c > 0).map(|&c| c as f64 / n).map(|p| -p * p.log2()).sum()
}

/// The highest entropy of any window of `w` bytes, windows stepping by `w / 2` (the last one
/// ends at the end of `data`). Data shorter than a window is measured whole.
pub fn max_window_entropy(data: &[u8], w: usize) -> f64 {
    if data.len() <= w {
        return shannon(data);
    }
    let step = (w / 2).max(1);
    let mut best = 0f64;
    let mut start = 0;
    loop {
        let end = (start + w).min(data.len());
        let s = end - w;
        best = best.max(shannon(&data[s..end]));
        if end == data.len() {
            return best;
        }
        start += step;
    }
}

/// Parses a `magic:` item: a known type name or `hex:` and hex digits.
pub fn parse_magic(s: &str) -> Result<Vec<Vec<u8>>, String> {
    let t = s.trim();
    if let Some(hex) = t.strip_prefix("hex:") {
        let digits: Vec<u8> = hex.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        if digits.is_empty() || !digits.len().is_multiple_of(2) || !digits.iter().all(u8::is_ascii_hexdigit) {
            return Err(format!("{s:?}: `hex:` needs an even number of hex digits, e.g. hex:89504e47"));
        }
        let val = |d: u8| (d as char).to_digit(16).unwrap_or(0) as u8;
        return Ok(vec![digits.chunks(2).map(|c| val(c[0]) << 4 | val(c[1])).collect()]);
    }
    match KNOWN_MAGIC.iter().find(|(n, _)| n.eq_ignore_ascii_case(t)) {
        Some((_, sigs)) => Ok(sigs.iter().map(|s| s.to_vec()).collect()),
        None => {
            let known: Vec<&str> = KNOWN_MAGIC.iter().map(|(n, _)| *n).collect();
            Err(format!("unknown magic {s:?} (known: {}; or hex:DIGITS)", known.join(", ")))
        }
    }
}

fn compile_rule(
    loaded: &Loaded,
    lr: &LoadedRule,
    c: &ContentCondition,
    errors: &mut Vec<RuleError>,
) -> Option<(ContentRule, Vec<Vec<u8>>)> {
    let rule = &lr.rule;
    let mut err = |kind: ErrorKind, path: &str, msg: String| {
        errors.push(loaded.rule_error(lr, path, msg).kind(kind));
    };
    if rule.title.trim().is_empty() {
        err(ErrorKind::InvalidValue, "title", "title must not be empty".into());
    }
    let nothing = c.any.is_none()
        && c.all.is_none()
        && c.none.is_none()
        && c.magic.is_empty()
        && c.ext.is_empty()
        && c.name.is_empty()
        && c.size.is_none()
        && c.entropy.is_none();
    if nothing {
        err(
            ErrorKind::InvalidValue,
            "content",
            "`content` needs at least one of any, all, none, magic, ext, name, size, entropy".into(),
        );
    }
    let case_sensitive = c.case_sensitive.unwrap_or(false);
    let regexes = |key: &str, v: &Option<Values>, err: &mut dyn FnMut(ErrorKind, &str, String)| {
        let mut out = Vec::new();
        let Some(v) = v else { return out };
        let mut items = Vec::new();
        for (i, item) in v.0.iter().enumerate() {
            let path = if v.0.len() == 1 { format!("content.{key}") } else { format!("content.{key}[{i}]") };
            match item {
                ValueItem::Text(t) => items.push((path, t.clone())),
                ValueItem::List { list } => match loaded.lists.get(list) {
                    Some(l) => items.extend(l.iter().map(|t| (path.clone(), t.clone()))),
                    None => err(ErrorKind::UnknownReference, &path, format!("unknown list {list:?}")),
                },
            }
        }
        if items.is_empty() {
            err(ErrorKind::InvalidValue, &format!("content.{key}"), "needs at least one regex".into());
        }
        for (path, p) in items {
            match RegexBuilder::new(&p)
                .unicode(false)
                .multi_line(true)
                .case_insensitive(!case_sensitive)
                .size_limit(REGEX_SIZE_LIMIT)
                .dfa_size_limit(REGEX_DFA_LIMIT)
                .build()
            {
                Ok(re) => out.push((p, re)),
                Err(e) => err(ErrorKind::Regex, &path, format!("invalid regex {p:?}: {}", one_line(&e.to_string()))),
            }
        }
        out
    };
    let any = regexes("any", &c.any, &mut err);
    let all = regexes("all", &c.all, &mut err);
    let none = regexes("none", &c.none, &mut err);
    let mut magic = Vec::new();
    for (i, m) in c.magic.iter().enumerate() {
        match parse_magic(m) {
            Ok(sigs) => magic.extend(sigs),
            Err(e) => err(ErrorKind::InvalidValue, &format!("content.magic[{i}]"), e),
        }
    }
    if c.magic_not && c.magic.is_empty() {
        err(ErrorKind::InvalidValue, "content.magic_not", "`magic_not` needs `magic`".into());
    }
    let mut ext = Vec::new();
    for (i, e) in c.ext.iter().enumerate() {
        let e = e.strip_prefix('.').unwrap_or(e);
        if e.is_empty() || e.contains(['/', '.', '\0']) {
            err(
                ErrorKind::InvalidValue,
                &format!("content.ext[{i}]"),
                format!("{e:?} is not an extension: write it without dots, e.g. php"),
            );
        }
        ext.push(e.to_ascii_lowercase().into_bytes());
    }
    let mut name = Vec::new();
    for (i, n) in c.name.iter().enumerate() {
        if n.is_empty() || n.contains(['/', '\0']) {
            err(ErrorKind::InvalidValue, &format!("content.name[{i}]"), format!("{n:?} is not a file name"));
        }
        name.push(n.to_ascii_lowercase().into_bytes());
    }
    let size = c.size.as_ref().map_or((None, None), |s| (s.min, s.max));
    if let (Some(a), Some(b)) = size
        && a > b
    {
        err(ErrorKind::InvalidValue, "content.size", format!("size.min ({a}) is larger than size.max ({b})"));
    }
    let entropy = c.entropy.as_ref().map(|e| {
        for (k, v) in [("min", e.min), ("max", e.max)] {
            if let Some(v) = v
                && !(0.0..=8.0).contains(&v)
            {
                err(
                    ErrorKind::InvalidValue,
                    &format!("content.entropy.{k}"),
                    format!("entropy is between 0 and 8 bits per byte, not {v}"),
                );
            }
        }
        if e.min.is_none() && e.max.is_none() {
            err(ErrorKind::InvalidValue, "content.entropy", "`entropy` needs `min` or `max`".into());
        }
        if let Some(w) = e.window
            && w < MIN_ENTROPY_WINDOW
        {
            err(
                ErrorKind::InvalidValue,
                "content.entropy.window",
                format!("an entropy window is at least {MIN_ENTROPY_WINDOW} bytes, not {w}"),
            );
        }
        Entropy { min: e.min, max: e.max, window: e.window.map(|w| w as usize) }
    });
    // The prefilter requirement: any one `all` regex's literals are required (keep the most
    // selective set); else, when every `any` regex has a set, one of their union is.
    let sets = |rs: &[(String, Regex)]| -> Vec<Option<Vec<Vec<u8>>>> {
        rs.iter().map(|(p, _)| literal::required_literals(p, !case_sensitive)).collect()
    };
    let from_all = sets(&all).into_iter().flatten().max_by_key(|s| literal::set_score(s.iter().map(Vec::as_slice)));
    let from_any =
        if any.is_empty() { None } else { sets(&any).into_iter().collect::<Option<Vec<_>>>().map(|v| v.concat()) };
    let literals = from_all.or(from_any).unwrap_or_default();
    let strip = |v: Vec<(String, Regex)>| v.into_iter().map(|(_, r)| r).collect();
    Some((
        ContentRule {
            id: rule.id.clone(),
            title: rule.title.clone(),
            description: rule.description.clone(),
            severity: rule.severity,
            class: rule.class.clone().unwrap_or_else(|| "other".to_string()),
            tags: rule.tags.clone(),
            actions: rule.actions.clone(),
            enabled: rule.enabled,
            origin: loaded.files[lr.file].path.display().to_string(),
            any: strip(any),
            all: strip(all),
            none: strip(none),
            magic,
            magic_not: c.magic_not,
            ext,
            name,
            size,
            entropy,
            literals: Vec::new(),
        },
        literals,
    ))
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rule::load::{SourceFile, load_sources};

    fn set(yaml: &str) -> Result<ContentRuleSet, RuleErrors> {
        let loaded = load_sources(vec![SourceFile { path: "c.yml".into(), text: yaml.to_string() }])?;
        ContentRuleSet::compile(&loaded)
    }

    fn hits(s: &ContentRuleSet, name: &str, data: &[u8]) -> Vec<String> {
        let facts = FileFacts { name: name.as_bytes(), size: data.len() as u64 };
        s.matches(facts, data, &mut s.scratch()).into_iter().map(|h| s.rules[h.rule].id.clone()).collect()
    }

    const RULES: &str = r#"
rules:
  - id: c.eval-input
    title: eval of request input
    severity: critical
    content:
      all: ['\beval\s*\(', '\$_(GET|POST|REQUEST)\b']
      ext: [php]
  - id: c.image-php
    title: PHP in an image
    severity: high
    content:
      magic: [gif, png, jpeg]
      any: ['<\?php', '<\?=']
  - id: c.packed
    title: packed
    severity: medium
    content:
      entropy: {min: 7.0, window: 1024}
      size: {min: 2048}
  - id: c.htaccess
    title: htaccess handler
    severity: high
    content:
      name: [.htaccess]
      any: ['SetHandler\s+application/x-httpd-php']
      none: ['^\s*#\s*SetHandler']
"#;

    #[test]
    fn parts_combine_and_prefilter_keeps_matches() {
        let s = set(RULES).unwrap();
        assert_eq!(s.prefilter_stats().1, 1, "only the entropy rule has no literal");
        assert_eq!(hits(&s, "a.php", b"<?php eval($_POST['x']); ?>"), ["c.eval-input"]);
        assert_eq!(hits(&s, "A.PHP", b"<?php EVAL ($_GET[1]);"), ["c.eval-input"]);
        assert!(hits(&s, "a.txt", b"<?php eval($_POST['x']);").is_empty(), "extension");
        assert!(hits(&s, "a.php", b"<?php eval($x);").is_empty(), "all: both needed");
        assert_eq!(hits(&s, "x.gif", b"GIF89a\x01\x00<?php system($_GET[c]);"), ["c.image-php"]);
        assert!(hits(&s, "x.gif", b"<?php echo 1; GIF89a").is_empty(), "magic is at the start");
        assert_eq!(hits(&s, ".htaccess", b"SetHandler application/x-httpd-php\n"), ["c.htaccess"]);
        assert!(hits(&s, ".htaccess", b"# SetHandler application/x-httpd-php\n").is_empty(), "none");
        let random: Vec<u8> = (0..8192u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        assert_eq!(hits(&s, "blob.bin", &random), ["c.packed"]);
        let text = b"the quick brown fox jumps over the lazy dog ".repeat(100);
        assert!(hits(&s, "t.txt", &text).is_empty());
    }

    #[test]
    fn errors_are_positioned() {
        let bad = "rules:\n  - id: c.x\n    title: X\n    severity: low\n    content:\n      any: ['(']\n      magic: [tiff]\n      entropy: {min: 9}\n";
        let e = set(bad).unwrap_err();
        let msgs: Vec<String> = e.0.iter().map(|e| e.to_string()).collect();
        assert_eq!(e.0.len(), 3, "{msgs:?}");
        assert!(msgs[0].starts_with("c.yml:6:") && msgs[0].contains("invalid regex"), "{msgs:?}");
        assert!(msgs.iter().any(|m| m.starts_with("c.yml:7:") && m.contains("unknown magic")), "{msgs:?}");
        assert!(msgs.iter().any(|m| m.starts_with("c.yml:8:") && m.contains("between 0 and 8")), "{msgs:?}");
        let both = "rules:\n  - id: c.y\n    title: Y\n    severity: low\n    match: {contains: a}\n    content: {ext: [php]}\n";
        assert!(set(both).unwrap_err().to_string().contains("one of `match` (events), `sequence`"));
        let thr = "rules:\n  - id: c.z\n    title: Z\n    severity: low\n    content: {ext: [php]}\n    threshold: {count: 2, within: 1m}\n";
        let e = set(thr).unwrap_err();
        assert_eq!(e.0[0].line, 6, "{e}");
    }

    #[test]
    fn entropy_measures() {
        assert_eq!(shannon(b""), 0.0);
        assert_eq!(shannon(b"aaaa"), 0.0);
        assert!((shannon(b"abab") - 1.0).abs() < 1e-9);
        let all: Vec<u8> = (0..=255u8).collect();
        assert!((shannon(&all) - 8.0).abs() < 1e-9);
        let mut mixed = b"a".repeat(4096);
        mixed.extend(all.repeat(4));
        assert!(shannon(&mixed) < 7.0);
        assert!(max_window_entropy(&mixed, 1024) > 7.9);
        assert_eq!(parse_magic("hex:89 50").unwrap(), vec![vec![0x89, 0x50]]);
        assert!(parse_magic("hex:8").is_err());
    }
}
