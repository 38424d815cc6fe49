//! `trapline.yml`: sources, formats, directories and action settings.
//!
//! Relative paths are resolved against the directory of the config file, so a config works
//! from any working directory. `${VAR}` and `${VAR:-default}` are replaced from the environment
//! before parsing, which is how secrets get in without being written down.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::parse::{FieldRegistry, FormatKind, Parser, TimeSettings};

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Rule files or directories (all `*.yml`/`*.yaml` below them).
    #[serde(default = "default_rules")]
    pub rules: Vec<PathBuf>,
    /// Template directory (used by template-rendering actions).
    #[serde(default = "default_templates")]
    pub templates: PathBuf,
    /// Where offsets and other state are kept.
    #[serde(default = "default_state")]
    pub state_dir: PathBuf,
    /// Time zone of timestamps that carry none (syslog, Apache error log), e.g. `UTC`,
    /// `Europe/Paris`. Sources can override it.
    #[serde(default = "default_tz")]
    pub timezone: String,
    /// Longer lines are cut to this many bytes (and flagged), never dropped.
    #[serde(default = "default_max_line")]
    pub max_line_bytes: usize,
    /// Most group keys tracked per threshold or suppression rule.
    #[serde(default = "default_max_keys")]
    pub max_keys: usize,
    /// Custom formats, by name.
    #[serde(default)]
    pub formats: BTreeMap<String, FormatDef>,
    /// The logs to watch.
    #[serde(default)]
    pub sources: Vec<SourceDef>,
    /// Action settings.
    #[serde(default)]
    pub actions: crate::action::ActionsDef,
    /// Roll-ups: one activity record per attacker (opened, escalated, closed) instead of one
    /// alert per line, and how many per-line detections the log output keeps.
    #[serde(default)]
    pub alerts: crate::rollup::AlertsDef,
    /// Secrets masked in what detections carry (out.txt, console, XDR): values of these
    /// parameters in query strings, forms, cookies and JSON. Rules still see the real values.
    #[serde(default)]
    pub redact: crate::pipeline::redact::RedactDef,
    /// The HTTP server of `trapline run`: metrics and the API (off unless `listen` is set).
    #[serde(default)]
    pub http: crate::http::HttpDef,
    /// The history of detections (`state_dir/history.sqlite`): retention.
    #[serde(default)]
    pub history: crate::history::HistoryDef,
    /// Publish every event read to NATS JetStream (several machines feeding shared
    /// workers); absent: not published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nats: Option<crate::action::nats::NatsDef>,
    /// Worker mode (sources of `type: nats`): partition ownership, acknowledgements and where
    /// detections are published. Used only with such sources.
    #[serde(default)]
    pub worker: crate::source::nats::WorkerDef,
    /// User variables, available to templates as `vars` (e.g. the honeypot's address).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub variables: BTreeMap<String, serde_json::Value>,
}

fn default_rules() -> Vec<PathBuf> {
    vec![PathBuf::from("rules")]
}
fn default_templates() -> PathBuf {
    PathBuf::from("templates")
}
fn default_state() -> PathBuf {
    PathBuf::from("state")
}
fn default_tz() -> String {
    "UTC".to_string()
}
fn default_max_line() -> usize {
    1 << 20
}
fn default_max_keys() -> usize {
    crate::engine::DEFAULT_MAX_KEYS
}

/// A custom format: a regex with named captures, or JSON lines with a key mapping.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FormatDef {
    /// Regex (Rust syntax) with named captures; each capture becomes a field of that name.
    /// Use standard names (`client_ip`, `path`, `status`, `time`, ...) where they fit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    /// strftime-style format of the `time` capture (e.g. `%Y-%m-%d %H:%M:%S`). Without it,
    /// common layouts (RFC 3339, CLF, syslog, epoch) are recognised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_format: Option<String>,
    /// JSON lines: map of field name → dotted key path in the object (e.g.
    /// `client_ip: remote_addr`). Other field names are looked up as keys of the same name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<BTreeMap<String, String>>,
}

