//! Templates → a validated CTIM bundle.
//!
//! Everything about *what* an incident says (titles, observables, targets, scores) lives in
//! the minijinja templates of `templates/xdr/` (overridable per rule); this module only knows
//! the mechanism:
//!
//! - **JSON-safe by construction.** Every `{{ expression }}` is written through a formatter
//!   that serialises the value as JSON (strings quoted and escaped, numbers as numbers). Log
//!   text is attacker-controlled, and with this formatter no value, whatever quotes,
//!   backslashes, control characters or `{{` it holds, can close a string or add a key. The
//!   `tojson` and `safe` filters are identities (the formatter already encodes), so templates
//!   cannot opt out. Literal text written by the template author is trusted.
//! - **Parse, then validate.** The output is parsed with serde_json and checked with
//!   [`super::ctim`] (both service layers, TLP, references) plus trapline's own rules (times
//!   in UTC with milliseconds and `Z`, ≤ 100 entities). Ids are set here, not by templates:
//!   `id` (transient) and `external_ids` are deterministic (see [`super::aggregate`]) so that
//!   re-sending is idempotent whatever a template does.
//! - **Strict about names.** A variable or attribute that does not exist is an error
//!   (`UndefinedBehavior::Strict`), not an empty string: `{{ fields.usr }}` or
//!   `{{ detection.nosuch }}` fails. What is legitimately absent (a field the line did not
//!   have, `detection.threshold` of a rule without one, a config variable) is tested with
//!   `is defined` or given a `default`.
//! - **Fail at load time.** [`Renderer::load`] renders every template set with a hostile
//!   sample and a sparse one (per rule when the rule's shape is known: its facts, threshold,
//!   sequence) and reports problems as [`TemplateErrors`]: `file:line:col: message`, with the
//!   rule whose render failed.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::Result;
use chrono::{DateTime, Utc};
use minijinja::{Environment, ErrorKind, UndefinedBehavior, Value as JValue};
use serde_json::{Map, Value, json};

use super::ctim;
use crate::engine::detection::{Detection, RuleInfo, SequenceInfo, SourceRef, ThresholdInfo};

/// One template problem, positioned: what lint reports as a finding and `trapline status`
/// shows after a failed reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateProblem {
    pub file: PathBuf,
    /// 1-based; 0 when unknown.
    pub line: usize,
    /// 1-based; 0 when unknown.
    pub col: usize,
    /// The rule whose render failed (its own templates, or its sample detection).
    pub rule: Option<String>,
    pub message: String,
}

