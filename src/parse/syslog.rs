//! syslog: RFC 3164 (BSD, with or without `<PRI>`, classic or ISO timestamp) and RFC 5424.
//!
//! ```text
//! <34>Oct 11 22:14:15 mymachine su[123]: msg
//! Jan  5 03:14:15 host sshd[1234]: Failed password for root from 1.2.3.4 port 22 ssh2
//! 2024-01-05T03:14:15.123456+00:00 host sshd[1234]: msg
//! <165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut="3"] msg
//! ```
//!
//! Fields: time, host, program, pid, message, plus `client_ip` taken from the first
//! ` from <address>` in the message (sshd, PAM, many daemons log the peer that way).

use std::ops::Range;

use super::Record;
use super::scan::{MAX_LINE, at, is_ip, skip_spaces, token_end};
use super::std_fields as f;

/// Parses one syslog line. Returns false when no timestamp layout is recognised.
pub fn parse(line: &[u8], rec: &mut Record) -> bool {
    if line.len() > MAX_LINE {
        return false;
    }
    let body = pri_end(line);
    let ok = if body > 0 && at(line, body).is_ascii_digit() && at(line, body + 1) == b' ' {
        parse_5424(line, body + 2, rec)
    } else {
        parse_3164(line, body, rec)
    };
    if !ok {
        rec.clear();
    }
    ok
}

/// Index just after a leading `<PRI>` (1 to 3 digits), or 0 when there is none.
fn pri_end(line: &[u8]) -> usize {
    if at(line, 0) != b'<' {
        return 0;
    }
    let digits = line.iter().skip(1).take(4).take_while(|c| c.is_ascii_digit()).count();
    if (1..=3).contains(&digits) && at(line, 1 + digits) == b'>' { digits + 2 } else { 0 }
}

/// RFC 3164: `TIMESTAMP HOST TAG: MSG`.
fn parse_3164(line: &[u8], start: usize, rec: &mut Record) -> bool {
    let Some(ts_end) = timestamp_end(line, start) else {
        return false;
    };
    rec.set_raw(f::TIME, start..ts_end);
    let mut i = skip_spaces(line, ts_end);
    let host_end = token_end(line, i);
    // A device that omits the host goes straight to the tag (`Oct 11 22:14:15 sshd[1]: ...`).
    if tag(line, i..host_end).is_none() {
        if host_end > i {
            rec.set_raw(f::HOST, i..host_end);
        }
        i = skip_spaces(line, host_end);
    }
    let tag_end = token_end(line, i);
    if let Some(t) = tag(line, i..tag_end) {
        rec.set_raw(f::PROGRAM, t.program);
        if let Some(pid) = t.pid {
            rec.set_raw(f::PID, pid);
        }
        i = if at(line, tag_end) == b' ' { tag_end + 1 } else { tag_end };
    }
    set_message(line, i, rec);
    true
}

/// End of an RFC 3164 timestamp starting at `i`: `Mmm dd hh:mm:ss` (day space-padded or
/// not, optional fraction, optional year before or after the time) or an ISO 8601 token.
fn timestamp_end(line: &[u8], i: usize) -> Option<usize> {
    if at(line, i).is_ascii_digit() {
        let end = token_end(line, i);
        let tok = line.get(i..end)?;
        let iso = tok.len() >= 19 && at(tok, 4) == b'-' && at(tok, 7) == b'-' && matches!(at(tok, 10), b'T' | b't');
        return iso.then_some(end);
    }
    let month = line.get(i..i + 3)?;
    if !month.iter().all(u8::is_ascii_alphabetic) || at(line, i + 3) != b' ' {
        return None;
    }
    let mut j = skip_spaces(line, i + 3);
    let day = digits(line, j);
    if !(1..=2).contains(&day) || at(line, j + day) != b' ' {
        return None;
    }
    j = skip_spaces(line, j + day);
    if digits(line, j) == 4 && at(line, j + 4) == b' ' {
        j += 5;
    }
    if !is_hms(line, j) {
        return None;
    }
    j += 8;
    if at(line, j) == b'.' {
        j += 1 + digits(line, j + 1);
    }
    if at(line, j) == b' ' && digits(line, j + 1) == 4 && matches!(at(line, j + 5), b' ' | 0) {
        j += 5;
    }
    Some(j.min(line.len()))
}

fn digits(line: &[u8], i: usize) -> usize {
    line.get(i..).unwrap_or_default().iter().take_while(|c| c.is_ascii_digit()).count()
}

fn is_hms(line: &[u8], i: usize) -> bool {
    line.get(i..i + 8).is_some_and(|t| {
        t.iter().enumerate().all(|(k, c)| if k == 2 || k == 5 { *c == b':' } else { c.is_ascii_digit() })
    })
}