/// Where a source starts reading a file that has no checkpoint yet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Start {
    /// Only lines written from now on (files that appear later are still read whole).
    #[default]
    End,
    /// Everything already in the file.
    Beginning,
}

/// What a source watches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// Lines of log files.
    #[default]
    Log,
    /// The files under web roots: every change of a file's state (created, modified, deleted,
    /// renamed, attributes) is an event, checked against a baseline kept in the state
    /// directory. Rules see it with format `webroot`.
    Webroot,
    /// Worker mode: the events other machines published to NATS JetStream (their `nats`
    /// output), consumed from the stream the `nats:` section names. A message whose
    /// `Trapline-Source` is this source's name is evaluated as this source (its format, the
    /// rules' `sources:`); one of a source not named here, as the first `nats` source. No
    /// `paths`.
    Nats,
}

/// One watched log, or one set of web roots (`type: webroot`).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceDef {
    /// Name used in detections and by rules' `sources:`.
    pub name: String,
    /// `log` (default) or `webroot`.
    #[serde(rename = "type", default)]
    pub kind: SourceKind,
    /// Paths or globs (`/var/log/nginx/*.access.log`); for a web root, its root directories;
    /// none for `type: nats`.
    #[serde(default)]
    pub paths: Vec<String>,
    /// Format name: `combined`, `common`, `apache_error`, `syslog`, `json`, `raw`, or a
    /// custom format from `formats:`.
    #[serde(default = "default_format")]
    pub format: String,
    #[serde(default)]
    pub start: Start,
    /// Overrides the global `timezone` for this source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// Web root only: classes of files by glob, relative to the root (`uploads/**`); the
    /// first class whose globs match names the file's `class` field (else `other`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub classes: Vec<FileClassDef>,
    /// Web root only: globs (relative to the root) of files and directories left alone, with
    /// everything below them: not hashed, not reported, and no watch is added inside an
    /// ignored directory.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignore: Vec<String>,
    /// Web root only: files larger than this many bytes are not hashed (their size, times,
    /// owner and mode are still compared). Default 64 MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_hash_bytes: Option<u64>,
    /// Web root only: at most this many bytes hashed per second, so that a full scan does not
    /// take the disk from the web server. Default 64 MiB; 0: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_bytes_per_second: Option<u64>,
    /// Web root only: how often the whole tree is compared with the baseline, whatever the
    /// file system notifications said. Default `1h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rescan: Option<crate::rule::model::DurationText>,
    /// Web root only: compare the tree every `poll_interval` instead of using notifications
    /// (network file systems; also chosen by itself when the watch limit is too small).
    #[serde(default)]
    pub poll: bool,
    /// Web root only: how often the tree is compared when polling. Default `5s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll_interval: Option<crate::rule::model::DurationText>,
    /// Web root only: a file modified again (or its attributes changed again) within this time
    /// of a reported change gives no new event: one event per window for files that flap.
    /// Default `1m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flap_window: Option<crate::rule::model::DurationText>,
    /// Web root only: maintenance windows (deploys). Changes made inside one are recorded in
    /// the baseline, not reported.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub maintenance: Vec<crate::rule::model::TimeWindow>,
    /// Web root only: the URL path the root is served under (default `/`; `/blog` for a site
    /// behind `Alias /blog ...`). Each file's `url_path` field is this plus its path under the
    /// root: what an access log shows when the file is requested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_prefix: Option<String>,
}

/// A class of files of a web root.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileClassDef {
    /// The class name rules see in `class` (`uploads`, `code`, `static`).
    pub name: String,
    /// Globs relative to the root (`wp-content/uploads/**`, `**/*.php`).
    pub paths: Vec<String>,
}

fn default_format() -> String {
    "combined".to_string()
}

impl Config {
    /// Whether this is a worker: its sources are the NATS stream (`type: nats`).
    pub fn worker_mode(&self) -> bool {
        self.sources.iter().any(|s| s.kind == SourceKind::Nats)
    }
}

