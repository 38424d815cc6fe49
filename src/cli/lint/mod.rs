//! `trapline lint`: checks rule files (and the config) and reports every finding with a stable
//! code and a file:line:col, for humans (with a source snippet) and for CI (`json`, GitHub
//! workflow annotations, SARIF for code-scanning upload).
//!
//! Unlike loading for `run`, which is all-or-nothing and stops at the first broken set, lint
//! keeps going: a file that does not deserialize as a whole is read again part by part (each
//! rule, list, condition, override and exception on its own), every rule that can be read is
//! compiled and the examples of the rules that compile are run. One broken rule therefore never
//! hides the problems of the others, in its file or elsewhere, and what the broken parts define
//! still counts as defined, so references to them are not reported as unknown or unused.
//!
//! Exit codes: 0 clean (warnings allowed), 1 errors (or warnings with `--deny-warnings`),
//! 2 usage error (bad flags, unreadable path).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::{Args, ValueEnum};
use serde::Serialize;

use super::EXIT_USAGE;

mod codes;
mod scope;
use crate::authoring::analysis;
use crate::authoring::examples;
use crate::config;
use crate::engine::compile::compile_rules;
use crate::engine::prefilter::Requirement;
use crate::engine::view::Views;
use crate::engine::{CompileOptions, RuleSet};
use crate::parse::{FieldRegistry, Parser};
use crate::rule::load::{self, SourceFile};
use crate::rule::{Condition, ErrorKind, Loaded, LoadedRule, RuleError, ValueItem};
pub use codes::Code;

#[derive(Debug, Args)]
pub struct LintArgs {
    /// Rule files or directories (default: the config's; without --config: ./trapline.yml's,
    /// else ./rules/, else the user's or system config's, else the built-in rules).
    pub paths: Vec<PathBuf>,
    /// Config file: checked too, and supplies custom formats and the default rules directories.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "human")]
    pub format: Format,
    /// Exit with status 1 on warnings too.
    #[arg(long)]
    pub deny_warnings: bool,
    /// Print what a finding code (e.g. TL010) means and how to fix it, then exit.
    #[arg(long, value_name = "CODE")]
    pub explain: Option<String>,
}

/// How findings are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// `file:line:col: error[TL003] ...` with the source line and a caret.
    Human,
    /// A JSON array of findings.
    Json,
    /// GitHub Actions workflow commands (`::error file=...`), shown as annotations on the diff.
    Github,
    /// SARIF 2.1.0, for `github/codeql-action/upload-sarif` and other code-scanning tools.
    Sarif,
}

/// Severity of a finding. Only errors (and warnings with `--deny-warnings`) fail the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Error,
    Warning,
    Note,
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warning => "warning",
            Level::Note => "note",
        }
    }
}

/// One problem, positioned at the offending value.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub code: Code,
    pub severity: Level,
    pub message: String,
    pub file: String,
    /// 1-based; 0 when unknown.
    pub line: usize,
    /// 1-based; 0 when unknown.
    pub col: usize,
    pub rule: Option<String>,
}

impl Finding {
    fn new(code: Code, e: RuleError) -> Finding {
        let mut f = Finding::at(code, &e.file, e.line, e.col, e.message);
        f.rule = e.rule;
        f
    }

    /// A finding outside any rule (config, templates).
    fn at(code: Code, file: &Path, line: usize, col: usize, message: impl Into<String>) -> Finding {
        let severity = code.level();
        Finding { code, severity, message: message.into(), file: file.display().to_string(), line, col, rule: None }
    }

    /// A finding for a rule-file error, its code chosen by the error's kind.
    fn from_error(e: RuleError) -> Finding {
        let code = match e.kind {
            ErrorKind::Io | ErrorKind::Syntax => Code::Syntax,
            ErrorKind::Encoding => Code::Encoding,
            ErrorKind::Duplicate => Code::Duplicate,
            ErrorKind::Regex => Code::Regex,
            ErrorKind::UnknownReference => Code::UnknownReference,
            ErrorKind::InvalidValue => Code::InvalidValue,
        };
        Finding::new(code, e)
    }
}

pub fn lint(a: LintArgs) -> Result<i32> {
    if let Some(name) = &a.explain {
        return Ok(match Code::from_name(name) {
            Some(code) => {
                print!("{}", codes::explain(code));
                0
            }
            None => {
                let valid: Vec<&str> = Code::ALL.iter().map(|c| c.name()).collect();
                usage(&format!("unknown lint code {name:?}; valid codes: {}", valid.join(", ")))
            }
        });
    }
    let mut findings = Vec::new();
    let mut texts: HashMap<String, String> = HashMap::new();
    let config = a.config.clone().or_else(|| if a.paths.is_empty() { super::rules_default_config() } else { None });
    let cfg = match &config {
        Some(p) if !crate::assets::is_file(p) => return Ok(usage(&format!("cannot read config {}", p.display()))),
        Some(p) => load_config(p, &mut findings, &mut texts),
        None => None,
    };
    let paths = rule_paths(&a, config.as_deref(), cfg.as_ref());
    let sources = match read_sources(&paths, &mut findings, &mut texts) {
        Ok(s) => s,
        Err(msg) => return Ok(usage(&msg)),
    };
    for s in &sources {
        texts.insert(s.path.display().to_string(), s.text.clone());
    }
    // A config that did not load (a custom format's regex that does not compile, reported
    // above) still names its formats: rules that use them are not also "unknown format".
    let named = match (&cfg, &config) {
        (None, Some(p)) => declared_formats(p),
        _ => Default::default(),
    };
    lint_sources(sources, cfg.as_ref(), &named, &mut findings);
    check_yara(&paths, &mut findings, &mut texts);
    if let Some(c) = &cfg {
        check_templates(c, &paths, &mut findings, &mut texts);
        check_zones(c, &mut findings);
    }
    findings.sort_by(|x, y| (&x.file, x.line, x.col, x.code.name()).cmp(&(&y.file, y.line, y.col, y.code.name())));
    print!("{}", render(a.format, &findings, &texts));
    Ok(exit_code(&findings, a.deny_warnings))
}

fn usage(msg: &str) -> i32 {
    eprintln!("trapline: error: {msg}");
    EXIT_USAGE
}

/// 1 when anything must fail the build, else 0. Notes never do.
fn exit_code(findings: &[Finding], deny_warnings: bool) -> i32 {
    let fails = |f: &Finding| f.severity == Level::Error || (deny_warnings && f.severity == Level::Warning);
    i32::from(findings.iter().any(fails))
}

/// Explicit paths win; then the config's rules directories; then `rules/`. When the config is
/// broken and no path was given there is nothing sensible to lint besides the config itself.
fn rule_paths(a: &LintArgs, config: Option<&Path>, cfg: Option<&config::Loaded>) -> Vec<PathBuf> {
    if !a.paths.is_empty() {
        return a.paths.clone();
    }
    match (cfg, config) {
        (Some(c), _) => c.config.rules.iter().map(|r| c.resolve(r)).collect(),
        (None, Some(_)) => Vec::new(),
        (None, None) => vec![PathBuf::from("rules")],
    }
}

