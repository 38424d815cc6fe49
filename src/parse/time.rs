//! Event timestamps: the layouts our formats write, turned into UTC.
//!
//! The fixed layouts (CLF, Apache error, syslog, ISO 8601) are parsed by hand: they are read
//! for every line that a time-windowed rule sees, and a byte walk is both faster than a
//! generic strftime parser and easier to make total (no input can panic it). User-supplied
//! strftime formats go through chrono. Layouts without a zone are read in the configured
//! [`TimeSettings::zone`].

use chrono::{DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;

/// How zone-less timestamps are interpreted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeSettings {
    /// Zone of timestamps that carry no offset (syslog, Apache error log, `YYYY-MM-DD HH:MM:SS`).
    pub zone: Tz,
}

impl Default for TimeSettings {
    fn default() -> Self {
        TimeSettings { zone: Tz::UTC }
    }
}

/// A zone name that is neither an IANA zone nor `local`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown time zone `{0}` (expected an IANA name like `Europe/Paris`, `UTC` or `local`)")]
pub struct UnknownZone(pub String);

impl TimeSettings {
    /// Settings for a zone given by IANA name (`Europe/Paris`, `UTC`), or `local` for the
    /// machine's zone (from `TZ`, `/etc/timezone` or the `/etc/localtime` link; UTC if none
    /// of those name a known zone).
    pub fn from_zone(name: &str) -> Result<TimeSettings, UnknownZone> {
        let name = name.trim();
        if name.eq_ignore_ascii_case("local") {
            return Ok(TimeSettings { zone: local_zone().unwrap_or(Tz::UTC) });
        }
        name.parse::<Tz>().map(|zone| TimeSettings { zone }).map_err(|_| UnknownZone(name.to_string()))
    }

    /// Same as [`TimeSettings::from_zone`].
    pub fn from_zone_name(name: &str) -> Result<TimeSettings, UnknownZone> {
        Self::from_zone(name)
    }
}

/// Best effort discovery of the system zone name (chrono-tz has no notion of "local").
fn local_zone() -> Option<Tz> {
    let from_env = std::env::var("TZ").ok().map(|s| s.trim_start_matches(':').to_string());
    let from_file = || std::fs::read_to_string("/etc/timezone").ok().map(|s| s.trim().to_string());
    let from_link = || {
        let target = std::fs::read_link("/etc/localtime").ok()?;
        let s = target.to_str()?;
        s.split_once("zoneinfo/").map(|(_, z)| z.to_string())
    };
    [from_env, from_file(), from_link()].into_iter().flatten().find_map(|n| n.parse::<Tz>().ok())
}