impl SourceDef {
    /// The first web-root-only setting given, for a log source that has one.
    fn webroot_key(&self) -> Option<&'static str> {
        [
            (!self.classes.is_empty(), "classes"),
            (!self.ignore.is_empty(), "ignore"),
            (self.max_hash_bytes.is_some(), "max_hash_bytes"),
            (self.hash_bytes_per_second.is_some(), "hash_bytes_per_second"),
            (self.rescan.is_some(), "rescan"),
            (self.poll, "poll"),
            (self.poll_interval.is_some(), "poll_interval"),
            (self.flap_window.is_some(), "flap_window"),
            (!self.maintenance.is_empty(), "maintenance"),
            (self.url_prefix.is_some(), "url_prefix"),
        ]
        .into_iter()
        .find_map(|(set, key)| set.then_some(key))
    }

    /// The format name rules see for this source's events.
    pub fn format_name(&self) -> &str {
        match self.kind {
            SourceKind::Log | SourceKind::Nats => &self.format,
            SourceKind::Webroot => crate::source::webroot::FORMAT,
        }
    }
}

/// A loaded config and the file it came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub path: PathBuf,
    /// Directory relative paths are resolved against.
    pub base: PathBuf,
}

impl Loaded {
    /// Reads and validates a config file.
    pub fn from_file(path: &Path) -> Result<Loaded> {
        let text =
            crate::assets::read_to_string(path).with_context(|| format!("cannot read config {}", path.display()))?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let base = if base.as_os_str().is_empty() { PathBuf::from(".") } else { base };
        let config = parse(&text, &path.display().to_string())?;
        let l = Loaded { config, path: path.to_path_buf(), base };
        l.validate(&text)?;
        Ok(l)
    }

    /// `file:line:col` of the value at `path` (a YAML path such as `actions.xdr.window`), or
    /// just the file name when it cannot be found. Reads the file again: for error messages only.
    pub fn position(&self, path: &str) -> String {
        let file = self.path.display();
        let text = crate::assets::read_to_string(&self.path).unwrap_or_default();
        match crate::rule::locate::locate(&text, path) {
            Some(p) => format!("{file}:{}:{}", p.line, p.col),
            None => file.to_string(),
        }
    }

