//! Sigma rules for web servers (`logsource.category: webserver`) turned into trapline rules,
//! for `trapline import sigma`.
//!
//! A Sigma rule is read as YAML and converted into the rule model ([`crate::rule::Rule`]), so
//! what is written out is valid by construction and serialised by the same types that load it.
//! Only what an access log can answer is converted: the request line, status, referer, user
//! agent, client address and user. A rule that needs anything else (a POST body, another
//! header, a modifier without an equivalent, an aggregation) is not converted at all and comes
//! back as [`Outcome::Skipped`] with the reason: half a Sigma rule would fire on what the whole
//! rule excludes, or never fire while looking converted.
//!
//! Semantics kept from the Sigma specification:
//! - values compare case-insensitively (`cased` makes them case-sensitive; `re` is
//!   case-sensitive unless `re|i`);
//! - `*` and `?` in a value are wildcards (`\*`, `\?`, `\\` escape them); a value without
//!   modifier matches the whole field; `contains`, `startswith`, `endswith` add wildcards;
//! - a list of values matches when any does, `|all` when every one does; a list of maps is
//!   any of them; the items of one map must all hold;
//! - `keywords` (a list of strings without a field) match anywhere in the log line; a
//!   wildcard inside a keyword does not cross a `"`, so it stays within one quoted field;
//! - `field: null` is an absent (`-`) field.

use std::fmt::Write as _;

use serde::Deserialize;
use serde_yaml::Value;

use crate::rule::load::SourceFile;
use crate::rule::locate;
use crate::rule::{Condition, ErrorKind, Examples, Rule, RuleError, Severity, ValueItem, Values};

/// What became of one Sigma file.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The rule, converted. Its id is `sigma.<slug of the title>`; the caller makes it unique.
    Converted(Box<Converted>),
    /// Not converted, and why.
    Skipped { title: String, reason: String },
}

/// A converted rule and what its attribution needs.
#[derive(Debug, Clone)]
pub struct Converted {
    pub rule: Rule,
    /// The Sigma rule's own id (a UUID), when it has one.
    pub sigma_id: Option<String>,
    /// Its author(s), as written.
    pub author: Option<String>,
    /// Its licence, when the rule names one.
    pub license: Option<String>,
}

/// Sigma webserver fields and the access-log fields they become. `cs-uri-query` is the full
/// request target, not only the query: Sigma rules put paths there (`/vpns/portal/`), which
/// IIS-style logs split but Apache and nginx log as one target.
const FIELDS: &[(&str, &str)] = &[
    ("cs-uri-query", "uri"),
    ("cs-uri-stem", "path"),
    ("cs-method", "method"),
    ("sc-status", "status"),
    ("cs-user-agent", "user_agent"),
    ("cs-referer", "referer"),
    ("c-ip", "client_ip"),
    ("cs-username", "user"),
    ("cs-version", "protocol"),
    ("sc-bytes", "bytes"),
];

/// The access-log field of a Sigma webserver field, `None` when access logs lack it.
pub fn field_for(sigma: &str) -> Option<&'static str> {
    FIELDS.iter().find(|(s, _)| s.eq_ignore_ascii_case(sigma)).map(|&(_, t)| t)
}

/// Why a file did not give a rule: a Sigma file that is wrong (an error, positioned), or a
/// valid rule that needs what access logs lack (a skip).
enum Fail {
    Error(RuleError),
    Skip(String),
}

type R<T> = Result<T, Fail>;

/// Reading one file, with its text for positions.
struct Ctx<'a> {
    src: &'a SourceFile,
}

impl Ctx<'_> {
    /// An error positioned at the YAML node at `path` (`detection.selection`), plus `offset`
    /// characters into a scalar written on one line (a column inside a condition).
    fn error_at(&self, path: &str, offset: Option<usize>, message: impl Into<String>) -> Fail {
        let pos = locate::locate(&self.src.text, path);
        let (line, mut col) = pos.map_or((0, 0), |p| (p.line, p.col));
        if let (Some(off), Some(p)) = (offset, pos) {
            // A quoted scalar starts one column before its text.
            let quoted = self
                .src
                .text
                .lines()
                .nth(p.line.saturating_sub(1))
                .and_then(|l| l.chars().nth(p.col.saturating_sub(1)))
                .is_some_and(|c| c == '\'' || c == '"');
            col += off + usize::from(quoted);
        }
        Fail::Error(RuleError {
            file: self.src.path.clone(),
            line,
            col,
            rule: None,
            message: message.into(),
            kind: ErrorKind::Syntax,
        })
    }
}

/// Converts one Sigma file. `source` is the link (or path) naming where the rule came from,
/// kept in the converted rule's description for attribution; `formats` are the log formats
/// the converted rule applies to.
pub fn convert(src: &SourceFile, source: &str, formats: &[String]) -> Result<Outcome, RuleError> {
    let cx = Ctx { src };
    let mut title = String::new();
    match convert_inner(&cx, source, formats, &mut title) {
        Ok(c) => Ok(Outcome::Converted(Box::new(c))),
        Err(Fail::Skip(reason)) => Ok(Outcome::Skipped { title, reason }),
        Err(Fail::Error(e)) => Err(e),
    }
}

fn yaml_error(src: &SourceFile, e: &serde_yaml::Error) -> Fail {
    let (line, col) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
    let msg = e.to_string();
    // serde_yaml appends " at line X column Y"; the position is already in front.
    let msg = match msg.find(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg,
    };
    Fail::Error(RuleError { file: src.path.clone(), line, col, rule: None, message: msg, kind: ErrorKind::Syntax })
}