/// A wall-clock time in `zone` as UTC. DST-ambiguous times take the earliest instant. A time
/// inside a spring-forward gap is read with the offset in force before the gap, i.e. moved
/// forward by the gap's length (02:30 in a 02:00→03:00 gap is 03:30), as java.time does: the
/// line was certainly written around then, so an approximate time beats none.
pub(crate) fn local_to_utc(naive: NaiveDateTime, zone: Tz) -> Option<DateTime<Utc>> {
    match zone.from_local_datetime(&naive) {
        LocalResult::Single(t) => Some(t.with_timezone(&Utc)),
        LocalResult::Ambiguous(a, b) => Some(a.min(b).with_timezone(&Utc)),
        LocalResult::None => {
            let day_before = naive.checked_sub_signed(Duration::days(1))?;
            let offset = match zone.from_local_datetime(&day_before).earliest() {
                Some(t) => t.offset().fix().local_minus_utc(),
                None => zone.offset_from_utc_datetime(&naive).fix().local_minus_utc(),
            };
            with_offset(naive, offset)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Small byte readers: every one returns None instead of indexing out of range.

/// Cursor over ASCII timestamp text.
struct Cur<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Cur<'a> {
    fn new(s: &'a str) -> Self {
        Cur { b: s.as_bytes(), i: 0 }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.i += 1)
    }

    fn eat_if(&mut self, c: u8) -> bool {
        self.eat(c).is_some()
    }

    /// Exactly `n` digits.
    fn num(&mut self, n: usize) -> Option<u32> {
        let digits = self.b.get(self.i..self.i + n)?;
        if !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        self.i += n;
        Some(digits.iter().fold(0, |acc, d| acc * 10 + u32::from(d - b'0')))
    }

    /// One or two digits (day of month, sometimes unpadded).
    fn num_1_2(&mut self) -> Option<u32> {
        let first = self.num(1)?;
        match self.num(1) {
            Some(second) => Some(first * 10 + second),
            None => Some(first),
        }
    }

    /// `.ffffff` or `,ffffff` (any length; extra digits beyond nanoseconds are ignored).
    fn fraction_nanos(&mut self) -> u32 {
        if !matches!(self.peek(), Some(b'.') | Some(b',')) || !self.b.get(self.i + 1).is_some_and(u8::is_ascii_digit) {
            return 0;
        }
        self.i += 1;
        let mut nanos = 0u32;
        let mut scale = 100_000_000u32;
        while let Some(d) = self.peek().filter(u8::is_ascii_digit) {
            nanos += u32::from(d - b'0') * scale;
            scale /= 10;
            self.i += 1;
        }
        nanos
    }

    fn month_name(&mut self) -> Option<u32> {
        let m = self.b.get(self.i..self.i + 3)?;
        let idx = MONTHS.iter().position(|name| name.eq_ignore_ascii_case(m))?;
        self.i += 3;
        Some(idx as u32 + 1)
    }

    fn spaces(&mut self) -> usize {
        let start = self.i;
        while self.peek() == Some(b' ') {
            self.i += 1;
        }
        self.i - start
    }

    fn done(&self) -> bool {
        self.i >= self.b.len()
    }

    /// `HH:MM:SS[.frac]`.
    fn hms(&mut self) -> Option<NaiveTime> {
        let h = self.num(2)?;
        self.eat(b':')?;
        let m = self.num(2)?;
        self.eat(b':')?;
        let s = self.num(2)?;
        let nanos = self.fraction_nanos();
        NaiveTime::from_hms_nano_opt(h, m, s.min(59), nanos)
    }

    /// `Z`, `±HH:MM`, `±HHMM` or `±HH`, as seconds east of UTC.
    fn offset(&mut self) -> Option<i32> {
        if self.eat_if(b'Z') || self.eat_if(b'z') {
            return Some(0);
        }
        let sign = match self.peek()? {
            b'+' => 1,
            b'-' => -1,
            _ => return None,
        };
        self.i += 1;
        let h = self.num(2)?;
        self.eat_if(b':');
        let m = self.num(2).unwrap_or(0);
        if h > 23 || m > 59 {
            return None;
        }
        Some(sign * (h as i32 * 3600 + m as i32 * 60))
    }
}

const MONTHS: [&[u8]; 12] =
    [b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec"];

fn with_offset(naive: NaiveDateTime, offset_secs: i32) -> Option<DateTime<Utc>> {
    let utc = naive.checked_sub_signed(Duration::seconds(i64::from(offset_secs)))?;
    Some(DateTime::<Utc>::from_naive_utc_and_offset(utc, Utc))
}

// ---------------------------------------------------------------------------------------------
// The layouts.

/// Common Log Format time, as inside the brackets: `10/Oct/2000:13:55:36 -0700`.
pub fn parse_clf(text: &str) -> Option<DateTime<Utc>> {
    let mut c = Cur::new(text.trim());
    let day = c.num_1_2()?;
    c.eat(b'/')?;
    let month = c.month_name()?;
    c.eat(b'/')?;
    let year = c.num(4)?;
    c.eat(b':')?;
    let time = c.hms()?;
    c.spaces();
    let offset = if c.done() { 0 } else { c.offset()? };
    if !c.done() {
        return None;
    }
    let date = NaiveDate::from_ymd_opt(year as i32, month, day)?;
    with_offset(date.and_time(time), offset)
}

/// Apache error-log time: `Fri Sep 09 10:42:29.902022 2011` (2.4) or without the fraction
/// (2.2). Also accepts the nginx error-log layout `2011/09/09 10:42:29`. Zone: settings.
pub fn parse_apache_error(text: &str, settings: &TimeSettings) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if text.as_bytes().first().is_some_and(u8::is_ascii_digit) {
        return parse_iso(text, settings);
    }
    let mut c = Cur::new(text);
    c.i = text.find(' ')? + 1; // weekday name, not checked
    let month = c.month_name()?;
    c.spaces();
    let day = c.num_1_2()?;
    c.spaces();
    let time = c.hms()?;
    c.spaces();
    let year = c.num(4)?;
    if !c.done() {
        return None;
    }
    let date = NaiveDate::from_ymd_opt(year as i32, month, day)?;
    local_to_utc(date.and_time(time), settings.zone)
}

/// syslog time: RFC 3164 `Oct 11 22:14:15` (no year; see [`parse_syslog_at`]), or an
/// RFC 3339 / ISO 8601 time (RFC 5424 and modern rsyslog).
pub fn parse_syslog(text: &str, settings: &TimeSettings) -> Option<DateTime<Utc>> {
    parse_syslog_at(text, settings, Utc::now())
}

/// [`parse_syslog`] with an explicit "now". RFC 3164 has no year: take the year that puts the
/// time closest to `now` without being more than a day in the future (logs are read as they
/// are written; a day of slack covers clock skew and zone confusion). Around New Year a
/// `Dec 31` line read on `Jan 1` thus lands in the previous year.
pub fn parse_syslog_at(text: &str, settings: &TimeSettings, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if text.as_bytes().first().is_some_and(u8::is_ascii_digit) {
        return parse_iso(text, settings);
    }
    let mut c = Cur::new(text);
    let month = c.month_name()?;
    c.spaces();
    let day = c.num_1_2()?;
    c.spaces();
    // Some senders put the year before the time (`Oct 11 2024 22:14:15`).
    let explicit_year = if c.b.get(c.i + 4) == Some(&b' ') {
        let y = c.num(4)?;
        c.spaces();
        Some(y as i32)
    } else {
        None
    };
    let time = c.hms()?;
    c.spaces();
    let explicit_year = explicit_year.or_else(|| c.num(4).map(|y| y as i32));
    if !c.done() {
        return None;
    }
    if let Some(y) = explicit_year {
        let date = NaiveDate::from_ymd_opt(y, month, day)?;
        return local_to_utc(date.and_time(time), settings.zone);
    }
    closest_year(month, day, time, settings.zone, now)
}

fn closest_year(month: u32, day: u32, time: NaiveTime, zone: Tz, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let this_year = now.with_timezone(&zone).year();
    let limit = now + Duration::days(1);
    // Four years back so that Feb 29 still finds a leap year.
    (this_year - 4..=this_year + 1)
        .filter_map(|y| NaiveDate::from_ymd_opt(y, month, day))
        .filter_map(|d| local_to_utc(d.and_time(time), zone))
        .filter(|t| *t <= limit)
        .min_by_key(|t| (*t - now).num_seconds().unsigned_abs())
}

/// `YYYY-MM-DD[T ]HH:MM[:SS[.frac]][zone]` or with `/` date separators; a date alone is
/// midnight. No zone: settings zone.
fn parse_iso(text: &str, settings: &TimeSettings) -> Option<DateTime<Utc>> {
    let mut c = Cur::new(text);
    let year = c.num(4)?;
    let sep = c.peek().filter(|s| *s == b'-' || *s == b'/')?;
    c.i += 1;
    let month = c.num(2)?;
    c.eat(sep)?;
    let day = c.num(2)?;
    let date = NaiveDate::from_ymd_opt(year as i32, month, day)?;
    if c.done() {
        return local_to_utc(date.and_time(NaiveTime::MIN), settings.zone);
    }
    if !(c.eat_if(b'T') || c.eat_if(b't') || c.eat_if(b' ')) {
        return None;
    }
    let h = c.num(2)?;
    c.eat(b':')?;
    let m = c.num(2)?;
    let (s, nanos) = if c.eat_if(b':') { (c.num(2)?, c.fraction_nanos()) } else { (0, 0) };
    let time = NaiveTime::from_hms_nano_opt(h, m, s.min(59), nanos)?;
    c.spaces();
    if c.done() {
        return local_to_utc(date.and_time(time), settings.zone);
    }
    let offset = c.offset()?;
    if !c.done() {
        return None;
    }
    with_offset(date.and_time(time), offset)
}

/// Epoch seconds (`1700000000`, `1700000000.123`), or milli/micro/nanoseconds told apart by
/// magnitude (13/16/19 digits): log shippers write all of them. Fewer than 9 digits (before
/// 1973) is not taken as a time: such small numbers are far more likely a year, a count or a
/// status than an event timestamp.
fn parse_epoch(text: &str) -> Option<DateTime<Utc>> {
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    if int.len() < 9 || int.len() > 19 || !int.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let v: i64 = int.parse().ok()?;
    let (secs, sub_nanos) = match int.len() {
        0..=11 => (v, 0),
        12..=14 => (v / 1_000, (v % 1_000) * 1_000_000),
        15..=17 => (v / 1_000_000, (v % 1_000_000) * 1_000),
        _ => (v / 1_000_000_000, v % 1_000_000_000),
    };
    let frac_nanos = if int.len() <= 11 && !frac.is_empty() {
        let mut c = Cur { b: text.as_bytes(), i: int.len() };
        i64::from(c.fraction_nanos())
    } else {
        0
    };
    DateTime::from_timestamp(secs, u32::try_from(sub_nanos + frac_nanos).ok()?)
}

/// Any layout we know: RFC 3339 / ISO 8601 (with or without zone, fraction, `T`),
/// `YYYY-MM-DD HH:MM:SS`, `YYYY/MM/DD HH:MM:SS`, CLF, epoch numbers, RFC 2822, Apache error
/// and syslog times. Used where the format does not dictate the layout (JSON, custom without
/// `time_format`).
pub fn parse_any(text: &str, settings: &TimeSettings) -> Option<DateTime<Utc>> {
    let text = text.trim();
    let first = *text.as_bytes().first()?;
    if first.is_ascii_digit() {
        if let Some(t) = parse_epoch(text) {
            return Some(t);
        }
        if let Some(t) = parse_iso(text, settings) {
            return Some(t);
        }
        return parse_clf(text);
    }
    if let Some(t) = parse_syslog(text, settings) {
        return Some(t);
    }
    if let Some(t) = parse_apache_error(text, settings) {
        return Some(t);
    }
    DateTime::parse_from_rfc2822(text).ok().map(|t| t.with_timezone(&Utc))
}

/// Parses `text` with a chrono strftime `fmt`. A format with a zone (`%z`, `%:z`) is honoured;
/// without one the settings zone applies; a date-only format gives midnight. A few names
/// select a built-in layout instead: `clf`, `rfc3339`/`iso8601`, `syslog`, `apache_error`,
/// `epoch`, `auto`.
pub fn parse_with(text: &str, fmt: &str, settings: &TimeSettings) -> Option<DateTime<Utc>> {
    let text = text.trim();
    match fmt {
        "clf" => return parse_clf(text),
        "rfc3339" | "iso8601" => return parse_iso(text, settings),
        "syslog" => return parse_syslog(text, settings),
        "apache_error" => return parse_apache_error(text, settings),
        "epoch" => return parse_epoch(text),
        "auto" | "any" => return parse_any(text, settings),
        _ => {}
    }
    if let Ok(t) = DateTime::parse_from_str(text, fmt) {
        return Some(t.with_timezone(&Utc));
    }
    if let Ok(n) = NaiveDateTime::parse_from_str(text, fmt) {
        return local_to_utc(n, settings.zone);
    }
    NaiveDate::parse_from_str(text, fmt).ok().and_then(|d| local_to_utc(d.and_time(NaiveTime::MIN), settings.zone))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn zone(name: &str) -> TimeSettings {
        TimeSettings::from_zone_name(name).unwrap()
    }

    #[test]
    fn clf() {
        assert_eq!(parse_clf("10/Oct/2000:13:55:36 -0700"), Some(utc("2000-10-10T20:55:36Z")));
        assert_eq!(parse_clf("01/Jan/2024:00:00:00 +0000"), Some(utc("2024-01-01T00:00:00Z")));
        assert_eq!(parse_clf("31/Feb/2024:00:00:00 +0000"), None);
        assert_eq!(parse_clf("10/Foo/2000:13:55:36 -0700"), None);
        assert_eq!(parse_clf("10/Oct/2000:13:55:36 -0700 junk"), None);
        assert_eq!(parse_clf(""), None);
    }

    #[test]
    fn apache_error_times() {
        let s = TimeSettings::default();
        assert_eq!(parse_apache_error("Fri Sep 09 10:42:29.902022 2011", &s), Some(utc("2011-09-09T10:42:29.902022Z")));
        assert_eq!(parse_apache_error("Wed Oct 11 14:32:52 2000", &s), Some(utc("2000-10-11T14:32:52Z")));
        assert_eq!(parse_apache_error("2011/09/09 10:42:29", &s), Some(utc("2011-09-09T10:42:29Z")));
        let paris = zone("Europe/Paris");
        assert_eq!(parse_apache_error("Wed Oct 11 14:32:52 2000", &paris), Some(utc("2000-10-11T12:32:52Z")));
        assert_eq!(parse_apache_error("Wed Oct 11 14:32:52", &s), None);
    }

    #[test]
    fn syslog_year_inference() {
        let s = TimeSettings::default();
        let now = utc("2024-01-01T00:10:00Z");
        assert_eq!(parse_syslog_at("Dec 31 23:59:00", &s, now), Some(utc("2023-12-31T23:59:00Z")));
        assert_eq!(parse_syslog_at("Jan  1 00:05:00", &s, now), Some(utc("2024-01-01T00:05:00Z")));
        // Up to a day ahead is tolerated (skew), beyond that it is last year's.
        assert_eq!(parse_syslog_at("Jan  1 20:00:00", &s, now), Some(utc("2024-01-01T20:00:00Z")));
        assert_eq!(parse_syslog_at("Jan  3 00:00:00", &s, now), Some(utc("2023-01-03T00:00:00Z")));
        let now = utc("2026-03-01T00:00:00Z");
        assert_eq!(parse_syslog_at("Feb 29 12:00:00", &s, now), Some(utc("2024-02-29T12:00:00Z")));
        assert_eq!(parse_syslog_at("Oct 11 2022 22:14:15", &s, now), Some(utc("2022-10-11T22:14:15Z")));
        assert_eq!(parse_syslog_at("Oct 11 22:14:15.250", &s, now), Some(utc("2025-10-11T22:14:15.25Z")));
        assert_eq!(parse_syslog_at("Foo 11 22:14:15", &s, now), None);
    }

    #[test]
    fn syslog_iso() {
        let s = TimeSettings::default();
        assert_eq!(parse_syslog("2024-01-05T03:14:15.123456+00:00", &s), Some(utc("2024-01-05T03:14:15.123456Z")));
        assert_eq!(parse_syslog("2003-10-11T22:14:15.003Z", &s), Some(utc("2003-10-11T22:14:15.003Z")));
        assert_eq!(parse_syslog("2003-08-24T05:14:15.000003-07:00", &s), Some(utc("2003-08-24T12:14:15.000003Z")));
    }

    #[test]
    fn any_layouts() {
        let s = TimeSettings::default();
        let t = Some(utc("2024-01-05T03:14:15Z"));
        for text in [
            "2024-01-05T03:14:15Z",
            "2024-01-05T03:14:15+00:00",
            "2024-01-05T04:14:15+0100",
            "2024-01-05T04:14:15+01",
            "2024-01-05 03:14:15",
            "2024-01-05T03:14:15",
            "2024/01/05 03:14:15",
            "05/Jan/2024:03:14:15 +0000",
            "1704424455",
            "1704424455000",
            "1704424455000000",
            "1704424455000000000",
            "Fri, 05 Jan 2024 03:14:15 +0000",
            "Fri Jan 05 03:14:15 2024",
        ] {
            assert_eq!(parse_any(text, &s), t, "{text}");
        }
        assert_eq!(parse_any("1704424455.5", &s), Some(utc("2024-01-05T03:14:15.5Z")));
        assert_eq!(parse_any("2024-01-05", &s), Some(utc("2024-01-05T00:00:00Z")));
        assert_eq!(parse_any("2024-01-05T03:14", &s), Some(utc("2024-01-05T03:14:00Z")));
        assert_eq!(parse_any("2024-01-05 04:14:15", &zone("Europe/Berlin")), t);
        for bad in ["", "x", "2024", "404", "2024-13-05", "2024-01-05X", "99999999999999999999999", "1.2.3", "-"] {
            assert_eq!(parse_any(bad, &s), None, "{bad}");
        }
    }

    #[test]
    fn dst_handling() {
        let ny = zone("America/New_York");
        // 2023-11-05 01:30 happens twice in New York: earliest is EDT (-4).
        assert_eq!(parse_any("2023-11-05 01:30:00", &ny), Some(utc("2023-11-05T05:30:00Z")));
        // 2023-03-12 02:30 does not exist: read as 03:30 EDT.
        assert_eq!(parse_any("2023-03-12 02:30:00", &ny), Some(utc("2023-03-12T07:30:00Z")));
        let paris = zone("Europe/Paris");
        assert_eq!(parse_any("2024-03-31 02:30:00", &paris), Some(utc("2024-03-31T01:30:00Z")));
    }

    #[test]
    fn with_format() {
        let s = TimeSettings::default();
        assert_eq!(parse_with("2024.01.05 03-14-15", "%Y.%m.%d %H-%M-%S", &s), Some(utc("2024-01-05T03:14:15Z")));
        assert_eq!(
            parse_with("2024.01.05 04-14-15 +0100", "%Y.%m.%d %H-%M-%S %z", &s),
            Some(utc("2024-01-05T03:14:15Z"))
        );
        assert_eq!(parse_with("05.01.2024", "%d.%m.%Y", &s), Some(utc("2024-01-05T00:00:00Z")));
        assert_eq!(parse_with("1704424455", "%s", &s), Some(utc("2024-01-05T03:14:15Z")));
        assert_eq!(parse_with("05/Jan/2024:03:14:15 +0000", "clf", &s), Some(utc("2024-01-05T03:14:15Z")));
        assert_eq!(parse_with("garbage", "%Y", &s), None);
        assert_eq!(parse_with("2024", "%Q%!", &s), None);
    }

    #[test]
    fn zones() {
        assert!(TimeSettings::from_zone_name("Nowhere/Special").is_err());
        assert_eq!(zone("UTC"), TimeSettings::default());
        assert!(TimeSettings::from_zone_name("local").is_ok());
    }

    #[test]
    fn never_panics() {
        let s = zone("Europe/Paris");
        let mut rng = crate::parse::scan::Rng(0x5eed);
        let samples = [
            "10/Oct/2000:13:55:36 -0700",
            "Fri Sep 09 10:42:29.902022 2011",
            "2024-01-05T03:14:15.123456789123+23:59",
            "Feb 29 23:59:60.9999999999",
            "1704424455.99999999999999",
            "9999999999999999999",
        ];
        for text in samples {
            for end in 0..=text.len() {
                let Some(p) = text.get(..end) else { continue };
                let _ = (parse_clf(p), parse_any(p, &s), parse_syslog(p, &s), parse_apache_error(p, &s));
                let _ = parse_with(p, "%Y-%m-%d %H:%M:%S%.f %z", &s);
            }
        }
        for _ in 0..2000 {
            let len = (rng.next_u64() % 40) as usize;
            let bytes = rng.bytes(len);
            let p = String::from_utf8_lossy(&bytes);
            let _ = (parse_clf(&p), parse_any(&p, &s), parse_syslog(&p, &s), parse_apache_error(&p, &s));
            let _ = parse_with(&p, &p, &s);
        }
    }
}