    /// `p` resolved against the config's directory. Built-in paths (`<built-in>/rules`) stay as
    /// they are. In the built-in config, a relative path names the built-in file or directory
    /// when there is one (its `rules` and `templates`), and otherwise the current directory (its
    /// state, output and demo source), as if the config were `./trapline.yml`.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() || crate::assets::is_builtin(p) || self.base == Path::new(".") {
            return p.to_path_buf();
        }
        let joined = self.base.join(p);
        if crate::assets::is_builtin(&self.base) && !crate::assets::builtin_exists(&joined) {
            return p.to_path_buf();
        }
        joined
    }

    /// A glob or path resolved against the config's directory (as [`Loaded::resolve`]).
    pub fn resolve_pattern(&self, p: &str) -> String {
        self.resolve(Path::new(p)).display().to_string()
    }

    /// True for the built-in config.
    pub fn is_builtin(&self) -> bool {
        crate::assets::is_builtin(&self.path)
    }

    /// Checks what serde cannot: names, formats and time zones. Each error starts with
    /// `file:line:col` of the offending value in `text` (the file as written).
    fn validate(&self, text: &str) -> Result<()> {
        let c = &self.config;
        let file = self.path.display().to_string();
        // Position of the value at `path`, found only when there is an error to report.
        let at = |path: &str| match crate::rule::locate::locate(text, path) {
            Some(p) => format!("{file}:{}:{}", p.line, p.col),
            None => file.clone(),
        };
        let key_at = |path: &str| match crate::rule::locate::key(text, path) {
            Some(p) => format!("{file}:{}:{}", p.line, p.col),
            None => at(path),
        };
        TimeSettings::from_zone(&c.timezone).map_err(|e| anyhow!("{}: timezone: {e}", at("timezone")))?;
        c.worker.validate().map_err(|(key, e)| anyhow!("{}: worker.{key}: {e}", at(&format!("worker.{key}"))))?;
        if let Some(n) = &c.nats {
            n.validate().map_err(|(key, e)| anyhow!("{}: nats.{key}: {e}", at(&format!("nats.{key}"))))?;
        }
        // A worker: section where no source reads the stream would be silently ignored: most
        // likely a worker's config whose source lost its `type: nats`.
        if !c.worker_mode()
            && let Some(p) = crate::rule::locate::key(text, "worker")
        {
            bail!(
                "{file}:{}:{}: worker: applies only to sources of `type: nats` (a worker reading the stream); no source here is one",
                p.line,
                p.col
            );
        }
        let mut names = std::collections::HashSet::new();
        for (i, s) in c.sources.iter().enumerate() {
            let src = |sub: &str| at(&format!("sources[{i}].{sub}"));
            if !names.insert(&s.name) {
                bail!("{}: source name {:?} is used twice", src("name"), s.name);
            }
            if s.kind == SourceKind::Nats {
                if !s.paths.is_empty() {
                    bail!(
                        "{}: source {:?}: a `nats` source has no paths (it reads the stream of the nats: section)",
                        src("paths"),
                        s.name
                    );
                }
                if c.nats.is_none() {
                    bail!(
                        "{}: source {:?}: a `nats` source needs the nats: section (server and stream)",
                        key_at(&format!("sources[{i}].type")),
                        s.name
                    );
                }
                if c.sources.iter().any(|o| o.kind != SourceKind::Nats) {
                    bail!(
                        "{}: source {:?}: `nats` sources cannot be read beside files or web roots (a worker reads only the stream)",
                        key_at(&format!("sources[{i}].type")),
                        s.name
                    );
                }
            } else if s.paths.is_empty() {
                bail!("{}: source {:?} has no paths", src("paths"), s.name);
            }
            if s.kind == SourceKind::Webroot {
                self.validate_webroot(s, &src)?;
                continue;
            }
            if let Some(key) = s.webroot_key() {
                bail!(
                    "{}: source {:?}: {key} is for `type: webroot` sources",
                    key_at(&format!("sources[{i}].{key}")),
                    s.name
                );
            }
            if FormatKind::from_name(&s.format).is_none_or(|k| k == FormatKind::Custom)
                && !c.formats.contains_key(&s.format)
            {
                bail!(
                    "{}: source {:?}: unknown format {:?} (built-in: combined, common, apache_error, syslog, json, raw; or define it under formats:)",
                    src("format"),
                    s.name,
                    s.format
                );
            }
            if let Some(tz) = &s.timezone {
                TimeSettings::from_zone(tz)
                    .map_err(|e| anyhow!("{}: source {:?}: timezone: {e}", src("timezone"), s.name))?;
            }
        }
        for (name, f) in &c.formats {
            if FormatKind::from_name(name).is_some() {
                bail!(
                    "{}: formats: {name:?} is a built-in format name; choose another name",
                    key_at(&format!("formats.{name}"))
                );
            }
            if f.regex.is_some() == f.json.is_some() {
                bail!("{}: formats.{name}: give exactly one of regex or json", at(&format!("formats.{name}")));
            }
            if let Some(re) = &f.regex
                && let Err(e) = regex::Regex::new(re)
            {
                bail!("{}: formats.{name}: invalid regex: {e}", at(&format!("formats.{name}.regex")));
            }
        }
        Ok(())
    }

    /// The web-root settings of source `i` that need more than serde: roots that exist and
    /// are directories, globs that compile, time windows that make sense.
    fn validate_webroot(&self, s: &SourceDef, src: &dyn Fn(&str) -> String) -> Result<()> {
        if s.format != default_format() {
            bail!("{}: source {:?}: a web root has no format (its events are file changes)", src("format"), s.name);
        }
        for (j, p) in s.paths.iter().enumerate() {
            let root = self.resolve(Path::new(p));
            match std::fs::metadata(&root) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => bail!(
                    "{}: source {:?}: web root {} is not a directory",
                    src(&format!("paths[{j}]")),
                    s.name,
                    root.display()
                ),
                Err(e) => {
                    bail!("{}: source {:?}: web root {}: {e}", src(&format!("paths[{j}]")), s.name, root.display())
                }
            }
            if let Err(e) = std::fs::read_dir(&root) {
                bail!(
                    "{}: source {:?}: cannot read web root {}: {e}",
                    src(&format!("paths[{j}]")),
                    s.name,
                    root.display()
                );
            }
        }
        for (j, c) in s.classes.iter().enumerate() {
            for (k, g) in c.paths.iter().enumerate() {
                if let Err(e) = globset::Glob::new(g) {
                    bail!(
                        "{}: source {:?}: class {:?}: invalid glob: {e}",
                        src(&format!("classes[{j}].paths[{k}]")),
                        s.name,
                        c.name
                    );
                }
            }
        }
        for (j, g) in s.ignore.iter().enumerate() {
            if let Err(e) = globset::Glob::new(g) {
                bail!("{}: source {:?}: invalid ignore glob: {e}", src(&format!("ignore[{j}]")), s.name);
            }
        }
        for (j, w) in s.maintenance.iter().enumerate() {
            if let Err(e) = crate::engine::when::When::new(w) {
                bail!("{}: source {:?}: maintenance window: {e}", src(&format!("maintenance[{j}]")), s.name);
            }
        }
        Ok(())
    }

    /// Names of all formats rules may refer to.
    pub fn format_names(&self) -> std::collections::BTreeSet<String> {
        let mut s: std::collections::BTreeSet<String> = FormatKind::ALL.iter().map(|(n, _)| n.to_string()).collect();
        s.extend(self.config.formats.keys().cloned());
        s.insert(crate::source::webroot::FORMAT.to_string());
        s
    }

    /// A parser for format `name` in time zone `tz`, registering field names in `registry`.
    pub fn parser(&self, name: &str, tz: Option<&str>, registry: &mut FieldRegistry) -> Result<Parser> {
        let time = TimeSettings::from_zone(tz.unwrap_or(&self.config.timezone)).map_err(|e| anyhow!("{e}"))?;
        parser_for(name, &self.config.formats, time, registry)
    }
}

