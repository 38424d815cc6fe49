//! Byte-level helpers shared by the format parsers.
//!
//! Everything here works on `&[u8]` with checked indexing (`get`, iterators, memchr), so no
//! helper can panic whatever the input; parsers build on these instead of slicing by hand.

use std::net::Ipv6Addr;
use std::ops::Range;

use super::{FieldId, Record};

/// Longest line a parser accepts. Spans are stored as `u32`, and unescaped copies live in the
/// same address space, so a line must leave headroom below `u32::MAX`; anything longer is left
/// to raw-line rules (the engine never produces such lines in practice).
pub(crate) const MAX_LINE: usize = (u32::MAX / 4) as usize;

/// Stores `range` as the value of `id`: a raw-line span, or a scratch span when `owned`.
#[inline]
pub(crate) fn set_span(rec: &mut Record, id: FieldId, range: Range<usize>, owned: bool) {
    if owned {
        rec.set_owned_range(id, range);
    } else {
        rec.set_raw(id, range);
    }
}

/// Index of the first space at or after `from` (or `line.len()`).
#[inline]
pub(crate) fn token_end(line: &[u8], from: usize) -> usize {
    match line.get(from..) {
        Some(rest) => memchr::memchr(b' ', rest).map_or(line.len(), |i| from + i),
        None => line.len(),
    }
}

/// Index of the first non-space byte at or after `from` (or `line.len()`).
#[inline]
pub(crate) fn skip_spaces(line: &[u8], from: usize) -> usize {
    let mut i = from;
    while line.get(i) == Some(&b' ') {
        i += 1;
    }
    i.min(line.len())
}

/// Byte at `i`, or 0 past the end: lets scanners test "next byte is X" without bounds checks
/// cluttering the logic (0 never matches anything a parser looks for).
#[inline]
pub(crate) fn at(line: &[u8], i: usize) -> u8 {
    line.get(i).copied().unwrap_or(0)
}

/// Dotted-quad IPv4. Leading zeros are accepted (`192.030.0.6`): loggers print what the
/// client sent and we want it as a field, not to second-guess it.
pub(crate) fn is_ipv4(b: &[u8]) -> bool {
    let mut parts = 0;
    for part in b.split(|&c| c == b'.') {
        parts += 1;
        if parts > 4 || part.is_empty() || part.len() > 3 || !part.iter().all(u8::is_ascii_digit) {
            return false;
        }
        let v = part.iter().fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0'));
        if v > 255 {
            return false;
        }
    }
    parts == 4
}

/// IPv6 (any textual form std accepts, incl. `::ffff:1.2.3.4`), with an optional `%zone`.
pub(crate) fn is_ipv6(b: &[u8]) -> bool {
    let addr = match memchr::memchr(b'%', b) {
        Some(p) => b.get(..p).unwrap_or_default(),
        None => b,
    };
    if addr.len() < 2 || addr.len() > 45 || !addr.contains(&b':') {
        return false;
    }
    std::str::from_utf8(addr).is_ok_and(|s| s.parse::<Ipv6Addr>().is_ok())
}

pub(crate) fn is_ip(b: &[u8]) -> bool {
    is_ipv4(b) || is_ipv6(b)
}

/// A double-quoted field found by [`scan_quoted`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Quoted {
    /// The bytes between the quotes (as written, still escaped).
    pub content: Range<usize>,
    /// Index just after the closing quote (or `line.len()` when unterminated).
    pub next: usize,
    /// True when the content contains a backslash escape.
    pub escaped: bool,
    /// False when the line ended before the closing quote (truncated line).
    pub closed: bool,
}