impl fmt::Display for TemplateProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)?;
        if self.col > 0 {
            write!(f, ":{}", self.col)?;
        }
        if let Some(r) = &self.rule {
            write!(f, ": rule {r:?}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem of one load or render, one per line when displayed.
#[derive(Debug, Clone)]
pub struct TemplateErrors(pub Vec<TemplateProblem>);

impl fmt::Display for TemplateErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for TemplateErrors {}

impl TemplateErrors {
    fn one(file: impl Into<PathBuf>, line: usize, col: usize, message: impl Into<String>) -> TemplateErrors {
        TemplateErrors(vec![TemplateProblem { file: file.into(), line, col, rule: None, message: message.into() }])
    }

    /// Names the rule whose render failed (unless a problem already names one).
    fn for_rule(mut self, rule: &str) -> TemplateErrors {
        for p in &mut self.0 {
            p.rule.get_or_insert_with(|| rule.to_string());
        }
        self
    }
}

type TResult<T> = std::result::Result<T, TemplateErrors>;

/// The entity templates, in bundle order: (entity type, bundle array, file, required).
pub const ENTITY_TEMPLATES: &[(&str, &str, &str, bool)] = &[
    ("incident", "incidents", "incident.json.j2", true),
    ("sighting", "sightings", "sighting.json.j2", true),
    ("relationship", "relationships", "relationship.json.j2", true),
    ("judgement", "judgements", "judgement.json.j2", false),
];

/// Most entities trapline puts in one bundle (`xdr-ctim.md` §10.4).
pub const MAX_BUNDLE_ENTITIES: usize = 100;

/// One loaded template directory (plus the default directory for files it lacks).
struct TemplateSet {
    env: Environment<'static>,
    /// name → (path, source), for file:line messages.
    files: BTreeMap<String, (PathBuf, String)>,
}

/// The ids of one detection's entities: transient ids and external ids.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Ids {
    pub incident: String,
    pub sighting: String,
    pub relationship: String,
    pub judgement: String,
}

impl Ids {
    /// Transient ids are `transient:` + the external id.
    pub fn transient(xids: &Ids) -> Ids {
        let t = |x: &str| format!("transient:{x}");
        Ids {
            incident: t(&xids.incident),
            sighting: t(&xids.sighting),
            relationship: t(&xids.relationship),
            judgement: t(&xids.judgement),
        }
    }
}

/// All template sets: the default one and per-rule overrides.
pub struct Renderer {
    default: TemplateSet,
    per_rule: BTreeMap<String, TemplateSet>,
    dirs: Vec<PathBuf>,
    stamp: Vec<(PathBuf, Option<SystemTime>)>,
    source: String,
}

fn build_env() -> Environment<'static> {
    let mut env = Environment::new();
    // A misspelt name must fail, not render as nothing: `{{ fields.usr }}` would otherwise
    // send an empty user to XDR and nobody would notice.
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    // Keeps the span of a failing expression, for the column in messages.
    env.set_debug(true);
    env.set_formatter(|out, _state, value| {
        let s = serde_json::to_string(value)
            .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, format!("cannot encode value: {e}")))?;
        out.write_str(&s).map_err(|_| minijinja::Error::new(ErrorKind::WriteFailure, "write failed"))
    });
    env.add_filter("tojson", |v: JValue| v);
    env.add_filter("safe", |v: JValue| v);
    env.add_filter("clip", clip);
    env.add_filter("sha256", |s: String| super::aggregate::sha256_hex(s.as_bytes()));
    env.add_filter("mitre_techniques", |tags: Vec<String>| mitre_techniques(&tags));
    env.add_filter("mitre_tactics", |tags: Vec<String>| mitre_tactics(&tags));
    env.add_filter("time_add", time_add);
    env
}

/// `value|clip(n)`: at most `n` characters (CTIM limits are in characters).
fn clip(v: JValue, n: usize) -> String {
    let s = v
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| if v.is_undefined() || v.is_none() { String::new() } else { v.to_string() });
    match s.char_indices().nth(n) {
        Some((i, _)) => s[..i].to_string(),
        None => s,
    }
}

/// `time|time_add("7d")`: an RFC 3339 time plus a duration (`-` prefix subtracts), in UTC with
/// milliseconds and `Z`.
fn time_add(t: String, d: String) -> Result<String, minijinja::Error> {
    let bad = |m: String| minijinja::Error::new(ErrorKind::InvalidOperation, m);
    let base = ctim::parse_time(&t).ok_or_else(|| bad(format!("time_add: not a time: {t:?}")))?;
    let (neg, d) = d.strip_prefix('-').map_or((false, d.as_str()), |r| (true, r));
    let dur = humantime::parse_duration(d).map_err(|e| bad(format!("time_add: {e}")))?;
    let dur = chrono::Duration::from_std(dur).map_err(|e| bad(format!("time_add: {e}")))?;
    let r = if neg { base - dur } else { base + dur };
    Ok(r.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

/// `attack.t1059.007` → `T1059.007` (ATT&CK technique ids from Sigma-style tags).
pub fn mitre_techniques(tags: &[String]) -> Vec<String> {
    let mut out: Vec<String> = tags
        .iter()
        .filter_map(|t| t.strip_prefix("attack.t"))
        .filter(|r| r.split('.').next().is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())))
        .map(|r| format!("T{}", r.to_ascii_uppercase()))
        .collect();
    out.dedup();
    out
}

/// `attack.initial-access` → `TA0001` (ATT&CK enterprise tactics).
pub fn mitre_tactics(tags: &[String]) -> Vec<String> {
    const TACTICS: &[(&str, &str)] = &[
        ("reconnaissance", "TA0043"),
        ("resource-development", "TA0042"),
        ("initial-access", "TA0001"),
        ("execution", "TA0002"),
        ("persistence", "TA0003"),
        ("privilege-escalation", "TA0004"),
        ("defense-evasion", "TA0005"),
        ("credential-access", "TA0006"),
        ("discovery", "TA0007"),
        ("lateral-movement", "TA0008"),
        ("collection", "TA0009"),
        ("exfiltration", "TA0010"),
        ("command-and-control", "TA0011"),
        ("impact", "TA0040"),
    ];
    let mut out = Vec::new();
    for t in tags {
        if let Some(name) = t.strip_prefix("attack.")
            && let Some((_, id)) = TACTICS.iter().find(|(n, _)| *n == name.replace('_', "-"))
            && !out.iter().any(|o: &String| o == id)
        {
            out.push(id.to_string());
        }
    }
    out
}