fn convert_inner(cx: &Ctx, source: &str, formats: &[String], title_out: &mut String) -> R<Converted> {
    if let Err(pos) = locate::check_depth(&cx.src.text, locate::MAX_DEPTH) {
        return Err(Fail::Error(RuleError {
            file: cx.src.path.clone(),
            line: pos.line,
            col: pos.col,
            rule: None,
            message: "nested too deeply".into(),
            kind: ErrorKind::Syntax,
        }));
    }
    let mut docs = Vec::new();
    for d in serde_yaml::Deserializer::from_str(&cx.src.text) {
        docs.push(Value::deserialize(d).map_err(|e| yaml_error(cx.src, &e))?);
    }
    if docs.len() > 1 {
        return Err(Fail::Skip(
            "a multi-document Sigma file (`action: global`/`repeat` collection): convert its rules one file each"
                .into(),
        ));
    }
    let doc = docs.pop().unwrap_or(Value::Null);
    let Some(map) = doc.as_mapping() else {
        return Err(cx.error_at("", None, "not a Sigma rule: expected a mapping with title, logsource and detection"));
    };
    let text = |key: &str| map.get(key).and_then(scalar_text);
    // A tree of Sigma rules also holds other YAML (tests, pipelines, CI): not an error.
    if !map.contains_key("detection") && !map.contains_key("logsource") && !map.contains_key("correlation") {
        return Err(Fail::Skip("not a Sigma rule (no logsource or detection)".into()));
    }
    if map.contains_key("filter") && !map.contains_key("detection") {
        return Err(Fail::Skip("a Sigma filter (it changes other rules; it is not a rule itself)".into()));
    }
    let title = text("title").filter(|t| !t.trim().is_empty());
    let Some(title) = title else {
        return Err(cx.error_at("title", None, "a Sigma rule needs a `title` (a non-empty string)"));
    };
    *title_out = title.clone();
    if map.contains_key("correlation") {
        return Err(Fail::Skip("a correlation rule (counts and sequences over other rules)".into()));
    }
    let category = map.get("logsource").and_then(|l| l.get("category")).and_then(scalar_text);
    match category.as_deref() {
        Some(c) if c.eq_ignore_ascii_case("webserver") => {}
        Some(c) => return Err(Fail::Skip(format!("logsource category `{c}`, not webserver"))),
        None => return Err(Fail::Skip("no logsource category (only `webserver` rules are converted)".into())),
    }
    if let Some(status) = text("status")
        && (status == "deprecated" || status == "unsupported")
    {
        return Err(Fail::Skip(format!("status `{status}`")));
    }
    let definition = map.get("logsource").and_then(|l| l.get("definition")).and_then(scalar_text);
    if let Some(d) = definition {
        let d = d.to_ascii_lowercase();
        if d.contains("post") && d.contains("body") {
            return Err(Fail::Skip(
                "needs POST request bodies (its logsource definition says so), which access logs do not hold".into(),
            ));
        }
    }
    let Some(detection) = map.get("detection").and_then(Value::as_mapping) else {
        return Err(cx.error_at("detection", None, "a Sigma rule needs a `detection` mapping"));
    };
    if detection.contains_key("timeframe") {
        return Err(Fail::Skip("`timeframe` (an aggregation over time)".into()));
    }
    let condition = match detection.get("condition") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Sequence(list)) if !list.is_empty() && list.iter().all(Value::is_string) => {
            list.iter().filter_map(|v| v.as_str().map(str::to_string)).collect()
        }
        _ => {
            return Err(cx.error_at(
                "detection.condition",
                None,
                "`detection.condition` must be a string (or a list of strings)",
            ));
        }
    };
    let mut searches: Vec<(String, Condition)> = Vec::new();
    for (k, v) in detection {
        let Some(name) = k.as_str() else {
            return Err(cx.error_at("detection", None, "search identifiers are strings"));
        };
        if name == "condition" {
            continue;
        }
        let path = format!("detection.{name}");
        searches.push((name.to_string(), search(cx, &path, v)?));
    }
    let mut alternatives = Vec::new();
    for (i, cond) in condition.iter().enumerate() {
        let path =
            if condition.len() == 1 { "detection.condition".to_string() } else { format!("detection.condition[{i}]") };
        if cond.contains('|') {
            return Err(Fail::Skip("an aggregation in the condition (`| count() ...`)".into()));
        }
        let expr = parse_condition(cx, &path, cond)?;
        alternatives.push(to_condition(cx, &path, &expr, &searches)?);
    }
    let condition = simplify(any(alternatives));

    let sigma_id = text("id");
    let author = text("author");
    let license = text("license");
    let tags = string_list(map.get("tags"));
    let severity = match text("level").as_deref().map(str::to_ascii_lowercase).as_deref() {
        Some("informational") => Severity::Info,
        Some("low") => Severity::Low,
        None | Some("medium") => Severity::Medium,
        Some("high") => Severity::High,
        Some("critical") => Severity::Critical,
        Some(other) => return Err(cx.error_at("level", None, format!("unknown level `{other}`"))),
    };
    let mut description = text("description").unwrap_or_default().trim().to_string();
    let fps = string_list(map.get("falsepositives"));
    if !fps.is_empty() {
        let _ = write!(description, "\n\nFalse positives: {}.", fps.join("; ").trim_end_matches('.'));
    }
    let _ = write!(description, "\n\nConverted from the Sigma rule {title:?}");
    if let Some(id) = &sigma_id {
        let _ = write!(description, " (id {id})");
    }
    let _ = write!(description, " by {}", author.as_deref().unwrap_or("an unnamed author"));
    if let Some(date) = text("date") {
        let _ = write!(description, ", {date}");
    }
    if let Some(m) = text("modified") {
        let _ = write!(description, " (modified {m})");
    }
    let _ = write!(description, ". Source: {source}.");
    if let Some(l) = &license {
        let _ = write!(description, " License: {l}.");
    }
    let refs = string_list(map.get("references"));
    if !refs.is_empty() {
        let _ = write!(description, "\nReferences: {}", refs.join(" "));
    }
    let rule = Rule {
        id: format!("sigma.{}", slug(&title)),
        title: title.clone(),
        description,
        severity,
        class: class_of(&title, &tags),
        tags,
        enabled: true,
        formats: formats.to_vec(),
        sources: Vec::new(),
        condition: Some(condition),
        except: None,
        content: None,
        extract: Vec::new(),
        sequence: None,
        threshold: None,
        suppress: None,
        actions: vec!["log".to_string()],
        examples: Examples::default(),
    };
    Ok(Converted { rule, sigma_id, author, license })
}

