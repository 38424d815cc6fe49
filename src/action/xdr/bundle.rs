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
//! - **Fail at load time.** [`Renderer::load`] renders every template set with a hostile
//!   sample and a sparse one and reports problems as `file:line: message`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Result, anyhow, bail};
use minijinja::{Environment, ErrorKind, UndefinedBehavior, Value as JValue};
use serde_json::{Map, Value, json};

use super::ctim;

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
    env.set_undefined_behavior(UndefinedBehavior::Chainable);
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
    fn load(dirs: &[&Path]) -> Result<TemplateSet> {
        let mut env = build_env();
        let mut files = BTreeMap::new();
        // Later directories fill in what earlier ones lack.
        for dir in dirs {
            let mut names =
                template_files(dir).map_err(|e| anyhow!("cannot read template directory {}: {e}", dir.display()))?;
            names.sort();
            for p in names {
                let Some(name) = p.file_name().and_then(|n| n.to_str()).map(str::to_string) else { continue };
                if !name.ends_with(".j2") || files.contains_key(&name) {
                    continue;
                }
                let src = crate::assets::read_to_string(&p).map_err(|e| anyhow!("cannot read {}: {e}", p.display()))?;
                files.insert(name, (p, src));
            }
        }
        for (name, (path, src)) in &files {
            env.add_template_owned(name.clone(), src.clone()).map_err(|e| template_error(path, &e))?;
        }
        for (_, _, file, required) in ENTITY_TEMPLATES {
            if *required && !files.contains_key(*file) {
                let where_: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
                bail!("template {file} not found in {}", where_.join(", "));
            }
        }
        Ok(TemplateSet { env, files })
    }

    fn path_of(&self, name: &str) -> String {
        self.files.get(name).map_or(name.to_string(), |(p, _)| p.display().to_string())
    }

    /// Renders one template into a JSON value.
    fn render(&self, file: &str, ctx: &JValue) -> Result<Value> {
        let t = self.env.get_template(file).map_err(|e| anyhow!("{}: {e}", self.path_of(file)))?;
        let text = t.render(ctx).map_err(|e| {
            let path = e.name().and_then(|n| self.files.get(n)).map(|(p, _)| p.clone()).unwrap_or_else(|| file.into());
            template_error(&path, &e)
        })?;
        serde_json::from_str(&text).map_err(|e| {
            let near = text.lines().nth(e.line().saturating_sub(1)).unwrap_or("").trim();
            let near: String = near.chars().take(160).collect();
            anyhow!(
                "{}:{}: the rendered template is not valid JSON ({e}); output line reads: {near}",
                self.path_of(file),
                e.line()
            )
        })
    }

    /// The first `file:line` of a template that mentions `"key"`, for validation messages.
    fn locate(&self, first: &str, key: &str) -> String {
        let needle = format!("\"{key}\"");
        let order = std::iter::once(first).chain(self.files.keys().map(String::as_str).filter(|n| *n != first));
        for name in order {
            if let Some((p, src)) = self.files.get(name)
                && let Some(i) = src.lines().position(|l| l.contains(&needle))
            {
                return format!("{}:{}", p.display(), i + 1);
            }
        }
        format!("{}:1", self.path_of(first))
    }
}

