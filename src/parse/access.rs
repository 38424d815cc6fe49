//! Apache / nginx access logs: `common` and `combined`.
//!
//! ```text
//! 203.0.113.9 - alice [10/Oct/2000:13:55:36 -0700] "GET /a?b=1 HTTP/1.1" 200 2326 "http://r/" "UA" ...
//! ```
//!
//! The line is walked left to right once. Only the head (client, ident, user, `[time]` and the
//! opening quote of the request) is required for the line to count as recognised; everything
//! after is best effort, so a line cut short by a reader limit, a TLS handshake logged as the
//! "request", or extra nginx fields after the user agent still yield every field present.
//! An Apache `vhost_combined` line (`host:port ip ident user [time] ...`) is recognised too,
//! with the virtual host stored as `host`.

use std::ops::Range;

use super::scan::{MAX_LINE, at, is_ip, scan_quoted, set_span, store_log_value, token_end};
use super::std_fields as f;
use super::{FieldId, Record, Span};

/// Parses one access-log line into `rec`. Returns false (and leaves no fields) when the line
/// does not have the `client ident user [time] "` head.
pub fn parse(line: &[u8], rec: &mut Record) -> bool {
    if line.len() > MAX_LINE {
        return false;
    }
    let Some(head) = parse_head(line) else {
        return false;
    };
    head.store(rec);
    parse_tail(line, head.request_quote, rec);
    true
}

/// The mandatory part of the line, located before anything is written to the record so a
/// rejected line leaves the record untouched.
struct Head {
    vhost: Option<Range<usize>>,
    client: Range<usize>,
    /// `None` when the log has `-` (absent).
    ident: Option<Range<usize>>,
    user: Option<Range<usize>>,
    time: Range<usize>,
    /// Index of the request's opening quote.
    request_quote: usize,
}

impl Head {
    fn store(&self, rec: &mut Record) {
        if let Some(v) = &self.vhost {
            rec.set_raw(f::HOST, v.clone());
        }
        rec.set_raw(f::CLIENT_IP, self.client.clone());
        if let Some(r) = &self.ident {
            rec.set_raw(f::IDENT, r.clone());
        }
        if let Some(r) = &self.user {
            rec.set_raw(f::USER, r.clone());
        }
        rec.set_raw(f::TIME, self.time.clone());
    }
}

/// `Some(range)` unless the token is empty or the `-` placeholder.
fn present(line: &[u8], r: Range<usize>) -> Option<Range<usize>> {
    match line.get(r.clone()) {
        Some(b"-") | Some(b"") | None => None,
        Some(_) => Some(r),
    }
}

/// Up to four space-separated tokens of `prefix` (the fourth absorbs the rest), and how many
/// tokens there are in total.
fn split_prefix(prefix: &[u8]) -> ([Range<usize>; 4], usize) {
    let mut toks: [Range<usize>; 4] = [0..0, 0..0, 0..0, 0..0];
    let mut n = 0;
    let mut start = 0;
    for (i, &c) in prefix.iter().enumerate() {
        if c == b' ' {
            if n < 3 {
                toks[n] = start..i;
                start = i + 1;
            }
            n += 1;
        }
    }
    if n <= 3 {
        toks[n] = start..prefix.len();
    } else {
        toks[3] = start..prefix.len();
    }
    (toks, n + 1)
}

/// Finds `client ident user [time] "`. The tokens before the `[` are split on spaces: three
/// is the standard layout; four with a non-IP first token and an IP second is
/// vhost_combined; otherwise the user (Apache logs it verbatim) holds the extra spaces.
fn parse_head(line: &[u8]) -> Option<Head> {
    let lb = memchr::memchr(b'[', line)?;
    if lb < 2 || at(line, lb - 1) != b' ' {
        return None;
    }
    let prefix = line.get(..lb - 1)?;
    let (toks, n) = split_prefix(prefix);
    let tok = |r: &Range<usize>| prefix.get(r.clone()).unwrap_or_default();
    let [t0, t1, t2, t3] = toks;
    let (vhost, client, ident, user) = if n == 4 && is_ip(tok(&t1)) && !is_ip(tok(&t0)) {
        (Some(t0), t1, t2, t3)
    } else if n >= 3 {
        (None, t0, t1, t2.start..prefix.len())
    } else {
        return None;
    };
    if client.is_empty() {
        return None;
    }
    let rb = lb + 1 + memchr::memchr(b']', line.get(lb + 1..)?)?;
    if at(line, rb + 1) != b' ' || at(line, rb + 2) != b'"' {
        return None;
    }
    Some(Head {
        vhost: vhost.and_then(|v| present(line, v)),
        client,
        ident: present(line, ident),
        user: present(line, user),
        time: lb + 1..rb,
        request_quote: rb + 2,
    })
}

