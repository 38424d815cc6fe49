//! Lint checks of a rule against the world it runs in: fields no format of the rule produces
//! (TL106), and, with a config, `sources:` naming no configured source (TL107), rules that
//! apply to none of its sources (TL109, a note: a shipped pack often holds rules for logs a
//! given host does not have), per-rule XDR settings for rule ids that do not exist (TL110) and
//! rules naming an action the config does not set up (TL111).
//!
//! The engine accepts any field name, because JSON lines and custom regex formats define their
//! own; a typo (`clientip`, `useragent`) therefore compiles and silently never matches. The
//! fixed formats declare what they fill ([`FormatKind::fields`]), custom regex formats their
//! named captures; a JSON format can carry any key, so a rule that may see JSON is never
//! flagged.

use std::collections::BTreeSet;

use super::{Code, Finding, walk};
use crate::config;
use crate::parse::{FormatKind, std_fields};
use crate::rule::{Loaded, LoadedRule};

/// The built-in formats with a fixed set of fields, assumed for a rule without `formats:` when
/// no config says which formats are in use.
const FIXED: &[&str] = &["combined", "common", "apache_error", "syslog"];

/// What a format can produce.
enum Produces {
    /// Any field name (JSON lines).
    Open,
    Fixed(BTreeSet<String>),
}

pub(super) fn check(loaded: &Loaded, lr: &LoadedRule, cfg: Option<&config::Loaded>, out: &mut Vec<Finding>) {
    let rule = &lr.rule;
    let Some((mut known, formats)) = known_fields(loaded, lr, cfg, out) else { return };
    // The rule's own `extract` captures are fields of the rule whatever the format.
    let captures: BTreeSet<String> = rule
        .extract
        .iter()
        .filter_map(|x| regex::Regex::new(&x.regex).ok())
        .flat_map(|re| re.capture_names().flatten().map(str::to_string).collect::<Vec<_>>())
        .collect();
    known.extend(captures.iter().cloned());
    for (path, name, code) in used_fields(lr) {
        if known.contains(&name) {
            continue;
        }
        let hint = field_suggestion(&name, &known).map(|s| format!(" (did you mean {s:?}?)")).unwrap_or_default();
        let msg = if rule.formats.is_empty() && cfg.is_none() {
            format!(
                "no built-in format with fixed fields ({}) produces field {name:?}{hint}; if the rule is meant for \
                 JSON or custom logs, say so with `formats:`",
                FIXED.join(", ")
            )
        } else {
            format!("none of the rule's formats ({}) produces field {name:?}{hint}", formats.join(", "))
        };
        let msg = if captures.is_empty() {
            msg
        } else {
            let list: Vec<&str> = captures.iter().map(String::as_str).collect();
            format!("{msg}, and the rule's extract captures only {}", list.join(", "))
        };
        out.push(Finding::new(code, loaded.rule_error(lr, &path, msg)));
    }
}

/// A sequence step's `key` fields that none of the step's formats produces (TL012): the
/// step would never join. The step's formats are its `formats:`, else (with a config) those of
/// the sources it applies to, else the fixed built-in formats.
pub(super) fn sequence_keys(loaded: &Loaded, lr: &LoadedRule, cfg: Option<&config::Loaded>, out: &mut Vec<Finding>) {
    let Some(seq) = &lr.rule.sequence else { return };
    for (s, step) in seq.steps.iter().enumerate() {
        let formats: Vec<String> = if !step.formats.is_empty() {
            step.formats.clone()
        } else if let Some(c) = cfg {
            let names: BTreeSet<String> = c
                .config
                .sources
                .iter()
                .filter(|src| step.sources.is_empty() || step.sources.contains(&src.name))
                .filter(|src| src.kind != crate::config::SourceKind::Webroot || step.sources.contains(&src.name))
                .map(|src| src.format_name().to_string())
                .collect();
            if names.is_empty() {
                continue;
            }
            names.into_iter().collect()
        } else {
            FIXED.iter().map(|s| s.to_string()).collect()
        };
        let Some(known) = fields_of(&formats, cfg) else { continue };
        let many = matches!(step.key, crate::rule::SequenceKey::Many(_));
        for (k, f) in step.key.fields().iter().enumerate() {
            let name = f.name();
            if known.contains(name) {
                continue;
            }
            let mut path = format!("sequence.steps[{s}].key");
            if many {
                path.push_str(&format!("[{k}]"));
            }
            if matches!(f, crate::rule::KeyField::Full { .. }) {
                path.push_str(".field");
            }
            let hint = field_suggestion(name, &known).map(|s| format!(" (did you mean {s:?}?)")).unwrap_or_default();
            let msg = format!(
                "none of the step's formats ({}) produces key field {name:?}{hint}: the step never joins",
                formats.join(", ")
            );
            out.push(Finding::new(Code::UnknownGroupField, loaded.rule_error(lr, &path, msg)));
        }
    }
}