/// The files directly in `dir`, on disk or built in (`<built-in>/templates/xdr`).
fn template_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    match crate::assets::list_files(dir) {
        Some(listed) => Ok(listed?.into_iter().filter(|p| p.parent() == Some(dir)).collect()),
        None => Ok(std::fs::read_dir(dir)?.filter_map(|e| e.ok().map(|e| e.path())).collect()),
    }
}

impl TemplateSet {
    fn load(dirs: &[&Path]) -> TResult<TemplateSet> {
        let mut env = build_env();
        let mut files = BTreeMap::new();
        // Later directories fill in what earlier ones lack.
        for dir in dirs {
            let mut names = template_files(dir)
                .map_err(|e| TemplateErrors::one(*dir, 0, 0, format!("cannot read template directory: {e}")))?;
            names.sort();
            for p in names {
                let Some(name) = p.file_name().and_then(|n| n.to_str()).map(str::to_string) else { continue };
                if !name.ends_with(".j2") || files.contains_key(&name) {
                    continue;
                }
                let src = crate::assets::read_to_string(&p)
                    .map_err(|e| TemplateErrors::one(&p, 0, 0, format!("cannot read: {e}")))?;
                files.insert(name, (p, src));
            }
        }
        let mut problems = Vec::new();
        for (name, (path, src)) in &files {
            if let Err(e) = env.add_template_owned(name.clone(), src.clone()) {
                problems.push(template_problem(path, Some(src), &e));
            }
        }
        for (_, _, file, required) in ENTITY_TEMPLATES {
            if *required && !files.contains_key(*file) {
                let where_: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
                let msg = format!("template {file} not found in {}", where_.join(", "));
                problems.push(TemplateProblem { file: dirs[0].into(), line: 0, col: 0, rule: None, message: msg });
            }
        }
        if !problems.is_empty() {
            return Err(TemplateErrors(problems));
        }
        Ok(TemplateSet { env, files })
    }

    fn path_of(&self, name: &str) -> PathBuf {
        self.files.get(name).map_or_else(|| PathBuf::from(name), |(p, _)| p.clone())
    }

    /// Renders one template into a JSON value.
    fn render(&self, file: &str, ctx: &JValue) -> TResult<Value> {
        let t =
            self.env.get_template(file).map_err(|e| TemplateErrors::one(self.path_of(file), 0, 0, e.to_string()))?;
        let text = t.render(ctx).map_err(|e| {
            // The error names the template it happened in (an included one, perhaps).
            let (path, src) = match e.name().and_then(|n| self.files.get(n)) {
                Some((p, s)) => (p.clone(), Some(s.as_str())),
                None => (self.path_of(file), None),
            };
            TemplateErrors(vec![template_problem(&path, src, &e)])
        })?;
        serde_json::from_str(&text).map_err(|e| {
            let near = text.lines().nth(e.line().saturating_sub(1)).unwrap_or("").trim();
            let near: String = near.chars().take(160).collect();
            TemplateErrors::one(
                self.path_of(file),
                e.line(),
                0,
                format!("the rendered template is not valid JSON ({e}); output line reads: {near}"),
            )
        })
    }

    /// The first `file:line` of a template that mentions `"key"`, for validation messages.
    fn locate(&self, first: &str, key: &str) -> (PathBuf, usize) {
        let needle = format!("\"{key}\"");
        let order = std::iter::once(first).chain(self.files.keys().map(String::as_str).filter(|n| *n != first));
        for name in order {
            if let Some((p, src)) = self.files.get(name)
                && let Some(i) = src.lines().position(|l| l.contains(&needle))
            {
                return (p.clone(), i + 1);
            }
        }
        (self.path_of(first), 1)
    }
}