/// Scans the quoted field whose opening `"` is at `open`. A backslash escapes the next byte,
/// so Apache's `\"` does not end the field (nginx writes `\x22`, which contains no quote at
/// all). An unterminated field runs to the end of the line: a line cut by a reader limit still
/// yields its prefix.
pub(crate) fn scan_quoted(line: &[u8], open: usize) -> Quoted {
    let start = open.saturating_add(1).min(line.len());
    let mut i = start;
    let mut escaped = false;
    while let Some(rest) = line.get(i..) {
        match memchr::memchr2(b'"', b'\\', rest) {
            None => break,
            Some(off) => {
                let p = i + off;
                if line.get(p) == Some(&b'"') {
                    return Quoted { content: start..p, next: p + 1, escaped, closed: true };
                }
                escaped = true;
                i = p + 2;
            }
        }
    }
    Quoted { content: start..line.len(), next: line.len(), escaped, closed: false }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Undoes the escaping web servers apply to logged strings: nginx `\xHH` (used for `"`, `\`
/// and non-printables), Apache `\"`, `\\`, `\xhh` and the C escapes `\n \r \t \b \v`. Rules
/// must see what the client sent (`"` rather than `\x22`), or an attacker could hide a quote
/// behind the escaping. Unknown escapes are kept verbatim.
pub(crate) fn unescape_log(src: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < src.len() {
        let Some(off) = memchr::memchr(b'\\', src.get(i..).unwrap_or_default()) else {
            out.extend_from_slice(src.get(i..).unwrap_or_default());
            return;
        };
        out.extend_from_slice(src.get(i..i + off).unwrap_or_default());
        let p = i + off;
        let (byte, used) = match at(src, p + 1) {
            b'"' => (b'"', 2),
            b'\\' => (b'\\', 2),
            b'n' => (b'\n', 2),
            b'r' => (b'\r', 2),
            b't' => (b'\t', 2),
            b'b' => (0x08, 2),
            b'v' => (0x0b, 2),
            b'x' | b'X' => match (hex_val(at(src, p + 2)), hex_val(at(src, p + 3))) {
                (Some(h), Some(l)) => ((h << 4) | l, 4),
                _ => (b'\\', 1),
            },
            _ => (b'\\', 1),
        };
        out.push(byte);
        i = p + used;
    }
}

/// Stores a quoted log value as field `id`: a raw span when it has no escapes (the common
/// case, zero copy), else its unescaped bytes in the record scratch. Returns where the value
/// now lives as `(range, owned)` so callers can split it further.
pub(crate) fn store_log_value(
    rec: &mut Record,
    line: &[u8],
    id: FieldId,
    content: Range<usize>,
    escaped: bool,
) -> (Range<usize>, bool) {
    if !escaped {
        rec.set_raw(id, content.clone());
        return (content, false);
    }
    let start = rec.scratch().len();
    unescape_log(line.get(content).unwrap_or_default(), rec.scratch_mut());
    rec.set_owned_from(id, start);
    (start..rec.scratch().len(), true)
}

/// Tiny deterministic PRNG (xorshift64*) for the fuzz-style tests: no extra dependency.
#[cfg(test)]
pub(crate) struct Rng(pub u64);

#[cfg(test)]
impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Random bytes biased towards the characters parsers care about.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        const SPECIAL: &[u8] = b" \"\\[]{}:,-?/x0123456789.<>T+Z\t";
        (0..len)
            .map(|_| {
                let r = self.next_u64();
                if r.is_multiple_of(3) { (r >> 8) as u8 } else { SPECIAL[((r >> 8) as usize) % SPECIAL.len()] }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_validation() {
        assert!(is_ipv4(b"1.2.3.4"));
        assert!(is_ipv4(b"192.030.0.6"));
        assert!(!is_ipv4(b"1.2.3"));
        assert!(!is_ipv4(b"1.2.3.4.5"));
        assert!(!is_ipv4(b"256.1.1.1"));
        assert!(!is_ipv4(b"1..2.3"));
        assert!(!is_ipv4(b""));
    }

    #[test]
    fn ipv6_validation() {
        assert!(is_ipv6(b"::1"));
        assert!(is_ipv6(b"2001:db8::80da:af6b:8b2c"));
        assert!(is_ipv6(b"::ffff:10.0.0.1"));
        assert!(is_ipv6(b"fe80::1%eth0"));
        assert!(!is_ipv6(b"2001:db8:"));
        assert!(!is_ipv6(b"hello"));
        assert!(!is_ipv6(b"\xff:\xfe"));
    }

    #[test]
    fn quoted_scanning_honours_escapes() {
        let l = br#""a\"b" x"#;
        let q = scan_quoted(l, 0);
        assert_eq!(q, Quoted { content: 1..5, next: 6, escaped: true, closed: true });
        let q = scan_quoted(b"\"abc", 0);
        assert!(!q.closed);
        assert_eq!(q.content, 1..4);
        let q = scan_quoted(b"\"ab\\", 0);
        assert!(!q.closed);
        assert_eq!(q.next, 4);
        let q = scan_quoted(b"\"", 0);
        assert_eq!(q.content, 1..1);
    }

    #[test]
    fn unescape_variants() {
        let mut out = Vec::new();
        unescape_log(br#"a\x22b\"c\\d\ne\q\x4"#, &mut out);
        assert_eq!(out, b"a\"b\"c\\d\ne\\q\\x4");
        out.clear();
        unescape_log(b"\\", &mut out);
        assert_eq!(out, b"\\");
    }
}

/// Robustness: every parser, on every prefix and random mutations of tricky lines and on
/// random bytes, must return (true or false) without panicking, and the event time must be
/// computable for whatever it returned.
#[cfg(test)]
mod never_panics {
    use super::Rng;
    use crate::parse::{FieldRegistry, FormatKind, Parser, Record, TimeSettings};

    const TRICKY: &[&[u8]] = &[
        br#"2001:db8::1 - u\"x [10/Oct/2000:13:55:36 -0700] "GET /a?b=\x22\\ HTTP/1.1" 200 - "-" "ua\x22\" "x\"#,
        br#"1.2.3.4 - - [05/Jan/2024:03:14:15 +0000] "\x16\x03\x01\x00\xF1" 400 157 "-" "-""#,
        b"h:80 1.2.3.4 - - [x] \"\\",
        b"[Fri Sep 09 10:42:29.902022 2011] [core:error] [pid 35708:tid 1] [client [::1]:50398] AH00128: x, referer: y",
        b"[Wed Oct 11 14:32:52 2000] [error] [client 2001:db8::80da:af6b:8b2c] msg",
        b"<34>Oct 11 22:14:15 mymachine su[123]: from 1.2.3.4: from ::ffff:1.2.3.4.",
        b"Jan  5 03:14:15 host sshd[1234]: Failed password for root from 1.2.3.4 port 22 ssh2",
        b"2024-01-05T03:14:15.123456+00:00 host sshd[1234]: msg",
        br#"<165>1 2003-10-11T22:14:15.003Z host app 12 ID [a b="\"\]\\"][c] msg from [::1]"#,
        br#"{"client_ip":"1.2.3.4","http":{"request":{"path":"/\u00e9\ud83d\ude00\ud800"}},"a":[{"}":"]"}],"n":-1e5,"t":true}"#,
        b"{\"uri\":\"/x?\xff\",\"request\":\"GET /\\\"x HTTP/1.1\",\"x\":nul",
        b"",
        b" ",
        b"\xff\xfe\x00\\\"[]{}",
    ];

    fn parsers(reg: &mut FieldRegistry) -> Vec<Parser> {
        let tz = TimeSettings::from_zone("America/New_York").unwrap();
        let mut ps: Vec<Parser> = [
            FormatKind::Combined,
            FormatKind::Common,
            FormatKind::ApacheError,
            FormatKind::Syslog,
            FormatKind::Json,
            FormatKind::Raw,
        ]
        .into_iter()
        .map(|k| Parser::builtin(k, tz))
        .collect();
        let mapping = vec![("client_ip".to_string(), "remote.addr".to_string())];
        ps.push(Parser::json("j", &mapping, tz, reg));
        reg.intern("http.request.path");
        reg.intern("a");
        let pattern = r"(?-u)^(?P<client_ip>\S+) (?P<time>\S*) (?P<request>.*)$";
        ps.push(Parser::custom("c", pattern, Some("%Y-%m-%dT%H:%M:%S%z".into()), tz, reg).unwrap());
        ps.push(Parser::custom("d", r"(?P<uri>.+)", None, tz, reg).unwrap());
        for p in &mut ps {
            p.bind(reg);
        }
        ps
    }

    fn feed(ps: &[Parser], fields: usize, rec: &mut Record, line: &[u8]) {
        for p in ps {
            p.parse(line, rec, fields);
            let _ = p.event_time(line, rec);
            for (_, v) in rec.iter(line) {
                std::hint::black_box(v);
            }
        }
    }

    #[test]
    fn prefixes_mutations_and_random_bytes() {
        let mut reg = FieldRegistry::default();
        let ps = parsers(&mut reg);
        let fields = reg.len();
        let mut rec = Record::new(fields);
        let mut rng = Rng(0x0123_4567_89ab_cdef);
        for line in TRICKY {
            for end in 0..=line.len() {
                feed(&ps, fields, &mut rec, &line[..end]);
                feed(&ps, fields, &mut rec, &line[end..]);
            }
            for _ in 0..200 {
                let mut m = line.to_vec();
                for _ in 0..=(rng.next_u64() % 4) {
                    if m.is_empty() {
                        break;
                    }
                    let pos = (rng.next_u64() as usize) % m.len();
                    m[pos] = rng.bytes(1)[0];
                }
                feed(&ps, fields, &mut rec, &m);
            }
        }
        for _ in 0..3000 {
            let len = (rng.next_u64() % 120) as usize;
            let bytes = rng.bytes(len);
            feed(&ps, fields, &mut rec, &bytes);
        }
        let huge: Vec<u8> = rng.bytes(100_000);
        feed(&ps, fields, &mut rec, &huge);
    }
}