/// Builds a parser for a built-in or configured format.
pub fn parser_for(
    name: &str,
    formats: &BTreeMap<String, FormatDef>,
    time: TimeSettings,
    registry: &mut FieldRegistry,
) -> Result<Parser> {
    if let Some(def) = formats.get(name) {
        if let Some(re) = &def.regex {
            return Parser::custom(name, re, def.time_format.clone(), time, registry)
                .map_err(|e| anyhow!("format {name:?}: invalid regex: {e}"));
        }
        let mapping: Vec<(String, String)> = def.json.clone().unwrap_or_default().into_iter().collect();
        return Ok(Parser::json(name, &mapping, time, registry));
    }
    if name == crate::source::webroot::FORMAT {
        return Ok(crate::source::webroot::parser(time));
    }
    match FormatKind::from_name(name) {
        Some(FormatKind::Custom) | None => bail!("unknown format {name:?}"),
        Some(k) => Ok(Parser::builtin(k, time)),
    }
}

/// Substitutes `${VAR}` / `${VAR:-default}` and parses, with positioned errors.
pub fn parse(text: &str, file: &str) -> Result<Config> {
    // Before the parsers, whose time and stack grow with nesting depth.
    if let Err(p) = crate::rule::locate::check_depth(text, crate::rule::locate::MAX_DEPTH) {
        bail!(
            "{file}:{}:{}: collections nested more than {} levels deep",
            p.line,
            p.col,
            crate::rule::locate::MAX_DEPTH
        );
    }
    let text = expand_env(text, file)?;
    serde_yaml::from_str::<Config>(&text).map_err(|e| match e.location() {
        Some(l) => anyhow!("{file}:{}:{}: {}", l.line(), l.column(), strip_position(&e.to_string())),
        None => anyhow!("{file}: {e}"),
    })
}