/// A minijinja error as a problem at its template's line and, when the failing expression's
/// span is known, column.
fn template_problem(path: &Path, src: Option<&str>, e: &minijinja::Error) -> TemplateProblem {
    let line = e.line().unwrap_or(1);
    // The span of an attribute lookup starts at its dot: widen it to the whole dotted name,
    // so the column and the message show `detection.nosuch`, not `.nosuch`.
    let span = match (e.range(), src) {
        (Some(r), Some(src)) if r.start <= r.end && src.get(r.clone()).is_some() => {
            let b = src.as_bytes();
            let mut start = r.start;
            while start > 0 && (b[start - 1].is_ascii_alphanumeric() || matches!(b[start - 1], b'_' | b'.')) {
                start -= 1;
            }
            Some((start, &src[start..r.end]))
        }
        _ => None,
    };
    let col = match (span, src) {
        (Some((start, _)), Some(src)) => {
            let before = &src[..start];
            before[before.rfind('\n').map_or(0, |i| i + 1)..].chars().count() + 1
        }
        _ => 0,
    };
    let mut detail = e.detail().map(|d| format!("{}: {d}", e.kind())).unwrap_or_else(|| e.kind().to_string());
    if e.kind() == ErrorKind::UndefinedError
        && let Some((_, expr)) = span
    {
        detail = format!(
            "{detail}: `{expr}` names something that does not exist (test what may be absent with `is defined`, or \
             give it a `default`)"
        );
    }
    TemplateProblem { file: path.to_path_buf(), line, col, rule: None, message: detail }
}

/// What one detection turns into: the bundle, and the PATCH that brings its incident up to
/// date when the incident already exists.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub bundle: Value,
    /// [`ctim::incident_patch`] of the bundle's incident, validated.
    pub patch: Value,
}

impl Renderer {
    /// Loads and checks the default templates and every per-rule override, with samples of
    /// no particular rule. `base` holds the parts of the context that come from the
    /// configuration (`vars`, `host`); the load-time check renders with them.
    pub fn load(
        default_dir: &Path,
        per_rule: &BTreeMap<String, PathBuf>,
        source: &str,
        base: &Value,
    ) -> Result<Renderer> {
        Ok(Renderer::load_for(default_dir, per_rule, source, base, &BTreeMap::new())?)
    }

    /// Like [`Renderer::load`], rendering a rule's own templates with detections shaped like
    /// that rule's (`shapes`: rule id → a detection of it, see [`shape_of`]): its facts, and
    /// threshold or sequence details when it has them.
    pub fn load_for(
        default_dir: &Path,
        per_rule: &BTreeMap<String, PathBuf>,
        source: &str,
        base: &Value,
        shapes: &BTreeMap<String, Detection>,
    ) -> TResult<Renderer> {
        let r = Renderer::load_unchecked(default_dir, per_rule, source)?;
        r.self_check(base, shapes)?;
        Ok(r)
    }

    /// Loads (parses) the templates without rendering any sample: for lint, which renders
    /// each rule's set with that rule's own sample detection and wants every rule whose render
    /// fails, not just the first problem of the check.
    pub fn load_unchecked(default_dir: &Path, per_rule: &BTreeMap<String, PathBuf>, source: &str) -> TResult<Renderer> {
        let mut problems = Vec::new();
        let default = TemplateSet::load(&[default_dir])?;
        let mut sets = BTreeMap::new();
        let mut dirs = vec![default_dir.to_path_buf()];
        for (rule, dir) in per_rule {
            dirs.push(dir.clone());
            match TemplateSet::load(&[dir.as_path(), default_dir]) {
                Ok(set) => {
                    sets.insert(rule.clone(), set);
                }
                Err(e) => problems.extend(e.for_rule(rule).0),
            }
        }
        if !problems.is_empty() {
            return Err(TemplateErrors(problems));
        }
        let mut r = Renderer { default, per_rule: sets, stamp: Vec::new(), dirs, source: source.to_string() };
        r.stamp = r.current_stamp();
        Ok(r)
    }

    /// Modification times of every template file, to notice edits.
    fn current_stamp(&self) -> Vec<(PathBuf, Option<SystemTime>)> {
        stamp_of(&self.dirs)
    }

    /// Takes the current files as seen (after a failed reload, so it is not retried until the
    /// next edit).
    pub fn mark_seen(&mut self) {
        self.stamp = self.current_stamp();
    }

    /// True when a template file or directory changed since loading.
    pub fn changed(&self) -> bool {
        self.current_stamp() != self.stamp
    }