/// The fields the formats produce (with `line`); `None` when one of them can carry any field
/// (JSON, a custom format without a regex) or is unknown (a TL004 already).
fn fields_of(formats: &[String], cfg: Option<&config::Loaded>) -> Option<BTreeSet<String>> {
    let mut known = BTreeSet::new();
    for f in formats {
        match produces(f, cfg) {
            Some(Produces::Fixed(set)) => known.extend(set),
            _ => return None,
        }
    }
    known.insert("line".to_string());
    Some(known)
}

/// The fields the formats a rule runs on produce (with `line`), and those formats; `None` when
/// any field may occur (JSON, an unknown format) or the rule runs nowhere.
fn known_fields(
    loaded: &Loaded,
    lr: &LoadedRule,
    cfg: Option<&config::Loaded>,
    out: &mut Vec<Finding>,
) -> Option<(BTreeSet<String>, Vec<String>)> {
    let rule = &lr.rule;
    let in_scope = cfg.map(|c| sources_in_scope(loaded, lr, c, out));
    let formats: Vec<String> = match in_scope {
        _ if !rule.formats.is_empty() => rule.formats.clone(),
        Some(Some(f)) => f,
        Some(None) => return None, // runs nowhere: TL107 said so
        None => FIXED.iter().map(|s| s.to_string()).collect(),
    };
    // None: open (JSON), or an unknown format (already a TL004).
    let known = fields_of(&formats, cfg)?;
    Some((known, formats))
}

/// Fields named by overrides' and shared exceptions that no format of any rule they apply to
/// produces (TL106): such an exception never holds anything back. (A rule's own `except` is
/// checked with the rule.) A sequence's steps name their own formats; exceptions of sequence
/// rules are not checked.
pub(super) fn exceptions(loaded: &Loaded, cfg: Option<&config::Loaded>, out: &mut Vec<Finding>) {
    for (i, e) in loaded.exceptions.iter().enumerate() {
        if e.kind == crate::rule::ExceptionKind::Own {
            continue;
        }
        let mut known = BTreeSet::new();
        let mut open = false;
        for lr in loaded.rules.iter().filter(|lr| lr.exceptions.contains(&i)) {
            match known_fields(loaded, lr, cfg, &mut Vec::new()) {
                Some((k, _)) if lr.rule.sequence.is_none() => known.extend(k),
                _ => open = true,
            }
        }
        if open || known.is_empty() {
            continue;
        }
        walk(&e.condition, &e.at, &mut |c, path| {
            let Some(name) = c.field.as_ref().filter(|f| !known.contains(*f)) else { return };
            let hint = field_suggestion(name, &known).map(|s| format!(" (did you mean {s:?}?)")).unwrap_or_default();
            let msg = format!(
                "exception {:?}: no format of the rules it applies to produces field {name:?}{hint}, so it never \
                 holds anything back",
                e.name
            );
            out.push(Finding::new(Code::UnknownField, loaded.error_at(e.file, &format!("{path}.field"), None, msg)));
        });
    }
}

/// With a config: reports `sources:` entries that name no configured source (TL107) and a rule
/// that applies to no source at all (TL109). Returns the formats of the sources the rule applies to,
/// `None` when there are none.
fn sources_in_scope(
    loaded: &Loaded,
    lr: &LoadedRule,
    cfg: &config::Loaded,
    out: &mut Vec<Finding>,
) -> Option<Vec<String>> {
    let rule = &lr.rule;
    let sources = &cfg.config.sources;
    let names: Vec<&str> = sources.iter().map(|s| s.name.as_str()).collect();
    for (i, s) in rule.sources.iter().enumerate() {
        if !names.contains(&s.as_str()) {
            let msg = format!("no source named {s:?} in {} (sources: {})", cfg.path.display(), names.join(", "));
            out.push(Finding::new(Code::UnknownSource, loaded.rule_error(lr, &format!("sources[{i}]"), msg)));
        }
    }
    let formats: BTreeSet<String> = sources
        .iter()
        .filter(|s| rule.sources.is_empty() || rule.sources.contains(&s.name))
        .filter(|s| match s.kind {
            // File changes go only to rules that name the format or the source.
            crate::config::SourceKind::Webroot => {
                rule.formats.iter().any(|f| f == s.format_name()) || rule.sources.contains(&s.name)
            }
            crate::config::SourceKind::Log | crate::config::SourceKind::Nats => {
                rule.formats.is_empty() || rule.formats.iter().any(|f| f == s.format_name())
            }
        })
        .map(|s| s.format_name().to_string())
        .collect();
    if formats.is_empty() && rule.enabled && !sources.is_empty() {
        let list: Vec<String> = sources.iter().map(|s| format!("{} ({})", s.name, s.format_name())).collect();
        let at = if rule.formats.is_empty() { "sources" } else { "formats" };
        let msg = format!(
            "the rule applies to none of the sources of {}, so it never runs: {}",
            cfg.path.display(),
            list.join(", ")
        );
        out.push(Finding::new(Code::NoSource, loaded.rule_error(lr, at, msg)));
    }
    (!formats.is_empty()).then(|| formats.into_iter().collect())
}

