//! The shipped rule pack, XDR templates and default config, built into the binary.
//!
//! An installed `trapline` (a package, `cargo install`, a copied binary) has no source tree to
//! read them from, so they are compiled in and addressed by virtual paths under
//! [`PREFIX`]: `<built-in>/trapline.yml`, `<built-in>/rules/web-attacks.yml`,
//! `<built-in>/templates/xdr/incident.json.j2`. Wherever trapline reads rules, templates or a
//! config it goes through [`read_to_string`] and [`list_files`], which serve these paths from
//! memory and every other path from disk; errors in built-in files therefore read
//! `<built-in>/rules/web-attacks.yml:12:3: ...` like errors in files on disk. The same paths
//! work on the command line and in a config (`rules: ["<built-in>/rules", /etc/trapline/rules]`).

use std::borrow::Cow;
use std::io;
use std::path::{Component, Path, PathBuf};

use rust_embed::Embed;

/// First component of every built-in path. Not a path a real directory would have, and it is
/// the name users see in errors.
pub const PREFIX: &str = "<built-in>";

/// The built-in config, as a path.
pub const CONFIG: &str = "<built-in>/trapline.yml";

/// The default config: the `trapline.yml` of the source tree. Its relative `rules` and
/// `templates` name the built-in ones; see [`crate::config::Loaded::resolve`].
pub const CONFIG_TEXT: &str = include_str!("../trapline.yml");

#[derive(Embed)]
#[folder = "rules/"]
struct Rules;

#[derive(Embed)]
#[folder = "templates/"]
struct Templates;

/// True for paths under [`PREFIX`].
pub fn is_builtin(p: &Path) -> bool {
    p.components().next() == Some(Component::Normal(PREFIX.as_ref()))
}

/// The path below [`PREFIX`] with `/` separators (`rules/web-attacks.yml`), or `None` for a
/// path that is not built in. `.` components are dropped so `<built-in>/./rules` works.
fn relative(p: &Path) -> Option<String> {
    let mut parts = p.components();
    if parts.next() != Some(Component::Normal(PREFIX.as_ref())) {
        return None;
    }
    let mut out = Vec::new();
    for c in parts {
        match c {
            Component::Normal(s) => out.push(s.to_str()?),
            Component::CurDir => {}
            _ => return None,
        }
    }
    Some(out.join("/"))
}

/// Every built-in file, as (path below [`PREFIX`], contents), in path order.
pub fn files() -> Vec<(String, Cow<'static, [u8]>)> {
    let mut out = vec![("trapline.yml".to_string(), Cow::Borrowed(CONFIG_TEXT.as_bytes()))];
    for name in Rules::iter() {
        if let Some(f) = Rules::get(&name) {
            out.push((format!("rules/{name}"), f.data));
        }
    }
    for name in Templates::iter() {
        if let Some(f) = Templates::get(&name) {
            out.push((format!("templates/{name}"), f.data));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn get(rel: &str) -> Option<Cow<'static, [u8]>> {
    if rel == "trapline.yml" {
        return Some(Cow::Borrowed(CONFIG_TEXT.as_bytes()));
    }
    if let Some(name) = rel.strip_prefix("rules/") {
        return Rules::get(name).map(|f| f.data);
    }
    rel.strip_prefix("templates/").and_then(Templates::get).map(|f| f.data)
}

fn not_found(p: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{} is not built into this trapline", p.display()))
}

/// The text of a file, built in or on disk.
/// The bytes of `p`, built-in or on disk.
pub fn read(p: &Path) -> io::Result<Vec<u8>> {
    let Some(rel) = relative(p) else { return std::fs::read(p) };
    Ok(get(&rel).ok_or_else(|| not_found(p))?.into_owned())
}

pub fn read_to_string(p: &Path) -> io::Result<String> {
    let Some(rel) = relative(p) else { return std::fs::read_to_string(p) };
    let data = get(&rel).ok_or_else(|| not_found(p))?;
    String::from_utf8(data.into_owned()).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// True when `p` is a built-in file, or a file on disk.
pub fn is_file(p: &Path) -> bool {
    match relative(p) {
        Some(rel) => get(&rel).is_some(),
        None => p.is_file(),
    }
}

/// True when `p` is a built-in file or directory (`<built-in>/rules`).
pub fn builtin_exists(p: &Path) -> bool {
    let Some(rel) = relative(p) else { return false };
    rel.is_empty() || files().iter().any(|(f, _)| *f == rel || f.starts_with(&format!("{rel}/")))
}

/// The files under the built-in directory or file `p` (recursively, in path order), or `None`
/// when `p` is not a built-in path. An unknown built-in path is a `NotFound` error.
pub fn list_files(p: &Path) -> Option<io::Result<Vec<PathBuf>>> {
    let rel = relative(p)?;
    let prefix = if rel.is_empty() { String::new() } else { format!("{rel}/") };
    let found: Vec<PathBuf> = files()
        .into_iter()
        .filter(|(f, _)| *f == rel || f.starts_with(&prefix))
        .map(|(f, _)| Path::new(PREFIX).join(f))
        .collect();
    Some(if found.is_empty() { Err(not_found(p)) } else { Ok(found) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_the_shipped_files() {
        let text = read_to_string(Path::new("<built-in>/rules/web-attacks.yml")).unwrap();
        assert!(text.contains("rules:"));
        assert!(is_file(Path::new(CONFIG)));
        assert!(builtin_exists(Path::new("<built-in>/rules")));
        assert!(builtin_exists(Path::new("<built-in>/templates/xdr")));
        assert!(!builtin_exists(Path::new("<built-in>/state")));
        assert!(!builtin_exists(Path::new("rules")));
        let templates = list_files(Path::new("<built-in>/templates/xdr")).unwrap().unwrap();
        assert!(templates.iter().any(|p| p.ends_with("incident.json.j2")), "{templates:?}");
        assert!(list_files(Path::new("rules")).is_none());
        let e = list_files(Path::new("<built-in>/nothing")).unwrap().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(e.to_string().contains("<built-in>/nothing"), "{e}");
    }
}