    /// Renders every set with a hostile sample and a sparse one; any problem is an error.
    fn self_check(&self, base: &Value, shapes: &BTreeMap<String, Detection>) -> TResult<()> {
        let generic = generic_shape();
        let sets = std::iter::once((None, &self.default)).chain(self.per_rule.iter().map(|(r, s)| (Some(r), s)));
        for (rule, set) in sets {
            let known = rule.and_then(|r| shapes.get(r));
            for hostile in [true, false] {
                let mut d = sample_detection(known.unwrap_or(&generic), hostile);
                // Samples of no particular rule carry threshold and sequence details only
                // when hostile: templates must work with and without them.
                if known.is_none() && hostile {
                    d.threshold = generic_threshold(&d);
                    d.sequence = generic_sequence(&d);
                }
                let ctx = sample_context_of(&d, hostile, base, &self.source);
                self.render_with(set, &ctx, true).map_err(|e| match rule {
                    Some(r) => e.for_rule(r),
                    None => e,
                })?;
            }
        }
        Ok(())
    }

    /// Renders and validates the bundle for one detection context (see [`context`]).
    pub fn render(&self, rule_id: &str, ctx: &Value, new_incident: bool) -> Result<Rendered> {
        Ok(self.render_checked(rule_id, ctx, new_incident)?)
    }

    /// [`Renderer::render`] with the problems, each naming `rule_id`.
    pub fn render_checked(&self, rule_id: &str, ctx: &Value, new_incident: bool) -> TResult<Rendered> {
        let set = self.per_rule.get(rule_id).unwrap_or(&self.default);
        let bundle = self.render_with(set, ctx, new_incident).map_err(|e| e.for_rule(rule_id))?;
        let patch = ctim::incident_patch(&bundle["incidents"][0]);
        Ok(Rendered { bundle, patch })
    }

    fn render_with(&self, set: &TemplateSet, ctx: &Value, with_judgement: bool) -> TResult<Value> {
        let jctx = JValue::from_serialize(ctx);
        let xids = &ctx["xids"];
        let mut bundle = Map::new();
        bundle.insert("type".into(), json!("bundle"));
        bundle.insert("source".into(), json!(self.source));
        for (ty, array, file, required) in ENTITY_TEMPLATES {
            if !*required && (!with_judgement || !set.files.contains_key(*file)) {
                continue;
            }
            let v = set.render(file, &jctx)?;
            // A template may render `null` (or `[]`) to send no entity of its kind.
            let items = match v {
                Value::Null => continue,
                Value::Array(a) => a,
                o @ Value::Object(_) => vec![o],
                other => {
                    let msg = format!("must render a JSON object (or null), got {other}");
                    return Err(TemplateErrors::one(set.path_of(file), 1, 0, msg));
                }
            };
            let mut out = Vec::new();
            for (i, mut e) in items.into_iter().enumerate() {
                let Some(o) = e.as_object_mut() else {
                    return Err(TemplateErrors::one(set.path_of(file), 1, 0, format!("item {i} is not a JSON object")));
                };
                let xid = xids[*ty].as_str().unwrap_or_default();
                let xid = if i == 0 { xid.to_string() } else { format!("{xid}-{i}") };
                o.insert("id".into(), json!(format!("transient:{xid}")));
                o.insert("external_ids".into(), json!([xid]));
                o.insert("type".into(), json!(ty));
                o.entry("source").or_insert_with(|| json!(self.source));
                out.push(e);
            }
            if !out.is_empty() {
                bundle.insert(array.to_string(), Value::Array(out));
            }
        }
        let bundle = Value::Object(bundle);
        validate(&bundle, "green").map_err(|problems| {
            TemplateErrors(
                problems
                    .iter()
                    .map(|p| {
                        let file = ENTITY_TEMPLATES.iter().find(|t| t.1 == p.array).map_or("incident.json.j2", |t| t.2);
                        let (path, line) = set.locate(file, &p.key);
                        let message = format!("{} {}: {}", p.array, p.path, p.message);
                        TemplateProblem { file: path, line, col: 0, rule: None, message }
                    })
                    .collect(),
            )
        })?;
        // The incident's PATCH is checked like the bundle, so a template whose fields a PATCH
        // cannot carry fails here, not at the second detection of an attacker.
        let patch = ctim::incident_patch(&bundle["incidents"][0]);
        validate_patch(&patch).map_err(|problems| {
            TemplateErrors(
                problems
                    .iter()
                    .map(|(key, m)| {
                        let (path, line) = set.locate("incident.json.j2", key);
                        let message = format!("incident PATCH {key}: {m}");
                        TemplateProblem { file: path, line, col: 0, rule: None, message }
                    })
                    .collect(),
            )
        })?;
        Ok(bundle)
    }
}