/// A scalar as text (numbers and booleans as written), `None` for anything else.
fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A string or a list of strings (authors, tags, references) as a list.
fn string_list(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Sequence(items)) => items.iter().filter_map(scalar_text).collect(),
        Some(v) => scalar_text(v).into_iter().collect(),
        None => Vec::new(),
    }
}

/// `SQL Injection Strings In URI` → `sql-injection-strings-in-uri` (at most 64 characters,
/// cut at a word).
pub fn slug(title: &str) -> String {
    let mut s = String::new();
    for c in title.chars() {
        if c.is_ascii_alphanumeric() {
            s.push(c.to_ascii_lowercase());
        } else if !s.is_empty() && !s.ends_with('-') {
            s.push('-');
        }
    }
    let mut s = s.trim_end_matches('-').to_string();
    if s.len() > 64 {
        let cut = s[..64].rfind('-').unwrap_or(64);
        s.truncate(cut);
    }
    if s.is_empty() { "rule".to_string() } else { s }
}

/// The roll-up class: what the title names when it names a kind of attack trapline's packs
/// use, else what the ATT&CK tags say.
fn class_of(title: &str, tags: &[String]) -> Option<String> {
    let t = title.to_ascii_lowercase();
    let tag = |p: &str| tags.iter().any(|x| x.to_ascii_lowercase().starts_with(p));
    let class = if t.contains("sql injection") {
        "sqli"
    } else if t.contains("xss") || t.contains("cross site scripting") || t.contains("cross-site scripting") {
        "xss"
    } else if t.contains("traversal") {
        "traversal"
    } else if t.contains("webshell") || t.contains("web shell") || tag("attack.t1505.003") {
        "webshell"
    } else if tag("cve.") || tag("attack.t1190") || tag("detection.emerging-threats") {
        "exploit"
    } else if tag("attack.reconnaissance") || tag("attack.t1595") || tag("attack.discovery") {
        "recon"
    } else {
        return None;
    };
    Some(class.to_string())
}

// ------------------------------------------------------------------------------ searches

/// One search identifier's value: a map (all of its items), a list of maps (any of them), or
/// keywords (a list of strings: any of them, anywhere in the line).
fn search(cx: &Ctx, path: &str, v: &Value) -> R<Condition> {
    match v {
        Value::Mapping(m) => {
            if m.is_empty() {
                return Err(cx.error_at(path, None, "an empty search"));
            }
            let mut items = Vec::new();
            for (k, val) in m {
                let Some(key) = k.as_str() else {
                    return Err(cx.error_at(path, None, "field names are strings"));
                };
                items.push(field_item(cx, &format!("{path}.{key}"), key, val)?);
            }
            Ok(all(items))
        }
        Value::Sequence(list) if !list.is_empty() && list.iter().all(Value::is_mapping) => {
            let mut alts = Vec::new();
            for (i, m) in list.iter().enumerate() {
                alts.push(search(cx, &format!("{path}[{i}]"), m)?);
            }
            Ok(any(alts))
        }
        Value::Sequence(_) | Value::String(_) | Value::Number(_) => field_item(cx, path, "", v),
        _ => Err(cx.error_at(path, None, "a search is a map of fields, a list of maps, or a list of keywords")),
    }
}

/// The comparison a value asks for once the modifiers are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Equals,
    Contains,
    StartsWith,
    EndsWith,
}

/// The modifiers of one field item.
#[derive(Default)]
struct Mods {
    op: Option<Op>,
    all: bool,
    cased: bool,
    re: bool,
    re_flags: String,
    exists: bool,
    cidr: bool,
    cmp: Option<&'static str>,
}

fn parse_mods(path: &str, names: &[&str]) -> R<Mods> {
    let mut m = Mods::default();
    for &name in names {
        match name.to_ascii_lowercase().as_str() {
            "contains" => m.op = Some(Op::Contains),
            "startswith" => m.op = Some(Op::StartsWith),
            "endswith" => m.op = Some(Op::EndsWith),
            "all" => m.all = true,
            "cased" => m.cased = true,
            "re" => m.re = true,
            "i" | "m" | "s" if m.re => m.re_flags.push_str(name),
            "exists" => m.exists = true,
            "cidr" => m.cidr = true,
            "lt" => m.cmp = Some("lt"),
            "lte" => m.cmp = Some("lte"),
            "gt" => m.cmp = Some("gt"),
            "gte" => m.cmp = Some("gte"),
            other => return Err(Fail::Skip(format!("the modifier `{other}` (in {path}) has no equivalent here"))),
        }
    }
    Ok(m)
}