/// Content rules: compile errors (regexes, magic, bounds) as findings, and rules whose regexes
/// give the content prefilter no literal and that nothing else narrows (TL112).
fn content_findings(loaded: &Loaded, out: &mut Vec<Finding>) {
    let (set, errors) = crate::engine::content::ContentRuleSet::compile_lenient(loaded);
    out.extend(errors.into_iter().map(Finding::from_error));
    for r in set.rules.iter().filter(|r| r.runs_on_every_file()) {
        let Some(lr) = loaded.content.iter().find(|lr| lr.rule.id == r.id) else { continue };
        let msg = "no usable literal for the content prefilter and no `ext`, `name` or `magic`: the rule's \
                   regexes run over every file (anchor a regex on a literal of 2+ characters, or narrow it)";
        out.push(Finding::new(Code::ContentNoLiteral, loaded.rule_error(lr, "content", msg)));
    }
}

/// YARA files under the rule paths: compiled as `sweep` would; every error a finding at its
/// file:line:col (TL001). Without YARA support their presence is the finding.
fn check_yara(paths: &[PathBuf], out: &mut Vec<Finding>, texts: &mut HashMap<String, String>) {
    let mut files = Vec::new();
    for p in paths {
        files.extend(load::yara_files(p).unwrap_or_default());
    }
    if files.is_empty() {
        return;
    }
    for f in &files {
        if let Ok(t) = crate::assets::read_to_string(f) {
            texts.insert(f.display().to_string(), t);
        }
    }
    let loaded = Loaded::default();
    if let Err(e) = crate::content::Scanner::new(&loaded, &files) {
        out.extend(e.0.into_iter().map(Finding::from_error));
    }
}

/// The names under `formats:` of a config file, read leniently (for a config that failed).
fn declared_formats(p: &Path) -> std::collections::BTreeSet<String> {
    let text = crate::assets::read_to_string(p).unwrap_or_default();
    let Ok(v) = serde_yaml::from_str::<serde_yaml::Value>(&text) else { return Default::default() };
    v.get("formats")
        .and_then(|f| f.as_mapping())
        .map(|m| m.keys().filter_map(|k| k.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

/// Loads the config; a config that does not validate becomes a TL007 finding (positioned when
/// the error message carries `file:line:col`) rather than a usage error, so CI shows it inline.
fn load_config(p: &Path, out: &mut Vec<Finding>, texts: &mut HashMap<String, String>) -> Option<config::Loaded> {
    let file = p.display().to_string();
    if let Ok(t) = crate::assets::read_to_string(p) {
        texts.insert(file.clone(), t);
    }
    match config::Loaded::from_file(p) {
        Ok(c) => Some(c),
        Err(e) => {
            let msg = format!("{e:#}");
            let rest = msg.strip_prefix(&file).and_then(|r| r.strip_prefix(':')).unwrap_or(&msg).trim_start();
            let (line, col, message) = split_position(rest);
            out.push(Finding::at(Code::Config, p, line, col, message));
            None
        }
    }
}

/// Zone-less time stamps (syslog, the Apache error log, a custom `time_format` without `%z`)
/// are read in the configured `timezone`; when the config never says which, they are silently
/// taken as UTC, and thresholds and event times are off by the server's offset.
fn check_zones(cfg: &config::Loaded, out: &mut Vec<Finding>) {
    let text = crate::assets::read_to_string(&cfg.path).unwrap_or_default();
    let index = crate::rule::locate::index(&text);
    if index.contains_key("timezone") {
        return;
    }
    let zoneless_format = |name: &str| match cfg.config.formats.get(name) {
        Some(f) => {
            f.regex.is_some()
                && f.time_format.as_deref().is_some_and(|t| !["%z", "%:z", "%#z", "%Z"].iter().any(|z| t.contains(z)))
        }
        None => matches!(name, "syslog" | "apache_error"),
    };
    for (i, s) in cfg.config.sources.iter().enumerate() {
        if s.timezone.is_some() || !zoneless_format(&s.format) {
            continue;
        }
        let pos = index.get(&format!("sources[{i}].format")).copied();
        let (line, col) = pos.map_or((0, 0), |p| (p.line, p.col));
        let msg = format!(
            "source {:?}: format {:?} has no time zone in its time stamps and no `timezone` is set (global or \
             per source); they are read as UTC",
            s.name, s.format
        );
        out.push(Finding::at(Code::ZonelessTime, &cfg.path, line, col, msg));
    }
}

/// Loads the XDR templates the config names exactly as `trapline run` would, which renders
/// them with hostile and empty sample detections (shaped like each rule's, for a rule's own
/// templates) and validates the bundles against the CTIM rules; then renders each rule's
/// template set with a detection of its first `match` example, so a template naming a field
/// or attribute the rule's detections lack is found here. A problem becomes a TL009 at the
/// template's file:line:col, naming the rule whose render failed.
fn check_templates(
    cfg: &config::Loaded,
    rule_paths: &[PathBuf],
    out: &mut Vec<Finding>,
    texts: &mut HashMap<String, String>,
) {
    use crate::action::xdr::bundle::TemplateErrors;
    use crate::action::xdr::{Composer, settings::Settings};
    let settings = match Settings::from_config(cfg) {
        Ok(Some(s)) => s,
        Ok(None) => return,
        Err(e) => {
            out.push(Finding::at(Code::Config, &cfg.path, 0, 0, format!("{e:#}")));
            return;
        }
    };
    let dir = settings.templates.clone();
    // The rule set as `run` builds it; when it does not build, the rule findings say why and
    // the templates are checked with samples of no particular rule.
    let built = crate::pipeline::setup::build(Some(cfg), rule_paths, &[]).ok();
    let loaded = load::load_paths(rule_paths).ok();
    let shapes = built.as_ref().map(|b| crate::action::xdr::shapes(&b.rules)).unwrap_or_default();
    let mut problems: Vec<crate::action::xdr::bundle::TemplateProblem> = Vec::new();
    let mut other: Vec<String> = Vec::new();
    let mut take = |e: anyhow::Error| match e.downcast_ref::<TemplateErrors>() {
        Some(t) => problems.extend(t.0.iter().cloned()),
        None => other.extend(format!("{e:#}").lines().map(str::to_string)),
    };
    let settings = std::sync::Arc::new(settings);
    // Each rule's own sample first, so a problem names the rule whose render fails; then the
    // load-time check `run` does (hostile and empty values), for what no example reaches.
    if let (Some(b), Some(l)) = (&built, &loaded)
        && let Ok(mut composer) = Composer::unchecked(std::sync::Arc::clone(&settings))
    {
        let formats = cfg.config.formats.clone();
        let parser_for = |name: &str| {
            let mut reg = b.rules.registry.clone();
            config::parser_for(name, &formats, crate::parse::TimeSettings::default(), &mut reg).ok()
        };
        for d in examples::sample_detections(l, &b.rules, &parser_for) {
            if let Err(e) = composer.compose(&d) {
                take(e);
            }
        }
    }
    if let Err(e) = Composer::new(settings, false, shapes) {
        take(e);
    }
    // A broken default template fails every rule's render: one finding, naming the first rule
    // and counting the others.
    let mut seen: Vec<(crate::action::xdr::bundle::TemplateProblem, BTreeSet<String>)> = Vec::new();
    for p in problems {
        let same = |q: &crate::action::xdr::bundle::TemplateProblem| {
            (&q.file, q.line, q.col, &q.message) == (&p.file, p.line, p.col, &p.message)
        };
        match seen.iter_mut().find(|(q, _)| same(q)) {
            Some((_, rules)) => rules.extend(p.rule.clone()),
            None => {
                let rules = p.rule.iter().cloned().collect();
                seen.push((p, rules));
            }
        }
    }
    for (p, rules) in seen {
        if let Ok(t) = crate::assets::read_to_string(&p.file) {
            texts.insert(p.file.display().to_string(), t);
        }
        let first = p.rule.clone().or_else(|| rules.iter().next().cloned());
        // The finding names the rule (as every finding about a rule does); how many more fail
        // the same way is said in the message.
        let message = match rules.len() {
            n if n > 1 => format!("{} (the same for {} other rules)", p.message, n - 1),
            _ => p.message.clone(),
        };
        let mut f = Finding::at(Code::Template, &p.file, p.line, p.col.max(usize::from(p.line > 0)), message);
        f.rule = first;
        out.push(f);
    }
    for msg in other {
        out.push(Finding::at(Code::Template, &dir, 0, 0, msg));
    }
}

/// `"12:5: message"` → `(12, 5, "message")`; anything else is a message without position.
fn split_position(s: &str) -> (usize, usize, &str) {
    let mut parts = s.splitn(3, ':');
    if let (Some(l), Some(c), Some(m)) = (parts.next(), parts.next(), parts.next())
        && let (Ok(l), Ok(c)) = (l.trim().parse(), c.trim().parse())
    {
        return (l, c, m.trim_start());
    }
    (0, 0, s)
}

/// Reads every rule file under `paths`. Any path or file that cannot be read is a usage error:
/// linting "nothing" successfully would let a typo in a CI workflow pass silently. A file that
/// is not UTF-8 is a finding at its first invalid byte (its text goes to `texts` with the
/// invalid bytes replaced, for the snippet).
fn read_sources(
    paths: &[PathBuf],
    out: &mut Vec<Finding>,
    texts: &mut HashMap<String, String>,
) -> Result<Vec<SourceFile>, String> {
    let mut sources = Vec::new();
    for p in paths {
        let files = load::rule_files(p).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                format!("cannot read rules at {}: {e}; {}", load::display_abs(p), load::NOT_FOUND_HINT)
            }
            _ => format!("cannot read rules {}: {e}", p.display()),
        })?;
        for f in files {
            match load::read_file(&f) {
                Ok(src) => sources.push(src),
                Err(e) if e.kind == ErrorKind::Encoding => {
                    if let Ok(bytes) = crate::assets::read(&f) {
                        texts.insert(f.display().to_string(), String::from_utf8_lossy(&bytes).into_owned());
                    }
                    out.push(Finding::from_error(e));
                }
                Err(e) => return Err(format!("cannot read {}: {}", f.display(), e.message)),
            }
        }
    }
    Ok(sources)
}