/// Modification times of `dirs` and the files directly in them.
fn stamp_of(dirs: &[PathBuf]) -> Vec<(PathBuf, Option<SystemTime>)> {
    let mut v = Vec::new();
    for d in dirs {
        v.push((d.clone(), std::fs::metadata(d).and_then(|m| m.modified()).ok()));
        if let Ok(rd) = std::fs::read_dir(d) {
            for e in rd.flatten() {
                let p = e.path();
                v.push((p.clone(), std::fs::metadata(&p).and_then(|m| m.modified()).ok()));
            }
        }
    }
    v.sort();
    v
}

/// Checks an incident PATCH body as the service would (schema layer of `PartialNewIncident`,
/// spec layer) plus trapline's own time format; problems as (key, message).
pub fn validate_patch(patch: &Value) -> std::result::Result<(), Vec<(String, String)>> {
    let mut problems = Vec::new();
    if let Some(errs) = ctim::patch_schema_errors(patch) {
        let mut leaves = Vec::new();
        flatten(&errs, &mut Vec::new(), &mut leaves);
        for (p, m) in leaves {
            problems.push((p.first().cloned().unwrap_or_default(), m));
        }
        return Err(problems);
    }
    if let Some(o) = patch.as_object()
        && let Some(k) = o.keys().find(|k| !ctim::INCIDENT_PATCH_KEYS.contains(&k.as_str()))
    {
        problems.push((k.clone(), "not a field trapline keeps current".to_string()));
    }
    if let Some(m) = ctim::spec_error(patch) {
        problems.push((String::new(), format!("Entity validation Error: {}", m.trim_end())));
    }
    for (k, v) in time_values(patch) {
        if !ctim::is_strict_utc_millis(&v) {
            problems.push((k, format!("{v:?}: times must be UTC with milliseconds and Z (YYYY-MM-DDTHH:MM:SS.sssZ)")));
        }
    }
    if problems.is_empty() { Ok(()) } else { Err(problems) }
}

/// One validation problem: which entity array, the JSON path inside the entity, the message.
#[derive(Debug, Clone)]
pub struct Problem {
    pub array: String,
    pub path: String,
    /// The last object key on the path (to find it in the template).
    pub key: String,
    pub message: String,
}

fn flatten(err: &Value, path: &mut Vec<String>, out: &mut Vec<(Vec<String>, String)>) {
    match err {
        Value::Object(o) => {
            for (k, v) in o {
                path.push(k.clone());
                flatten(v, path, out);
                path.pop();
            }
        }
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                path.push(format!("[{i}]"));
                flatten(v, path, out);
                path.pop();
            }
        }
        Value::Null => {}
        leaf => out.push((path.clone(), leaf.as_str().map_or(leaf.to_string(), str::to_string))),
    }
}