/// One `field|modifiers: value(s)` item (an empty field: keywords on the raw line).
fn field_item(cx: &Ctx, path: &str, key: &str, v: &Value) -> R<Condition> {
    let mut parts = key.split('|');
    let sigma_field = parts.next().unwrap_or_default();
    let mod_names: Vec<&str> = parts.collect();
    let mods = parse_mods(path, &mod_names)?;
    let field = if sigma_field.is_empty() {
        None
    } else {
        match field_for(sigma_field) {
            Some(f) => Some(f),
            None => {
                return Err(Fail::Skip(format!(
                    "the field `{sigma_field}` (in {path}) is not in access logs (they hold the request line, \
                     status, size, referer, user agent, client address and user)"
                )));
            }
        }
    };
    let keyword = field.is_none();
    let values: Vec<Option<String>> = match v {
        Value::Sequence(items) => {
            let mut out = Vec::new();
            for (i, item) in items.iter().enumerate() {
                match item {
                    Value::Null => out.push(None),
                    other => match scalar_text(other) {
                        Some(t) => out.push(Some(t)),
                        None => {
                            return Err(cx.error_at(&format!("{path}[{i}]"), None, "a value is a string or a number"));
                        }
                    },
                }
            }
            out
        }
        Value::Null => vec![None],
        other => match scalar_text(other) {
            Some(t) => vec![Some(t)],
            None => return Err(cx.error_at(path, None, "a value is a string, a number, or a list of them")),
        },
    };
    if values.is_empty() {
        return Err(cx.error_at(path, None, "an empty list of values matches nothing"));
    }
    let base = |c: Condition| Condition { field: field.map(str::to_string), ..c };
    if mods.exists {
        let want = match values.as_slice() {
            [Some(t)] if t == "true" || t == "false" => t == "true",
            _ => return Err(cx.error_at(path, None, "`|exists` takes true or false")),
        };
        return Ok(base(Condition { exists: Some(want), ..Default::default() }));
    }
    let mut conds = Vec::new();
    let mut plain: Vec<(Op, String)> = Vec::new();
    let mut regexes: Vec<String> = Vec::new();
    for value in values {
        let Some(value) = value else {
            if keyword {
                return Err(cx.error_at(path, None, "a keyword cannot be null"));
            }
            conds.push(absent(field.unwrap_or_default()));
            continue;
        };
        if mods.cidr {
            conds.push(base(Condition { cidr: Some(texts(vec![value])), ..Default::default() }));
        } else if let Some(cmp) = mods.cmp {
            let Ok(n) = value.parse::<f64>() else {
                return Err(cx.error_at(path, None, format!("`|{cmp}` takes a number, not {value:?}")));
            };
            let mut c = Condition::default();
            match cmp {
                "lt" => c.lt = Some(n),
                "lte" => c.lte = Some(n),
                "gt" => c.gt = Some(n),
                _ => c.gte = Some(n),
            }
            conds.push(base(c));
        } else if mods.re {
            let flags: String = mods.re_flags.chars().filter(|&c| c != 'i').collect();
            let pattern = if flags.is_empty() { value.clone() } else { format!("(?{flags}){value}") };
            let cased = !mods.re_flags.contains('i');
            if let Err(e) = crate::engine::compile::build_regex(&pattern, cased) {
                let first = e.to_string().lines().last().unwrap_or_default().trim().to_string();
                return Err(Fail::Skip(format!(
                    "the regex {value:?} (in {path}) is not Rust regex syntax (no look-around or back-references): {first}"
                )));
            }
            conds.push(base(Condition {
                regex: Some(texts(vec![pattern])),
                case_sensitive: cased.then_some(true),
                ..Default::default()
            }));
        } else {
            let op = mods.op.unwrap_or(if keyword { Op::Contains } else { Op::Equals });
            match wildcard(op, &value, keyword) {
                Match::Plain(op, text) if !mods.all => plain.push((op, text)),
                Match::Plain(op, text) => conds.push(base(op_condition(op, vec![text]))),
                Match::Regex(p) if !mods.all => regexes.push(p),
                Match::Regex(p) => conds.push(base(Condition { regex: Some(texts(vec![p])), ..Default::default() })),
                Match::Present => conds.push(base(Condition { exists: Some(true), ..Default::default() })),
                Match::Empty => conds.push(any(vec![
                    absent(field.unwrap_or("line")),
                    base(op_condition(Op::Equals, vec![String::new()])),
                ])),
            }
        }
    }
    // Values of one operator go in one list (`contains: [a, b]`), in the order written; the
    // literal ones first, which is also the order the examples are written in.
    let mut grouped = Vec::new();
    for op in [Op::Equals, Op::Contains, Op::StartsWith, Op::EndsWith] {
        let vals: Vec<String> = plain.iter().filter(|(o, _)| *o == op).map(|(_, v)| v.clone()).collect();
        if !vals.is_empty() {
            grouped.push(base(op_condition(op, vals)));
        }
    }
    if !regexes.is_empty() {
        grouped.push(base(Condition { regex: Some(texts(regexes)), ..Default::default() }));
    }
    grouped.append(&mut conds);
    let mut conds = grouped;
    if mods.cased {
        for c in &mut conds {
            set_cased(c);
        }
    }
    Ok(if mods.all { all(conds) } else { any(conds) })
}

/// An absent field. The query is the one field Sigma tests for null that trapline splits off
/// the target: `cs-uri-query: null` is a request without a query.
fn absent(field: &str) -> Condition {
    let field = if field == "uri" { "query" } else { field };
    Condition { field: Some(field.to_string()), exists: Some(false), ..Default::default() }
}

fn set_cased(c: &mut Condition) {
    if c.contains.is_some()
        || c.equals.is_some()
        || c.starts_with.is_some()
        || c.ends_with.is_some()
        || c.regex.is_some()
    {
        c.case_sensitive = Some(true);
    }
    for sub in c.any.iter_mut().chain(c.all.iter_mut()).flatten() {
        set_cased(sub);
    }
}

fn texts(v: Vec<String>) -> Values {
    Values(v.into_iter().map(ValueItem::Text).collect())
}