/// All checks over the rule files: loading, compiling, examples, and the per-rule warnings.
fn lint_sources(
    sources: Vec<SourceFile>,
    cfg: Option<&config::Loaded>,
    named_formats: &std::collections::BTreeSet<String>,
    out: &mut Vec<Finding>,
) {
    let invalid = schema_check(&sources, out);
    let before = out.len();
    let (loaded, unreadable) = load_lenient(sources, out);
    // A file the schema already rejected would repeat the first of those problems as a type
    // error; the schema's report is the complete one.
    let mut i = before;
    while i < out.len() {
        if out[i].code == Code::Syntax && invalid.contains(&out[i].file) {
            out.remove(i);
        } else {
            i += 1;
        }
    }
    unreadable_parts(&loaded, &unreadable.parts, out);
    let mut registry = FieldRegistry::default();
    let parsers = custom_parsers(cfg, &mut registry);
    let mut opts = crate::pipeline::setup::compile_options();
    if let Some(c) = cfg {
        opts.formats = c.format_names();
    }
    opts.formats.extend(named_formats.iter().cloned());
    unused_lists(&loaded, &unreadable.list_refs, out);
    let before = out.len();
    let compiled = compile_each(&loaded, &opts, registry.clone(), out);
    drop_unreadable_refs(&loaded, &unreadable.conditions, before, out);
    for (lr, req) in loaded.rules.iter().zip(&compiled) {
        rule_warnings(&loaded, lr, req.as_ref(), out);
        attack_tags(&loaded, lr, out);
        scope::check(&loaded, lr, cfg, out);
        scope::sequence_keys(&loaded, lr, cfg, out);
    }
    for lr in &loaded.content {
        attack_tags(&loaded, lr, out);
    }
    scope::exceptions(&loaded, cfg, out);
    if let Some(c) = cfg {
        scope::config_refs(&loaded, &unreadable.rule_ids, c, out);
    }
    content_findings(&loaded, out);
    let good = Loaded {
        files: loaded.files.clone(),
        rules: loaded.rules.iter().zip(&compiled).filter(|(_, c)| c.is_some()).map(|(r, _)| r.clone()).collect(),
        content: Vec::new(),
        lists: loaded.lists.clone(),
        conditions: loaded.conditions.clone(),
        exceptions: loaded.exceptions.clone(),
    };
    let before = out.len();
    run_examples(&good, &opts, registry, &parsers, out);
    // The examples of a format whose definition failed cannot run: said once, at the config.
    let mut i = before;
    while i < out.len() {
        let broken = named_formats.iter().any(|f| out[i].message.contains(&format!("unknown format {f:?}")));
        if broken {
            out.remove(i);
        } else {
            i += 1;
        }
    }
}

/// Validates every rule file that is well-formed YAML against the generated JSON Schema
/// (`schema/trapline-rules.schema.json`) with `jsonschema`, which, unlike deserialisation,
/// reports every violation in a file, not just the first. Returns the files with violations.
fn schema_check(sources: &[SourceFile], out: &mut Vec<Finding>) -> HashSet<String> {
    let mut invalid = HashSet::new();
    let schema: serde_json::Value = match serde_json::from_str(&super::schema::schema_json(super::schema::Which::Rules))
    {
        Ok(v) => v,
        Err(_) => return invalid,
    };
    let Ok(compiled) = jsonschema::JSONSchema::compile(&schema) else { return invalid };
    for src in sources {
        // Too deep to parse: already reported by the loader.
        if crate::rule::locate::check_depth(&src.text, crate::rule::locate::MAX_DEPTH).is_err() {
            continue;
        }
        let Ok(yaml) = serde_yaml::from_str::<serde_yaml::Value>(&src.text) else { continue };
        if yaml.is_null() {
            continue;
        }
        let Ok(json) = serde_json::to_value(&yaml) else { continue };
        let Err(errors) = compiled.validate(&json) else { continue };
        let violations: Vec<Violation> = errors.map(Violation::from).collect();
        let file = src.path.display().to_string();
        invalid.insert(file.clone());
        let one = Loaded { files: vec![src.clone()], ..Default::default() };
        let at = SchemaAt { root: &schema, json: &json, one: &one, base: String::new(), forms: None };
        schema_findings(&at, violations, 0, out);
    }
    invalid
}

/// One JSON Schema violation, owned (the validator's errors borrow the compiled schema, and
/// alternatives of a union are validated with schemas of their own).
struct Violation {
    /// JSON pointer of the offending value, relative to the value validated.
    instance_path: String,
    schema_path: String,
    instance: serde_json::Value,
    kind: ViolationKind,
    text: String,
}

enum ViolationKind {
    UnknownKeys(Vec<String>),
    /// None of the alternatives of an `anyOf` / `oneOf` (an untagged enum) accepted the value.
    Union,
    Other,
}

impl From<jsonschema::ValidationError<'_>> for Violation {
    fn from(e: jsonschema::ValidationError<'_>) -> Violation {
        use jsonschema::error::ValidationErrorKind as K;
        let kind = match &e.kind {
            K::AdditionalProperties { unexpected } => ViolationKind::UnknownKeys(unexpected.clone()),
            K::AnyOf | K::OneOfNotValid => ViolationKind::Union,
            _ => ViolationKind::Other,
        };
        Violation {
            instance_path: e.instance_path.to_string(),
            schema_path: e.schema_path.to_string(),
            instance: e.instance.clone().into_owned(),
            text: e.to_string(),
            kind,
        }
    }
}

