//! Wiring from configuration to a ready pipeline: config → parsers → compiled rule set.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Result, anyhow, bail};

use crate::config;
use crate::engine::prefilter::Bits;
use crate::engine::{CompileOptions, RuleSet, SourceInfo};
use crate::parse::{FieldRegistry, Parser};
use crate::rule;

/// One configured input, ready to match.
pub struct SourceSetup {
    pub name: String,
    pub parser: Parser,
    pub applicable: Bits,
}

/// A compiled rule set and the parsers of the sources it serves.
pub struct Setup {
    pub rules: Arc<RuleSet>,
    pub sources: Vec<SourceSetup>,
    /// Masks secrets in detections (the config's `redact:`, else the default list).
    pub redact: super::redact::Redactor,
    /// One detection per attack class per line (`alerts.one_per_class`, default true).
    pub one_per_class: bool,
    /// The content rules and YARA rules of the same rule paths, when a web root is configured:
    /// files the web-root source sees created or modified are scanned with them. Built and
    /// swapped with the rest, so a reload that breaks a YARA file keeps the running set.
    pub content: Option<Arc<crate::content::Scanner>>,
}

impl SourceSetup {
    pub fn info(&self, path: &str) -> SourceInfo {
        SourceInfo {
            host: None,
            name: self.name.as_str().into(),
            path: path.into(),
            format: self.parser.name.as_str().into(),
        }
    }
}

/// A source that is not in a config (scan of files with `--format`).
pub struct AdHoc<'a> {
    pub name: &'a str,
    pub format: &'a str,
    pub timezone: Option<&'a str>,
}

/// Loads the rules under `rule_paths` and builds parsers for every source of `cfg` (or for
/// the ad-hoc sources when given).
pub fn build(cfg: Option<&config::Loaded>, rule_paths: &[PathBuf], adhoc: &[AdHoc<'_>]) -> Result<Setup> {
    let mut registry = FieldRegistry::default();
    let formats = cfg.map(|c| c.config.formats.clone()).unwrap_or_default();
    let global_tz = cfg.map_or("UTC", |c| c.config.timezone.as_str());
    let mut parsers = Vec::new();
    let specs: Vec<(String, String, Option<String>)> = if adhoc.is_empty() {
        cfg.map(|c| {
            c.config.sources.iter().map(|s| (s.name.clone(), s.format_name().to_string(), s.timezone.clone())).collect()
        })
        .unwrap_or_default()
    } else {
        adhoc.iter().map(|a| (a.name.to_string(), a.format.to_string(), a.timezone.map(str::to_string))).collect()
    };
    for (name, format, tz) in &specs {
        let time = crate::parse::TimeSettings::from_zone(tz.as_deref().unwrap_or(global_tz))
            .map_err(|e| anyhow!("source {name:?}: {e}"))?;
        let p = if format == crate::source::webroot::FORMAT {
            // File changes are fields only: every one of them is kept, so that a detection
            // names the path and the change whatever its rule looked at.
            for f in crate::source::webroot::FIELDS {
                registry.intern(f);
            }
            crate::source::webroot::parser(time)
        } else {
            config::parser_for(format, &formats, time, &mut registry).map_err(|e| anyhow!("source {name:?}: {e}"))?
        };
        parsers.push((name.clone(), p));
    }
    let loaded = rule::load::load_paths(rule_paths)?;
    let mut opts = compile_options();
    opts.formats.extend(formats.keys().cloned());
    let rules = Arc::new(RuleSet::compile(&loaded, &opts, registry)?);
    // A rule set that can never detect anything is a mistake (wrong `rules:` path, a
    // directory emptied by a deployment), not a configuration: refuse it at start, and on
    // reload keep the running rules instead of silently detecting nothing.
    if !rules.rules.iter().any(|r| r.enabled) {
        let paths: Vec<String> = rule_paths.iter().map(|p| p.display().to_string()).collect();
        let paths = paths.join(", ");
        if loaded.rules.is_empty() {
            bail!("no rules in {paths} ({} rule files found): nothing to detect", loaded.files.len());
        }
        bail!("no enabled rules in {paths}: all {} rules are disabled", loaded.rules.len());
    }
    let sources = parsers
        .into_iter()
        .map(|(name, mut parser)| {
            parser.bind(&rules.registry);
            let mut applicable = rules.applicable(&name, &parser.name);
            if parser.name == crate::source::webroot::FORMAT {
                // A rule written for log lines (no `formats:`) must not read a file's path as
                // a requested one: file changes go only to rules that ask for them.
                applicable = rules.applicable_explicitly(&name, &parser.name);
            }
            SourceSetup { name, parser, applicable }
        })
        .collect::<Vec<_>>();
    let sources = inert_sequences(&rules, sources);
    let redact = super::redact::Redactor::new(&cfg.map(|c| c.config.redact.clone()).unwrap_or_default());
    let one_per_class = cfg.is_none_or(|c| c.config.alerts.one_per_class);
    let content = match cfg {
        Some(c) if !crate::source::webroot::configured(c).is_empty() => {
            Some(Arc::new(crate::content::Scanner::from_paths(rule_paths, &[])?))
        }
        _ => None,
    };
    Ok(Setup { rules, sources, redact, one_per_class, content })
}

/// A sequence whose first step no source here can produce can never complete: its later
/// steps are not evaluated at all (the shipped "web shell planted, then requested" rule costs
/// nothing on a server without a web root).
fn inert_sequences(rules: &RuleSet, mut sources: Vec<SourceSetup>) -> Vec<SourceSetup> {
    for (i, r) in rules.rules.iter().enumerate() {
        let Some(seq) = r.sequence.as_ref().filter(|s| s.step == 0) else { continue };
        if sources.iter().any(|s| s.applicable.get(i)) {
            continue;
        }
        for s in &mut sources {
            for k in i..i + seq.steps {
                s.applicable.clear(k);
            }
        }
    }
    sources
}

/// What the rule compiler must know of the world outside the rule files: the formats and the
/// actions a rule may name. The engine knows neither by name; the registry of actions does.
pub fn compile_options() -> CompileOptions {
    let mut opts = CompileOptions::default();
    opts.actions.extend(crate::action::NAMES.iter().map(|n| n.to_string()));
    opts.formats.insert(crate::source::webroot::FORMAT.to_string());
    opts
}
