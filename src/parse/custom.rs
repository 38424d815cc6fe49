//! Custom formats: a user regex with named captures, one field per capture name.
//!
//! `(?P<client_ip>\S+) .* "(?P<request>[^"]*)"` fills `client_ip` and `request`; standard
//! names map to the standard field ids through [`FieldRegistry::intern`], other names get
//! fresh ids. As with the access-log parser, a `request` capture is split into
//! method/uri/protocol and a `uri` into path/query for whichever of those the pattern does
//! not capture itself.
//!
//! Matching uses `captures_read` with a [`CaptureLocations`] cached per thread and per
//! compiled regex, so the hot path does not allocate: `parse(&self)` is shared by worker
//! threads, and a `CaptureLocations` is mutable state that must come from the same regex.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

use regex::bytes::{CaptureLocations, Regex};

use super::access::derive_request_fields;
use super::scan::MAX_LINE;
use super::{FieldId, FieldRegistry, Record};

/// A compiled custom format.
#[derive(Debug, Clone)]
pub struct CustomFormat {
    /// strftime layout of the `time` capture (`None`: any known layout, see `time::parse_any`).
    pub time_format: Option<String>,
    regex: Regex,
    /// (capture group index, field id) for every named group.
    groups: Vec<(usize, FieldId)>,
    /// Identity of `regex` for the per-thread location cache. Clones share it, which is right:
    /// a cloned `Regex` is the same program, so its locations fit.
    key: u64,
}

/// Source of [`CustomFormat::key`]s: unique for the life of the process, unlike an address.
static NEXT_KEY: AtomicU64 = AtomicU64::new(1);

/// Per-thread cache bound; beyond it the cache is simply emptied (a thread normally serves a
/// handful of formats, so this only matters if formats are rebuilt over and over).
const CACHE_MAX: usize = 32;

thread_local! {
    static LOCATIONS: RefCell<Vec<(u64, CaptureLocations)>> = const { RefCell::new(Vec::new()) };
}

impl CustomFormat {
    /// Compiles `pattern` and interns its capture names into `registry`.
    pub fn new(
        pattern: &str,
        time_format: Option<String>,
        registry: &mut FieldRegistry,
    ) -> Result<CustomFormat, regex::Error> {
        let regex = Regex::new(pattern)?;
        let groups =
            regex.capture_names().enumerate().filter_map(|(i, name)| name.map(|n| (i, registry.intern(n)))).collect();
        let key = NEXT_KEY.fetch_add(1, Ordering::Relaxed);
        Ok(CustomFormat { time_format, regex, groups, key })
    }

    /// The compiled regex (for diagnostics).
    pub fn regex(&self) -> &Regex {
        &self.regex
    }

    /// Matches `line`; on a match every participating named group becomes a raw field.
    pub fn parse(&self, line: &[u8], rec: &mut Record) -> bool {
        if line.len() > MAX_LINE {
            return false;
        }
        let matched = LOCATIONS.with(|cache| match cache.try_borrow_mut() {
            Ok(mut cache) => self.parse_with_cache(&mut cache, line, rec),
            // Re-entrancy cannot happen today; stay correct anyway with fresh locations.
            Err(_) => self.capture(&mut self.regex.capture_locations(), line, rec),
        });
        if matched {
            derive_request_fields(line, rec);
        }
        matched
    }

    fn parse_with_cache(&self, cache: &mut Vec<(u64, CaptureLocations)>, line: &[u8], rec: &mut Record) -> bool {
        let pos = match cache.iter().position(|(k, _)| *k == self.key) {
            Some(p) => p,
            None => {
                if cache.len() >= CACHE_MAX {
                    cache.clear();
                }
                cache.push((self.key, self.regex.capture_locations()));
                cache.len() - 1
            }
        };
        match cache.get_mut(pos) {
            Some((_, locs)) => self.capture(locs, line, rec),
            None => false,
        }
    }

