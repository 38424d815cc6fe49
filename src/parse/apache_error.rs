//! Apache error log, 2.2 and 2.4 layouts.
//!
//! ```text
//! [Wed Oct 11 14:32:52 2000] [error] [client 127.0.0.1] message
//! [Fri Sep 09 10:42:29.902022 2011] [core:error] [pid 35708:tid 4328636416] [client 72.15.99.187:50398] AH00128: ...
//! ```
//!
//! Only the leading bracket groups are structure; everything after them is the message, which
//! may itself contain attacker-controlled text such as `[client 6.6.6.6]` (a requested path
//! is echoed verbatim). Reading groups strictly from the start of the line means such text can
//! never be mistaken for the real client.

use std::ops::Range;

use super::Record;
use super::scan::{MAX_LINE, at, is_ipv4, is_ipv6, skip_spaces};
use super::std_fields as f;

/// Parses one Apache error-log line. Requires at least `[time]`; level, pid, client and
/// message are set when present.
pub fn parse(line: &[u8], rec: &mut Record) -> bool {
    if line.len() > MAX_LINE || at(line, 0) != b'[' {
        return false;
    }
    let Some(close) = memchr::memchr(b']', line) else {
        return false;
    };
    rec.set_raw(f::TIME, 1..close);
    let mut i = skip_spaces(line, close + 1);
    let mut apache24 = false;
    if let Some((group, next)) = group(line, i)
        && let Some(found) = level_group(line, group)
    {
        apache24 = found.module_sep;
        if let Some(m) = found.module {
            rec.set_raw(f::MODULE, m);
        }
        rec.set_raw(f::LEVEL, found.level);
        i = skip_spaces(line, next);
    }
    i = header_groups(line, i, apache24, rec);
    if i < line.len() {
        rec.set_raw(f::MESSAGE, i..line.len());
        set_referer(line, i, rec);
    }
    true
}

/// The bracket group starting at `i`: (content range, index after `]`). Nested brackets
/// are balanced so `[client [2001:db8::1]:443]` is one group.
fn group(line: &[u8], i: usize) -> Option<(Range<usize>, usize)> {
    if at(line, i) != b'[' {
        return None;
    }
    let mut depth = 0usize;
    let mut j = i + 1;
    loop {
        let off = memchr::memchr2(b'[', b']', line.get(j..)?)?;
        let p = j + off;
        if at(line, p) == b'[' {
            depth += 1;
        } else if depth == 0 {
            return Some((i + 1..p, p + 1));
        } else {
            depth -= 1;
        }
        j = p + 1;
    }
}

struct Level {
    module: Option<Range<usize>>,
    level: Range<usize>,
    /// `module:level` form, i.e. Apache 2.4 (even when the module is empty, as in `[:error]`).
    module_sep: bool,
}

/// `[error]` (2.2) or `[module:level]` (2.4). A group with a space in it is not a level.
fn level_group(line: &[u8], g: Range<usize>) -> Option<Level> {
    let content = line.get(g.clone())?;
    if content.is_empty() || content.contains(&b' ') {
        return None;
    }
    Some(match memchr::memrchr(b':', content) {
        Some(c) => {
            let module = (c > 0).then_some(g.start..g.start + c);
            Level { module, level: g.start + c + 1..g.end, module_sep: true }
        }
        None => Level { module: None, level: g, module_sep: false },
    })
}

