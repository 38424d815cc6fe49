//! Reading rule files from disk, with errors that say where.
//!
//! Loading is all-or-nothing: every file is read and checked, every problem is collected, and
//! the caller gets either the complete set or the complete list of errors. A running engine
//! therefore never sees half a rule directory.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use super::locate;
use super::model::{Rule, RuleFile};

/// A problem in a rule file, with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    pub file: PathBuf,
    /// 1-based; 0 when unknown.
    pub line: usize,
    /// 1-based; 0 when unknown.
    pub col: usize,
    /// The id of the rule the problem is in, when it is in one.
    pub rule: Option<String>,
    pub message: String,
    /// What kind of problem this is, for callers that classify errors (lint's finding codes)
    /// without reading the message.
    pub kind: ErrorKind,
}

/// The kinds of rule-file problems. Callers match on this, never on message wording.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ErrorKind {
    /// The file could not be read.
    Io,
    /// The file is not valid UTF-8 (positioned at the first invalid byte).
    Encoding,
    /// YAML syntax, unknown key or wrong type.
    Syntax,
    /// A rule id or list name defined twice.
    Duplicate,
    /// A regex that does not compile or exceeds the size limits.
    Regex,
    /// A reference to a list, format, action or field that does not exist.
    UnknownReference,
    /// Any other invalid value (empty title, bad id, zero count, bad network, ...).
    #[default]
    InvalidValue,
}

impl RuleError {
    /// The same error, of kind `kind`.
    pub fn kind(mut self, kind: ErrorKind) -> RuleError {
        self.kind = kind;
        self
    }
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.col)?;
        }
        if let Some(id) = &self.rule {
            write!(f, ": rule {id:?}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found in a rule set.
#[derive(Debug, Clone)]
pub struct RuleErrors(pub Vec<RuleError>);

impl fmt::Display for RuleErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for RuleErrors {}

/// One rule file as read from disk.
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub path: PathBuf,
    pub text: String,
}

/// A rule and where it came from.
#[derive(Debug, Clone)]
pub struct LoadedRule {
    pub rule: Rule,
    /// Index into [`Loaded::files`].
    pub file: usize,
    /// Position of the rule in its file's `rules:` list.
    pub index: usize,
    /// The exceptions that apply to it (indexes into [`Loaded::exceptions`]), in the order
    /// they are evaluated: its own `except`, its overrides', then the shared ones.
    pub exceptions: Vec<usize>,
}

/// An exception, wherever it was written: a rule's `except`, an override's `except`, or an
/// entry of `exceptions:`. All three compile to the same thing and are counted by `name`.
#[derive(Debug, Clone)]
pub struct LoadedException {
    /// What it is counted and shown as: the entry's `name`, the override's `id`, or the id of
    /// the rule whose `except` it is.
    pub name: String,
    pub kind: ExceptionKind,
    pub condition: crate::rule::Condition,
    /// Index into [`Loaded::files`].
    pub file: usize,
    /// YAML path of the condition in its file (`rules[2].except`, `exceptions[0].match`).
    pub at: String,
    /// The rule whose `except` or override it is (for error messages); `None` for shared ones.
    pub rule: Option<String>,
}

/// Where an exception was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExceptionKind {
    /// The rule's own `except`: part of the rule as written, so its inline examples see it.
    Own,
    /// An override's `except`.
    Override,
    /// An entry of a file's `exceptions:`.
    Shared,
}

/// A complete, syntactically valid set of rule files.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    pub files: Vec<SourceFile>,
    /// The rules over events (`match:`).
    pub rules: Vec<LoadedRule>,
    /// The rules over file contents (`content:`), compiled apart by [`crate::engine::content`].
    pub content: Vec<LoadedRule>,
    /// Named lists from all files.
    pub lists: BTreeMap<String, Vec<String>>,
    /// Named conditions from all files.
    pub conditions: BTreeMap<String, crate::rule::Condition>,
    /// Every exception; [`LoadedRule::exceptions`] says which apply to which rule.
    pub exceptions: Vec<LoadedException>,
}

impl Loaded {
    /// An error about the value at `path` (a YAML path such as `rules[2].match.regex`) in
    /// file `file`, positioned at that value.
    pub fn error_at(&self, file: usize, path: &str, rule: Option<&str>, message: impl Into<String>) -> RuleError {
        let f = &self.files[file];
        let pos = locate::locate(&f.text, path);
        RuleError {
            file: f.path.clone(),
            line: pos.map_or(0, |p| p.line),
            col: pos.map_or(0, |p| p.col),
            rule: rule.map(str::to_string),
            message: message.into(),
            kind: ErrorKind::default(),
        }
    }

    /// Shorthand for an error inside rule `r` at `sub` (relative to the rule, e.g. `match.regex`).
    pub fn rule_error(&self, r: &LoadedRule, sub: &str, message: impl Into<String>) -> RuleError {
        let path = if sub.is_empty() { format!("rules[{}]", r.index) } else { format!("rules[{}].{sub}", r.index) };
        self.error_at(r.file, &path, Some(&r.rule.id), message)
    }
}