/// What violations are reported against: the schema they were found with (the whole rule
/// language's, or one alternative of a union), the file's document, and where in it the
/// validated value sits.
struct SchemaAt<'a> {
    root: &'a serde_json::Value,
    json: &'a serde_json::Value,
    one: &'a Loaded,
    /// YAML path of the validated value (empty: the document).
    base: String,
    /// The valid forms of the outermost union being looked into, with its path, told with each
    /// finding inside it.
    forms: Option<(String, String)>,
}

/// Turns violations into TL008 findings at the offending key or value. A value that no
/// alternative of a union accepts (a sequence step's `key`: a field name, `{field,
/// transforms}` or a list of them) is looked into: it is validated again against the
/// alternative of its own shape, so the finding sits at the offending key inside it rather
/// than at the union, and says which forms are valid.
fn schema_findings(at: &SchemaAt<'_>, violations: Vec<Violation>, depth: usize, out: &mut Vec<Finding>) {
    for v in violations {
        let rel = pointer_to_path(&v.instance_path);
        let path = match (at.base.is_empty(), rel.is_empty()) {
            (true, _) => rel,
            (false, true) => at.base.clone(),
            (false, false) if rel.starts_with('[') => format!("{}{rel}", at.base),
            (false, false) => format!("{}.{rel}", at.base),
        };
        let rule = rule_id_at(at.json, &path);
        let forms = at.forms.as_ref().map(|(p, f)| format!("; `{}` is one of: {f}", last_key(p))).unwrap_or_default();
        let push = |out: &mut Vec<Finding>, msg: String| {
            out.push(Finding::new(Code::Schema, at.one.error_at(0, &path, rule.as_deref(), msg)));
        };
        match &v.kind {
            // Unknown keys: one finding each, at the key, with the nearest known one.
            ViolationKind::UnknownKeys(unexpected) => {
                let known = allowed_keys(at.root, &v.schema_path);
                for key in unexpected {
                    let key_path = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
                    let msg = format!("unknown key `{key}`{}{forms}", suggestion(key, &known));
                    out.push(Finding::new(Code::Schema, at.one.error_at(0, &key_path, rule.as_deref(), msg)));
                }
                continue;
            }
            // A value that is none of a fixed set (a transform, a severity): say which are.
            _ if v.instance.is_string() && allowed_values(at.root, &v.schema_path).is_some() => {
                let values = allowed_values(at.root, &v.schema_path).unwrap_or_default();
                let given = v.instance.as_str().unwrap_or_default();
                push(
                    out,
                    format!(
                        "unknown value {given:?}{} (one of: {}){forms}",
                        suggestion(given, &values),
                        values.join(", ")
                    ),
                );
            }
            ViolationKind::Union if depth < 4 => {
                let Some(alts) = schema_at(at.root, &v.schema_path).and_then(|n| n.as_array()) else {
                    push(out, format!("{} (schema path {})", v.text, v.schema_path));
                    continue;
                };
                let all_forms = alts.iter().map(|a| describe(at.root, a, 0)).collect::<Vec<_>>().join(", or ");
                let forms = at.forms.clone().unwrap_or_else(|| (path.clone(), all_forms.clone()));
                // The alternatives of the value's own shape, each validated on its own; the one
                // with the fewest violations is what was meant.
                let best = alts
                    .iter()
                    .filter(|a| shape_fits(at.root, a, &v.instance, 0))
                    .filter_map(|a| {
                        let mut sub = resolve_ref(at.root, a)?.clone();
                        let defs = at.root.get("definitions")?.clone();
                        sub.as_object_mut()?.insert("definitions".into(), defs);
                        let compiled = jsonschema::JSONSchema::compile(&sub).ok()?;
                        let found: Vec<Violation> = match compiled.validate(&v.instance) {
                            Ok(()) => return None,
                            Err(e) => e.map(Violation::from).collect(),
                        };
                        Some((found.len(), sub, found))
                    })
                    .min_by_key(|(n, _, _)| *n);
                match best {
                    Some((_, sub, found)) => {
                        let inner =
                            SchemaAt { root: &sub, json: at.json, one: at.one, base: path.clone(), forms: Some(forms) };
                        schema_findings(&inner, found, depth + 1, out);
                    }
                    None => {
                        let msg = format!("expected {all_forms}; found {}", json_kind(&v.instance));
                        let msg = match &at.forms {
                            Some(_) => format!(
                                "{msg}{}",
                                at.forms
                                    .as_ref()
                                    .map(|(p, f)| format!("; `{}` is one of: {f}", last_key(p)))
                                    .unwrap_or_default()
                            ),
                            None => format!("`{}`: {msg}", last_key(&path)),
                        };
                        push(out, msg);
                    }
                }
            }
            // Inside a union the schema path is that of an alternative: no help to the reader.
            _ if at.forms.is_some() => push(out, format!("{}{forms}", v.text)),
            _ => push(out, format!("{} (schema path {})", v.text, v.schema_path)),
        }
    }
}

/// The last key of a YAML path (`rules[0].sequence.steps[1].key` → `key`).
fn last_key(path: &str) -> &str {
    let k = path.rsplit('.').next().unwrap_or(path);
    k.split('[').next().unwrap_or(k)
}

/// `a string`, `a list`, ...: what a JSON value is, for messages.
fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "nothing (null)",
        serde_json::Value::Bool(_) => "true/false",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "a mapping",
    }
}

/// `node`, following its `$ref` (within `root`'s definitions).
fn resolve_ref<'a>(root: &'a serde_json::Value, node: &'a serde_json::Value) -> Option<&'a serde_json::Value> {
    let mut n = node;
    for _ in 0..16 {
        match n.get("$ref").and_then(|r| r.as_str()).and_then(|r| r.strip_prefix("#/")) {
            Some(r) => n = r.split('/').try_fold(root, |n, seg| n.get(seg))?,
            None => return Some(n),
        }
    }
    None
}

/// Whether `value` has the JSON type some form of `node` takes (a mapping for an object form).
fn shape_fits(root: &serde_json::Value, node: &serde_json::Value, value: &serde_json::Value, depth: usize) -> bool {
    let Some(n) = resolve_ref(root, node) else { return false };
    if depth > 8 {
        return true;
    }
    if let Some(alts) = n.get("anyOf").or_else(|| n.get("oneOf")).and_then(|a| a.as_array()) {
        return alts.iter().any(|a| shape_fits(root, a, value, depth + 1));
    }
    if let Some(all) = n.get("allOf").and_then(|a| a.as_array()) {
        return all.iter().all(|a| shape_fits(root, a, value, depth + 1));
    }
    let fits = |t: &str| match t {
        "string" => value.is_string(),
        "object" => value.is_object(),
        "array" => value.is_array(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        _ => true,
    };
    match n.get("type") {
        Some(serde_json::Value::String(t)) => fits(t),
        Some(serde_json::Value::Array(ts)) => ts.iter().filter_map(|t| t.as_str()).any(fits),
        _ => true,
    }
}

/// The forms a schema node accepts, in words: `a string`, `{field, transforms}`, `a list of
/// (a string or {field, transforms})`.
fn describe(root: &serde_json::Value, node: &serde_json::Value, depth: usize) -> String {
    let Some(n) = resolve_ref(root, node) else { return "a value".into() };
    if depth > 3 {
        return "a value".into();
    }
    if let Some(alts) = n.get("anyOf").or_else(|| n.get("oneOf")).and_then(|a| a.as_array()) {
        return alts.iter().map(|a| describe(root, a, depth + 1)).collect::<Vec<_>>().join(" or ");
    }
    if let Some([one]) = n.get("allOf").and_then(|a| a.as_array()).map(Vec::as_slice) {
        return describe(root, one, depth + 1);
    }
    if let Some(vals) = n.get("enum").and_then(|e| e.as_array()) {
        let vals: Vec<String> = vals.iter().map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string)).collect();
        return format!("one of {}", vals.join(", "));
    }
    match n.get("type").and_then(|t| t.as_str()) {
        Some("string") => "a string".into(),
        Some("integer" | "number") => "a number".into(),
        Some("boolean") => "true or false".into(),
        Some("null") => "nothing".into(),
        Some("array") => match n.get("items") {
            Some(items) => {
                let d = describe(root, items, depth + 1);
                if d.contains(" or ") { format!("a list of ({d})") } else { format!("a list of {d}") }
            }
            None => "a list".into(),
        },
        Some("object") => match n.get("properties").and_then(|p| p.as_object()) {
            Some(p) if !p.is_empty() => format!("{{{}}}", p.keys().cloned().collect::<Vec<_>>().join(", ")),
            _ => "a mapping".into(),
        },
        _ => "a value".into(),
    }
}