/// Consumes the `[pid ...]`, `[client ...]` and `[remote ...]` groups that precede the
/// message; returns where the message starts. `[client]` wins over `[remote]` (with
/// mod_remoteip, client is the real user agent, remote the proxy).
fn header_groups(line: &[u8], mut i: usize, mut apache24: bool, rec: &mut Record) -> usize {
    let mut remote = None;
    let mut client_set = false;
    while let Some((g, next)) = group(line, i) {
        let content = line.get(g.clone()).unwrap_or_default();
        if let Some(rest) = content.strip_prefix(b"pid ") {
            apache24 = true;
            let len = rest.iter().take_while(|c| c.is_ascii_digit()).count();
            if len > 0 {
                rec.set_raw(f::PID, g.start + 4..g.start + 4 + len);
            }
        } else if content.starts_with(b"client ") {
            if let Some(ip) = strip_port(line, g.start + 7..g.end, apache24) {
                rec.set_raw(f::CLIENT_IP, ip);
                client_set = true;
            }
        } else if content.starts_with(b"remote ") {
            remote = strip_port(line, g.start + 7..g.end, true);
        } else {
            break;
        }
        i = skip_spaces(line, next);
    }
    if let (false, Some(ip)) = (client_set, remote) {
        rec.set_raw(f::CLIENT_IP, ip);
    }
    i
}

/// The address part of a client group. Apache 2.4 always appends `:port` (IPv6 addresses are
/// not bracketed, `::1:51234`), 2.2 never does; `[v6]:port` is handled too. A 2.4 IPv6 value
/// only loses its last group when that leaves a valid address.
fn strip_port(line: &[u8], r: Range<usize>, apache24: bool) -> Option<Range<usize>> {
    let addr = line.get(r.clone())?;
    if addr.is_empty() {
        return None;
    }
    if addr.first() == Some(&b'[') {
        let close = memchr::memchr(b']', addr)?;
        return Some(r.start + 1..r.start + close);
    }
    if is_ipv4(addr) {
        return Some(r);
    }
    let colons = memchr::memchr_iter(b':', addr).count();
    let last = memchr::memrchr(b':', addr)?;
    let port = addr.get(last + 1..).unwrap_or_default();
    let port_ok = !port.is_empty() && port.iter().all(u8::is_ascii_digit);
    if colons == 1 {
        return Some(if port_ok { r.start..r.start + last } else { r });
    }
    let host = addr.get(..last).unwrap_or_default();
    if apache24 && port_ok && is_ipv6(host) {
        return Some(r.start..r.start + last);
    }
    Some(r)
}