fn op_condition(op: Op, vals: Vec<String>) -> Condition {
    let v = Some(texts(vals));
    match op {
        Op::Equals => Condition { equals: v, ..Default::default() },
        Op::Contains => Condition { contains: v, ..Default::default() },
        Op::StartsWith => Condition { starts_with: v, ..Default::default() },
        Op::EndsWith => Condition { ends_with: v, ..Default::default() },
    }
}

/// What a Sigma value becomes.
#[derive(Debug, PartialEq)]
enum Match {
    /// A literal with an operator.
    Plain(Op, String),
    /// Wildcards inside: a regex.
    Regex(String),
    /// Only wildcards (`*`): any value.
    Present,
    /// The empty string: an empty or absent field.
    Empty,
}

#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Lit(String),
    Star,
    One,
}

/// Splits a Sigma value at its wildcards. `\*`, `\?` and `\\` are the literal characters; any
/// other backslash is itself (Windows paths are written with single backslashes).
fn pieces(v: &str) -> Vec<Piece> {
    let mut out = Vec::new();
    let mut lit = String::new();
    let mut chars = v.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.peek() {
                Some(&n @ ('*' | '?' | '\\')) => {
                    lit.push(n);
                    chars.next();
                }
                _ => lit.push('\\'),
            },
            '*' | '?' => {
                if !lit.is_empty() {
                    out.push(Piece::Lit(std::mem::take(&mut lit)));
                }
                out.push(if c == '*' { Piece::Star } else { Piece::One });
            }
            _ => lit.push(c),
        }
    }
    if !lit.is_empty() {
        out.push(Piece::Lit(lit));
    }
    out
}

/// The condition of one value under operator `op`: a plain operator when the only wildcards
/// are `*` at the ends, else a regex. On the raw line (`keyword`) a wildcard does not cross a
/// `"`, so it cannot reach from one quoted field into the next.
fn wildcard(op: Op, v: &str, keyword: bool) -> Match {
    let mut p = pieces(v);
    if matches!(op, Op::Contains | Op::EndsWith) {
        p.insert(0, Piece::Star);
    }
    if matches!(op, Op::Contains | Op::StartsWith) {
        p.push(Piece::Star);
    }
    p.dedup_by(|a, b| *a == Piece::Star && *b == Piece::Star);
    let lead = p.first() == Some(&Piece::Star);
    let trail = p.len() > 1 && p.last() == Some(&Piece::Star);
    let inner = &p[usize::from(lead)..p.len() - usize::from(trail)];
    match inner {
        [] if lead => Match::Present,
        [] => Match::Empty,
        [Piece::Lit(l)] => Match::Plain(
            match (lead, trail) {
                (true, true) => Op::Contains,
                (true, false) => Op::EndsWith,
                (false, true) => Op::StartsWith,
                (false, false) => Op::Equals,
            },
            l.clone(),
        ),
        _ => {
            let (star, one) = if keyword { ("[^\"]*", "[^\"]") } else { ("(?s:.*)", "(?s:.)") };
            let mut re = String::new();
            if !lead {
                re.push('^');
            }
            for piece in inner {
                match piece {
                    Piece::Lit(l) => re.push_str(&regex_syntax::escape(l)),
                    Piece::Star => re.push_str(star),
                    Piece::One => re.push_str(one),
                }
            }
            if !trail {
                re.push('$');
            }
            Match::Regex(re)
        }
    }
}

fn any(mut v: Vec<Condition>) -> Condition {
    if v.len() == 1 { v.pop().unwrap_or_default() } else { Condition { any: Some(v), ..Default::default() } }
}

fn all(mut v: Vec<Condition>) -> Condition {
    if v.len() == 1 { v.pop().unwrap_or_default() } else { Condition { all: Some(v), ..Default::default() } }
}

/// Flattens `any` in `any` and `all` in `all` (as written by nested Sigma conditions).
fn simplify(c: Condition) -> Condition {
    let mut c = c;
    if let Some(list) = c.any.take() {
        let mut out = Vec::new();
        for sub in list.into_iter().map(simplify) {
            match sub {
                Condition { any: Some(inner), .. } if is_bare(&sub, "any") => out.extend(inner),
                other => out.push(other),
            }
        }
        c.any = Some(out);
    }
    if let Some(list) = c.all.take() {
        let mut out = Vec::new();
        for sub in list.into_iter().map(simplify) {
            match sub {
                Condition { all: Some(inner), .. } if is_bare(&sub, "all") => out.extend(inner),
                other => out.push(other),
            }
        }
        c.all = Some(out);
    }
    if let Some(n) = c.not.take() {
        c.not = Some(Box::new(simplify(*n)));
    }
    c
}

/// Whether `c` is only a combinator `which` (no field, transforms or other key).
fn is_bare(c: &Condition, which: &str) -> bool {
    let only = match which {
        "any" => c.all.is_none(),
        _ => c.any.is_none(),
    };
    only && c.not.is_none() && c.field.is_none() && c.transforms.is_empty() && c.case_sensitive.is_none()
}

// ------------------------------------------------------------------------------ condition

/// A parsed Sigma condition.
#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Id(String, usize),
    /// `1 of x*` / `all of x*` / `... of them` (`None`), at an offset.
    Of {
        all: bool,
        pattern: Option<String>,
        at: usize,
    },
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Not(Box<Expr>),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Open,
    Close,
    Word(String),
}