/// The schema node at a validator's schema path (`/properties/rules/items/properties/match`),
/// following `$ref`s where the path steps through them.
fn schema_at<'a>(root: &'a serde_json::Value, schema_path: &str) -> Option<&'a serde_json::Value> {
    let resolve = |mut n: &'a serde_json::Value| {
        for _ in 0..16 {
            match n.get("$ref").and_then(|r| r.as_str()).and_then(|r| r.strip_prefix("#/")) {
                Some(r) => n = r.split('/').try_fold(root, |n, seg| n.get(seg))?,
                None => return Some(n),
            }
        }
        None
    };
    let mut node = root;
    for seg in schema_path.split('/').skip(1) {
        node = resolve(node)?;
        node = match node {
            serde_json::Value::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
            _ => node.get(seg)?,
        };
    }
    resolve(node)
}

/// The keys an object may have, from the schema of an `additionalProperties` error.
fn allowed_keys(root: &serde_json::Value, schema_path: &str) -> Vec<String> {
    let parent = schema_path.strip_suffix("/additionalProperties").unwrap_or(schema_path);
    schema_at(root, parent)
        .and_then(|n| n.get("properties"))
        .and_then(|p| p.as_object())
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default()
}

/// The fixed values a `oneOf`/`anyOf`/`enum` allows, when it is a set of strings.
fn allowed_values(root: &serde_json::Value, schema_path: &str) -> Option<Vec<String>> {
    let node = schema_at(root, schema_path)?;
    let mut out = Vec::new();
    let mut add = |n: &serde_json::Value| {
        for v in n.get("enum").and_then(|e| e.as_array()).into_iter().flatten() {
            out.extend(v.as_str().map(str::to_string));
        }
        if let Some(c) = n.get("const").and_then(|c| c.as_str()) {
            out.push(c.to_string());
        }
    };
    match node {
        // The `enum` keyword's own list.
        serde_json::Value::Array(vals) if vals.iter().all(|v| v.is_string()) => {
            out.extend(vals.iter().filter_map(|v| v.as_str().map(str::to_string)));
        }
        serde_json::Value::Array(alts) => {
            for a in alts {
                add(schema_at(a, "").unwrap_or(a));
            }
        }
        n => add(n),
    }
    (!out.is_empty()).then_some(out)
}

/// ` (did you mean `x`?)` when a known name is close to `given`.
fn suggestion(given: &str, known: &[String]) -> String {
    known
        .iter()
        .map(|k| {
            let g = given.to_ascii_lowercase();
            // A prefix (`lower` for `lowercase`) is as good as a typo.
            let d = if k.starts_with(&g) && g.len() >= 3 { 1 } else { strsim::damerau_levenshtein(&g, k) };
            (d, k)
        })
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min()
        .map(|(_, k)| format!(" (did you mean `{k}`?)"))
        .unwrap_or_default()
}