/// Apache appends `, referer: URL` to messages about a request that had one.
fn set_referer(line: &[u8], msg_start: usize, rec: &mut Record) {
    const MARK: &[u8] = b", referer: ";
    let msg = line.get(msg_start..).unwrap_or_default();
    if let Some(p) = memchr::memmem::rfind(msg, MARK) {
        let start = msg_start + p + MARK.len();
        if start < line.len() {
            rec.set_raw(f::REFERER, start..line.len());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::std_fields as f;

    use crate::parse::test_util::field;

    fn run(line: &[u8]) -> (bool, Record) {
        crate::parse::test_util::run(parse, line)
    }

    #[test]
    fn apache22() {
        let l = b"[Wed Oct 11 14:32:52 2000] [error] [client 127.0.0.1] client denied by server configuration: /export/home/live/ap/htdocs/test";
        let (ok, r) = run(l);
        assert!(ok);
        assert_eq!(field(l, &r, f::TIME), Some("Wed Oct 11 14:32:52 2000"));
        assert_eq!(field(l, &r, f::LEVEL), Some("error"));
        assert_eq!(field(l, &r, f::MODULE), None);
        assert_eq!(field(l, &r, f::CLIENT_IP), Some("127.0.0.1"));
        assert_eq!(
            field(l, &r, f::MESSAGE),
            Some("client denied by server configuration: /export/home/live/ap/htdocs/test")
        );
    }

    #[test]
    fn apache22_ipv6_has_no_port() {
        let l = b"[Thu Jul 11 01:21:44 2013] [error] [client 2001:db8::80da:af6b:1234] user bob not found: /";
        let (_, r) = run(l);
        assert_eq!(field(l, &r, f::CLIENT_IP), Some("2001:db8::80da:af6b:1234"));
    }

    #[test]
    fn apache24() {
        let l = b"[Fri Sep 09 10:42:29.902022 2011] [core:error] [pid 35708:tid 4328636416] [client 72.15.99.187:50398] AH00128: File does not exist: /usr/local/apache2/htdocs/favicon.ico, referer: http://example.com/index.html";
        let (ok, r) = run(l);
        assert!(ok);
        assert_eq!(field(l, &r, f::TIME), Some("Fri Sep 09 10:42:29.902022 2011"));
        assert_eq!(field(l, &r, f::MODULE), Some("core"));
        assert_eq!(field(l, &r, f::LEVEL), Some("error"));
        assert_eq!(field(l, &r, f::PID), Some("35708"));
        assert_eq!(field(l, &r, f::CLIENT_IP), Some("72.15.99.187"));
        assert!(field(l, &r, f::MESSAGE).unwrap().starts_with("AH00128: File does not exist"));
        assert_eq!(field(l, &r, f::REFERER), Some("http://example.com/index.html"));
    }

    #[test]
    fn apache24_ipv6_and_variants() {
        let l = b"[Tue Jan 09 10:00:00.000001 2024] [authz_core:error] [pid 11] [client 2001:db8::5:51234] AH01630: client denied";
        let (_, r) = run(l);
        assert_eq!(field(l, &r, f::CLIENT_IP), Some("2001:db8::5"));
        let l = b"[Tue Jan 09 10:00:00 2024] [ssl:warn] [pid 11] [client [2001:db8::7]:443] AH01909: x";
        let (_, r) = run(l);
        assert_eq!(field(l, &r, f::CLIENT_IP), Some("2001:db8::7"));
        let l = b"[Tue Jan 09 10:00:00 2024] [:error] [pid 11] [client ::1:50000] PHP Warning: x";
        let (_, r) = run(l);
        assert_eq!(field(l, &r, f::CLIENT_IP), Some("::1"));
        assert_eq!(field(l, &r, f::MODULE), None);
        assert_eq!(field(l, &r, f::LEVEL), Some("error"));
        let l = b"[Tue Jan 09 10:00:00 2024] [mpm_event:notice] [pid 1:tid 2] AH00489: Apache/2.4.58 configured";
        let (_, r) = run(l);
        assert_eq!(field(l, &r, f::CLIENT_IP), None);
        assert_eq!(field(l, &r, f::MESSAGE), Some("AH00489: Apache/2.4.58 configured"));
        let l = b"[Tue Jan 09 10:00:00 2024] [proxy:error] [pid 3] [remote 10.0.0.1:80] AH00957: x";
        let (_, r) = run(l);
        assert_eq!(field(l, &r, f::CLIENT_IP), Some("10.0.0.1"));
    }

    #[test]
    fn injected_client_in_message_is_ignored() {
        let l = b"[Sat Jun 01 02:17:42 2013] [error] [client 192.168.33.1] File does not exist: /srv/http/site/[client 192.168.0.1] user root not found";
        let (_, r) = run(l);
        assert_eq!(field(l, &r, f::CLIENT_IP), Some("192.168.33.1"));
        let l = b"[Sat Jun 01 02:17:42 2013] [error] File does not exist: [client 6.6.6.6] x";
        let (_, r) = run(l);
        assert_eq!(field(l, &r, f::CLIENT_IP), None);
    }

    #[test]
    fn rejects_and_truncations() {
        assert!(!run(b"").0);
        assert!(!run(b"hello").0);
        assert!(!run(b"[no close").0);
        let (ok, r) = run(b"[Wed Oct 11 14:32:52 2000] [err");
        assert!(ok);
        assert_eq!(r.get(b"[Wed Oct 11 14:32:52 2000] [err", f::LEVEL), None);
        let l = b"[Wed Oct 11 14:32:52 2000] [error] [client 1.2.3.4";
        assert!(run(l).0);
        let mut l = b"[Wed Oct 11 14:32:52 2000] [error] [client 1.2.3.4] \xff\xfe ".to_vec();
        l.extend(std::iter::repeat_n(b'A', 100_000));
        let (ok, r) = run(&l);
        assert!(ok);
        assert_eq!(r.get(&l, f::MESSAGE).map(|m| m.len()), Some(100_003));
    }
}
