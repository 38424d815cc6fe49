//! `trapline import sigma PATH... --out DIR`: Sigma rules for web servers converted into rule
//! files, one per rule ([`crate::authoring::sigma`] does the conversion).
//!
//! Every file is read and converted before anything is written: a Sigma file that is wrong
//! is an error with its position and nothing is written, so the output directory never holds
//! half an import. A rule that needs what access logs lack is listed on stderr with the reason
//! and not written. Each written rule gets inline examples (a line it matches, one it does
//! not) that have been run through the engine, so `trapline test` and `lint` check it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use super::EXIT_USAGE;
use crate::authoring::sigma::{self, Converted, Outcome};
use crate::rule::load::{self, SourceFile};
use crate::rule::{Rule, RuleFile};

#[derive(Debug, Args)]
pub struct ImportArgs {
    #[command(subcommand)]
    pub what: ImportWhat,
}

#[derive(Debug, Subcommand)]
pub enum ImportWhat {
    /// Sigma rules with `logsource.category: webserver`, one trapline rule file each.
    ///
    /// Rules that need what access logs lack (POST bodies, other headers, unsupported
    /// modifiers, aggregations) are listed on stderr with the reason and not converted.
    /// Exit codes: 0 done (also when rules were skipped), 2 a Sigma file is invalid (nothing
    /// is written) or the output cannot be written.
    Sigma(SigmaArgs),
}

#[derive(Debug, Args)]
pub struct SigmaArgs {
    /// Sigma rule files, or directories searched recursively for `*.yml` / `*.yaml`.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Directory to write the rule files to (created when missing).
    #[arg(long)]
    pub out: PathBuf,
    /// Where the Sigma rules are published, e.g.
    /// `https://github.com/SigmaHQ/sigma/blob/master/rules/web`: each rule's link is this plus
    /// its path below the directory given. Without it the link is the path read. The link, the
    /// author and the Sigma id are kept in each rule's description (the Detection Rule License
    /// asks for them).
    #[arg(long, value_name = "URL")]
    pub source_url: Option<String>,
    /// Log formats the rules apply to (repeat for several).
    #[arg(long = "format", value_name = "NAME", default_values_t = ["combined".to_string(), "common".to_string()])]
    pub formats: Vec<String>,
    /// Overwrite rule files that already exist in the output directory.
    #[arg(long)]
    pub force: bool,
}

pub fn import(a: ImportArgs) -> Result<i32> {
    match a.what {
        ImportWhat::Sigma(s) => import_sigma(s),
    }
}

/// One Sigma file found under a path given, with the link naming it.
struct Found {
    path: PathBuf,
    link: String,
}

fn find(paths: &[PathBuf], source_url: Option<&str>) -> Result<Vec<Found>> {
    let mut out = Vec::new();
    for root in paths {
        let files = load::rule_files(root).with_context(|| format!("cannot read {}", load::display_abs(root)))?;
        for path in files {
            let rel = if root.is_dir() {
                path.strip_prefix(root).unwrap_or(&path)
            } else {
                Path::new(path.file_name().unwrap_or_default())
            };
            let link = match source_url {
                Some(base) => format!("{}/{}", base.trim_end_matches('/'), rel.display()),
                None => path.display().to_string(),
            };
            out.push(Found { path, link });
        }
    }
    Ok(out)
}

