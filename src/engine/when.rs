//! Days and hours of the week in a time zone ([`crate::rule::model::TimeWindow`]), compiled:
//! the `time` operator and maintenance windows ask whether an instant falls inside.

use chrono::{DateTime, Datelike, TimeZone, Timelike, Utc};
use chrono_tz::Tz;

use crate::rule::model::{Day, TimeWindow};

/// A compiled [`TimeWindow`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct When {
    tz: Tz,
    /// Bit `n` set: day `n` (Monday = 0) is inside.
    days: u8,
    /// Minutes since local midnight: start (included) and end (excluded). `end <= start`
    /// wraps past midnight.
    start: u32,
    end: u32,
}

impl When {
    /// Compiles a window; the error says what is wrong with which part.
    pub fn new(w: &TimeWindow) -> Result<When, String> {
        let tz: Tz = match &w.timezone {
            Some(name) => {
                name.parse().map_err(|_| format!("unknown time zone {name:?} (IANA name, e.g. Europe/Paris)"))?
            }
            None => Tz::UTC,
        };
        let days = if w.days.is_empty() { 0x7f } else { w.days.iter().fold(0u8, |b, d| b | 1 << day_index(*d)) };
        let (start, end) = match &w.hours {
            Some(h) => parse_hours(h)?,
            None => (0, 24 * 60),
        };
        Ok(When { tz, days, start, end })
    }

    /// Whether `t` falls inside the window.
    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        let local = self.tz.from_utc_datetime(&t.naive_utc());
        let minute = local.hour() * 60 + local.minute();
        let day = local.weekday().num_days_from_monday() as u8;
        let on = |d: u8| self.days & (1 << d) != 0;
        if self.start < self.end {
            return on(day) && (self.start..self.end).contains(&minute);
        }
        // Wrapping range: the evening part belongs to today, the morning part to yesterday.
        (minute >= self.start && on(day)) || (minute < self.end && on((day + 6) % 7))
    }
}

fn day_index(d: Day) -> u8 {
    match d {
        Day::Mon => 0,
        Day::Tue => 1,
        Day::Wed => 2,
        Day::Thu => 3,
        Day::Fri => 4,
        Day::Sat => 5,
        Day::Sun => 6,
    }
}

/// `HH:MM-HH:MM` → minutes since midnight. `24:00` is allowed as an end.
fn parse_hours(s: &str) -> Result<(u32, u32), String> {
    let bad = || format!("hours {s:?}: write a range such as 08:00-18:00");
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let minutes = |t: &str, end: bool| -> Result<u32, String> {
        let (h, m) = t.trim().split_once(':').ok_or_else(bad)?;
        let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
        let max_h = if end && m == 0 { 24 } else { 23 };
        if h > max_h || m > 59 || m > 0 && h == 24 {
            return Err(bad());
        }
        Ok(h * 60 + m)
    };
    let (start, end) = (minutes(a, false)?, minutes(b, true)?);
    if start == end {
        return Err(format!("hours {s:?}: an empty range (start equals end)"));
    }
    Ok((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(days: &[Day], hours: &str, tz: Option<&str>) -> When {
        When::new(&TimeWindow { days: days.to_vec(), hours: Some(hours.to_string()), timezone: tz.map(str::to_string) })
            .unwrap()
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn office_hours_in_a_zone() {
        use Day::*;
        let office = w(&[Mon, Tue, Wed, Thu, Fri], "08:00-18:00", Some("Europe/Paris"));
        // Wednesday 2024-10-09, 07:30 UTC = 09:30 in Paris (CEST).
        assert!(office.contains(at("2024-10-09T07:30:00Z")));
        // 16:30 UTC = 18:30 in Paris: after hours.
        assert!(!office.contains(at("2024-10-09T16:30:00Z")));
        // 05:59 UTC = 07:59: before.
        assert!(!office.contains(at("2024-10-09T05:59:00Z")));
        // Saturday.
        assert!(!office.contains(at("2024-10-12T09:00:00Z")));
        // Sunday 23:30 UTC is Monday 01:30 in Paris: a day, but outside the hours.
        assert!(!office.contains(at("2024-10-13T23:30:00Z")));
    }

    #[test]
    fn a_night_range_belongs_to_the_day_it_starts() {
        let night = w(&[Day::Sat], "22:00-02:00", None);
        assert!(night.contains(at("2024-10-12T23:00:00Z"))); // Saturday night
        assert!(night.contains(at("2024-10-13T01:00:00Z"))); // Sunday morning, from Saturday
        assert!(!night.contains(at("2024-10-13T23:00:00Z"))); // Sunday night
        assert!(!night.contains(at("2024-10-12T01:00:00Z"))); // Saturday morning, from Friday
    }

    #[test]
    fn bad_windows_are_refused() {
        let tw = |h: &str, tz: Option<&str>| {
            When::new(&TimeWindow { days: vec![], hours: Some(h.into()), timezone: tz.map(Into::into) })
        };
        assert!(tw("8-18", None).is_err());
        assert!(tw("08:00-08:00", None).is_err());
        assert!(tw("25:00-26:00", None).is_err());
        assert!(tw("08:00-24:00", None).is_ok());
        assert!(tw("08:00-18:00", Some("Mars/Base")).unwrap_err().contains("Mars/Base"));
    }
}