fn tokens(s: &str) -> Vec<(Tok, usize)> {
    let mut out = Vec::new();
    let mut chars = s.char_indices().peekable();
    while let Some(&(i, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '(' || c == ')' {
            out.push((if c == '(' { Tok::Open } else { Tok::Close }, s[..i].chars().count()));
            chars.next();
        } else {
            let start = i;
            let mut end = i;
            while let Some(&(j, d)) = chars.peek() {
                if d.is_whitespace() || d == '(' || d == ')' {
                    break;
                }
                end = j + d.len_utf8();
                chars.next();
            }
            out.push((Tok::Word(s[start..end].to_string()), s[..start].chars().count()));
        }
    }
    out
}

struct CondParser<'a> {
    cx: &'a Ctx<'a>,
    path: &'a str,
    toks: Vec<(Tok, usize)>,
    i: usize,
    len: usize,
}

impl CondParser<'_> {
    fn peek_word(&self) -> Option<String> {
        match self.toks.get(self.i) {
            Some((Tok::Word(w), _)) => Some(w.to_ascii_lowercase()),
            _ => None,
        }
    }
    fn at(&self) -> usize {
        self.toks.get(self.i).map_or(self.len, |t| t.1)
    }
    fn error(&self, msg: String) -> Fail {
        self.cx.error_at(self.path, Some(self.at()), msg)
    }
    fn or(&mut self) -> R<Expr> {
        let mut v = vec![self.and()?];
        while self.peek_word().as_deref() == Some("or") {
            self.i += 1;
            v.push(self.and()?);
        }
        Ok(if v.len() == 1 { v.remove(0) } else { Expr::Or(v) })
    }
    fn and(&mut self) -> R<Expr> {
        let mut v = vec![self.unary()?];
        while self.peek_word().as_deref() == Some("and") {
            self.i += 1;
            v.push(self.unary()?);
        }
        Ok(if v.len() == 1 { v.remove(0) } else { Expr::And(v) })
    }
    fn unary(&mut self) -> R<Expr> {
        if self.peek_word().as_deref() == Some("not") {
            self.i += 1;
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        self.primary()
    }
    fn primary(&mut self) -> R<Expr> {
        let at = self.at();
        match self.toks.get(self.i).cloned() {
            None => Err(self.error("the condition ends where a search identifier was expected".into())),
            Some((Tok::Open, _)) => {
                self.i += 1;
                let e = self.or()?;
                match self.toks.get(self.i) {
                    Some((Tok::Close, _)) => {
                        self.i += 1;
                        Ok(e)
                    }
                    _ => Err(self.error("expected `)`".into())),
                }
            }
            Some((Tok::Close, _)) => Err(self.error("unexpected `)`".into())),
            Some((Tok::Word(w), _)) => {
                let lower = w.to_ascii_lowercase();
                if matches!(lower.as_str(), "and" | "or" | "of" | "them") {
                    return Err(self.error(format!("unexpected `{w}` where a search identifier was expected")));
                }
                let next_is_of =
                    matches!(self.toks.get(self.i + 1), Some((Tok::Word(n), _)) if n.eq_ignore_ascii_case("of"));
                if next_is_of {
                    let all = match lower.as_str() {
                        "all" => true,
                        "1" | "any" => false,
                        _ => {
                            return Err(Fail::Skip(format!(
                                "`{w} of` in the condition (only `1 of` and `all of` are defined)"
                            )));
                        }
                    };
                    self.i += 2;
                    let pattern = match self.toks.get(self.i).cloned() {
                        Some((Tok::Word(p), _)) => p,
                        _ => return Err(self.error(format!("`{w} of` needs a search identifier pattern or `them`"))),
                    };
                    self.i += 1;
                    let pattern = (!pattern.eq_ignore_ascii_case("them")).then_some(pattern);
                    return Ok(Expr::Of { all, pattern, at });
                }
                self.i += 1;
                Ok(Expr::Id(w, at))
            }
        }
    }
}

fn parse_condition(cx: &Ctx, path: &str, s: &str) -> R<Expr> {
    let mut p = CondParser { cx, path, toks: tokens(s), i: 0, len: s.chars().count() };
    let e = p.or()?;
    if p.i < p.toks.len() {
        return Err(p.error("unexpected text after the end of the condition (a missing `and`/`or`?)".into()));
    }
    Ok(e)
}

/// Whether identifier `name` matches a Sigma pattern (`*` any run, `?` one character).
fn glob(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    fn go(p: &[char], n: &[char]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some('*') => (0..=n.len()).any(|k| go(&p[1..], &n[k..])),
            Some('?') => !n.is_empty() && go(&p[1..], &n[1..]),
            Some(c) => n.first() == Some(c) && go(&p[1..], &n[1..]),
        }
    }
    go(&p, &n)
}

fn to_condition(cx: &Ctx, path: &str, e: &Expr, searches: &[(String, Condition)]) -> R<Condition> {
    Ok(match e {
        Expr::Id(name, at) => match searches.iter().find(|(n, _)| n == name) {
            Some((_, c)) => c.clone(),
            None => {
                let known: Vec<&str> = searches.iter().map(|(n, _)| n.as_str()).collect();
                return Err(cx.error_at(
                    path,
                    Some(*at),
                    format!("unknown search identifier `{name}` (defined: {})", known.join(", ")),
                ));
            }
        },
        Expr::Of { all: every, pattern, at } => {
            let chosen: Vec<Condition> = searches
                .iter()
                .filter(|(n, _)| match pattern {
                    Some(p) => glob(p, n),
                    // `them` leaves out identifiers starting with `_` (Sigma's convention).
                    None => !n.starts_with('_'),
                })
                .map(|(_, c)| c.clone())
                .collect();
            if chosen.is_empty() {
                let what = pattern.as_deref().unwrap_or("them");
                return Err(cx.error_at(path, Some(*at), format!("`{what}` names no search identifier")));
            }
            if *every { all(chosen) } else { any(chosen) }
        }
        Expr::And(v) => all(v.iter().map(|x| to_condition(cx, path, x, searches)).collect::<R<Vec<_>>>()?),
        Expr::Or(v) => any(v.iter().map(|x| to_condition(cx, path, x, searches)).collect::<R<Vec<_>>>()?),
        Expr::Not(x) => Condition { not: Some(Box::new(to_condition(cx, path, x, searches)?)), ..Default::default() },
    })
}