/// `/rules/0/match/any/1` → `rules[0].match.any[1]` (the paths the position index knows).
fn pointer_to_path(pointer: &str) -> String {
    let mut out = String::new();
    for seg in pointer.split('/').skip(1) {
        let seg = seg.replace("~1", "/").replace("~0", "~");
        if seg.chars().all(|c| c.is_ascii_digit()) && !seg.is_empty() {
            out.push_str(&format!("[{seg}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&seg);
        }
    }
    out
}

/// The id of the rule a path points into, if any.
fn rule_id_at(json: &serde_json::Value, path: &str) -> Option<String> {
    let rest = path.strip_prefix("rules[")?;
    let n: usize = rest[..rest.find(']')?].parse().ok()?;
    json.get("rules")?.get(n)?.get("id")?.as_str().map(str::to_string)
}

/// Loads what can be loaded, with every error as a finding. A file that does not deserialize
/// as a whole is read part by part (see [`load::load_partial`]), so its other rules are still
/// checked and what it names still counts as existing. Of rules sharing an id only the first is
/// kept (the duplicate is a TL002), so the later checks see each id once.
fn load_lenient(sources: Vec<SourceFile>, out: &mut Vec<Finding>) -> (Loaded, load::Unreadable) {
    let (mut loaded, errors, unreadable) = load::load_partial(sources);
    out.extend(errors.into_iter().map(Finding::from_error));
    let mut ids = HashSet::new();
    loaded.rules.retain(|lr| ids.insert(lr.rule.id.clone()));
    loaded.content.retain(|lr| ids.insert(lr.rule.id.clone()));
    (loaded, unreadable)
}

/// Removes the "unknown condition" findings (from `start` on) of `ref`s to named conditions
/// that are written but could not be read: their own error is the finding.
fn drop_unreadable_refs(
    loaded: &Loaded,
    unreadable: &std::collections::BTreeSet<String>,
    start: usize,
    out: &mut Vec<Finding>,
) {
    if unreadable.is_empty() {
        return;
    }
    let mut at = HashSet::new();
    for lr in &loaded.rules {
        let r = &lr.rule;
        let mut roots: Vec<(&Condition, String)> = Vec::new();
        roots.extend(r.condition.iter().map(|c| (c, "match".to_string())));
        roots.extend(r.except.iter().map(|c| (c, "except".to_string())));
        for (i, st) in r.sequence.iter().flat_map(|s| s.steps.iter().enumerate()) {
            roots.push((&st.condition, format!("sequence.steps[{i}].match")));
        }
        for (c, root) in roots {
            walk(c, &root, &mut |c, path| {
                if c.reference.as_ref().is_some_and(|n| unreadable.contains(n)) {
                    let e = loaded.rule_error(lr, &format!("{path}.ref"), "");
                    at.insert((e.file.display().to_string(), e.line, e.col));
                }
            });
        }
    }
    let mut i = start;
    while i < out.len() {
        let f = &out[i];
        if f.code == Code::UnknownReference && at.contains(&(f.file.clone(), f.line, f.col)) {
            out.remove(i);
        } else {
            i += 1;
        }
    }
}

/// The parts of a file that did not deserialize, each a TL001 at the part, unless a finding
/// already lies inside that part (the file's own parse error, or the schema's): one broken
/// rule among many is reported once, and each broken rule is reported.
fn unreadable_parts(loaded: &Loaded, parts: &[crate::rule::RuleError], out: &mut Vec<Finding>) {
    let mut starts: HashMap<String, Vec<usize>> = HashMap::new();
    for f in &loaded.files {
        let index = crate::rule::locate::index(&f.text);
        let mut lines: Vec<usize> = index
            .iter()
            .filter(|(path, _)| {
                let top = ["rules[", "overrides[", "exceptions["]
                    .iter()
                    .any(|p| path.starts_with(p) && path.ends_with(']') && path.matches('[').count() == 1);
                top || (path.starts_with("conditions.") && path.matches('.').count() == 1) || !path.contains(['.', '['])
            })
            .map(|(_, p)| p.line)
            .collect();
        lines.sort_unstable();
        starts.insert(f.path.display().to_string(), lines);
    }
    let mut new = Vec::new();
    for e in parts {
        let file = e.file.display().to_string();
        let end = starts.get(&file).and_then(|l| l.iter().find(|&&l| l > e.line).copied()).unwrap_or(usize::MAX);
        let inside = |f: &Finding| f.file == file && f.line >= e.line && f.line < end;
        if !out.iter().any(inside) {
            new.push(Finding::from_error(e.clone()));
        }
    }
    out.extend(new);
}

/// Parsers for the config's custom formats, built against `registry` so the rules compile with
/// the field ids those formats produce (the same wiring as [`super::setup::build`]).
fn custom_parsers(cfg: Option<&config::Loaded>, registry: &mut FieldRegistry) -> BTreeMap<String, Parser> {
    let Some(c) = cfg else { return BTreeMap::new() };
    c.config.formats.keys().filter_map(|name| Some((name.clone(), c.parser(name, None, registry).ok()?))).collect()
}

/// Compiles every rule on its own (the prefilter requirement per rule is what `RuleSet`
/// keeps private), turning compile errors into findings, and analyses each compiled condition
/// for parts that can never be true. `None` for a rule that failed.
fn compile_each(
    loaded: &Loaded,
    opts: &CompileOptions,
    mut registry: FieldRegistry,
    out: &mut Vec<Finding>,
) -> Vec<Option<Requirement>> {
    let mut views = Views::default();
    let (compiled, exceptions, errors) = compile_rules(loaded, opts, &mut registry, &mut views);
    out.extend(errors.into_iter().map(Finding::from_error));
    // Exceptions are conditions too: one that can never be true is a dead allow-list, one that
    // is always true silences every rule it applies to.
    for (e, c) in loaded.exceptions.iter().zip(&exceptions.list) {
        let Some(c) = c else { continue };
        let report = analysis::analyse_at(&c.node, &views, &e.at);
        let rule = e.rule.as_deref();
        if let Some(x) = report.never {
            let msg = format!("exception {:?} can never match: {} ({})", e.name, x.reason, x.path);
            out.push(Finding::new(Code::NeverTrue, loaded.error_at(e.file, &x.path, rule, msg)));
        } else if analysis::always(&c.node, &views) {
            let msg = format!("exception {:?} holds back every event: the rules it applies to never fire", e.name);
            out.push(Finding::new(Code::NeverTrue, loaded.error_at(e.file, &e.at, rule, msg)));
        }
        for x in report.dead {
            let msg = format!("this alternative can never be true: {}", x.reason);
            out.push(Finding::new(Code::DeadAlternative, loaded.error_at(e.file, &x.path, rule, msg)));
        }
    }
    let mut reqs = Vec::new();
    for (lr, c) in loaded.rules.iter().zip(compiled) {
        let Some(entries) = c else {
            reqs.push(None);
            continue;
        };
        let mut first = None;
        for (rule, req) in entries {
            // Paths in the report are relative to the condition: `match...`, or a step's.
            let base = match &rule.sequence {
                Some(s) => format!("sequence.steps[{}].", s.step),
                None => String::new(),
            };
            let report = analysis::analyse(&rule.node, &views);
            if let Some(x) = report.never {
                let path = format!("{base}{}", x.path);
                let msg = format!("the rule can never match: {} ({path})", x.reason);
                out.push(Finding::new(Code::NeverTrue, loaded.rule_error(lr, &path, msg)));
            }
            for x in report.dead {
                let msg = format!("this alternative can never be true: {}", x.reason);
                out.push(Finding::new(Code::DeadAlternative, loaded.rule_error(lr, &format!("{base}{}", x.path), msg)));
            }
            first.get_or_insert(req);
        }
        reqs.push(first);
    }
    reqs
}

/// Runs the inline examples of the rules that compiled; each failure is a TL005 positioned at
/// the example line.
fn run_examples(
    good: &Loaded,
    opts: &CompileOptions,
    registry: FieldRegistry,
    parsers: &BTreeMap<String, Parser>,
    out: &mut Vec<Finding>,
) {
    let rules = match RuleSet::compile(good, opts, registry) {
        Ok(r) => r,
        Err(errs) => {
            // Only rules that compiled alone are here, so this is not expected; report anyway.
            out.extend(errs.0.into_iter().map(Finding::from_error));
            return;
        }
    };
    let report = examples::run(good, &rules, &|name| parsers.get(name).cloned());
    for f in report.failures {
        let Some(lr) = good.rules.iter().find(|r| r.rule.id == f.rule) else { continue };
        let msg = if f.line.is_empty() {
            format!("example: {}", f.reason)
        } else {
            format!("example {}: {}: {:?}", f.path, f.reason, f.line)
        };
        out.push(Finding::new(Code::Example, good.rule_error(lr, &f.path, msg)));
    }
}

/// Warnings and notes about one rule that loaded. `req` is its prefilter requirement, `None`
/// when it did not compile (then only the model-level checks run).
fn rule_warnings(loaded: &Loaded, lr: &LoadedRule, req: Option<&Requirement>, out: &mut Vec<Finding>) {
    let r = &lr.rule;
    if !r.enabled {
        out.push(Finding::new(
            Code::Disabled,
            loaded.rule_error(lr, "enabled", "rule is disabled: validated but never run"),
        ));
    }
    // A sequence is tested with fixtures (a file of lines and the detections expected).
    if r.examples.should_match.is_empty() && r.examples.no_match.is_empty() && r.sequence.is_none() {
        let msg = "rule has no examples: add `examples: {match: [...], no_match: [...]}` so CI can test it";
        out.push(Finding::new(Code::NoExamples, loaded.rule_error(lr, "id", msg)));
    }
    // Threshold rules usually count frequent, literal-free events (any 404); paying for a full
    // evaluation per line is their nature, not a mistake.
    if r.enabled && r.threshold.is_none() && r.sequence.is_none() && matches!(req, Some(Requirement::Always)) {
        let msg = "no usable literal for the prefilter: the rule is evaluated on every line (add a \
                   `contains` or a regex with a literal of 2+ characters)";
        out.push(Finding::new(Code::NoLiteral, loaded.rule_error(lr, "match", msg)));
    }
    if let Some(t) = &r.threshold
        && t.group_by.is_empty()
    {
        let msg = "threshold without `group_by`: one counter for every client of the source (add e.g. \
                   `group_by: [client_ip]`)";
        out.push(Finding::new(Code::GlobalThreshold, loaded.rule_error(lr, "threshold", msg)));
    }
    let mut greedy = Vec::new();
    if let Some(cond) = &r.condition {
        walk(cond, "match", &mut |c, path| greedy_regexes(loaded, c, path, &mut greedy));
    }
    for (path, pattern) in greedy {
        let msg = format!(
            "regex {pattern:?} on the raw line repeats a class that crosses spaces and quotes: it can match \
             across fields, so a client-controlled value (user agent, URI) can satisfy it; match a parsed \
             `field:` or use a bounded class such as [^ \"]*"
        );
        out.push(Finding::new(Code::RawLineRepeat, loaded.rule_error(lr, &path, msg)));
    }
}

/// The tactic names Sigma writes as `attack.<name>`; `stealth` and `defense-impairment` are the
/// two tactics ATT&CK v18 split Defense Evasion into, already used by SigmaHQ rules.
const ATTACK_TACTICS: &[&str] = &[
    "stealth",
    "defense-impairment",
    "initial-access",
    "execution",
    "persistence",
    "privilege-escalation",
    "defense-evasion",
    "credential-access",
    "discovery",
    "lateral-movement",
    "collection",
    "command-and-control",
    "exfiltration",
    "impact",
    "reconnaissance",
    "resource-development",
];

/// Whether the part after `attack.` has a shape ATT&CK tooling reads: `t1190`, `t1059.001`,
/// `ta0001`, `g0016`, `s0002` or a tactic name. Only the shape: no technique list is kept.
fn attack_tag_ok(rest: &str) -> bool {
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    // Names first: `stealth` starts like software `sNNNN`.
    if ATTACK_TACTICS.contains(&rest) {
        return true;
    }
    if let Some(id) = rest.strip_prefix("ta") {
        return digits(id, 4) && id.starts_with("00");
    }
    if let Some(id) = rest.strip_prefix('t') {
        return match id.split_once('.') {
            Some((tech, sub)) => digits(tech, 4) && digits(sub, 3),
            None => digits(id, 4),
        };
    }
    if let Some(id) = rest.strip_prefix('g').or_else(|| rest.strip_prefix('s')) {
        return digits(id, 4);
    }
    false
}

/// Tags starting `attack.` whose shape is no ATT&CK id or tactic name (TL115), with the right
/// spelling when only the case is wrong (`attack.T1190`).
fn attack_tags(loaded: &Loaded, lr: &LoadedRule, out: &mut Vec<Finding>) {
    for (i, tag) in lr.rule.tags.iter().enumerate() {
        let Some(rest) = tag.get(..7).filter(|p| p.eq_ignore_ascii_case("attack.")).map(|_| &tag[7..]) else {
            continue;
        };
        if tag.starts_with("attack.") && attack_tag_ok(rest) {
            continue;
        }
        let lower = rest.to_ascii_lowercase();
        let hint = if attack_tag_ok(&lower) {
            format!(" (did you mean \"attack.{lower}\"? ATT&CK tags are lower-case)")
        } else {
            String::new()
        };
        let msg = format!(
            "malformed ATT&CK tag {tag:?}{hint}: expected attack.tNNNN, attack.tNNNN.NNN, attack.ta00NN, \
             attack.gNNNN, attack.sNNNN or a tactic name such as attack.initial-access"
        );
        out.push(Finding::new(Code::AttackTag, loaded.rule_error(lr, &format!("tags[{i}]"), msg)));
    }
}

/// Lists that no rule refers to: a warning at the list.
fn unused_lists(loaded: &Loaded, unreadable_refs: &std::collections::BTreeSet<String>, out: &mut Vec<Finding>) {
    // Lists named inside rules that could not be read are used too.
    let mut used: HashSet<String> = unreadable_refs.iter().cloned().collect();
    let mut mark = |v: &crate::rule::Values| {
        for item in &v.0 {
            if let crate::rule::ValueItem::List { list } = item {
                used.insert(list.clone());
            }
        }
    };
    let mut conditions: Vec<&Condition> = loaded.conditions.values().collect();
    conditions.extend(loaded.exceptions.iter().map(|e| &e.condition));
    for lr in &loaded.rules {
        conditions.extend(&lr.rule.condition);
        conditions.extend(lr.rule.sequence.iter().flat_map(|s| &s.steps).map(|st| &st.condition));
    }
    for c in conditions {
        walk(c, "match", &mut |c, _| {
            for v in [&c.contains, &c.equals, &c.starts_with, &c.ends_with, &c.regex, &c.cidr].into_iter().flatten() {
                mark(v);
            }
        });
    }
    // Content rules name lists in their regexes.
    for c in loaded.content.iter().filter_map(|lr| lr.rule.content.as_ref()) {
        for v in [&c.any, &c.all, &c.none].into_iter().flatten() {
            mark(v);
        }
    }
    for (f, file) in loaded.files.iter().enumerate() {
        let Ok(v) = serde_yaml::from_str::<serde_yaml::Value>(&file.text) else { continue };
        let Some(lists) = v.get("lists").and_then(|l| l.as_mapping()) else { continue };
        for name in lists.keys().filter_map(|k| k.as_str()) {
            if !used.contains(name) {
                let e = loaded.error_at(f, &format!("lists.{name}"), None, format!("list `{name}` is used by no rule"));
                out.push(Finding::new(Code::UnusedList, e));
            }
        }
    }
}

/// Calls `f` on every condition node with its YAML path (`match.any[1].not`).
fn walk(c: &Condition, path: &str, f: &mut dyn FnMut(&Condition, &str)) {
    f(c, path);
    for (key, list) in [("any", &c.any), ("all", &c.all)] {
        for (i, sub) in list.iter().flatten().enumerate() {
            walk(sub, &format!("{path}.{key}[{i}]"), f);
        }
    }
    if let Some(n) = &c.not {
        walk(n, &format!("{path}.not"), f);
    }
}

/// The regexes of `c` that are greedy across fields, as (path, pattern). Only the raw line is
/// checked: a parsed field has no neighbour to spill into.
fn greedy_regexes(loaded: &Loaded, c: &Condition, path: &str, out: &mut Vec<(String, String)>) {
    let raw = c.field.as_deref().is_none_or(|f| f == "line");
    let Some(values) = c.regex.as_ref().filter(|_| raw) else { return };
    let cs = c.case_sensitive.unwrap_or(false);
    for (i, item) in values.0.iter().enumerate() {
        let patterns: Vec<&String> = match item {
            ValueItem::Text(p) => vec![p],
            ValueItem::List { list } => loaded.lists.get(list).map(|l| l.iter().collect()).unwrap_or_default(),
        };
        for p in patterns.into_iter().filter(|p| spans_fields(p, cs)) {
            out.push((format!("{path}.regex[{i}]"), p.clone()));
        }
    }
}

/// Whether `pattern` has an unbounded repetition (`.*`, `.+`, `[^x]*`) of a class that matches
/// both a space and a double quote: on a raw access-log line such a repeat runs from one field
/// into the next. Parsed with the same settings as the engine (bytes, no Unicode).
fn spans_fields(pattern: &str, case_sensitive: bool) -> bool {
    let parsed = regex_syntax::ParserBuilder::new()
        .unicode(false)
        .utf8(false)
        .case_insensitive(!case_sensitive)
        .build()
        .parse(pattern);
    parsed.is_ok_and(|h| hir_spans(&h))
}

fn hir_spans(h: &regex_syntax::hir::Hir) -> bool {
    use regex_syntax::hir::{Class, HirKind};
    match h.kind() {
        HirKind::Repetition(rep) => {
            let crosses = match rep.sub.kind() {
                HirKind::Class(Class::Bytes(c)) => {
                    let has = |b: u8| c.ranges().iter().any(|r| r.start() <= b && b <= r.end());
                    has(b' ') && has(b'"')
                }
                HirKind::Class(Class::Unicode(c)) => {
                    let has = |ch: char| c.ranges().iter().any(|r| r.start() <= ch && ch <= r.end());
                    has(' ') && has('"')
                }
                _ => false,
            };
            (rep.max.is_none() && crosses) || hir_spans(&rep.sub)
        }
        HirKind::Capture(c) => hir_spans(&c.sub),
        HirKind::Concat(v) | HirKind::Alternation(v) => v.iter().any(hir_spans),
        _ => false,
    }
}

// ---------------------------------------------------------------------------------------------
// Output

fn render(format: Format, findings: &[Finding], texts: &HashMap<String, String>) -> String {
    match format {
        Format::Human => human(findings, texts, colour()),
        Format::Json => serde_json::to_string_pretty(findings).expect("findings serialise") + "\n",
        Format::Github => github(findings),
        Format::Sarif => serde_json::to_string_pretty(&sarif(findings)).expect("sarif serialises") + "\n",
    }
}

/// Colour only on a terminal, and never with `NO_COLOR` set (https://no-color.org).
fn colour() -> bool {
    crate::action::console::use_color(&std::io::stdout())
}

fn human(findings: &[Finding], texts: &HashMap<String, String>, colour: bool) -> String {
    let paint = |code: &str, s: &str| if colour { format!("\x1b[{code}m{s}\x1b[0m") } else { s.to_string() };
    let mut out = String::new();
    for f in findings {
        let level_colour = match f.severity {
            Level::Error => "1;31",
            Level::Warning => "1;33",
            Level::Note => "1;36",
        };
        let pos = if f.line > 0 { format!("{}:{}:{}", f.file, f.line, f.col) } else { f.file.clone() };
        let rule = f.rule.as_ref().map(|r| format!(" rule {r:?}:")).unwrap_or_default();
        let head = paint(level_colour, &format!("{}[{}]", f.severity.as_str(), f.code));
        let _ = writeln!(out, "{}: {head}{rule} {}", paint("1", &pos), f.message);
        if let Some(line) = texts.get(&f.file).and_then(|t| t.lines().nth(f.line.wrapping_sub(1))) {
            out.push_str(&snippet(line, f.line, f.col, &|s| paint(level_colour, s)));
        }
    }
    let count = |l: Level| findings.iter().filter(|f| f.severity == l).count();
    let _ = write!(out, "{}, {}", plural(count(Level::Error), "error"), plural(count(Level::Warning), "warning"));
    let notes = count(Level::Note);
    if notes > 0 {
        let _ = write!(out, ", {}", plural(notes, "note"));
    }
    out.push('\n');
    out
}

/// The source line and a caret under column `col`. Tabs before the column are kept so the caret
/// lines up whatever the terminal's tab width.
fn snippet(line: &str, n: usize, col: usize, paint: &dyn Fn(&str) -> String) -> String {
    let gutter = n.to_string();
    let pad: String = line.chars().take(col.saturating_sub(1)).map(|c| if c == '\t' { '\t' } else { ' ' }).collect();
    let blank = " ".repeat(gutter.len());
    format!("{gutter} | {line}\n{blank} | {pad}{}\n", paint("^"))
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 { format!("1 {word}") } else { format!("{n} {word}s") }
}

/// GitHub workflow commands: one annotation per finding, shown on the changed file.
fn github(findings: &[Finding]) -> String {
    let mut out = String::new();
    for f in findings {
        let cmd = match f.severity {
            Level::Error => "error",
            Level::Warning => "warning",
            Level::Note => "notice",
        };
        let mut props = format!("file={}", gh_escape(&f.file, true));
        if f.line > 0 {
            let _ = write!(props, ",line={},col={}", f.line, f.col);
        }
        let _ = write!(props, ",title={}", f.code);
        let _ = writeln!(out, "::{cmd} {props}::{}", gh_escape(&message_with_rule(f), false));
    }
    out
}

/// Escaping of workflow-command data and properties (a newline would end the command early).
fn gh_escape(s: &str, property: bool) -> String {
    let mut e = s.replace('%', "%25").replace('\r', "%0D").replace('\n', "%0A");
    if property {
        e = e.replace(':', "%3A").replace(',', "%2C");
    }
    e
}

fn message_with_rule(f: &Finding) -> String {
    match &f.rule {
        Some(r) => format!("rule {r:?}: {}", f.message),
        None => f.message.clone(),
    }
}

/// A minimal valid SARIF 2.1.0 log: one run, the code table as the driver's rules, one result
/// per finding.
fn sarif(findings: &[Finding]) -> serde_json::Value {
    use serde_json::json;
    let rules: Vec<_> = Code::ALL
        .iter()
        .map(|c| {
            let i = c.info();
            json!({
                "id": i.name,
                "shortDescription": {"text": i.title},
                "fullDescription": {"text": i.explanation},
                "defaultConfiguration": {"level": i.level.as_str()},
            })
        })
        .collect();
    let results: Vec<_> = findings.iter().map(sarif_result).collect();
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "trapline",
                "version": env!("CARGO_PKG_VERSION"),
                "rules": rules,
            }},
            "results": results,
        }],
    })
}