struct Tag {
    program: Range<usize>,
    pid: Option<Range<usize>>,
}

/// `prog[pid]:`, `prog:` or `prog[pid]` (some senders drop the colon). A bare word without
/// a colon is message text, not a tag (`last message repeated 3 times`).
fn tag(line: &[u8], r: Range<usize>) -> Option<Tag> {
    let tok = line.get(r.clone())?;
    let tok = tok.strip_suffix(b":").map_or((tok, false), |t| (t, true));
    let (body, colon) = tok;
    if body.is_empty() {
        return None;
    }
    match memchr::memchr(b'[', body) {
        Some(lb) if lb > 0 && body.last() == Some(&b']') => {
            let pid = r.start + lb + 1..r.start + body.len() - 1;
            Some(Tag { program: r.start..r.start + lb, pid: (!pid.is_empty()).then_some(pid) })
        }
        Some(_) => None,
        None if colon => Some(Tag { program: r.start..r.start + body.len(), pid: None }),
        None => None,
    }
}

/// RFC 5424 after `<PRI>V `: `TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD [MSG]`, `-` = nil.
fn parse_5424(line: &[u8], start: usize, rec: &mut Record) -> bool {
    let mut i = start;
    let mut tokens: [Range<usize>; 5] = [0..0, 0..0, 0..0, 0..0, 0..0];
    for t in &mut tokens {
        let end = token_end(line, i);
        if i >= line.len() || end == i {
            return false;
        }
        *t = i..end;
        i = end + 1;
    }
    let [time, host, app, procid, _msgid] = tokens;
    for (id, r) in [(f::TIME, time), (f::HOST, host), (f::PROGRAM, app), (f::PID, procid)] {
        if line.get(r.clone()) != Some(b"-") {
            rec.set_raw(id, r);
        }
    }
    let msg = skip_structured_data(line, i);
    let msg = if at(line, msg) == b' ' { msg + 1 } else { msg };
    let msg = if line.get(msg..msg + 3) == Some(b"\xEF\xBB\xBF") { msg + 3 } else { msg };
    set_message(line, msg, rec);
    true
}

/// Index after STRUCTURED-DATA starting at `i`: `-`, or `[id k="v" ...]` elements where a
/// quoted value may contain `\"`, `\\` and `\]`.
fn skip_structured_data(line: &[u8], i: usize) -> usize {
    if at(line, i) != b'[' {
        return token_end(line, i);
    }
    let mut j = i;
    while at(line, j) == b'[' {
        let mut quoted = false;
        j += 1;
        loop {
            match line.get(j) {
                None => return line.len(),
                Some(b'\\') if quoted => j += 2,
                Some(b'"') => {
                    quoted = !quoted;
                    j += 1;
                }
                Some(b']') if !quoted => {
                    j += 1;
                    break;
                }
                Some(_) => j += 1,
            }
        }
    }
    j.min(line.len())
}

fn set_message(line: &[u8], start: usize, rec: &mut Record) {
    if start < line.len() {
        rec.set_raw(f::MESSAGE, start..line.len());
        if let Some(ip) = from_address(line, start) {
            rec.set_raw(f::CLIENT_IP, ip);
        }
    }
}

/// The first ` from <IPv4|IPv6>` in `line[start..]`: `from 1.2.3.4 port 22`,
/// `from ::ffff:10.0.0.1`, `from [2001:db8::1]`, `from 1.2.3.4:` (trailing punctuation
/// dropped). A host name after `from` is skipped and the search goes on.
///
/// Caution for ban actions: messages embed client-controlled text (`Invalid user <name> from`
/// puts the user name *before* the real address; `Received disconnect from IP port N:11:
/// <client text>` puts it *after*), so a crafted name can plant an earlier ` from 6.6.6.6`.
/// Rules that drive bans should anchor on the message layout rather than trust this field
/// blindly.
fn from_address(line: &[u8], start: usize) -> Option<Range<usize>> {
    let msg = line.get(start..)?;
    // sshd also writes `ROOT LOGIN REFUSED FROM 1.2.3.4`; both spellings, earliest wins.
    let lower = memchr::memmem::find_iter(msg, b" from ").filter_map(|p| address_at(line, start + p + 6)).next();
    let upper = memchr::memmem::find_iter(msg, b" FROM ").filter_map(|p| address_at(line, start + p + 6)).next();
    match (lower, upper) {
        (Some(l), Some(u)) => Some(if u.start < l.start { u } else { l }),
        (l, u) => l.or(u),
    }
}