fn strip_position(msg: &str) -> String {
    msg.find(" at line ").map_or(msg.to_string(), |i| msg[..i].to_string())
}

/// Replaces `${NAME}` and `${NAME:-default}` from the environment. `$${` escapes a literal `${`.
pub fn expand_env(text: &str, file: &str) -> Result<String> {
    let mut out = String::with_capacity(text.len());
    for (ln, line) in text.split_inclusive('\n').enumerate() {
        let mut rest = line;
        while let Some(i) = rest.find("${") {
            if rest[..i].ends_with('$') {
                out.push_str(&rest[..i - 1]);
                out.push_str("${");
                rest = &rest[i + 2..];
                continue;
            }
            out.push_str(&rest[..i]);
            let col = line.len() - rest.len() + i + 1;
            let Some(end) = rest[i..].find('}') else {
                bail!("{file}:{}:{col}: unclosed ${{", ln + 1);
            };
            let inner = &rest[i + 2..i + end];
            let (name, default) = match inner.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (inner, None),
            };
            match (std::env::var(name), default) {
                (Ok(v), _) => out.push_str(&v),
                (Err(_), Some(d)) => out.push_str(d),
                (Err(_), None) => bail!(
                    "{file}:{}:{col}: environment variable {name} is not set (use ${{{name}:-default}} for a default)",
                    ln + 1
                ),
            }
            rest = &rest[i + end + 1..];
        }
        out.push_str(rest);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_expansion() {
        // SAFETY: tests in this module do not read this variable concurrently.
        unsafe { std::env::set_var("TRAPLINE_TEST_X", "v") };
        assert_eq!(expand_env("a: ${TRAPLINE_TEST_X}\n", "f").unwrap(), "a: v\n");
        assert_eq!(expand_env("a: ${TRAPLINE_TEST_NOPE:-d}\n", "f").unwrap(), "a: d\n");
        assert_eq!(expand_env("a: $${X}\n", "f").unwrap(), "a: ${X}\n");
        let e = expand_env("x: 1\na: ${TRAPLINE_TEST_NOPE}\n", "f").unwrap_err().to_string();
        assert!(e.starts_with("f:2:4:"), "{e}");
    }

    #[test]
    fn validation_errors_are_positioned() {
        let check = |text: &str, want: &str| {
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("t.yml");
            std::fs::write(&p, text).unwrap();
            let e = format!("{:#}", Loaded::from_file(&p).unwrap_err());
            let want = format!("{}:{want}", p.display());
            assert!(e.starts_with(&want), "{e} (want {want})");
        };
        check("timezone: Mars/Base\n", "1:11: timezone:");
        let src = "sources:\n  - name: a\n    paths: [x]\n";
        check(&format!("{src}    format: nope\n"), "4:13: source \"a\": unknown format");
        check(&format!("{src}    timezone: Nowhere\n"), "4:15: source \"a\": timezone:");
        check(&format!("{src}  - name: a\n    paths: [y]\n"), "4:11: source name");
        check("sources:\n  - name: a\n    paths: []\n", "3:12: source \"a\" has no paths");
        check("formats:\n  combined: {regex: x}\n", "2:3: formats:");
        check("formats:\n  f: {time_format: x}\n", "2:6: formats.f: give exactly one");
        check("formats:\n  f:\n    regex: 'a(b'\n", "3:12: formats.f: invalid regex");
    }

    #[test]
    fn unknown_key_is_positioned() {
        let e = parse("sources:\n  - name: a\n    pathz: [x]\n", "t.yml").unwrap_err().to_string();
        assert!(e.starts_with("t.yml:3:"), "{e}");
    }
}