fn sarif_result(f: &Finding) -> serde_json::Value {
    use serde_json::json;
    let mut location = json!({"artifactLocation": {"uri": sarif_uri(&f.file)}});
    if f.line > 0 {
        location["region"] = json!({"startLine": f.line, "startColumn": f.col.max(1)});
    }
    json!({
        "ruleId": f.code,
        "ruleIndex": Code::ALL.iter().position(|&c| c == f.code).unwrap_or(0),
        "level": f.severity.as_str(),
        "message": {"text": message_with_rule(f)},
        "locations": [{"physicalLocation": location}],
    })
}

/// Code scanning resolves relative URIs against the repository root, so paths under the
/// current directory are made relative; separators are always `/`.
fn sarif_uri(file: &str) -> String {
    let p = Path::new(file);
    let rel = std::env::current_dir().ok().and_then(|cwd| p.strip_prefix(cwd).ok().map(Path::to_path_buf));
    match rel {
        Some(r) => r.to_string_lossy().replace('\\', "/"),
        None if p.is_absolute() => format!("file://{}", p.to_string_lossy().replace('\\', "/")),
        None => file.replace('\\', "/").trim_start_matches("./").to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_detection() {
        assert!(spans_fields("GET .* HTTP", false));
        assert!(spans_fields("a(b.+c)", false));
        assert!(spans_fields("x[^/]*y", false));
        assert!(!spans_fields(r"GET [^ ]* HTTP", false));
        assert!(!spans_fields(r"\.\*", false));
        assert!(!spans_fields(r"a.{0,20}b", false));
        assert!(!spans_fields(r"\S+", false));
    }

    #[test]
    fn attack_tag_shapes() {
        for ok in ["t1190", "t1059.001", "ta0001", "ta0043", "g0016", "s0002", "t9999", "initial-access", "stealth"] {
            assert!(attack_tag_ok(ok), "{ok}");
        }
        for bad in ["T1190", "t190", "t9999x", "t1059.1", "t1059.0011", "ta1001", "ta001", "g16", "initial_access", ""]
        {
            assert!(!attack_tag_ok(bad), "{bad}");
        }
    }

    #[test]
    fn positions_are_split_from_config_errors() {
        assert_eq!(split_position("3:7: unknown field `x`"), (3, 7, "unknown field `x`"));
        assert_eq!(split_position("source \"a\": no paths"), (0, 0, "source \"a\": no paths"));
    }

    #[test]
    fn github_escapes() {
        assert_eq!(gh_escape("a:b,c%\n", true), "a%3Ab%2Cc%25%0A");
        assert_eq!(gh_escape("a:b", false), "a:b");
    }
}