/// The rule files under `path`: the file itself, or every `*.yml` / `*.yaml` below the
/// directory (recursively, in name order so results are stable).
/// Built-in paths (`<built-in>/rules`) list the rules compiled into the binary.
pub fn rule_files(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    if let Some(listed) = crate::assets::list_files(path) {
        let mut out = listed?;
        out.retain(|p| !is_yara_file(p));
        // A file named directly is read whatever its name, as on disk.
        if !crate::assets::is_file(path) {
            out.retain(|p| {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                is_rule_file_name(name) && matches!(p.extension().and_then(|e| e.to_str()), Some("yml" | "yaml"))
            });
        }
        return Ok(out);
    }
    let meta = std::fs::metadata(path)?;
    if meta.is_file() {
        // A YARA file named directly is read by content scanning, not as YAML.
        return Ok(if is_yara_file(path) { Vec::new() } else { vec![path.to_path_buf()] });
    }
    walk(path, is_rule_file_name, |p| matches!(p.extension().and_then(|e| e.to_str()), Some("yml" | "yaml")))
}

/// The files under `root` (recursively, in path order) that `keep` accepts, skipping every
/// entry, file or directory, whose name `enter` refuses.
fn walk(root: &Path, enter: impl Fn(&str) -> bool, keep: impl Fn(&Path) -> bool) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let p = entry?.path();
            if !enter(p.file_name().and_then(|n| n.to_str()).unwrap_or("")) {
                continue;
            }
            if p.is_dir() {
                dirs.push(p);
            } else if keep(&p) {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Editors' swap and backup files, hidden files and test fixtures are not rules.
fn is_rule_file_name(name: &str) -> bool {
    !(name.starts_with('.') || name.ends_with('~') || name.ends_with(".test.yml") || name.ends_with(".test.yaml"))
}

/// How to fix rules that cannot be found, for errors that name the path looked at.
pub const NOT_FOUND_HINT: &str = "give rule files or directories with --rules (lint and test: as arguments) or \
    --config, or run `trapline init` to write a config with rules/ to edit; with none of them, trapline uses \
    ./trapline.yml, ./rules/, the user's or /etc/trapline/trapline.yml, else its built-in rules";

/// `p`, made absolute against the current directory when relative, to say where exactly
/// trapline looked.
pub fn display_abs(p: &Path) -> String {
    match std::path::absolute(p) {
        Ok(abs) if abs != p && !crate::assets::is_builtin(p) => format!("{} ({})", p.display(), abs.display()),
        _ => p.display().to_string(),
    }
}

/// Reads one rule file. A file that is not UTF-8 is an error positioned at its first invalid
/// byte (line, and column in characters), so it can be found and fixed like any other.
pub fn read_file(path: &Path) -> Result<SourceFile, RuleError> {
    let error = |line, col, message, kind| RuleError { file: path.to_path_buf(), line, col, rule: None, message, kind };
    let bytes = crate::assets::read(path).map_err(|e| error(0, 0, format!("cannot read file: {e}"), ErrorKind::Io))?;
    match String::from_utf8(bytes) {
        Ok(text) => Ok(SourceFile { path: path.to_path_buf(), text }),
        Err(e) => {
            let bytes = e.as_bytes();
            let valid = e.utf8_error().valid_up_to();
            // The prefix up to the first invalid byte is valid UTF-8 by definition.
            let prefix = std::str::from_utf8(&bytes[..valid]).unwrap_or_default();
            let line_start = prefix.rfind('\n').map_or(0, |i| i + 1);
            let line = prefix.matches('\n').count() + 1;
            let col = prefix[line_start..].chars().count() + 1;
            let message = format!("not valid UTF-8: byte 0x{:02x} at offset {valid}", bytes[valid]);
            Err(error(line, col, message, ErrorKind::Encoding))
        }
    }
}

/// Loads every rule file under each of `paths`.
pub fn load_paths(paths: &[PathBuf]) -> Result<Loaded, RuleErrors> {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for p in paths {
        match rule_files(p) {
            Ok(list) => files.extend(list),
            Err(e) => errors.push(RuleError {
                file: p.clone(),
                line: 0,
                col: 0,
                rule: None,
                message: if e.kind() == std::io::ErrorKind::NotFound {
                    format!("cannot read rules at {}: {e}; {NOT_FOUND_HINT}", display_abs(p))
                } else {
                    format!("cannot read rules: {e}")
                },
                kind: ErrorKind::Io,
            }),
        }
    }
    let mut sources = Vec::new();
    for f in files {
        match read_file(&f) {
            Ok(src) => sources.push(src),
            Err(e) => errors.push(e),
        }
    }
    match load_sources(sources) {
        Ok(l) if errors.is_empty() => Ok(l),
        Ok(_) => Err(RuleErrors(errors)),
        Err(RuleErrors(more)) => {
            errors.extend(more);
            Err(RuleErrors(errors))
        }
    }
}

/// Parses already-read rule files (also used by tests and for rules given inline).
pub fn load_sources(files: Vec<SourceFile>) -> Result<Loaded, RuleErrors> {
    let (loaded, errors, _) = load_parts(files, false);
    if errors.is_empty() { Ok(loaded) } else { Err(RuleErrors(errors)) }
}

/// What a partial load could not read of files that did not parse as a whole.
#[derive(Debug, Clone, Default)]
pub struct Unreadable {
    /// Ids of rules that are written but did not deserialize: references to them (overrides,
    /// exceptions, the config's per-rule settings) are not unknown.
    pub rule_ids: BTreeSet<String>,
    /// Named conditions that are written but did not deserialize: a `ref` to one is not unknown.
    pub conditions: BTreeSet<String>,
    /// Lists named (`{list: NAME}`) inside parts that did not deserialize: not unused.
    pub list_refs: BTreeSet<String>,
    /// One error per part (a rule, an override, an exception, a named condition) that did not
    /// deserialize, positioned at the part; the whole file's parse error names only the first.
    pub parts: Vec<RuleError>,
}

/// For lint: everything that can be loaded, and every error. A file that does not parse as a
/// whole is read again part by part (each rule, list, condition, override and exception on its
/// own, keeping its position), so one broken rule neither hides the others' problems nor makes
/// references to it look unknown. Rules with errors (a bad id, a duplicate id) are kept.
pub fn load_partial(files: Vec<SourceFile>) -> (Loaded, Vec<RuleError>, Unreadable) {
    load_parts(files, true)
}

/// A rule file with the position of each entry of its lists (they differ from the entries'
/// order when a partial read left some out).
struct Parsed {
    rf: RuleFile,
    rules: Vec<usize>,
    overrides: Vec<usize>,
    exceptions: Vec<usize>,
}

impl Parsed {
    fn whole(rf: RuleFile) -> Parsed {
        let n = |l: usize| (0..l).collect();
        Parsed { rules: n(rf.rules.len()), overrides: n(rf.overrides.len()), exceptions: n(rf.exceptions.len()), rf }
    }
}

/// Reads a file that did not deserialize as a whole part by part; `None` when it is not even
/// a YAML mapping.
fn salvage(loaded: &Loaded, file: usize, unreadable: &mut Unreadable) -> Option<Parsed> {
    use serde_yaml::Value;
    let v: Value = serde_yaml::from_str(&loaded.files[file].text).ok()?;
    let map = v.as_mapping()?;
    let mut p = Parsed::whole(RuleFile {
        version: map.get("version").and_then(Value::as_u64).map_or(1, |n| u32::try_from(n).unwrap_or(u32::MAX)),
        lists: BTreeMap::new(),
        conditions: BTreeMap::new(),
        rules: Vec::new(),
        overrides: Vec::new(),
        exceptions: Vec::new(),
    });
    let first_part = unreadable.parts.len();
    let mut failed = Vec::new();
    let broken = |unreadable: &mut Unreadable, path: String, item: &Value, e: serde_yaml::Error| {
        list_refs(item, &mut unreadable.list_refs);
        let rule = item.get("id").and_then(Value::as_str);
        let msg = format!("cannot be read: {}", strip_position(&e.to_string()));
        unreadable.parts.push(loaded.error_at(file, &path, rule, msg).kind(ErrorKind::Syntax));
    };
    // A list keeps its scalar entries: references to it still resolve.
    for (name, items) in map.get("lists").and_then(Value::as_mapping).into_iter().flatten() {
        let Some(name) = name.as_str() else { continue };
        let scalars = items.as_sequence().into_iter().flatten().filter_map(|i| match i {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        });
        p.rf.lists.insert(name.to_string(), scalars.collect());
    }
    for (name, c) in map.get("conditions").and_then(Value::as_mapping).into_iter().flatten() {
        let Some(name) = name.as_str() else { continue };
        match serde_yaml::from_value(c.clone()) {
            Ok(c) => {
                p.rf.conditions.insert(name.to_string(), c);
            }
            Err(e) => {
                unreadable.conditions.insert(name.to_string());
                failed.push(format!("conditions.{name}"));
                broken(unreadable, format!("conditions.{name}"), c, e);
            }
        }
    }
    for (i, r) in map.get("rules").and_then(Value::as_sequence).into_iter().flatten().enumerate() {
        match serde_yaml::from_value(r.clone()) {
            Ok(rule) => {
                p.rf.rules.push(rule);
                p.rules.push(i);
            }
            Err(e) => {
                unreadable.rule_ids.extend(r.get("id").and_then(Value::as_str).map(str::to_string));
                failed.push(format!("rules[{i}]"));
                broken(unreadable, format!("rules[{i}]"), r, e);
            }
        }
    }
    for (i, o) in map.get("overrides").and_then(Value::as_sequence).into_iter().flatten().enumerate() {
        match serde_yaml::from_value(o.clone()) {
            Ok(o) => {
                p.rf.overrides.push(o);
                p.overrides.push(i);
            }
            Err(e) => {
                failed.push(format!("overrides[{i}]"));
                broken(unreadable, format!("overrides[{i}]"), o, e);
            }
        }
    }
    for (i, x) in map.get("exceptions").and_then(Value::as_sequence).into_iter().flatten().enumerate() {
        match serde_yaml::from_value(x.clone()) {
            Ok(x) => {
                p.rf.exceptions.push(x);
                p.exceptions.push(i);
            }
            Err(e) => {
                failed.push(format!("exceptions[{i}]"));
                broken(unreadable, format!("exceptions[{i}]"), x, e);
            }
        }
    }
    position_parts(&loaded.files[file].text, &failed, &mut unreadable.parts[first_part..]);
    Some(p)
}

/// Positions each broken part's error at the offending value: the file is parsed again with
/// the lines of every other broken part blanked out, so the first error is this part's, with
/// the parser's own position and message. Parts written in flow style (several on one line)
/// keep the part's position.
fn position_parts(text: &str, failed: &[String], parts: &mut [RuleError]) {
    if failed.len() != parts.len() {
        return;
    }
    let index = locate::index(text);
    let keys = locate::keys(text);
    let entry = |p: &str| {
        ["rules[", "overrides[", "exceptions["]
            .iter()
            .any(|k| p.starts_with(k) && p.ends_with(']') && p.matches('[').count() == 1)
    };
    // A part starts at its entry (`- id: ...`), a named condition at its key; the top-level
    // keys end the last part before them.
    let start_of = |p: &str| match p.strip_prefix("conditions.") {
        Some(_) => keys.get(p).map(|k| k.line),
        None => index.get(p).map(|k| k.line),
    };
    let parts_at: Vec<usize> = index
        .keys()
        .filter(|p| entry(p))
        .chain(keys.keys().filter(|k| k.starts_with("conditions.") && k.matches('.').count() == 1))
        .filter_map(|p| start_of(p))
        .collect();
    let mut starts: Vec<usize> =
        parts_at.iter().copied().chain(keys.iter().filter(|(k, _)| !k.contains('.')).map(|(_, p)| p.line)).collect();
    starts.sort_unstable();
    let range = |path: &str| -> Option<(usize, usize)> {
        let start = start_of(path)?;
        // Another part on the same line: flow style, no line of its own.
        if parts_at.iter().filter(|&&l| l == start).count() > 1 {
            return None;
        }
        let end = starts.iter().copied().find(|&l| l > start).unwrap_or(usize::MAX);
        Some((start, end))
    };
    let ranges: Vec<Option<(usize, usize)>> = failed.iter().map(|p| range(p)).collect();
    for (i, e) in parts.iter_mut().enumerate() {
        let Some((start, end)) = ranges[i] else { continue };
        let blanked: String = text
            .split_inclusive('\n')
            .enumerate()
            .map(|(n, line)| {
                let n = n + 1;
                let other = ranges.iter().enumerate().any(|(j, r)| j != i && r.is_some_and(|(s, e)| s <= n && n < e));
                if other { "\n" } else { line }
            })
            .collect();
        let Err(err) = serde_yaml::from_str::<Option<RuleFile>>(&blanked) else { continue };
        let Some(loc) = err.location() else { continue };
        if (start..end).contains(&loc.line()) {
            e.line = loc.line();
            e.col = loc.column();
            // The parser counts entries of the blanked text: say the entry's real index.
            let msg = strip_position(&err.to_string());
            let kind = failed[i].split('[').next().unwrap_or_default();
            e.message = match msg.strip_prefix(kind).filter(|_| failed[i].contains('[')).and_then(|m| m.split_once(']'))
            {
                Some((_, rest)) if !kind.is_empty() => format!("{}{rest}", failed[i]),
                _ => msg,
            };
        }
    }
}

/// Every `{list: NAME}` inside `v`.
fn list_refs(v: &serde_yaml::Value, out: &mut BTreeSet<String>) {
    match v {
        serde_yaml::Value::Mapping(m) => {
            if let (1, Some(name)) = (m.len(), m.get("list").and_then(|n| n.as_str())) {
                out.insert(name.to_string());
            }
            m.values().for_each(|v| list_refs(v, out));
        }
        serde_yaml::Value::Sequence(s) => s.iter().for_each(|v| list_refs(v, out)),
        _ => {}
    }
}

fn load_parts(files: Vec<SourceFile>, partial: bool) -> (Loaded, Vec<RuleError>, Unreadable) {
    let mut loaded = Loaded { files, ..Default::default() };
    let mut errors = Vec::new();
    let mut unreadable = Unreadable::default();
    let mut parsed = Vec::new();
    for (i, f) in loaded.files.iter().enumerate() {
        // Before the parsers, whose time and stack grow with nesting depth.
        if let Err(pos) = locate::check_depth(&f.text, locate::MAX_DEPTH) {
            errors.push(depth_error(f, pos));
            continue;
        }
        match serde_yaml::from_str::<Option<RuleFile>>(&f.text) {
            Ok(Some(rf)) => parsed.push((i, Parsed::whole(rf))),
            Ok(None) => {} // an empty file holds no rules
            Err(e) => {
                errors.push(yaml_error(f, &e));
                if partial && let Some(p) = salvage(&loaded, i, &mut unreadable) {
                    parsed.push((i, p));
                }
            }
        }
    }
    let mut ids: HashMap<String, (usize, usize)> = HashMap::new();
    let mut list_origin: HashMap<String, usize> = HashMap::new();
    let mut overrides = Vec::new();
    let mut shared = Vec::new();
    for (file, p) in parsed {
        let Parsed { mut rf, rules: rule_at, overrides: override_at, exceptions: exception_at } = p;
        overrides.extend(std::mem::take(&mut rf.overrides).into_iter().zip(override_at).map(|(o, i)| (file, i, o)));
        shared.extend(std::mem::take(&mut rf.exceptions).into_iter().zip(exception_at).map(|(e, i)| (file, i, e)));
        if rf.version != 1 {
            errors.push(loaded.error_at(
                file,
                "version",
                None,
                format!("unsupported rule language version {}; this trapline reads version 1", rf.version),
            ));
        }
        for (name, cond) in std::mem::take(&mut rf.conditions) {
            if loaded.conditions.contains_key(&name) {
                errors.push(
                    loaded
                        .error_at(
                            file,
                            &format!("conditions.{name}"),
                            None,
                            format!("condition {name:?} is defined twice"),
                        )
                        .kind(ErrorKind::Duplicate),
                );
                continue;
            }
            loaded.conditions.insert(name, cond);
        }
        for (name, items) in rf.lists {
            if let Some(prev) = list_origin.get(&name) {
                let prev = loaded.files[*prev].path.display().to_string();
                errors.push(
                    loaded
                        .error_at(
                            file,
                            &format!("lists.{name}"),
                            None,
                            format!("list {name:?} is already defined in {prev}"),
                        )
                        .kind(ErrorKind::Duplicate),
                );
                continue;
            }
            list_origin.insert(name.clone(), file);
            loaded.lists.insert(name, items);
        }
        for (rule, index) in rf.rules.into_iter().zip(rule_at) {
            let mut lr = LoadedRule { rule, file, index, exceptions: Vec::new() };
            if let Some(c) = lr.rule.except.clone() {
                lr.exceptions.push(loaded.exceptions.len());
                loaded.exceptions.push(LoadedException {
                    name: lr.rule.id.clone(),
                    kind: ExceptionKind::Own,
                    condition: c,
                    file,
                    at: format!("rules[{index}].except"),
                    rule: Some(lr.rule.id.clone()),
                });
            }
            if !valid_id(&lr.rule.id) {
                errors.push(loaded.rule_error(
                    &lr,
                    "id",
                    "a rule id must be non-empty and use only letters, digits, '.', '-' and '_'",
                ));
            }
            if let Some((f, i)) = ids.get(&lr.rule.id) {
                let other = loaded.error_at(*f, &format!("rules[{i}].id"), None, "");
                errors.push(
                    loaded
                        .rule_error(
                            &lr,
                            "id",
                            format!("duplicate rule id (first defined at {}:{})", other.file.display(), other.line),
                        )
                        .kind(ErrorKind::Duplicate),
                );
            } else {
                ids.insert(lr.rule.id.clone(), (file, index));
            }
            let r = &lr.rule;
            match (r.condition.is_some(), r.sequence.is_some(), r.content.is_some()) {
                (true, false, false) => loaded.rules.push(lr),
                (false, true, false) => {
                    errors.extend(sequence_rule_errors(&loaded, &lr));
                    loaded.rules.push(lr);
                }
                (false, false, true) => {
                    errors.extend(content_rule_errors(&loaded, &lr));
                    loaded.content.push(lr);
                }
                (false, false, false) => errors.push(
                    loaded
                        .rule_error(
                            &lr,
                            "",
                            "a rule needs `match` (events), `sequence` (events in order) or `content` (file contents)",
                        )
                        .kind(ErrorKind::Syntax),
                ),
                (_, seq, content) => errors.push(loaded.rule_error(
                    &lr,
                    if content {
                        "content"
                    } else if seq {
                        "sequence"
                    } else {
                        "match"
                    },
                    "a rule has one of `match` (events), `sequence` (events in order) or `content` (file contents)",
                )),
            }
        }
    }
    apply_overrides(&mut loaded, overrides, &unreadable.rule_ids, &mut errors);
    apply_exceptions(&mut loaded, shared, &unreadable.rule_ids, &mut errors);
    (loaded, errors, unreadable)
}

/// Applies `overrides:` in file order (a later one wins on the keys both give).
fn apply_overrides(
    loaded: &mut Loaded,
    overrides: Vec<(usize, usize, crate::rule::Override)>,
    unreadable: &BTreeSet<String>,
    errors: &mut Vec<RuleError>,
) {
    for (file, i, o) in overrides {
        let mut hit = 0;
        for lr in loaded.rules.iter_mut().chain(loaded.content.iter_mut()) {
            if !o.selects(&lr.rule.id) {
                continue;
            }
            hit += 1;
            let r = &mut lr.rule;
            if let Some(v) = o.severity {
                r.severity = v;
            }
            if let Some(v) = o.enabled {
                r.enabled = v;
            }
            if let Some(v) = &o.actions {
                r.actions = v.clone();
            }
            if o.threshold.is_some() {
                r.threshold = o.threshold.clone();
            }
            if o.suppress.is_some() {
                r.suppress = o.suppress.clone();
            }
            if let Some(v) = &o.sources {
                r.sources = v.clone();
            }
        }
        // One exception for every rule the override selects: compiled once, counted under the
        // override's id. Content rules have no events to hold back.
        if let Some(except) = &o.except {
            let at = loaded.exceptions.len();
            let mut used = false;
            for lr in loaded.rules.iter_mut().filter(|lr| o.selects(&lr.rule.id)) {
                lr.exceptions.push(at);
                used = true;
            }
            if used {
                loaded.exceptions.push(LoadedException {
                    name: o.id.clone(),
                    kind: ExceptionKind::Override,
                    condition: except.clone(),
                    file,
                    at: format!("overrides[{i}].except"),
                    rule: None,
                });
            }
        }
        // A rule that is written but could not be read is not unknown: its own error says why.
        if hit == 0 && !unreadable.iter().any(|id| o.selects(id)) {
            errors.push(
                loaded
                    .error_at(file, &format!("overrides[{i}].id"), None, format!("no rule has the id {:?}", o.id))
                    .kind(ErrorKind::UnknownReference),
            );
        }
    }
}

/// Attaches each entry of `exceptions:` to the rules it selects (every rule over events when
/// it names none). Names are unique across files; a selector that selects no rule is an error
/// at its position, as an override naming no rule is.
fn apply_exceptions(
    loaded: &mut Loaded,
    shared: Vec<(usize, usize, crate::rule::Exception)>,
    unreadable: &BTreeSet<String>,
    errors: &mut Vec<RuleError>,
) {
    let mut names: HashMap<String, (usize, usize)> = HashMap::new();
    for (file, i, e) in shared {
        if !valid_id(&e.name) {
            errors.push(loaded.error_at(
                file,
                &format!("exceptions[{i}].name"),
                None,
                "an exception's name must be non-empty and use only letters, digits, '.', '-' and '_'",
            ));
        }
        if let Some(&(f, j)) = names.get(&e.name) {
            let first = loaded.error_at(f, &format!("exceptions[{j}].name"), None, "");
            errors.push(
                loaded
                    .error_at(
                        file,
                        &format!("exceptions[{i}].name"),
                        None,
                        format!(
                            "exception {:?} is defined twice (first at {}:{})",
                            e.name,
                            first.file.display(),
                            first.line
                        ),
                    )
                    .kind(ErrorKind::Duplicate),
            );
            continue;
        }
        names.insert(e.name.clone(), (file, i));
        if let Some(sels) = &e.rules {
            if sels.is_empty() {
                errors.push(loaded.error_at(
                    file,
                    &format!("exceptions[{i}].rules"),
                    None,
                    "an empty list of rules: leave `rules` out to apply the exception to every rule",
                ));
            }
            for (j, sel) in sels.iter().enumerate() {
                if !loaded.rules.iter().any(|lr| crate::rule::selects(sel, &lr.rule.id))
                    && !unreadable.iter().any(|id| crate::rule::selects(sel, id))
                {
                    let msg = if loaded.content.iter().any(|lr| crate::rule::selects(sel, &lr.rule.id)) {
                        format!("{sel:?} selects only content rules, which have no events to hold back")
                    } else {
                        format!("no rule has the id {sel:?}")
                    };
                    errors.push(
                        loaded
                            .error_at(file, &format!("exceptions[{i}].rules[{j}]"), None, msg)
                            .kind(ErrorKind::UnknownReference),
                    );
                }
            }
        }
        let at = loaded.exceptions.len();
        for lr in &mut loaded.rules {
            let id = &lr.rule.id;
            if e.rules.as_ref().is_none_or(|sels| sels.iter().any(|s| crate::rule::selects(s, id))) {
                lr.exceptions.push(at);
            }
        }
        loaded.exceptions.push(LoadedException {
            name: e.name,
            kind: ExceptionKind::Shared,
            condition: e.condition,
            file,
            at: format!("exceptions[{i}].match"),
            rule: None,
        });
    }
}

/// Parts of a rule that only mean something for events, given on a content rule: refused, so
/// that nobody believes a threshold or an example runs when it does not.
fn content_rule_errors(loaded: &Loaded, lr: &LoadedRule) -> Vec<RuleError> {
    let r = &lr.rule;
    let mut out = Vec::new();
    let mut refuse = |key: &str, given: bool| {
        if given {
            out.push(loaded.rule_error(
                lr,
                key,
                format!("`{key}` applies to `match` rules over events; a `content` rule cannot have it"),
            ));
        }
    };
    refuse("threshold", r.threshold.is_some());
    refuse("suppress", r.suppress.is_some());
    refuse("except", r.except.is_some());
    refuse("formats", !r.formats.is_empty());
    refuse("sources", !r.sources.is_empty());
    refuse("examples", !r.examples.should_match.is_empty() || !r.examples.no_match.is_empty());
    refuse("extract", !r.extract.is_empty());
    out
}

/// Parts of a rule that a sequence has per step or not at all: refused with where they go.
fn sequence_rule_errors(loaded: &Loaded, lr: &LoadedRule) -> Vec<RuleError> {
    let r = &lr.rule;
    let mut out = Vec::new();
    let mut refuse = |key: &str, given: bool, why: &str| {
        if given {
            out.push(loaded.rule_error(lr, key, format!("a `sequence` rule cannot have `{key}`: {why}")));
        }
    };
    refuse("formats", !r.formats.is_empty(), "give `formats` in each step");
    refuse("sources", !r.sources.is_empty(), "give `sources` in each step");
    refuse("threshold", r.threshold.is_some(), "the sequence is its own cross-event condition");
    refuse(
        "extract",
        !r.extract.is_empty(),
        "steps may read different formats; match the steps' fields with `regex:` conditions instead",
    );
    refuse(
        "examples",
        !r.examples.should_match.is_empty() || !r.examples.no_match.is_empty(),
        "one line cannot show a sequence; test it with a fixture (a log file and its expected detections)",
    );
    if let Some(seq) = &r.sequence
        && !(2..=8).contains(&seq.steps.len())
    {
        out.push(loaded.rule_error(
            lr,
            "sequence.steps",
            format!("a sequence has 2 to 8 steps, not {}", seq.steps.len()),
        ));
    }
    out
}

/// Whether `path` names a YARA rule file (`.yar`, `.yara`).
pub fn is_yara_file(path: &Path) -> bool {
    matches!(path.extension().and_then(|e| e.to_str()), Some(e) if e.eq_ignore_ascii_case("yar") || e.eq_ignore_ascii_case("yara"))
}

/// The YARA rule files under `path`: the file itself when it is one, or every `*.yar` /
/// `*.yara` below the directory (recursively, in name order). Rule directories hold them next
/// to the YAML rule files; content scanning loads both.
pub fn yara_files(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    if let Some(listed) = crate::assets::list_files(path) {
        let mut out = listed?;
        out.retain(|p| is_yara_file(p));
        return Ok(out);
    }
    let meta = std::fs::metadata(path)?;
    if meta.is_file() {
        return Ok(if is_yara_file(path) { vec![path.to_path_buf()] } else { Vec::new() });
    }
    walk(path, |name| !(name.starts_with('.') || name.ends_with('~')), is_yara_file)
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

/// A file nested deeper than [`locate::MAX_DEPTH`], positioned at the collection that goes
/// too deep.
pub fn depth_error(f: &SourceFile, pos: locate::Pos) -> RuleError {
    RuleError {
        file: f.path.clone(),
        line: pos.line,
        col: pos.col,
        rule: None,
        message: format!("collections nested more than {} levels deep", locate::MAX_DEPTH),
        kind: ErrorKind::Syntax,
    }
}

/// Turns a serde_yaml error into a positioned error naming the rule it falls in.
fn yaml_error(f: &SourceFile, e: &serde_yaml::Error) -> RuleError {
    let (line, col) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
    RuleError {
        file: f.path.clone(),
        line,
        col,
        rule: rule_at_line(&f.text, line),
        // serde_yaml appends " at line X column Y"; the position is already in front.
        message: strip_position(&e.to_string()),
        kind: ErrorKind::Syntax,
    }
}

fn strip_position(msg: &str) -> String {
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

/// The id of the rule whose text contains `line`, found through the position index.
fn rule_at_line(text: &str, line: usize) -> Option<String> {
    if line == 0 {
        return None;
    }
    let index = locate::index(text);
    let mut best: Option<(usize, usize)> = None; // (rule index, start line)
    for (path, pos) in &index {
        if let Some(rest) = path.strip_prefix("rules[")
            && let Some(n) = rest.strip_suffix(']').and_then(|n| n.parse::<usize>().ok())
            && pos.line <= line
            && best.is_none_or(|(_, l)| pos.line > l)
        {
            best = Some((n, pos.line));
        }
    }
    let (n, _) = best?;
    let value: serde_yaml::Value = serde_yaml::from_str(text).ok()?;
    value.get("rules")?.get(n)?.get("id")?.as_str().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(text: &str) -> Vec<SourceFile> {
        vec![SourceFile { path: PathBuf::from("r.yml"), text: text.to_string() }]
    }

    #[test]
    fn unknown_field_is_reported_with_position_and_rule() {
        let text = "rules:\n  - id: web.a\n    title: A\n    severity: high\n    match: {contains: x}\n  - id: web.b\n    title: B\n    severity: high\n    match: {contians: x}\n";
        let err = load_sources(src(text)).unwrap_err();
        assert_eq!(err.0.len(), 1);
        let e = &err.0[0];
        assert_eq!(e.line, 9);
        assert!(e.col > 0);
        assert_eq!(e.rule.as_deref(), Some("web.b"));
        assert!(e.message.contains("contians"), "{}", e.message);
        assert!(e.to_string().starts_with("r.yml:9:"), "{e}");
    }

    #[test]
    fn duplicate_ids_are_rejected() {
        let text = "rules:\n  - {id: a, title: A, severity: low, match: {contains: x}}\n  - {id: a, title: B, severity: low, match: {contains: y}}\n";
        let err = load_sources(src(text)).unwrap_err();
        assert!(err.0[0].message.contains("duplicate rule id"), "{}", err);
        assert_eq!(err.0[0].line, 3);
    }

    #[test]
    fn built_in_rules_load_from_memory_with_their_names() {
        let loaded = load_paths(&[PathBuf::from("<built-in>/rules")]).unwrap();
        assert!(loaded.rules.len() > 10);
        for f in &loaded.files {
            let name = f.path.display().to_string();
            assert!(name.starts_with("<built-in>/rules/") && name.ends_with(".yml"), "{name}");
            assert!(!name.ends_with(".test.yml"), "fixtures are not rules: {name}");
        }
        // Positions in built-in files read like positions on disk.
        let r = &loaded.rules[0];
        let e = loaded.rule_error(r, "id", "x");
        assert!(e.line > 0 && e.to_string().starts_with(&format!("{}:{}:", e.file.display(), e.line)), "{e}");
        // A missing built-in path is an Io error naming it, with the hint.
        let err = load_paths(&[PathBuf::from("<built-in>/nope")]).unwrap_err();
        assert_eq!(err.0[0].kind, ErrorKind::Io);
        assert!(err.to_string().contains("<built-in>/nope") && err.to_string().contains("trapline init"), "{err}");
    }

    #[test]
    fn bad_severity_names_rule() {
        let text = "rules:\n  - id: x.y\n    title: T\n    severity: severe\n    match: {contains: q}\n";
        let err = load_sources(src(text)).unwrap_err();
        assert_eq!(err.0[0].rule.as_deref(), Some("x.y"));
        assert_eq!(err.0[0].line, 4);
    }
}
#[cfg(test)]
mod partial_tests {
    use super::*;

    #[test]
    fn broken_parts_are_positioned_at_their_value() {
        let text = "rules:\n  - id: a.one\n    title: One\n    severity: low\n    match: {field: uri, contains: x}\n    threshold: {count: 2, within: 1y2}\n  - id: a.two\n    title: Two\n    severity: low\n    match: {field: uri, contains: x}\n    threshold: {count: 2, within: 1x}\n";
        let (loaded, errors, unreadable) =
            load_partial(vec![SourceFile { path: PathBuf::from("r.yml"), text: text.to_string() }]);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(loaded.rules.is_empty());
        assert_eq!(unreadable.rule_ids.len(), 2);
        let at: Vec<(usize, usize)> = unreadable.parts.iter().map(|e| (e.line, e.col)).collect();
        assert_eq!(at, [(6, 16), (11, 16)], "{:?}", unreadable.parts);
        // The index in the message is the entry's own, not that of the text parsed again.
        assert!(
            unreadable.parts[1].message.starts_with("rules[1].threshold: invalid duration"),
            "{:?}",
            unreadable.parts
        );
        let text = text.replace(
            "  - id: a.one",
            "  - id: a.zero\n    title: Z\n    severity: low\n    match: {contains: x}\n  - id: a.one",
        );
        let (_, _, unreadable) = load_partial(vec![SourceFile { path: PathBuf::from("r.yml"), text }]);
        assert!(
            unreadable.parts[1].message.starts_with("rules[2].threshold: invalid duration"),
            "{:?}",
            unreadable.parts
        );
    }
}
