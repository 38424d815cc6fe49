//! Console output: one line per detection.

use std::io::Write;

use super::{Action, ActionError};
use crate::engine::Detection;
use crate::rollup::{ConsoleMode, Rollup, State};
use crate::rule::Severity;

/// The name rules use in `actions:`.
pub const NAME: &str = "console";

/// Prints detections as single lines. Colour only when asked (i.e. on a terminal).
pub struct Console {
    color: bool,
    mode: ConsoleMode,
}

impl Console {
    pub fn new(color: bool) -> Console {
        Console { color, mode: ConsoleMode::Detections }
    }

    /// What the console action shows: roll-ups, detections or both.
    pub fn showing(mut self, mode: ConsoleMode) -> Console {
        self.mode = mode;
        self
    }

    /// One line for a roll-up record.
    pub fn format_rollup(&self, r: &Rollup) -> String {
        let (c, reset) = if self.color { (color(r.severity), "\x1b[0m") } else { ("", "") };
        let group: Vec<String> = r.group.iter().map(|(k, v)| format!("{k}={}", escape(v))).collect();
        let classes: Vec<String> = r.classes.iter().map(|(k, n)| format!("{}:{n}", escape(k))).collect();
        let state = match r.state {
            State::Opened => "attack started",
            State::Escalated => "attack escalated",
            State::Closed => "attack ended",
        };
        let mut s = format!(
            "{} {c}{:<8}{reset} {state}: {} classes={} detections={} rules={} paths={} since {}",
            r.last_seen.format("%Y-%m-%dT%H:%M:%S%.3fZ"),
            r.severity.as_str().to_uppercase(),
            group.join(" "),
            classes.join(","),
            r.detections,
            r.rules.len(),
            r.paths,
            r.first_seen.format("%Y-%m-%dT%H:%M:%SZ"),
        );
        if let (State::Opened, Some(first)) = (r.state, r.samples.first()) {
            s.push_str(" | ");
            s.push_str(&escape(truncate(first, 300)));
        }
        s
    }

    /// Colour when stdout is a terminal and `NO_COLOR` is not set (see [`use_color`]).
    pub fn for_stdout() -> Console {
        Console::new(use_color(&std::io::stdout()))
    }

    pub fn format(&self, d: &Detection) -> String {
        let (c, reset) = if self.color { (color(d.rule.severity), "\x1b[0m") } else { ("", "") };
        let ip = d.fields.get("client_ip").map(String::as_str).unwrap_or("-");
        let mut s = format!(
            "{} {c}{:<8}{reset} {} {} ip={} {}:{}",
            d.event_time.format("%Y-%m-%dT%H:%M:%S%.3fZ"),
            d.rule.severity.as_str().to_uppercase(),
            escape(&d.rule.id),
            escape(&d.rule.title),
            escape(ip),
            escape(&d.source.path),
            d.source.line_number
        );
        if let Some(t) = &d.threshold {
            s.push_str(&format!(" count={} within={}s", t.count, t.within_seconds));
            if let (Some(field), false) = (&t.distinct, t.distinct_values.is_empty()) {
                // A few of the values counted, each cut: enough to say what was tried.
                const FEW: usize = 5;
                let few: Vec<String> = t.distinct_values.iter().take(FEW).map(|v| escape(truncate(v, 40))).collect();
                let more = (t.count as usize).saturating_sub(few.len());
                let more = if more > 0 { format!(" +{more}") } else { String::new() };
                s.push_str(&format!(" {}=[{}{more}]", escape(field), few.join(",")));
            }
        }
        if d.suppressed > 0 {
            s.push_str(&format!(" suppressed={}", d.suppressed));
        }
        s.push_str(" | ");
        s.push_str(&escape(truncate(&d.line, 300)));
        s
    }

    pub fn print(&self, d: &Detection) {
        let line = self.format(d);
        let mut out = std::io::stdout().lock();
        // A closed pipe (`trapline scan | head`) is not an error worth a panic.
        let _ = writeln!(out, "{line}");
    }
}

/// As configured by `actions.log.console`, the console echoes every detection.
impl Action for Console {
    fn name(&self) -> &str {
        NAME
    }

    fn takes_all(&self) -> bool {
        true
    }

    fn fire(&mut self, d: &Detection) -> Result<(), ActionError> {
        if self.mode != ConsoleMode::Rollups {
            self.print(d);
        }
        Ok(())
    }

    fn rollup(&mut self, r: &Rollup) -> Result<(), ActionError> {
        if self.mode != ConsoleMode::Detections {
            let line = self.format_rollup(r);
            let _ = writeln!(std::io::stdout().lock(), "{line}");
        }
        Ok(())
    }
}

/// Whether to write ANSI colours to `stream`: only when it is a terminal (a file, a pipe or
/// journald would keep the escape codes as garbage) and `NO_COLOR` is unset or empty
/// (<https://no-color.org>: "when present and not an empty string"). The one rule for every
/// coloured output: trapline's own log on stderr, the console action, lint's report.
pub fn use_color(stream: &impl std::io::IsTerminal) -> bool {
    stream.is_terminal() && no_color_unset(std::env::var_os("NO_COLOR").as_deref())
}

fn no_color_unset(v: Option<&std::ffi::OsStr>) -> bool {
    v.is_none_or(|v| v.is_empty())
}

/// The ANSI colour of a severity (every coloured report uses the same ones).
pub fn color(s: Severity) -> &'static str {
    match s {
        Severity::Info => "\x1b[2m",
        Severity::Low => "\x1b[36m",
        Severity::Medium => "\x1b[33m",
        Severity::High => "\x1b[31m",
        Severity::Critical => "\x1b[1;41;97m",
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Makes log text safe to print: control characters (ESC, CR, BEL, C1 controls, ...) and
/// backslashes are shown as escapes, so a crafted request cannot move the cursor, rewrite the
/// line or change the terminal title.
pub fn escape(s: &str) -> String {
    escape_with(s, true)
}

/// [`escape`] that leaves backslashes as they are: for text an author wrote (a rule's regex),
/// where doubling them would misquote it; control characters are still escaped.
pub fn escape_controls(s: &str) -> String {
    escape_with(s, false)
}

fn escape_with(s: &str, backslash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '\\' if backslash => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if c.is_control()
                || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}') =>
            {
                out.push_str(&format!("\\u{{{:x}}}", c as u32));
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_no_color_means_unset() {
        assert!(no_color_unset(None));
        assert!(no_color_unset(Some(std::ffi::OsStr::new(""))));
        assert!(!no_color_unset(Some(std::ffi::OsStr::new("1"))));
    }

    #[test]
    fn escapes_terminal_controls() {
        let s = escape("GET /\x1b]0;pwned\x07\x1b[2J\r\u{9b}31m\u{202e}x");
        assert!(!s.chars().any(|c| c.is_control()), "{s:?}");
        assert!(s.contains("\\u{1b}]0;pwned\\u{7}"));
        assert!(s.contains("\\r"));
        assert!(s.contains("\\u{202e}"));
    }
}