/// Everything the service would check, plus trapline's own rules. `min_tlp` is the service's
/// minimum (`green` by default).
pub fn validate(bundle: &Value, min_tlp: &str) -> std::result::Result<(), Vec<Problem>> {
    let mut problems = Vec::new();
    let mk = |path: &[String], message: String| {
        let array = path.first().cloned().unwrap_or_default();
        let key = path.iter().rev().find(|p| !p.starts_with('[')).cloned().unwrap_or_default();
        let inner = path
            .iter()
            .skip(2)
            .map(|p| if p.starts_with('[') { p.clone() } else { format!(".{p}") })
            .collect::<String>();
        Problem { array, path: inner.trim_start_matches('.').to_string(), key, message }
    };
    if let Some(errs) = ctim::schema_errors(bundle) {
        let mut leaves = Vec::new();
        flatten(&errs, &mut Vec::new(), &mut leaves);
        for (p, m) in leaves {
            problems.push(mk(&p, m));
        }
        return Err(problems);
    }
    let count = ctim::entity_count(bundle);
    if count > MAX_BUNDLE_ENTITIES {
        problems.push(mk(&[], format!("{count} entities: trapline sends at most {MAX_BUNDLE_ENTITIES} per bundle")));
    }
    let mut ids = std::collections::HashSet::new();
    for (array, _) in ctim::ENTITY_ARRAYS {
        for e in bundle.get(*array).and_then(Value::as_array).into_iter().flatten() {
            if let Some(id) = e.get("id").and_then(Value::as_str) {
                ids.insert(id.to_string());
            }
        }
    }
    for (array, ty) in ctim::ENTITY_ARRAYS {
        for (i, e) in bundle.get(*array).and_then(Value::as_array).into_iter().flatten().enumerate() {
            let at = |k: &str| vec![array.to_string(), format!("[{i}]"), k.to_string()];
            if let Some(m) = ctim::spec_error(e) {
                let key = m.split(" in: [:").nth(1).and_then(|r| r.split(']').next()).unwrap_or("").replace(" :", ".");
                let key = key.trim_start_matches(':').to_string();
                problems.push(mk(&at(&key), format!("Entity validation Error: {}", m.trim_end())));
            }
            if let Some(m) = ctim::tlp_error(e, min_tlp) {
                problems.push(mk(&at("tlp"), m));
            }
            if *ty == "judgement"
                && let Some(m) = ctim::disposition_error(e)
            {
                problems.push(mk(&at("disposition"), m));
            }
            for (k, v) in time_values(e) {
                if !ctim::is_strict_utc_millis(&v) {
                    problems.push(mk(
                        &at(&k),
                        format!("{v:?}: times must be UTC with milliseconds and Z (YYYY-MM-DDTHH:MM:SS.sssZ)"),
                    ));
                }
            }
            if *ty == "relationship" {
                for k in ["source_ref", "target_ref"] {
                    let r = e.get(k).and_then(Value::as_str).unwrap_or("");
                    if r.starts_with("transient:") && !ids.contains(r) {
                        problems.push(mk(&at(k), format!("{r:?} names no entity of this bundle")));
                    }
                }
            }
        }
    }
    if problems.is_empty() { Ok(()) } else { Err(problems) }
}