/// Request, status, bytes, then the optional referer and user agent. Stops quietly at the
/// first thing that does not fit: whatever was found so far stays set.
fn parse_tail(line: &[u8], quote: usize, rec: &mut Record) {
    let req = scan_quoted(line, quote);
    store_log_value(rec, line, f::REQUEST, req.content, req.escaped);
    derive_request_fields(line, rec);
    if !req.closed {
        return;
    }
    let mut i = req.next;
    for id in [f::STATUS, f::BYTES] {
        if at(line, i) != b' ' {
            return;
        }
        let end = token_end(line, i + 1);
        let tok = line.get(i + 1..end).unwrap_or_default();
        if !tok.is_empty() && tok.iter().all(u8::is_ascii_digit) {
            rec.set_raw(id, i + 1..end);
        }
        i = end;
    }
    for id in [f::REFERER, f::USER_AGENT] {
        if at(line, i) != b' ' || at(line, i + 1) != b'"' {
            return;
        }
        let q = scan_quoted(line, i + 1);
        if q.escaped || line.get(q.content.clone()) != Some(b"-") {
            store_log_value(rec, line, id, q.content, q.escaped);
        }
        if !q.closed {
            return;
        }
        i = q.next;
    }
}

/// The pieces of a request line, as ranges relative to the request bytes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct RequestParts {
    pub method: Option<Range<usize>>,
    pub uri: Option<Range<usize>>,
    pub protocol: Option<Range<usize>>,
}

/// RFC 9110 `tchar`: what a method token may contain. Used to tell a request line from junk
/// (a TLS ClientHello sent to a plain-HTTP port is logged as the "request").
fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

/// Splits `METHOD SP target [SP HTTP/x]`. The protocol is the last space-separated token when
/// it starts with `HTTP/`, so a target containing raw spaces (Apache logs them as sent) stays
/// whole. A request without a valid method token gives no parts (junk such as `-` or a TLS
/// handshake); an empty target gives no `uri`.
pub(crate) fn split_request(req: &[u8]) -> RequestParts {
    let Some(sp) = memchr::memchr(b' ', req) else {
        return RequestParts::default();
    };
    let method = req.get(..sp).unwrap_or_default();
    if method.is_empty() || !method.iter().all(|&c| is_tchar(c)) {
        return RequestParts::default();
    }
    let rest_start = sp + 1;
    let rest = req.get(rest_start..).unwrap_or_default();
    let (uri, protocol) = match memchr::memrchr(b' ', rest) {
        Some(p) if rest.get(p + 1..).is_some_and(|t| t.starts_with(b"HTTP/")) => {
            (rest_start..rest_start + p, Some(rest_start + p + 1..req.len()))
        }
        _ => (rest_start..req.len(), None),
    };
    if uri.is_empty() {
        return RequestParts { method: Some(0..sp), uri: None, protocol };
    }
    RequestParts { method: Some(0..sp), uri: Some(uri), protocol }
}

/// Splits a request target at the first `?`: (path, query without the `?`). The query is
/// `None` when there is no `?` (an empty query after a bare `?` is `Some(empty)`).
pub(crate) fn split_uri(uri: &[u8]) -> (Range<usize>, Option<Range<usize>>) {
    match memchr::memchr(b'?', uri) {
        Some(q) => (0..q, Some(q + 1..uri.len())),
        None => (0..uri.len(), None),
    }
}

/// The bytes of a field plus where they live, so derived sub-fields can point into the same
/// storage (raw line or scratch) at an offset.
fn located(line: &[u8], rec: &Record, id: FieldId) -> Option<(Range<usize>, bool)> {
    match rec.span(id)? {
        Span::Raw(r) => Some((r.start as usize..r.end as usize, false)),
        Span::Owned(r) => Some((r.start as usize..r.end as usize, true)),
    }
    .filter(|(r, owned)| if *owned { rec.scratch().get(r.clone()).is_some() } else { line.get(r.clone()).is_some() })
}