fn import_sigma(a: SigmaArgs) -> Result<i32> {
    let found = find(&a.paths, a.source_url.as_deref())?;
    let mut errors = Vec::new();
    let mut converted: Vec<(PathBuf, Converted)> = Vec::new();
    let mut skipped = Vec::new();
    for f in &found {
        let src = match load::read_file(&f.path) {
            Ok(s) => s,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        match sigma::convert(&src, &f.link, &a.formats) {
            Ok(Outcome::Converted(c)) => converted.push((f.path.clone(), *c)),
            Ok(Outcome::Skipped { title, reason }) => skipped.push((f.path.clone(), title, reason)),
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        for e in &errors {
            eprintln!("trapline: error: {e}");
        }
        eprintln!("trapline: {} invalid Sigma file(s): nothing written", errors.len());
        return Ok(EXIT_USAGE);
    }
    unique_ids(&mut converted);
    add_examples(&mut converted)?;

    let files: Vec<(PathBuf, String)> = converted
        .iter()
        .map(|(from, c)| Ok((a.out.join(format!("{}.yml", c.rule.id)), render_file(from, c)?)))
        .collect::<Result<_>>()?;
    // What is written must load: checked on the text itself before anything is written.
    let sources = files.iter().map(|(p, t)| SourceFile { path: p.clone(), text: t.clone() }).collect();
    if let Err(e) = load::load_sources(sources) {
        anyhow::bail!("internal error: a converted rule does not load:\n{e}");
    }
    let existing: Vec<&PathBuf> = files.iter().map(|(p, _)| p).filter(|p| p.symlink_metadata().is_ok()).collect();
    if !existing.is_empty() && !a.force {
        eprintln!("trapline: error: {} rule file(s) already exist (give --force to overwrite):", existing.len());
        for p in existing {
            eprintln!("  {}", p.display());
        }
        return Ok(EXIT_USAGE);
    }
    std::fs::create_dir_all(&a.out).with_context(|| format!("cannot create {}", a.out.display()))?;
    for (p, text) in &files {
        std::fs::write(p, text).with_context(|| format!("cannot write {}", p.display()))?;
    }
    for (path, title, reason) in &skipped {
        if title.is_empty() {
            eprintln!("skipped {}: {reason}", path.display());
        } else {
            eprintln!("skipped {}: {title:?}: {reason}", path.display());
        }
    }
    println!(
        "converted {} Sigma rule(s) into {}; skipped {} (listed on stderr)",
        converted.len(),
        a.out.display(),
        skipped.len()
    );
    Ok(0)
}

/// Two Sigma rules with one title would share an id: the second and later get their Sigma
/// id's first block (or a counter) appended.
fn unique_ids(converted: &mut [(PathBuf, Converted)]) {
    let mut seen = BTreeSet::new();
    for (_, c) in converted.iter_mut() {
        if !seen.insert(c.rule.id.clone()) {
            let suffix = c.sigma_id.as_deref().and_then(|s| s.split('-').next()).map(str::to_ascii_lowercase);
            let mut id = match suffix {
                Some(s) if s.chars().all(|c| c.is_ascii_alphanumeric()) => format!("{}-{s}", c.rule.id),
                _ => c.rule.id.clone(),
            };
            let mut n = 2;
            while seen.contains(&id) {
                id = format!("{}-{n}", c.rule.id);
                n += 1;
            }
            seen.insert(id.clone());
            c.rule.id = id;
        }
    }
}

/// Gives every rule the candidate example lines that the engine confirms: up to two lines it
/// matches, and the benign line when it does not match it.
fn add_examples(converted: &mut [(PathBuf, Converted)]) -> Result<()> {
    use crate::engine::{CompileOptions, RuleSet};
    let mut candidates: Vec<Rule> = Vec::new();
    for (_, c) in converted.iter() {
        let mut r = c.rule.clone();
        if let Some(cond) = &r.condition {
            r.examples.should_match = sigma::example_lines(cond);
        }
        r.examples.no_match = vec![sigma::BENIGN_LINE.to_string()];
        candidates.push(r);
    }
    let file = RuleFile {
        version: 1,
        lists: Default::default(),
        conditions: Default::default(),
        rules: candidates,
        overrides: Vec::new(),
        exceptions: Vec::new(),
    };
    let text = serde_yaml::to_string(&file)?;
    let loaded = load::load_sources(vec![SourceFile { path: "<import>".into(), text }])
        .map_err(|e| anyhow::anyhow!("internal error: a converted rule does not load:\n{e}"))?;
    let mut opts = CompileOptions::default();
    opts.actions.insert("log".to_string());
    let rules = RuleSet::compile(&loaded, &opts, crate::parse::FieldRegistry::default())
        .map_err(|e| anyhow::anyhow!("internal error: a converted rule does not compile:\n{e}"))?;
    let report = crate::authoring::examples::run(&loaded, &rules, &|_| None);
    for (lr, (_, c)) in loaded.rules.iter().zip(converted.iter_mut()) {
        let failed = |path: &str| report.failures.iter().any(|f| f.rule == lr.rule.id && f.path == path);
        let good: Vec<String> = lr
            .rule
            .examples
            .should_match
            .iter()
            .enumerate()
            .filter(|(i, _)| !failed(&format!("examples.match[{i}]")))
            .map(|(_, l)| l.clone())
            .take(2)
            .collect();
        // A rule without a line it matches gets no examples at all: lint says so (TL101).
        if !good.is_empty() {
            c.rule.examples.should_match = good;
            if !failed("examples.no_match[0]") {
                c.rule.examples.no_match = lr.rule.examples.no_match.clone();
            }
        }
    }
    Ok(())
}

/// One rule file: a comment naming the origin, then the rule, without the keys that only
/// repeat defaults.
fn render_file(from: &Path, c: &Converted) -> Result<String> {
    let file = RuleFile {
        version: 1,
        lists: Default::default(),
        conditions: Default::default(),
        rules: vec![c.rule.clone()],
        overrides: Vec::new(),
        exceptions: Vec::new(),
    };
    let mut v = serde_yaml::to_value(&file)?;
    if let Some(m) = v.as_mapping_mut() {
        m.shift_remove("lists");
    }
    if let Some(rule) = v.get_mut("rules").and_then(|r| r.get_mut(0)).and_then(|r| r.as_mapping_mut()) {
        rule.shift_remove("enabled");
        for key in ["sources", "tags", "examples"] {
            let empty = match rule.get(key) {
                Some(serde_yaml::Value::Sequence(s)) => s.is_empty(),
                Some(serde_yaml::Value::Mapping(m)) => m.is_empty(),
                _ => false,
            };
            if empty {
                rule.shift_remove(key);
            }
        }
    }
    let mut text = format!("# Converted by `trapline import sigma` from {}.\n", from.display());
    text.push_str(&format!(
        "# Sigma rule {} by {}{}: see the description for the source.\n",
        c.sigma_id.as_deref().unwrap_or("(no id)"),
        c.author.as_deref().unwrap_or("an unnamed author").replace('\n', " "),
        c.license.as_deref().map(|l| format!(", license {l}")).unwrap_or_default()
    ));
    text.push_str(&serde_yaml::to_string(&v)?);
    Ok(text)
}