    fn capture(&self, locs: &mut CaptureLocations, line: &[u8], rec: &mut Record) -> bool {
        if self.regex.captures_read(locs, line).is_none() {
            return false;
        }
        for &(group, id) in &self.groups {
            if let Some((start, end)) = locs.get(group) {
                rec.set_raw(id, start..end);
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::std_fields as f;

    fn setup(pattern: &str) -> (CustomFormat, FieldRegistry) {
        let mut reg = FieldRegistry::default();
        let c = CustomFormat::new(pattern, None, &mut reg).unwrap();
        (c, reg)
    }

    fn run(c: &CustomFormat, reg: &FieldRegistry, line: &[u8]) -> (bool, Record) {
        let mut rec = Record::new(reg.len());
        let ok = c.parse(line, &mut rec);
        (ok, rec)
    }

    #[test]
    fn standard_and_custom_names() {
        let (c, reg) = setup(r"^(?P<client_ip>\S+) (?P<app>\w+) (?P<uri>\S+)(?: (?P<extra>x))?$");
        assert_eq!(reg.get("client_ip"), Some(f::CLIENT_IP));
        let app = reg.get("app").unwrap();
        let l = b"10.0.0.1 shop /cart?id=5";
        let (ok, r) = run(&c, &reg, l);
        assert!(ok);
        assert_eq!(r.get(l, f::CLIENT_IP), Some(&b"10.0.0.1"[..]));
        assert_eq!(r.get(l, app), Some(&b"shop"[..]));
        assert_eq!(r.get(l, f::PATH), Some(&b"/cart"[..]));
        assert_eq!(r.get(l, f::QUERY), Some(&b"id=5"[..]));
        assert_eq!(r.get(l, reg.get("extra").unwrap()), None);
        assert!(!run(&c, &reg, b"nope").0);
    }

    #[test]
    fn request_derivation_respects_own_captures() {
        let (c, reg) = setup(r#"^(?P<method>\S+) "(?P<request>[^"]*)"$"#);
        let l = br#"OWN "GET /p?q HTTP/1.0""#;
        let (_, r) = run(&c, &reg, l);
        assert_eq!(r.get(l, f::METHOD), Some(&b"OWN"[..]));
        assert_eq!(r.get(l, f::URI), Some(&b"/p?q"[..]));
        assert_eq!(r.get(l, f::PATH), Some(&b"/p"[..]));
        assert_eq!(r.get(l, f::PROTOCOL), Some(&b"HTTP/1.0"[..]));
    }

    #[test]
    fn many_formats_and_threads() {
        let mut reg = FieldRegistry::default();
        let formats: Vec<CustomFormat> = (0..40)
            .map(|i| CustomFormat::new(&format!(r"^(?P<client_ip>\S+) {i}(?P<g{i}>.)"), None, &mut reg).unwrap())
            .collect();
        let reg = reg;
        std::thread::scope(|s| {
            for t in 0..2 {
                let (formats, reg) = (&formats, &reg);
                s.spawn(move || {
                    for round in 0..3 {
                        for (i, c) in formats.iter().enumerate().skip(t) {
                            let line = format!("1.2.3.{round} {i}z");
                            let (ok, r) = run(c, reg, line.as_bytes());
                            assert!(ok);
                            assert_eq!(r.get(line.as_bytes(), f::CLIENT_IP), Some(format!("1.2.3.{round}").as_bytes()));
                        }
                    }
                });
            }
        });
    }

    #[test]
    fn bad_pattern_is_an_error() {
        let mut reg = FieldRegistry::default();
        assert!(CustomFormat::new("(?P<x>", None, &mut reg).is_err());
    }

    #[test]
    fn invalid_utf8_lines() {
        let (c, reg) = setup(r"(?-u)^(?P<user>[^ ]+) (?P<message>.*)$");
        let l = b"\xff\xfe \xc3\x28";
        let (ok, r) = run(&c, &reg, l);
        assert!(ok);
        assert_eq!(r.get(l, f::USER), Some(&b"\xff\xfe"[..]));
    }
}
