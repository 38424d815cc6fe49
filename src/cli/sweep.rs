//! `trapline sweep`: the content rules (`content:` and YARA) over the files of existing trees.
//!
//! The tree is walked on one thread (never following links: a link out of the tree is left
//! out and counted, a link inside it is scanned under its target's own path); the files are
//! then read and scanned on all cores, in batches, and printed in walk order so that the
//! output does not depend on the thread count.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use rayon::prelude::*;

use crate::action::console::{escape, use_color};
use crate::config;
use crate::content::{ContentMatch, DEFAULT_MAX_SIZE, ScanError, Scanner};
use crate::rule::Severity;

#[derive(Debug, Args)]
pub struct SweepArgs {
    /// Files or directories to scan (directories recursively).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Rule files or directories: their `content:` rules and `.yar`/`.yara` files (default:
    /// the config's; without --config: ./trapline.yml's, else ./rules/, else the user's or
    /// system config's, else the built-in rules).
    #[arg(long)]
    pub rules: Vec<PathBuf>,
    /// More YARA rules: a `.yar`/`.yara` file or a directory of them (e.g. a checkout of a
    /// public set), on top of the rules'.
    #[arg(long)]
    pub yara: Vec<PathBuf>,
    /// Config file (its rule directories).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Print matches as JSON lines.
    #[arg(long)]
    pub json: bool,
    /// Exit with status 1 when anything was found.
    #[arg(long)]
    pub fail_on_match: bool,
    /// Only print the summary.
    #[arg(long, short)]
    pub quiet: bool,
    /// Report only matches of at least this severity (info, low, medium, high, critical).
    #[arg(long, default_value = "info", value_parser = parse_severity)]
    pub min_severity: Severity,
    /// Files larger than this are not read (and are listed in the summary): bytes, or with a
    /// suffix k, M, G (powers of 1024).
    #[arg(long, default_value = "8M", value_parser = parse_size)]
    pub max_size: u64,
    /// Scanning threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

/// Files handed to the scanning threads at once: enough to keep every core busy, few enough
/// that the first matches print soon.
const BATCH: usize = 2048;
/// Paths listed per kind of skipped file in the summary.
const LIST_SKIPPED: usize = 10;

#[derive(Debug, Default)]
struct Tally {
    files: u64,
    bytes: u64,
    matches: u64,
    per_rule: BTreeMap<String, (Severity, u64)>,
    too_large: Vec<(PathBuf, u64)>,
    unreadable: Vec<(PathBuf, String)>,
    links_out: Vec<PathBuf>,
    links_in: u64,
    special: u64,
}

pub fn sweep(a: SweepArgs) -> Result<i32> {
    let cfg_path = a.config.clone().or_else(|| if a.rules.is_empty() { super::rules_default_config() } else { None });
    let cfg = cfg_path.as_ref().map(|p| config::Loaded::from_file(p)).transpose()?;
    let rule_paths = super::scan::rule_paths(&a.rules, cfg.as_ref());
    let mut scanner = Scanner::from_paths(&rule_paths, &a.yara).map_err(|e| anyhow::anyhow!("{e}"))?;
    scanner.max_size = a.max_size;
    if scanner.is_empty() {
        let shown: Vec<String> = rule_paths.iter().chain(&a.yara).map(|p| p.display().to_string()).collect();
        bail!(
            "no content rules in {}: sweep runs `content:` rules and YARA files (.yar, .yara); \
             give them with --rules or --yara",
            shown.join(", ")
        );
    }
    tracing::debug!(
        content_rules = scanner.rules.rules.len(),
        yara_rules = scanner.yara_rule_count(),
        prefilter = ?scanner.rules.prefilter_stats(),
        "sweep rules"
    );
    let pool = rayon::ThreadPoolBuilder::new().num_threads(a.threads.unwrap_or(0)).build()?;
    let color = !a.json && use_color(&std::io::stdout());
    let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
    let mut t = Tally::default();
    let started = Instant::now();
    for root in &a.paths {
        let files = walk(root, &mut t).with_context(|| format!("cannot sweep {}", root.display()))?;
        for batch in files.chunks(BATCH) {
            let results: Vec<Result<Vec<ContentMatch>, ScanError>> = pool
                .install(|| batch.par_iter().map_init(|| scanner.scratch(), |s, p| scanner.scan_path(p, s)).collect());
            for (path, r) in batch.iter().zip(results) {
                match r {
                    Ok(found) => {
                        t.files += 1;
                        t.bytes += std::fs::symlink_metadata(path).map_or(0, |m| m.len());
                        for m in found.iter().filter(|m| m.severity >= a.min_severity) {
                            t.matches += 1;
                            t.per_rule.entry(m.rule.clone()).or_insert((m.severity, 0)).1 += 1;
                            if !a.quiet {
                                print(&mut stdout, path, m, a.json, color)?;
                            }
                        }
                    }
                    Err(ScanError::TooLarge { size, .. }) => t.too_large.push((path.clone(), size)),
                    // Swapped for a link, a FIFO or a directory since the walk.
                    Err(ScanError::NotAFile) => t.special += 1,
                    Err(ScanError::Io(e)) => {
                        tracing::warn!(path = %shown(path), error = %e, "cannot read file; left out");
                        t.unreadable.push((path.clone(), e.to_string()));
                    }
                }
            }
        }
    }
    match stdout.flush() {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        r => r?,
    }
    drop(stdout);
    summary(&t, &scanner, a.max_size, started.elapsed().as_secs_f64());
    Ok(if a.fail_on_match && t.matches > 0 { 1 } else { 0 })
}

/// The regular files under `root` in name order. Links are never followed: one whose target
/// lies outside the tree is counted and left out (it could expose any file of the machine to
/// the sweep), one inside the tree is left to the walk, which reaches its target anyway.
fn walk(root: &Path, t: &mut Tally) -> Result<Vec<PathBuf>> {
    let meta = std::fs::metadata(root)?;
    if meta.is_file() {
        return Ok(vec![root.to_path_buf()]);
    }
    let base = std::fs::canonicalize(root)?;
    let mut out = Vec::new();
    // The root itself may be a link (a web root often is); walkdir follows it.
    for entry in walkdir::WalkDir::new(root).follow_links(false).sort_by_file_name() {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                let p = e.path().map(Path::to_path_buf).unwrap_or_else(|| root.to_path_buf());
                let msg = e.io_error().map_or_else(|| e.to_string(), ToString::to_string);
                tracing::warn!(path = %shown(&p), error = %msg, "cannot read directory; left out");
                t.unreadable.push((p, msg));
                continue;
            }
        };
        let ft = entry.file_type();
        if ft.is_file() {
            out.push(entry.into_path());
        } else if ft.is_symlink() {
            match std::fs::canonicalize(entry.path()) {
                Ok(target) if target.starts_with(&base) => t.links_in += 1,
                _ => t.links_out.push(entry.into_path()),
            }
        } else if !ft.is_dir() {
            t.special += 1;
        }
    }
    Ok(out)
}