fn template_error(path: &Path, e: &minijinja::Error) -> anyhow::Error {
    let line = e.line().unwrap_or(1);
    let detail = e.detail().map(|d| format!("{}: {d}", e.kind())).unwrap_or_else(|| e.kind().to_string());
    anyhow!("{}:{line}: {detail}", path.display())
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
    /// Loads and checks the default templates and every per-rule override.
    /// `base` holds the parts of the context that come from the configuration (`vars`,
    /// `host`); the load-time check renders with them.
    pub fn load(
        default_dir: &Path,
        per_rule: &BTreeMap<String, PathBuf>,
        source: &str,
        base: &Value,
    ) -> Result<Renderer> {
        let default = TemplateSet::load(&[default_dir])?;
        let mut sets = BTreeMap::new();
        let mut dirs = vec![default_dir.to_path_buf()];
        for (rule, dir) in per_rule {
            let set = TemplateSet::load(&[dir.as_path(), default_dir]).map_err(|e| anyhow!("rule {rule:?}: {e}"))?;
            sets.insert(rule.clone(), set);
            dirs.push(dir.clone());
        }
        let mut r = Renderer { default, per_rule: sets, stamp: Vec::new(), dirs, source: source.to_string() };
        r.stamp = r.current_stamp();
        r.self_check(base)?;
        Ok(r)
    }

    /// Modification times of every template file, to notice edits.
    fn current_stamp(&self) -> Vec<(PathBuf, Option<SystemTime>)> {
        let mut v = Vec::new();
        for d in &self.dirs {
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
    fn self_check(&self, base: &Value) -> Result<()> {
        for (rule, set) in std::iter::once((None, &self.default)).chain(self.per_rule.iter().map(|(r, s)| (Some(r), s)))
        {
            for mut ctx in [sample_context(true), sample_context(false)] {
                for k in ["vars", "host"] {
                    if let Some(v) = base.get(k) {
                        ctx[k] = v.clone();
                    }
                }
                ctx["target"] = super::target::attacked(&ctx["fields"], &ctx["vars"]);
                self.render_with(set, &ctx, true).map_err(|e| match rule {
                    Some(r) => anyhow!("rule {r:?}: {e}"),
                    None => e,
                })?;
            }
        }
        Ok(())
    }

    /// Renders and validates the bundle for one detection context (see [`Context`]).
    pub fn render(&self, rule_id: &str, ctx: &Value, new_incident: bool) -> Result<Rendered> {
        let set = self.per_rule.get(rule_id).unwrap_or(&self.default);
        let bundle = self.render_with(set, ctx, new_incident)?;
        let patch = ctim::incident_patch(&bundle["incidents"][0]);
        Ok(Rendered { bundle, patch })
    }

    fn render_with(&self, set: &TemplateSet, ctx: &Value, with_judgement: bool) -> Result<Value> {
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
                other => bail!("{}: must render a JSON object (or null), got {other}", set.path_of(file)),
            };
            let mut out = Vec::new();
            for (i, mut e) in items.into_iter().enumerate() {
                let Some(o) = e.as_object_mut() else { bail!("{}: item {i} is not a JSON object", set.path_of(file)) };
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
            let msgs: Vec<String> = problems
                .iter()
                .map(|p| {
                    let file = ENTITY_TEMPLATES.iter().find(|t| t.1 == p.array).map_or("incident.json.j2", |t| t.2);
                    format!("{}: {} {}: {}", set.locate(file, &p.key), p.array, p.path, p.message)
                })
                .collect();
            anyhow!("{}", msgs.join("\n"))
        })?;
        // The incident's PATCH is checked like the bundle, so a template whose fields a PATCH
        // cannot carry fails here, not at the second detection of an attacker.
        let patch = ctim::incident_patch(&bundle["incidents"][0]);
        validate_patch(&patch).map_err(|problems| {
            let msgs: Vec<String> = problems
                .iter()
                .map(|(key, m)| format!("{}: incident PATCH {key}: {m}", set.locate("incident.json.j2", key)))
                .collect();
            anyhow!("{}", msgs.join("\n"))
        })?;
        Ok(bundle)
    }
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

/// A context for the load-time check. `hostile`: every attacker-controlled value is made of
/// quotes, backslashes, control characters, template syntax and is huge; otherwise a sparse
/// detection with no parsed fields at all.
pub fn sample_context(hostile: bool) -> Value {
    let evil = format!("\"'\\\u{0}\u{1b}[31m\n\r\t{{{{ 7*7 }}}}{{% raw %}}</script>\u{2028}{}", "A".repeat(100_000));
    let t = "2024-10-10T13:55:36.000Z";
    let fields = if hostile {
        json!({"client_ip": "203.0.113.7", "method": evil, "uri": evil, "path": evil, "query": evil, "user_agent": evil,
               "referer": evil, "status": "404", "host": evil, "user": evil, "message": evil, "protocol": evil})
    } else {
        json!({})
    };
    let xids = json!({"incident": "trapline-incident-0", "sighting": "trapline-sighting-0",
                      "relationship": "trapline-relationship-0", "judgement": "trapline-judgement-0"});
    let ids = json!({"incident": "transient:trapline-incident-0", "sighting": "transient:trapline-sighting-0",
                     "relationship": "transient:trapline-relationship-0", "judgement": "transient:trapline-judgement-0"});
    let line = if hostile { evil.clone() } else { "x".into() };
    let target = super::target::attacked(&fields, &json!({}));
    json!({
        "rule": {"id": "sample.rule", "title": if hostile { evil.clone() } else { "Sample".into() },
                 "severity": "critical", "tags": ["attack.t1190", "attack.initial-access"], "description": ""},
        "detection": {"key": "0", "event_time": t, "detected_at": t, "time_source": "event", "line": line,
                      "source": {"name": "s", "path": "/x", "format": "combined", "line_number": 1, "offset": 0}},
        "fields": fields,
        "line": line,
        "aggregate": {"count": 1, "first_seen": t, "last_seen": t, "window_start": t, "window_end": t,
                      "samples": [line], "group": {}, "new_incident": true,
                      "scope": "attacker", "rules": {"sample.rule": 1, "sample.other": 2},
                      "classes": {"other": 1, "sqli": 2}, "severity": "critical",
                      "tags": ["attack.t1190", "attack.initial-access"]},
        "host": {"hostname": if hostile { "h".repeat(300) } else { String::new() }},
        "vars": {},
        "target": target,
        "xids": xids,
        "ids": ids,
        "source": "trapline",
        "now": t,
    })
}