/// What format `name` produces; `None` for an unknown name.
fn produces(name: &str, cfg: Option<&config::Loaded>) -> Option<Produces> {
    if let Some(def) = cfg.and_then(|c| c.config.formats.get(name)) {
        return Some(match &def.regex {
            Some(re) => {
                // An invalid format regex is the config check's finding; claim nothing here.
                let Ok(re) = regex::Regex::new(re) else { return Some(Produces::Open) };
                Produces::Fixed(re.capture_names().flatten().map(str::to_string).collect())
            }
            None => Produces::Open,
        });
    }
    let kind = FormatKind::from_name(name)?;
    Some(match kind.fields() {
        Some(ids) => Produces::Fixed(ids.iter().map(|id| std_fields::NAMES[*id as usize].to_string()).collect()),
        None => Produces::Open,
    })
}

/// Every field name the rule refers to, with the YAML path of the reference and the code of a
/// finding about it: a test of a field that is never there is a warning (TL106), a grouping
/// field that is never there changes what the rule counts (TL012, an error).
fn used_fields(lr: &LoadedRule) -> Vec<(String, String, Code)> {
    let rule = &lr.rule;
    let mut out = Vec::new();
    // A sequence's steps name their own formats: its `except` (on the last step) is not
    // checked against the rule's.
    let except = if rule.sequence.is_none() { &rule.except } else { &None };
    for (cond, root) in [(&rule.condition, "match"), (except, "except")] {
        let Some(cond) = cond else { continue };
        walk(cond, root, &mut |c, path| {
            if let Some(f) = &c.field {
                out.push((format!("{path}.field"), f.clone(), Code::UnknownField));
            }
        });
    }
    if let Some(t) = &rule.threshold {
        let group = t.group_by.iter().enumerate();
        out.extend(group.map(|(i, f)| (format!("threshold.group_by[{i}]"), f.clone(), Code::UnknownGroupField)));
        if let Some(d) = &t.distinct {
            out.push(("threshold.distinct".to_string(), d.clone(), Code::UnknownGroupField));
        }
    }
    if let Some(g) = rule.suppress.as_ref().and_then(|s| s.group_by.as_ref()) {
        let group = g.iter().enumerate();
        out.extend(group.map(|(i, f)| (format!("suppress.group_by[{i}]"), f.clone(), Code::UnknownGroupField)));
    }
    out.extend(
        rule.extract
            .iter()
            .enumerate()
            .filter_map(|(i, x)| Some((format!("extract[{i}].field"), x.field.clone()?, Code::UnknownField))),
    );
    out
}

/// The closest known field name, when it is close enough to be a plausible typo.
fn field_suggestion<'a>(name: &str, known: &'a BTreeSet<String>) -> Option<&'a str> {
    suggestion_among(name, known.iter().map(String::as_str).chain(std_fields::NAMES.iter().copied()))
}

/// The closest known rule id, when it is close enough to be a plausible typo.
fn suggestion<'a>(name: &str, known: &'a BTreeSet<String>) -> Option<&'a str> {
    suggestion_among(name, known.iter().map(String::as_str))
}

fn suggestion_among<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .map(|k| (strsim::damerau_levenshtein(&name.to_ascii_lowercase(), k), k))
        .filter(|(d, k)| *d > 0 && *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// With a config: `actions.xdr.rules.<id>` entries for ids no rule file defines (TL110, in the
/// config), and rules that name the XDR action while the config does not set it up (TL111).
/// Rules that are written but could not be read (`unreadable`) still count as defined: their
/// own error is the finding, not the settings naming them.
pub(super) fn config_refs(
    loaded: &Loaded,
    unreadable: &BTreeSet<String>,
    cfg: &config::Loaded,
    out: &mut Vec<Finding>,
) {
    use crate::action::xdr::ACTION_NAME;
    let xdr = cfg.config.actions.xdr.as_ref();
    let mut ids: BTreeSet<String> = loaded.rules.iter().map(|r| r.rule.id.clone()).collect();
    ids.extend(unreadable.iter().cloned());
    if let Some(x) = xdr {
        let text = crate::assets::read_to_string(&cfg.path).unwrap_or_default();
        for id in x.rules.keys().filter(|id| !ids.contains(*id)) {
            let pos = crate::rule::locate::key(&text, &format!("actions.xdr.rules.{id}"));
            let hint = suggestion(id, &ids).map(|s| format!(" (did you mean {s:?}?)")).unwrap_or_default();
            let msg = format!("actions.xdr.rules names rule {id:?}, which no rule file defines{hint}");
            out.push(Finding::at(
                Code::UnknownXdrRule,
                &cfg.path,
                pos.map_or(0, |p| p.line),
                pos.map_or(0, |p| p.col),
                msg,
            ));
        }
    }
    if xdr.is_none() {
        for lr in &loaded.rules {
            for (i, a) in lr.rule.actions.iter().enumerate().filter(|(_, a)| *a == ACTION_NAME) {
                let msg = format!(
                    "the rule names the {a:?} action, which {} does not set up (`actions.xdr`): `run` skips it",
                    cfg.path.display()
                );
                out.push(Finding::new(Code::UnknownAction, loaded.rule_error(lr, &format!("actions[{i}]"), msg)));
            }
        }
    }
}