// ------------------------------------------------------------------------------ examples

/// What a line must hold in one field for a condition to be true, as far as the example
/// writer follows it.
#[derive(Debug, Default, Clone)]
struct Want {
    equals: Option<String>,
    starts: Vec<String>,
    contains: Vec<String>,
    ends: Vec<String>,
    absent: bool,
    present: bool,
}

impl Want {
    fn render(&self) -> Option<String> {
        if self.absent {
            return None;
        }
        if let Some(e) = &self.equals {
            return Some(e.clone());
        }
        let s = format!("{}{}{}", self.starts.concat(), self.contains.concat(), self.ends.concat());
        (!s.is_empty() || self.present).then_some(s)
    }
    fn fixed_end(&self) -> bool {
        self.equals.is_some() || !self.ends.is_empty()
    }
}

type Wants = std::collections::BTreeMap<String, Want>;

/// Candidate access-log lines (combined format) for the condition to match: one per choice of
/// alternative (the `k`-th of every `any`). They are only candidates: the caller runs them
/// through the engine and keeps those that match.
pub fn example_lines(c: &Condition) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for k in 0..4 {
        let mut w = Wants::new();
        wants(c, k, &mut w);
        if let Some(line) = render_line(&w)
            && !out.contains(&line)
        {
            out.push(line);
        }
    }
    out
}

/// A line no converted rule should match: a browser fetching a page.
pub const BENIGN_LINE: &str = "198.51.100.20 - - [10/Oct/2024:13:55:36 +0000] \"GET /index.html HTTP/1.1\" 200 5120 \
     \"https://www.example.org/\" \"Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\"";

fn first_text(v: &Option<Values>) -> Option<String> {
    v.as_ref()?.0.iter().find_map(|i| match i {
        ValueItem::Text(t) => Some(t.clone()),
        ValueItem::List { .. } => None,
    })
}

fn wants(c: &Condition, k: usize, w: &mut Wants) {
    if let Some(list) = &c.all {
        for sub in list {
            wants(sub, k, w);
        }
        return;
    }
    if let Some(list) = &c.any {
        if let Some(sub) = list.get(k % list.len().max(1)) {
            wants(sub, k, w);
        }
        return;
    }
    if let Some(n) = &c.not {
        // Defaults are benign, so most negations hold by themselves; an absent field negated
        // must be present.
        if n.exists == Some(false)
            && let Some(f) = &n.field
        {
            w.entry(f.clone()).or_default().present = true;
        }
        return;
    }
    let field = c.field.clone().unwrap_or_else(|| "line".to_string());
    let s = w.entry(field).or_default();
    if let Some(v) = first_text(&c.equals) {
        s.equals = Some(v);
    } else if let Some(v) = first_text(&c.contains) {
        s.contains.push(v);
    } else if let Some(v) = first_text(&c.starts_with) {
        s.starts.push(v);
    } else if let Some(v) = first_text(&c.ends_with) {
        s.ends.push(v);
    } else if let Some(p) = first_text(&c.regex) {
        let sample = regex_sample(&p);
        let start = p.starts_with('^') || p.contains(")^");
        let end = p.ends_with('$') && !p.ends_with("\\$");
        match (start, end) {
            (true, true) => s.equals = Some(sample),
            (true, false) => s.starts.push(sample),
            (false, true) => s.ends.push(sample),
            (false, false) => s.contains.push(sample),
        }
    } else if let Some(e) = c.exists {
        if e { s.present = true } else { s.absent = true }
    } else if let Some(net) = first_text(&c.cidr) {
        s.equals = Some(net.split('/').next().unwrap_or_default().to_string());
    } else if let Some(n) = c.gt.map(|n| n + 1.0).or(c.gte).or(c.lt.map(|n| n - 1.0)).or(c.lte) {
        s.equals = Some(format!("{}", n.max(0.0).floor()));
    }
}