/// Every time-valued field of an entity, with its key.
fn time_values(v: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    fn walk(v: &Value, out: &mut Vec<(String, String)>) {
        match v {
            Value::Object(o) => {
                for (k, x) in o {
                    if ctim::TIME_KEYS.contains(&k.as_str())
                        && let Some(s) = x.as_str()
                    {
                        out.push((k.clone(), s.to_string()));
                    } else if k != "meta" && k != "relation_info" {
                        walk(x, out);
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    walk(v, &mut out);
    out
}

/// The template context of a detection (the README's "XDR templates" section lists it):
/// `aggregate` is the incident window's summary, `base` the configuration's `vars` and `host`.
/// The load-time check, lint and `render` build it here too, so they see exactly what a
/// running trapline renders.
pub fn context(d: &Detection, aggregate: Value, xids: &Ids, base: &Value, source: &str, now: &str) -> Value {
    let vars = base.get("vars").filter(|v| v.is_object()).cloned().unwrap_or_else(|| json!({}));
    let host = base.get("host").filter(|v| v.is_object()).cloned().unwrap_or_else(|| json!({"hostname": "", "os": ""}));
    json!({
        "rule": d.rule,
        "detection": d,
        "fields": d.fields,
        "line": d.line,
        "aggregate": aggregate,
        "host": host,
        "target": super::target::attacked(&json!(d.fields), &vars),
        "vars": vars,
        "xids": xids,
        "ids": Ids::transient(xids),
        "source": source,
        "now": now,
    })
}

const SAMPLE_TIME: &str = "2024-10-10T13:55:36.000Z";

fn sample_time() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(SAMPLE_TIME).map(|t| t.with_timezone(&Utc)).unwrap_or_default()
}

/// A detection of no particular rule, without threshold or sequence details: the shape the
/// default templates are checked with.
pub fn generic_shape() -> Detection {
    let t = sample_time();
    Detection {
        key: "0".into(),
        rule: Arc::new(RuleInfo {
            id: "sample.rule".into(),
            title: "Sample".into(),
            severity: crate::rule::Severity::Critical,
            class: "sqli".into(),
            tags: vec!["attack.t1190".into(), "attack.initial-access".into()],
        }),
        source: SourceRef {
            host: None,
            name: "s".into(),
            path: "/x".into(),
            format: "combined".into(),
            line_number: 1,
            offset: 0,
        },
        event_time: t,
        time_source: "event",
        detected_at: t,
        fields: BTreeMap::new(),
        line: "x".into(),
        line_truncated: false,
        threshold: None,
        sequence: None,
        suppressed: 0,
        actions: vec![super::ACTION_NAME.into()],
        also: Vec::new(),
    }
}

fn generic_threshold(d: &Detection) -> Option<ThresholdInfo> {
    let ip = d.fields.get("client_ip").cloned().unwrap_or_default();
    Some(ThresholdInfo {
        count: 10,
        within_seconds: 60.0,
        group: BTreeMap::from([("client_ip".to_string(), ip)]),
        distinct: Some("path".into()),
        distinct_values: vec![d.fields.get("path").cloned().unwrap_or_default(); 3],
        first_seen: d.event_time,
        last_seen: d.event_time,
    })
}

fn generic_sequence(d: &Detection) -> Option<SequenceInfo> {
    Some(SequenceInfo {
        steps: 2,
        within_seconds: 60.0,
        key: d.fields.get("client_ip").cloned().unwrap_or_default(),
        first_seen: d.event_time,
        last_seen: d.event_time,
    })
}

/// `shape` made a sample for the load-time check. `hostile`: every attacker-controlled value
/// (the rule's fields and the usual web ones, the line, the title) is made of quotes,
/// backslashes, control characters, template syntax and is huge; otherwise a sparse
/// detection with no parsed fields at all.
pub fn sample_detection(shape: &Detection, hostile: bool) -> Detection {
    let mut d = shape.clone();
    if !hostile {
        d.fields = BTreeMap::new();
        d.line = "x".into();
        return d;
    }
    let evil = format!("\"'\\\u{0}\u{1b}[31m\n\r\t{{{{ 7*7 }}}}{{% raw %}}</script>\u{2028}{}", "A".repeat(100_000));
    let usual = ["method", "uri", "path", "query", "user_agent", "referer", "host", "user", "message", "protocol"];
    let names: Vec<Arc<str>> = shape.fields.keys().cloned().chain(usual.iter().map(|n| Arc::from(*n))).collect();
    for n in names {
        d.fields.insert(n, evil.clone());
    }
    d.fields.insert("client_ip".into(), "203.0.113.7".into());
    d.fields.insert("status".into(), "404".into());
    if let Some(t) = &mut d.threshold {
        t.distinct_values.iter_mut().for_each(|v| *v = evil.clone());
    }
    d.line = evil.clone();
    d.rule = Arc::new(RuleInfo { title: evil, ..(*shape.rule).clone() });
    d
}

/// The context of a sample detection: an incident window holding it and one more rule.
pub fn sample_context_of(d: &Detection, hostile: bool, base: &Value, source: &str) -> Value {
    let t = SAMPLE_TIME;
    let aggregate = json!({
        "count": 1, "first_seen": t, "last_seen": t, "window_start": t, "window_end": t,
        "samples": [d.line], "group": {}, "new_incident": true,
        "scope": "attacker", "rules": {d.rule.id.clone(): 1, "sample.other": 2},
        "classes": {"other": 1, d.rule.class.clone(): 2}, "severity": d.rule.severity.as_str(),
        "tags": d.rule.tags,
    });
    let xids = Ids {
        incident: "trapline-incident-0".into(),
        sighting: "trapline-sighting-0".into(),
        relationship: "trapline-relationship-0".into(),
        judgement: "trapline-judgement-0".into(),
    };
    let mut base = base.clone();
    if hostile && base.get("host").is_none() {
        base["host"] = json!({"hostname": "h".repeat(300), "os": "linux"});
    }
    context(d, aggregate, &xids, &base, source, t)
}

/// A context for the load-time check of no particular rule (see [`sample_detection`]); the
/// hostile one carries threshold and sequence details, the sparse one neither.
pub fn sample_context(hostile: bool) -> Value {
    let mut d = sample_detection(&generic_shape(), hostile);
    if hostile {
        d.threshold = generic_threshold(&d);
        d.sequence = generic_sequence(&d);
    }
    sample_context_of(&d, hostile, &json!({}), "trapline")
}