/// The IP address starting at `a` (optionally `[`-bracketed), with a trailing `:` or `.`
/// (`from 1.2.3.4:`, end of sentence) left out.
fn address_at(line: &[u8], mut a: usize) -> Option<Range<usize>> {
    if at(line, a) == b'[' {
        a += 1;
    }
    let len = line.get(a..)?.iter().take_while(|c| c.is_ascii_hexdigit() || matches!(c, b'.' | b':' | b'%')).count();
    let mut end = a + len;
    loop {
        if end <= a {
            return None;
        }
        if line.get(a..end).is_some_and(is_ip) {
            return Some(a..end);
        }
        if !matches!(at(line, end - 1), b':' | b'.') {
            return None;
        }
        end -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::parse::test_util::field;

    fn run(line: &[u8]) -> (bool, Record) {
        crate::parse::test_util::run(parse, line)
    }

    #[test]
    fn auth_log_sshd() {
        let l = b"Jan  5 03:14:15 bastion sshd[1234]: Failed password for root from 198.51.100.7 port 22 ssh2";
        let (ok, r) = run(l);
        assert!(ok);
        assert_eq!(field(l, &r, f::TIME), Some("Jan  5 03:14:15"));
        assert_eq!(field(l, &r, f::HOST), Some("bastion"));
        assert_eq!(field(l, &r, f::PROGRAM), Some("sshd"));
        assert_eq!(field(l, &r, f::PID), Some("1234"));
        assert_eq!(field(l, &r, f::MESSAGE), Some("Failed password for root from 198.51.100.7 port 22 ssh2"));
        assert_eq!(field(l, &r, f::CLIENT_IP), Some("198.51.100.7"));
    }

    #[test]
    fn sshd_variants() {
        let cases: &[(&[u8], Option<&str>)] = &[
            (b"Mar 3 10:00:00 h sshd[9]: Invalid user admin from 2001:db8::44 port 4242", Some("2001:db8::44")),
            (b"Mar 13 10:00:00 h sshd[9]: Did not receive identification string from 203.0.113.5", Some("203.0.113.5")),
            (b"Mar 13 10:00:00 h sshd[9]: Received disconnect from 203.0.113.5: 11: Bye", Some("203.0.113.5")),
            (b"Mar 13 10:00:00 h sshd[9]: error: PAM: Authentication failure for bob from example.com", None),
            (b"Mar 13 10:00:00 h sshd[9]: refused connect from example.com (10.0.0.1) from 10.0.0.2", Some("10.0.0.2")),
            (b"Mar 13 10:00:00 h sshd[9]: Connection from [::1] port 22", Some("::1")),
            (
                b"Mar 13 10:00:00 h sshd[9]: Accepted publickey for x from ::ffff:192.0.2.1 port 1",
                Some("::ffff:192.0.2.1"),
            ),
            (b"Mar 13 10:00:00 h sshd[9]: from 1.2.3.4 at start is not ' from '", None),
            (b"Mar 13 10:00:00 h sshd[9]: ROOT LOGIN REFUSED FROM ::ffff:1.2.3.4", Some("::ffff:1.2.3.4")),
            (b"Mar 13 10:00:00 h sshd[9]: x FROM 1.1.1.1 from 2.2.2.2", Some("1.1.1.1")),
            (b"Mar 13 10:00:00 h sshd[9]: x from 1.1.1.1. from 2.2.2.2", Some("1.1.1.1")),
            (b"Mar 13 10:00:00 h sshd[9]: x from : from 2.2.2.2:", Some("2.2.2.2")),
        ];
        for (l, ip) in cases {
            let (ok, r) = run(l);
            assert!(ok, "{}", String::from_utf8_lossy(l));
            assert_eq!(field(l, &r, f::CLIENT_IP), *ip, "{}", String::from_utf8_lossy(l));
        }
    }

    #[test]
    fn rfc3164_with_pri_and_no_pid() {
        let l = b"<34>Oct 11 22:14:15 mymachine su: 'su root' failed for lonvick on /dev/pts/8";
        let (ok, r) = run(l);
        assert!(ok);
        assert_eq!(field(l, &r, f::TIME), Some("Oct 11 22:14:15"));
        assert_eq!(field(l, &r, f::HOST), Some("mymachine"));
        assert_eq!(field(l, &r, f::PROGRAM), Some("su"));
        assert_eq!(field(l, &r, f::PID), None);
        assert_eq!(field(l, &r, f::MESSAGE), Some("'su root' failed for lonvick on /dev/pts/8"));
    }

    #[test]
    fn rfc3164_oddities() {
        let l = b"Oct 11 22:14:15 myhost last message repeated 3 times";
        let (_, r) = run(l);
        assert_eq!(field(l, &r, f::HOST), Some("myhost"));
        assert_eq!(field(l, &r, f::PROGRAM), None);
        assert_eq!(field(l, &r, f::MESSAGE), Some("last message repeated 3 times"));
        let l = b"Oct 11 22:14:15 postfix/smtpd[77]: connect from unknown[192.0.2.9]";
        let (_, r) = run(l);
        assert_eq!(field(l, &r, f::HOST), None);
        assert_eq!(field(l, &r, f::PROGRAM), Some("postfix/smtpd"));
        let l = b"Oct 11 22:14:15.123 h kernel: [ 12.5] usb 1-1: new device";
        let (_, r) = run(l);
        assert_eq!(field(l, &r, f::TIME), Some("Oct 11 22:14:15.123"));
        assert_eq!(field(l, &r, f::PROGRAM), Some("kernel"));
        assert_eq!(field(l, &r, f::MESSAGE), Some("[ 12.5] usb 1-1: new device"));
        let l = b"Oct 11 22:14:15 h prog[12]:";
        let (_, r) = run(l);
        assert_eq!(field(l, &r, f::PID), Some("12"));
        assert_eq!(field(l, &r, f::MESSAGE), None);
    }

    #[test]
    fn iso_timestamp_variant() {
        let l = b"2024-01-05T03:14:15.123456+00:00 web-1 sshd[1234]: Invalid user test from 192.0.2.33 port 5555";
        let (ok, r) = run(l);
        assert!(ok);
        assert_eq!(field(l, &r, f::TIME), Some("2024-01-05T03:14:15.123456+00:00"));
        assert_eq!(field(l, &r, f::HOST), Some("web-1"));
        assert_eq!(field(l, &r, f::PROGRAM), Some("sshd"));
        assert_eq!(field(l, &r, f::CLIENT_IP), Some("192.0.2.33"));
    }

    #[test]
    fn rfc5424() {
        let l = br#"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut="3" eventSource="App\"lication\]" eventID="1011"][x@1 a="b"] An application event log entry from 10.1.2.3"#;
        let (ok, r) = run(l);
        assert!(ok);
        assert_eq!(field(l, &r, f::TIME), Some("2003-10-11T22:14:15.003Z"));
        assert_eq!(field(l, &r, f::HOST), Some("mymachine.example.com"));
        assert_eq!(field(l, &r, f::PROGRAM), Some("evntslog"));
        assert_eq!(field(l, &r, f::PID), None);
        assert_eq!(field(l, &r, f::MESSAGE), Some("An application event log entry from 10.1.2.3"));
        assert_eq!(field(l, &r, f::CLIENT_IP), Some("10.1.2.3"));
        let l = b"<34>1 2003-10-11T22:14:15.003Z host su 77 ID47 - \xEF\xBB\xBF'su root' failed";
        let (_, r) = run(l);
        assert_eq!(field(l, &r, f::PID), Some("77"));
        assert_eq!(field(l, &r, f::MESSAGE), Some("'su root' failed"));
        let l = b"<34>1 - - - - - -";
        let (ok, r) = run(l);
        assert!(ok);
        assert_eq!(r.iter(l).count(), 0);
        assert!(!run(b"<34>1 2003-10-11T22:14:15.003Z host").0);
    }

    #[test]
    fn rejects() {
        for l in
            [&b""[..], b"hello world", b"<34>", b"<34>Oct", b"Oct 11", b"Oct 111 22:14:15 h x:", b"2024-01-05 h p: m"]
        {
            let (ok, r) = run(l);
            assert!(!ok, "{}", String::from_utf8_lossy(l));
            assert_eq!(r.iter(l).count(), 0);
        }
    }

    #[test]
    fn invalid_utf8_and_huge() {
        let l = b"Jan  5 03:14:15 h\xff p\xfe[1]: \xc3\x28 from 10.0.0.1";
        let (ok, r) = run(l);
        assert!(ok);
        assert_eq!(r.get(l, f::HOST), Some(&b"h\xff"[..]));
        assert_eq!(field(l, &r, f::CLIENT_IP), Some("10.0.0.1"));
        let mut l = b"Jan  5 03:14:15 h p[1]: ".to_vec();
        for _ in 0..15_000 {
            l.extend_from_slice(b" from x");
        }
        l.extend_from_slice(b" from 10.9.8.7");
        let (ok, r) = run(&l);
        assert!(ok);
        assert_eq!(r.get(&l, f::CLIENT_IP), Some(&b"10.9.8.7"[..]));
    }
}