fn bytes_of<'a>(line: &'a [u8], rec: &'a Record, r: &Range<usize>, owned: bool) -> &'a [u8] {
    let src = if owned { rec.scratch() } else { line };
    src.get(r.clone()).unwrap_or_default()
}

fn shift(r: Range<usize>, by: usize) -> Range<usize> {
    r.start + by..r.end + by
}

/// Fills `method`/`uri`/`protocol` from `request`, then `path`/`query` from `uri`, for every
/// one of those that is not already set. Shared by every format that can produce a request or
/// a URI (access logs, custom regexes, JSON) so the splitting rules live in one place.
pub(crate) fn derive_request_fields(line: &[u8], rec: &mut Record) {
    if let Some((req, owned)) = located(line, rec, f::REQUEST) {
        let parts = split_request(bytes_of(line, rec, &req, owned));
        for (id, part) in [(f::METHOD, parts.method), (f::URI, parts.uri), (f::PROTOCOL, parts.protocol)] {
            if let Some(p) = part
                && rec.span(id).is_none()
            {
                set_span(rec, id, shift(p, req.start), owned);
            }
        }
    }
    if let Some((uri, owned)) = located(line, rec, f::URI) {
        let (path, query) = split_uri(bytes_of(line, rec, &uri, owned));
        if rec.span(f::PATH).is_none() {
            set_span(rec, f::PATH, shift(path, uri.start), owned);
        }
        if let Some(q) = query
            && rec.span(f::QUERY).is_none()
        {
            set_span(rec, f::QUERY, shift(q, uri.start), owned);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(line: &[u8]) -> (bool, Record) {
        crate::parse::test_util::run(parse, line)
    }

    fn field<'a>(line: &'a [u8], rec: &'a Record, id: FieldId) -> Option<&'a [u8]> {
        rec.get(line, id)
    }

    #[test]
    fn apache_combined() {
        let l = br#"192.0.2.10 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif?a=1&b=2 HTTP/1.0" 200 2326 "http://www.example.com/start.html" "Mozilla/4.08 [en] (Win98; I ;Nav)""#;
        let (ok, r) = run(l);
        assert!(ok);
        let expect: &[(FieldId, Option<&[u8]>)] = &[
            (f::CLIENT_IP, Some(b"192.0.2.10")),
            (f::IDENT, None),
            (f::USER, Some(b"frank")),
            (f::TIME, Some(b"10/Oct/2000:13:55:36 -0700")),
            (f::REQUEST, Some(b"GET /apache_pb.gif?a=1&b=2 HTTP/1.0")),
            (f::METHOD, Some(b"GET")),
            (f::URI, Some(b"/apache_pb.gif?a=1&b=2")),
            (f::PATH, Some(b"/apache_pb.gif")),
            (f::QUERY, Some(b"a=1&b=2")),
            (f::PROTOCOL, Some(b"HTTP/1.0")),
            (f::STATUS, Some(b"200")),
            (f::BYTES, Some(b"2326")),
            (f::REFERER, Some(b"http://www.example.com/start.html")),
            (f::USER_AGENT, Some(b"Mozilla/4.08 [en] (Win98; I ;Nav)")),
            (f::HOST, None),
        ];
        for (id, v) in expect {
            assert_eq!(field(l, &r, *id), *v, "field {id}");
        }
        assert!(r.is_raw(f::USER_AGENT));
    }

    #[test]
    fn common_format_and_dashes() {
        let l = br#"::1 - - [05/Jan/2024:03:14:15 +0000] "POST /login HTTP/1.1" 302 -"#;
        let (ok, r) = run(l);
        assert!(ok);
        assert_eq!(field(l, &r, f::CLIENT_IP), Some(&b"::1"[..]));
        assert_eq!(field(l, &r, f::USER), None);
        assert_eq!(field(l, &r, f::IDENT), None);
        assert_eq!(field(l, &r, f::STATUS), Some(&b"302"[..]));
        assert_eq!(field(l, &r, f::BYTES), None);
        assert_eq!(field(l, &r, f::QUERY), None);
        assert_eq!(field(l, &r, f::REFERER), None);
        let l = br#"2001:db8::1 - - [05/Jan/2024:03:14:15 +0000] "GET / HTTP/2.0" 200 5 "-" "-""#;
        let (_, r) = run(l);
        assert_eq!(field(l, &r, f::CLIENT_IP), Some(&b"2001:db8::1"[..]));
        assert_eq!(field(l, &r, f::REFERER), None);
        assert_eq!(field(l, &r, f::USER_AGENT), None);
        assert_eq!(field(l, &r, f::BYTES), Some(&b"5"[..]));
    }

    #[test]
    fn nginx_escapes_are_decoded() {
        let l = br#"203.0.113.7 - - [05/Jan/2024:03:14:15 +0000] "GET /q?x=\x22%3E HTTP/1.1" 200 73 "-" "sqlmap\x22) AND (\x22a\x22=\x22a" "198.51.100.1""#;
        let (ok, r) = run(l);
        assert!(ok);
        assert_eq!(field(l, &r, f::USER_AGENT), Some(&b"sqlmap\") AND (\"a\"=\"a"[..]));
        assert!(!r.is_raw(f::USER_AGENT));
        assert_eq!(field(l, &r, f::QUERY), Some(&b"x=\"%3E"[..]));
        assert_eq!(field(l, &r, f::PATH), Some(&b"/q"[..]));
        assert_eq!(field(l, &r, f::METHOD), Some(&b"GET"[..]));
        assert_eq!(field(l, &r, f::PROTOCOL), Some(&b"HTTP/1.1"[..]));
    }

    #[test]
    fn apache_backslash_escapes() {
        let l = br#"192.0.2.1 - - [05/Jan/2024:03:14:15 +0000] "GET /a\"b\\c HTTP/1.1" 404 10 "-" "UA \"quoted\"""#;
        let (ok, r) = run(l);
        assert!(ok);
        assert_eq!(field(l, &r, f::URI), Some(&br#"/a"b\c"#[..]));
        assert_eq!(field(l, &r, f::STATUS), Some(&b"404"[..]));
        assert_eq!(field(l, &r, f::USER_AGENT), Some(&br#"UA "quoted""#[..]));
    }

    #[test]
    fn malformed_requests_keep_other_fields() {
        /// (line, request, method, uri)
        type Case<'a> = (&'a [u8], &'a [u8], Option<&'a [u8]>, Option<&'a [u8]>);
        let cases: &[Case] = &[
            (br#"1.2.3.4 - - [05/Jan/2024:03:14:15 +0000] "-" 400 0 "-" "-""#, b"-", None, None),
            (
                br#"1.2.3.4 - - [05/Jan/2024:03:14:15 +0000] "\x16\x03\x01\x00\xF1\x01\x00\x00\xED\x03\x03" 400 157 "-" "-""#,
                b"\x16\x03\x01\x00\xF1\x01\x00\x00\xED\x03\x03",
                None,
                None,
            ),
            (br#"1.2.3.4 - - [05/Jan/2024:03:14:15 +0000] "GET /" 400 0 "-" "-""#, b"GET /", Some(b"GET"), Some(b"/")),
            (br#"1.2.3.4 - - [05/Jan/2024:03:14:15 +0000] "" 408 0 "-" "-""#, b"", None, None),
            (
                br#"1.2.3.4 - - [05/Jan/2024:03:14:15 +0000] "GET /a b HTTP/1.1" 400 0 "-" "-""#,
                b"GET /a b HTTP/1.1",
                Some(b"GET"),
                Some(b"/a b"),
            ),
        ];
        for (l, req, method, uri) in cases {
            let (ok, r) = run(l);
            assert!(ok, "{}", String::from_utf8_lossy(l));
            assert_eq!(field(l, &r, f::CLIENT_IP), Some(&b"1.2.3.4"[..]));
            assert_eq!(field(l, &r, f::TIME), Some(&b"05/Jan/2024:03:14:15 +0000"[..]));
            assert!(field(l, &r, f::STATUS).is_some());
            assert_eq!(field(l, &r, f::REQUEST), Some(*req));
            assert_eq!(field(l, &r, f::METHOD), *method);
            assert_eq!(field(l, &r, f::URI), *uri);
        }
    }

    #[test]
    fn vhost_and_extra_fields() {
        let l = br#"www.example.com:443 192.0.2.5 - - [05/Jan/2024:03:14:15 +0000] "GET / HTTP/1.1" 200 1 "-" "curl/8" extra 123"#;
        let (ok, r) = run(l);
        assert!(ok);
        assert_eq!(field(l, &r, f::HOST), Some(&b"www.example.com:443"[..]));
        assert_eq!(field(l, &r, f::CLIENT_IP), Some(&b"192.0.2.5"[..]));
        assert_eq!(field(l, &r, f::USER_AGENT), Some(&b"curl/8"[..]));
        // A user with a space is kept whole.
        let l = br#"192.0.2.5 - John Smith [05/Jan/2024:03:14:15 +0000] "GET / HTTP/1.1" 200 1"#;
        let (_, r) = run(l);
        assert_eq!(field(l, &r, f::USER), Some(&b"John Smith"[..]));
        assert_eq!(field(l, &r, f::HOST), None);
    }

    #[test]
    fn truncated_and_rejected_lines() {
        let l = br#"1.2.3.4 - - [05/Jan/2024:03:14:15 +0000] "GET /very/long"#;
        let (ok, r) = run(l);
        assert!(ok);
        assert_eq!(field(l, &r, f::CLIENT_IP), Some(&b"1.2.3.4"[..]));
        assert_eq!(field(l, &r, f::URI), Some(&b"/very/long"[..]));
        assert_eq!(field(l, &r, f::STATUS), None);
        let l = br#"1.2.3.4 - - [05/Jan/2024:03:14:15 +0000] "GET / HTTP/1.1" 200 1 "http://x"#;
        let (_, r) = run(l);
        assert_eq!(field(l, &r, f::REFERER), Some(&b"http://x"[..]));
        for l in [
            &b""[..],
            b"hello",
            b"1.2.3.4 - - [05/Jan/2024:03:14:15 +0000",
            b"1.2.3.4 - - [05/Jan/2024:03:14:15 +0000] GET",
            b"[05/Jan/2024:03:14:15 +0000] \"GET\"",
            b"Jan  5 03:14:15 host sshd[1234]: msg",
        ] {
            let (ok, r) = run(l);
            assert!(!ok, "{}", String::from_utf8_lossy(l));
            assert_eq!(r.iter(l).count(), 0);
        }
    }

    #[test]
    fn invalid_utf8_and_huge_line() {
        let l = b"1.2.3.4 - \xff\xfe [05/Jan/2024:03:14:15 +0000] \"GET /\xc3\x28 HTTP/1.1\" 200 1 \"-\" \"\xff\"";
        let (ok, r) = run(l);
        assert!(ok);
        assert_eq!(field(l, &r, f::USER), Some(&b"\xff\xfe"[..]));
        assert_eq!(field(l, &r, f::PATH), Some(&b"/\xc3\x28"[..]));
        let mut l = b"1.2.3.4 - - [05/Jan/2024:03:14:15 +0000] \"GET /?q=".to_vec();
        l.extend(std::iter::repeat_n(b'A', 100_000));
        l.extend_from_slice(b" HTTP/1.1\" 414 0 \"-\" \"x\\x22y\"");
        let (ok, r) = run(&l);
        assert!(ok);
        assert_eq!(field(&l, &r, f::QUERY).map(<[u8]>::len), Some(100_002));
        assert_eq!(field(&l, &r, f::STATUS), Some(&b"414"[..]));
        assert_eq!(field(&l, &r, f::USER_AGENT), Some(&b"x\"y"[..]));
    }

    #[test]
    fn split_helpers() {
        assert_eq!(
            split_request(b"GET /x HTTP/1.1"),
            RequestParts { method: Some(0..3), uri: Some(4..6), protocol: Some(7..15) }
        );
        assert_eq!(split_request(b"GET"), RequestParts::default());
        assert_eq!(split_request(b"G\x01T /"), RequestParts::default());
        assert_eq!(split_request(b"GET  HTTP/1.1").uri, None);
        assert_eq!(split_uri(b"/a?"), (0..2, Some(3..3)));
        assert_eq!(split_uri(b"/a"), (0..2, None));
    }
}