/// A path made safe to print: bytes that are not UTF-8 as `\xNN`, then control characters
/// escaped (see [`escape`]).
pub fn shown(p: &Path) -> String {
    escape(&path_text(p))
}

/// A path as text: valid UTF-8 as is, every other byte as `\xNN`.
pub fn path_text(p: &Path) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let mut out = String::new();
        for chunk in p.as_os_str().as_bytes().utf8_chunks() {
            out.push_str(chunk.valid());
            for b in chunk.invalid() {
                out.push_str(&format!("\\x{b:02x}"));
            }
        }
        out
    }
    #[cfg(not(unix))]
    {
        p.to_string_lossy().into_owned()
    }
}

#[derive(serde::Serialize)]
struct JsonMatch<'a> {
    rule: &'a str,
    severity: Severity,
    title: &'a str,
    class: &'a str,
    engine: crate::content::Engine,
    path: String,
    /// Present (false) when the path is not valid UTF-8 and `path` spells its bytes as `\xNN`.
    #[serde(skip_serializing_if = "Option::is_none")]
    path_utf8: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    offset: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    excerpt: Option<&'a str>,
}

fn print(out: &mut impl Write, path: &Path, m: &ContentMatch, json: bool, color: bool) -> Result<()> {
    let r = if json {
        let j = JsonMatch {
            rule: &m.rule,
            severity: m.severity,
            title: &m.title,
            class: &m.class,
            engine: m.engine,
            path: path_text(path),
            path_utf8: path.to_str().is_none().then_some(false),
            offset: m.offset,
            excerpt: m.excerpt.as_deref(),
        };
        serde_json::to_writer(&mut *out, &j).map_err(std::io::Error::from).and_then(|_| out.write_all(b"\n"))
    } else {
        let (c, reset) = if color { (crate::action::console::color(m.severity), "\x1b[0m") } else { ("", "") };
        let mut line = format!(
            "{c}{:<8}{reset} {} {} | {}",
            m.severity.as_str().to_uppercase(),
            escape(&m.rule),
            shown(path),
            escape(&m.title)
        );
        if let (Some(o), Some(x)) = (m.offset, &m.excerpt) {
            line.push_str(&format!(" | @{o}: {}", escape(x)));
        }
        writeln!(out, "{line}")
    };
    match r {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}

fn summary(t: &Tally, scanner: &Scanner, max_size: u64, secs: f64) {
    let mut e = std::io::stderr().lock();
    let secs = secs.max(1e-9);
    let _ = writeln!(e, "\n{:<52} {:>9} {:>8}", "rule", "severity", "files");
    for (rule, (sev, n)) in &t.per_rule {
        let _ = writeln!(e, "{:<52} {:>9} {:>8}", escape(rule), sev.as_str(), n);
    }
    if t.per_rule.is_empty() {
        let _ = writeln!(e, "(no rule matched)");
    }
    let _ = writeln!(
        e,
        "\n{} files, {:.1} MB in {secs:.3} s: {:.0} files/s, {:.1} MB/s; {} matches from {} content rules and {} YARA rules",
        t.files,
        t.bytes as f64 / 1e6,
        t.files as f64 / secs,
        t.bytes as f64 / 1e6 / secs,
        t.matches,
        scanner.rules.rules.iter().filter(|r| r.enabled).count(),
        scanner.yara_rule_count(),
    );
    let mut list = |what: String, items: Vec<String>| {
        if items.is_empty() {
            return;
        }
        let _ = writeln!(e, "{what}: {}", items.len());
        for i in items.iter().take(LIST_SKIPPED) {
            let _ = writeln!(e, "  {i}");
        }
        if items.len() > LIST_SKIPPED {
            let _ = writeln!(e, "  ... and {} more", items.len() - LIST_SKIPPED);
        }
    };
    list(
        format!("not scanned, larger than {max_size} bytes (--max-size)"),
        t.too_large.iter().map(|(p, s)| format!("{} ({s} bytes)", shown(p))).collect(),
    );
    list(
        "not scanned, unreadable".to_string(),
        t.unreadable.iter().map(|(p, err)| format!("{}: {}", shown(p), escape(err))).collect(),
    );
    list(
        "not scanned, links leading out of the tree (or dangling)".to_string(),
        t.links_out.iter().map(|p| shown(p)).collect(),
    );
    if t.links_in > 0 {
        let _ = writeln!(e, "links inside the tree: {} (their targets are scanned under their own paths)", t.links_in);
    }
    if t.special > 0 {
        let _ = writeln!(e, "not scanned, not regular files (FIFOs, sockets, devices): {}", t.special);
    }
}

fn parse_severity(s: &str) -> Result<Severity, String> {
    serde_json::from_value(serde_json::Value::String(s.to_ascii_lowercase()))
        .map_err(|_| format!("{s:?}: use info, low, medium, high or critical"))
}

/// `8M`, `512k`, `1G`, `1048576`: a size in bytes, suffixes in powers of 1024.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let t = t.strip_suffix(['B', 'b']).unwrap_or(t);
    let t = t.strip_suffix(['i', 'I']).unwrap_or(t);
    let (num, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m = match c.to_ascii_lowercase() {
                'k' => 1u64 << 10,
                'm' => 1 << 20,
                'g' => 1 << 30,
                _ => return Err(format!("{s:?}: a size is bytes, or a number with k, M or G")),
            };
            (&t[..i], m)
        }
        _ => (t, 1),
    };
    let n: u64 = num.trim().parse().map_err(|_| format!("{s:?}: a size is bytes, or a number with k, M or G"))?;
    let v = n.checked_mul(mult).ok_or_else(|| format!("{s:?}: too large"))?;
    if v == 0 {
        return Err("the size limit must be larger than zero".to_string());
    }
    Ok(v)
}

/// Default of `--max-size`, for documentation and tests.
pub const DEFAULT_MAX: u64 = DEFAULT_MAX_SIZE;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("8M"), Ok(DEFAULT_MAX));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("100"), Ok(100));
        assert!(parse_size("0").is_err() && parse_size("8X").is_err() && parse_size("").is_err());
    }

    #[cfg(unix)]
    #[test]
    fn non_utf8_paths_print_safely() {
        use std::os::unix::ffi::OsStrExt;
        let p = Path::new(std::ffi::OsStr::from_bytes(b"/w/a\xff\x1b[2J.php"));
        assert_eq!(path_text(p), "/w/a\\xff\x1b[2J.php");
        assert_eq!(shown(p), "/w/a\\\\xff\\u{1b}[2J.php");
    }
}
