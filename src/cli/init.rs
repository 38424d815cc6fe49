//! `trapline init [DIR]`: writes the built-in config, rules and templates to a directory, to
//! edit. The config names `rules` and `templates` relative to itself, so the written copy uses
//! the written rules; the JSON Schemas go to `schema/`, where the files' `$schema` comments
//! point, for editor completion.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;

use super::EXIT_USAGE;
use super::schema::{Which, schema_json};

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Directory to write to (created when missing).
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Overwrite files that already exist.
    #[arg(long)]
    pub force: bool,
}

/// Every file `init` writes, as (path relative to the directory, contents), in path order.
pub fn starter_files() -> Vec<(String, Cow<'static, [u8]>)> {
    let mut files = crate::assets::files();
    files.push(("schema/trapline-config.schema.json".into(), Cow::Owned(schema_json(Which::Config).into_bytes())));
    files.push(("schema/trapline-rules.schema.json".into(), Cow::Owned(schema_json(Which::Rules).into_bytes())));
    files.push(("schema/trapline-fixtures.schema.json".into(), Cow::Owned(schema_json(Which::Fixtures).into_bytes())));
    files.sort_by(|a, b| a.0.cmp(&b.0));
    files
}

pub fn init(a: InitArgs) -> Result<i32> {
    let files = starter_files();
    let existing: Vec<PathBuf> =
        files.iter().map(|(rel, _)| a.dir.join(rel)).filter(|p| p.symlink_metadata().is_ok()).collect();
    if !existing.is_empty() && !a.force {
        // Nothing is written: a half-written set would mix the user's edits with new defaults.
        eprintln!("trapline: error: {} file(s) that init writes already exist:", existing.len());
        for p in &existing {
            eprintln!("  {}", p.display());
        }
        eprintln!("nothing was written; pass --force to overwrite them, or give another directory: trapline init DIR");
        return Ok(EXIT_USAGE);
    }
    for (rel, data) in &files {
        let path = a.dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
        }
        // A link where a file goes is replaced, not written through: `--force` overwrites the
        // project's files, never a file the link happens to point at.
        if path.symlink_metadata().is_ok_and(|m| m.file_type().is_symlink()) {
            std::fs::remove_file(&path).with_context(|| format!("cannot replace the link {}", path.display()))?;
        }
        std::fs::write(&path, data).with_context(|| format!("cannot write {}", path.display()))?;
    }
    println!("wrote {} files to {}:", files.len(), a.dir.display());
    for (rel, _) in &files {
        let overwritten = if existing.contains(&a.dir.join(rel)) { " (overwritten)" } else { "" };
        println!("  {}{overwritten}", a.dir.join(rel).display());
    }
    let config = if a.dir == Path::new(".") {
        String::new()
    } else {
        format!(" --config {}", a.dir.join("trapline.yml").display())
    };
    println!();
    println!("next: point `sources:` in {} at your logs, then", a.dir.join("trapline.yml").display());
    println!("  trapline lint{config}    # check the config, rules and templates");
    println!("  trapline run{config}     # tail the sources and fire actions");
    Ok(0)
}
