//! Redaction of secrets in what detections carry.
//!
//! Attackers guessing passwords put them in URLs (`?pma_username=root&pma_password=toor`), and
//! real users' session ids and tokens travel in query strings and referers. A detection copies
//! the line and its fields into `out.txt`, the console and XDR: there the values of sensitive
//! parameters are replaced by `***`. Rules are evaluated before this, on the real values.
//!
//! Two shapes are recognised, anywhere in a value: `name=value` after the start, `?`, `&`,
//! `;` or white space (query strings, form bodies, cookies), and `"name": "value"` (JSON). Names
//! are compared case-insensitively after percent-decoding (`pma%5Fpassword`).

use std::borrow::Cow;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::engine::Detection;

/// The `redact:` section of the config.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedactDef {
    /// Parameter names whose values are masked (replaces the default list; `[]` turns
    /// redaction off).
    #[serde(default = "default_params")]
    pub params: Vec<String>,
    /// More names, added to `params`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_params: Vec<String>,
}

impl Default for RedactDef {
    fn default() -> Self {
        RedactDef { params: default_params(), extra_params: Vec::new() }
    }
}

/// Passwords, tokens, secrets, keys and session ids as the common web stacks name them.
pub const DEFAULT_PARAMS: &[&str] = &[
    "password",
    "passwd",
    "pwd",
    "pass",
    "pma_password",
    "passphrase",
    "token",
    "access_token",
    "refresh_token",
    "id_token",
    "auth_token",
    "csrf_token",
    "secret",
    "client_secret",
    "api_key",
    "apikey",
    "x-api-key",
    "phpsessid",
    "jsessionid",
    "sessionid",
    "session_id",
    "sid",
];

fn default_params() -> Vec<String> {
    DEFAULT_PARAMS.iter().map(|s| s.to_string()).collect()
}

/// What replaces a secret value.
pub const MASK: &str = "***";

/// Masks the values of a set of parameter names.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// Lower-cased names.
    names: Vec<String>,
    /// The longest name, in bytes: a longer candidate cannot be one.
    longest: usize,
}

impl Redactor {
    pub fn new(def: &RedactDef) -> Redactor {
        let mut names: Vec<String> =
            def.params.iter().chain(&def.extra_params).map(|n| n.to_ascii_lowercase()).collect();
        names.sort();
        names.dedup();
        names.retain(|n| !n.is_empty());
        let longest = names.iter().map(String::len).max().unwrap_or(0);
        Redactor { names, longest }
    }

    /// Masks the secrets in everything `d` carries from the log: the line, the fields and the
    /// threshold's group values (whole values of fields named like a secret).
    pub fn apply(&self, d: &mut Detection) {
        if self.names.is_empty() {
            return;
        }
        redact_in_place(self, &mut d.line);
        // A field may itself be a secret (a custom format's `password` capture, a JSON key).
        let fields = d.fields.iter_mut().map(|(k, v)| (&**k, v));
        let groups = d.threshold.iter_mut().flat_map(|t| t.group.iter_mut()).map(|(k, v)| (k.as_str(), v));
        for (k, v) in fields.chain(groups) {
            if self.is_sensitive(k.as_bytes()) {
                *v = MASK.to_string();
            } else {
                redact_in_place(self, v);
            }
        }
        // The distinct values counted are values of a field too (`distinct: password` would
        // otherwise list every password tried).
        if let Some(t) = d.threshold.as_mut() {
            let sensitive = t.distinct.as_ref().is_some_and(|f| self.is_sensitive(f.as_bytes()));
            for v in &mut t.distinct_values {
                if sensitive {
                    *v = MASK.to_string();
                } else {
                    redact_in_place(self, v);
                }
            }
        }
    }