/// A short string a regex matches (the first alternative, the fewest repetitions), good
/// enough for an example that the engine then checks.
fn regex_sample(p: &str) -> String {
    let hir = regex_syntax::ParserBuilder::new().unicode(false).utf8(false).build().parse(p);
    let mut out = Vec::new();
    if let Ok(h) = hir {
        sample(&h, &mut out);
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn sample(h: &regex_syntax::hir::Hir, out: &mut Vec<u8>) {
    use regex_syntax::hir::{Class, HirKind};
    match h.kind() {
        HirKind::Empty | HirKind::Look(_) => {}
        HirKind::Literal(l) => out.extend_from_slice(&l.0),
        HirKind::Class(c) => {
            let contains = |b: u8| match c {
                Class::Bytes(bc) => bc.ranges().iter().any(|r| r.start() <= b && b <= r.end()),
                Class::Unicode(uc) => uc.ranges().iter().any(|r| r.start() <= b as char && b as char <= r.end()),
            };
            if let Some(b) = b"a0x/._-AZ".iter().copied().chain(0x21..0x7f).find(|&b| contains(b)) {
                out.push(b);
            }
        }
        HirKind::Repetition(r) => {
            for _ in 0..r.min.min(16) {
                sample(&r.sub, out);
            }
        }
        HirKind::Capture(c) => sample(&c.sub, out),
        HirKind::Concat(v) => v.iter().for_each(|x| sample(x, out)),
        HirKind::Alternation(v) => {
            if let Some(x) = v.first() {
                sample(x, out);
            }
        }
    }
}

/// A combined-format line holding what `w` asks for, defaults elsewhere.
fn render_line(w: &Wants) -> Option<String> {
    let get = |f: &str| w.get(f).cloned().unwrap_or_default();
    // An absent field is logged as `-`.
    // A field that must only be present gets a plausible value.
    let or = |f: &str, d: &str| {
        let want = get(f);
        match want.render() {
            _ if want.absent => "-".to_string(),
            Some(v) if v.is_empty() && f == "referer" => "https://www.example.org/".to_string(),
            Some(v) if !v.is_empty() => v,
            _ => d.to_string(),
        }
    };
    let path = get("path");
    let u = get("uri");
    let mut uri = match &u.equals {
        Some(e) => e.clone(),
        None => {
            let mut s = u.starts.concat();
            s.push_str(&path.render().unwrap_or_default());
            s.push_str(&u.contains.concat());
            if get("query").present && !s.contains('?') && !u.fixed_end() {
                s.push_str("?id=1");
            }
            s.push_str(&u.ends.concat());
            s
        }
    };
    if !uri.starts_with('/') && u.starts.is_empty() && u.equals.is_none() {
        uri.insert(0, '/');
    }
    let mut ua = or("user_agent", "Mozilla/5.0 (Windows NT 10.0; Win64; x64)");
    let mut referer = or("referer", "-");
    // Keywords go where a client would put them: the query, unless the target's end is fixed.
    let line = get("line");
    let words = format!("{}{}{}", line.starts.concat(), line.contains.concat(), line.ends.concat());
    if line.equals.is_some() {
        return None;
    }
    if !words.is_empty() {
        if uri == "/" && words.starts_with('/') && !words.contains('"') {
            uri = words;
        } else if !u.fixed_end() && !path.fixed_end() && !words.contains('"') {
            uri.push(if uri.contains('?') { '&' } else { '?' });
            uri.push_str(&words);
        } else if get("user_agent").equals.is_none() {
            ua.push(' ');
            ua.push_str(&words);
        } else if get("referer").equals.is_none() {
            referer = words;
        } else {
            return None;
        }
    }
    let status = or("status", "200");
    if !status.bytes().all(|b| b.is_ascii_digit()) || status.is_empty() {
        return None;
    }
    let quoted = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    Some(format!(
        "{ip} - {user} [10/Oct/2024:13:55:36 +0000] \"{method} {uri} {proto}\" {status} {bytes} \"{referer}\" \"{ua}\"",
        ip = or("client_ip", "203.0.113.7"),
        user = or("user", "-"),
        method = or("method", "GET"),
        uri = quoted(&uri),
        proto = or("protocol", "HTTP/1.1"),
        bytes = or("bytes", "512"),
        referer = quoted(&referer),
        ua = quoted(&ua),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert_eq!(wildcard(Op::Equals, "/a", false), Match::Plain(Op::Equals, "/a".into()));
        assert_eq!(wildcard(Op::Equals, "*/a*", false), Match::Plain(Op::Contains, "/a".into()));
        assert_eq!(wildcard(Op::Contains, "/a*", false), Match::Plain(Op::Contains, "/a".into()));
        assert_eq!(wildcard(Op::StartsWith, "*/a", false), Match::Plain(Op::Contains, "/a".into()));
        assert_eq!(wildcard(Op::Equals, "*/k/*.js*", false), Match::Regex(r"/k/(?s:.*)\.js".into()));
        assert_eq!(wildcard(Op::Contains, "select * ", true), Match::Regex("select [^\"]* ".into()));
        assert_eq!(wildcard(Op::Equals, r"a\*b\?", false), Match::Plain(Op::Equals, "a*b?".into()));
        assert_eq!(wildcard(Op::Equals, r"C:\Users\", false), Match::Plain(Op::Equals, r"C:\Users\".into()));
        assert_eq!(wildcard(Op::Equals, "a?c", false), Match::Regex("^a(?s:.)c$".into()));
        assert_eq!(wildcard(Op::Equals, "*", false), Match::Present);
        assert_eq!(wildcard(Op::Equals, "", false), Match::Empty);
    }

    fn parsed(cond: &str) -> Expr {
        let src = SourceFile { path: "t.yml".into(), text: format!("condition: {cond}\n") };
        let cx = Ctx { src: &src };
        match parse_condition(&cx, "condition", cond) {
            Ok(e) => e,
            Err(Fail::Error(e)) => panic!("{e}"),
            Err(Fail::Skip(s)) => panic!("skipped: {s}"),
        }
    }

    #[test]
    fn condition_precedence() {
        let id = |n: &str, at| Expr::Id(n.into(), at);
        // not binds tighter than and, and tighter than or.
        assert_eq!(
            parsed("a or b and not c"),
            Expr::Or(vec![id("a", 0), Expr::And(vec![id("b", 5), Expr::Not(Box::new(id("c", 15)))])])
        );
        assert_eq!(
            parsed("(a or b) and 1 of sel_*"),
            Expr::And(vec![
                Expr::Or(vec![id("a", 1), id("b", 6)]),
                Expr::Of { all: false, pattern: Some("sel_*".into()), at: 13 }
            ])
        );
        assert_eq!(parsed("all of them"), Expr::Of { all: true, pattern: None, at: 0 });
        assert_eq!(parsed("NOT a AND b"), Expr::And(vec![Expr::Not(Box::new(id("a", 4))), id("b", 10)]));
    }

    #[test]
    fn slugs_and_globs() {
        assert_eq!(slug("SQL Injection Strings In URI"), "sql-injection-strings-in-uri");
        assert_eq!(slug("Log4j RCE CVE-2021-44228 (Generic)"), "log4j-rce-cve-2021-44228-generic");
        assert!(glob("selection*", "selection_1"));
        assert!(glob("sel?", "sel1"));
        assert!(!glob("filter_*", "selection"));
    }
}