    /// `s` with the values of sensitive parameters masked (borrowed when there are none).
    pub fn redact<'a>(&self, s: &'a str) -> Cow<'a, str> {
        if self.names.is_empty() {
            return Cow::Borrowed(s);
        }
        let b = s.as_bytes();
        // Every secret has a `=` right after its name or a `:` after its quoted name, so only
        // the names before those are looked at: a line has a handful, and most values a
        // detection carries have none (trying every position cost more than building the
        // rest of the detection).
        let mut found: Vec<(usize, usize, usize)> = Vec::new();
        for p in memchr::memchr2_iter(b'=', b':', b) {
            if let Some(i) = candidate_before(b, p)
                && let Some((start, end)) = self.secret_at(b, i)
            {
                found.push((i, start, end));
            }
        }
        if found.is_empty() {
            return Cow::Borrowed(s);
        }
        // A quoted name may contain a `=` of its own, so candidates are not found in order.
        found.sort_unstable();
        found.dedup();
        let mut out = String::new();
        let mut copied = 0;
        for (i, start, end) in found {
            // Inside a value already masked: not a separate secret.
            if i < copied {
                continue;
            }
            out.push_str(&s[copied..start]);
            out.push_str(MASK);
            copied = end;
        }
        out.push_str(&s[copied..]);
        Cow::Owned(out)
    }

    /// The same as [`Redactor::redact`], trying every position: the definition the fast
    /// path is tested against.
    #[cfg(test)]
    fn redact_every_position<'a>(&self, s: &'a str) -> Cow<'a, str> {
        let b = s.as_bytes();
        let mut out = String::new();
        let mut copied = 0;
        for i in 0..b.len() {
            if i < copied {
                continue;
            }
            if let Some((start, end)) = self.secret_at(b, i) {
                out.push_str(&s[copied..start]);
                out.push_str(MASK);
                copied = end;
            }
        }
        if copied == 0 {
            return Cow::Borrowed(s);
        }
        out.push_str(&s[copied..]);
        Cow::Owned(out)
    }

    /// If a sensitive `name=value` or `"name": "value"` starts at byte `i`, the byte range of
    /// its value.
    fn secret_at(&self, b: &[u8], i: usize) -> Option<(usize, usize)> {
        let quoted = b[i] == b'"';
        if !quoted && i > 0 && !matches!(b[i - 1], b'?' | b'&' | b';' | b' ' | b'\t' | b'"') {
            return None;
        }
        let name_start = i + usize::from(quoted);
        let name_end = name_start + b[name_start..].iter().position(|&c| is_name_end(c, quoted))?;
        if name_end == name_start || !self.is_sensitive(&b[name_start..name_end]) {
            return None;
        }
        if quoted {
            // "name" <ws> : <ws> "value"
            let mut j = name_end;
            if b.get(j) != Some(&b'"') {
                return None;
            }
            j += 1;
            while b.get(j).is_some_and(|c| c.is_ascii_whitespace()) {
                j += 1;
            }
            if b.get(j) != Some(&b':') {
                return None;
            }
            j += 1;
            while b.get(j).is_some_and(|c| c.is_ascii_whitespace()) {
                j += 1;
            }
            if b.get(j) != Some(&b'"') {
                return None;
            }
            let start = j + 1;
            let mut k = start;
            while k < b.len() && b[k] != b'"' {
                k += 1 + usize::from(b[k] == b'\\');
            }
            return Some((start, k.min(b.len())));
        }
        if b.get(name_end) != Some(&b'=') {
            return None;
        }
        let start = name_end + 1;
        let end = start
            + b[start..]
                .iter()
                .position(|&c| matches!(c, b'&' | b';' | b' ' | b'\t' | b'"' | b'#'))
                .unwrap_or(b.len() - start);
        Some((start, end))
    }

    fn is_sensitive(&self, raw: &[u8]) -> bool {
        // Decoded into a buffer on the stack: no name is longer than `longest`, so a longer
        // candidate is rejected without decoding all of it.
        let mut stack = [0u8; 64];
        let mut heap = Vec::new();
        let name: &mut [u8] = if self.longest <= stack.len() {
            &mut stack
        } else {
            heap.resize(self.longest, 0);
            &mut heap
        };
        let mut len = 0;
        let mut k = 0;
        while k < raw.len() {
            if len == self.longest {
                return false;
            }
            if raw[k] == b'%'
                && k + 2 < raw.len()
                && let (Some(h), Some(l)) = (hex(raw[k + 1]), hex(raw[k + 2]))
            {
                name[len] = h << 4 | l;
                k += 3;
            } else {
                name[len] = raw[k];
                k += 1;
            }
            len += 1;
        }
        let name = &name[..len];
        self.names.iter().any(|n| n.as_bytes().eq_ignore_ascii_case(name))
    }
}

/// Where the only secret that the `=` or `:` at `p` could end the name of would start: after
/// the separator before an `=` (the start of an unquoted name), or at the opening quote of a
/// `"name"` before a `:` (white space allowed between).
fn candidate_before(b: &[u8], p: usize) -> Option<usize> {
    if b[p] == b'=' {
        return Some(b[..p].iter().rposition(|&c| is_name_end(c, false)).map_or(0, |q| q + 1));
    }
    let close = p - b[..p].iter().rev().take_while(|c| c.is_ascii_whitespace()).count();
    let close = close.checked_sub(1)?;
    if b[close] != b'"' {
        return None;
    }
    let open = b[..close].iter().rposition(|&c| is_name_end(c, true))?;
    (b[open] == b'"').then_some(open)
}

fn is_name_end(c: u8, quoted: bool) -> bool {
    if quoted { matches!(c, b'"' | b'\\') } else { matches!(c, b'=' | b'&' | b'?' | b';' | b' ' | b'\t' | b'"' | b'#') }
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

fn redact_in_place(r: &Redactor, s: &mut String) {
    if let Cow::Owned(o) = r.redact(s) {
        *s = o;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r() -> Redactor {
        Redactor::new(&RedactDef::default())
    }

    #[test]
    fn query_strings_forms_and_json_are_masked() {
        let r = r();
        assert_eq!(
            r.redact("GET /pma/index.php?pma_username=root&pma_password=toor&server=1 HTTP/1.1"),
            "GET /pma/index.php?pma_username=root&pma_password=***&server=1 HTTP/1.1"
        );
        assert_eq!(r.redact("user=a&Password=s3cr%26t"), "user=a&Password=***");
        assert_eq!(r.redact("/x?pma%5Fpassword=abc"), "/x?pma%5Fpassword=***");
        assert_eq!(r.redact("PHPSESSID=deadbeef; theme=dark"), "PHPSESSID=***; theme=dark");
        assert_eq!(r.redact(r#"{"user":"a","password": "p\"w","n":1}"#), r#"{"user":"a","password": "***","n":1}"#);
        assert_eq!(r.redact("?token=&a=1"), "?token=***&a=1");
        assert_eq!(r.redact(r#"body="password=x&a=1""#), r#"body="password=***&a=1""#);
    }

    #[test]
    fn fields_named_like_a_secret_are_masked_whole() {
        let t = chrono::DateTime::from_timestamp(0, 0).unwrap();
        let fields = [("password", "hunter2"), ("user", "admin")];
        let line = "login user=admin password hunter2";
        let mut d = Detection::sample("k", "r", "other", crate::rule::Severity::Low, t, &fields, line);
        r().apply(&mut d);
        assert_eq!(d.fields["password"], MASK);
        assert_eq!(d.fields["user"], "admin");
    }

    /// The values a `distinct` threshold counted are masked whole when the field is a secret,
    /// and like any value otherwise.
    #[test]
    fn distinct_values_are_masked_like_fields() {
        let t = chrono::DateTime::from_timestamp(0, 0).unwrap();
        let mut d = Detection::sample("k", "r", "other", crate::rule::Severity::Low, t, &[], "x");
        let info = |field: &str, values: &[&str]| crate::engine::detection::ThresholdInfo {
            count: 3,
            within_seconds: 60.0,
            group: Default::default(),
            distinct: Some(field.to_string()),
            distinct_values: values.iter().map(|v| v.to_string()).collect(),
            first_seen: t,
            last_seen: t,
        };
        d.threshold = Some(info("password", &["hunter2", "letmein"]));
        r().apply(&mut d);
        assert_eq!(d.threshold.as_ref().unwrap().distinct_values, [MASK, MASK]);
        d.threshold = Some(info("uri", &["/a?token=abc", "/b"]));
        r().apply(&mut d);
        assert_eq!(d.threshold.as_ref().unwrap().distinct_values, ["/a?token=***", "/b"]);
    }

    #[test]
    fn look_alikes_are_left_alone() {
        let r = r();
        for s in [
            "/passwords.txt",
            "?mypassword=x",
            "?password",
            "?q=password=1",
            "GET /?sidebar=1",
            "{\"password\": 5}",
            "",
            "=",
            "\"",
        ] {
            assert_eq!(r.redact(s), s);
        }
        assert_eq!(r.redact("password="), "password=***");
        let off = Redactor::new(&RedactDef { params: vec![], extra_params: vec![] });
        assert_eq!(off.redact("?password=x"), "?password=x");
    }

    /// Looking only before `=` and `:` masks exactly what trying every position does.
    #[test]
    fn candidates_before_separators_mask_what_every_position_masks() {
        let r = Redactor::new(&RedactDef {
            params: vec!["pass".into(), "password".into(), "sid".into(), "p_w".into()],
            extra_params: vec![],
        });
        let parts = [
            "pass",
            "PASSWORD",
            "sid",
            "Sid",
            "p%5Fw",
            "=",
            "\"",
            ":",
            " ",
            "\t",
            "&",
            "?",
            ";",
            "x",
            "word",
            "\\",
            "#",
            "a=b",
            "%",
            "\"password\"",
            "\"sid\"",
            ": \"",
            "\t:",
            " :\"",
            "\"x\":\"",
        ];
        let mut rng = fastrand::Rng::with_seed(7);
        let mut masked = 0;
        for _ in 0..50_000 {
            let s: String = (0..rng.usize(1..14)).map(|_| parts[rng.usize(..parts.len())]).collect();
            let every = r.redact_every_position(&s);
            masked += usize::from(matches!(every, Cow::Owned(_)));
            assert_eq!(r.redact(&s), every, "{s:?}");
        }
        assert!(masked > 1000, "the generated strings hold secrets ({masked})");
    }

    #[test]
    fn hostile_input_never_panics() {
        let r = Redactor::new(&RedactDef { params: vec!["p".into()], extra_params: vec!["é".into()] });
        for s in ["p=", "\"p\":\"", "\"p\" : \"\\", "%", "p%=1", "?p%4=1", "é=ü&p=ß", "\"p\":\"x\\\"", "&&&p=é"] {
            let _ = r.redact(s);
        }
        assert_eq!(r.redact("a=1&p=ß&b=2"), "a=1&p=***&b=2");
    }
}
