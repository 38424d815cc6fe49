//! The lint codes: one typed list that is the single source of each code's name, level, title
//! and explanation. Findings carry a [`Code`]; the SARIF rule table, `--explain` and the
//! README's table (checked by a test) all read from here.
//!
//! Codes are never reused for a different meaning, so CI suppressions and SARIF baselines keep
//! working across versions: a retired code stays out of use.

use serde::{Serialize, Serializer};

use super::Level;

/// A lint finding's code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    Syntax,
    Duplicate,
    Regex,
    UnknownReference,
    Example,
    InvalidValue,
    Config,
    Schema,
    Template,
    NeverTrue,
    Encoding,
    NoExamples,
    NoLiteral,
    RawLineRepeat,
    Disabled,
    ZonelessTime,
    UnknownField,
    UnknownSource,
    DeadAlternative,
    NoSource,
    UnknownXdrRule,
    UnknownAction,
    ContentNoLiteral,
    GlobalThreshold,
    UnusedList,
    UnknownGroupField,
    AttackTag,
}

/// What a code means.
#[derive(Debug, Clone, Copy)]
pub struct Info {
    /// `TL001`, ...: stable, shown in every output format.
    pub name: &'static str,
    pub level: Level,
    /// One line, used in SARIF's rule table.
    pub title: &'static str,
    /// One paragraph for `trapline lint --explain`: what is wrong, why it matters, how to fix it.
    pub explanation: &'static str,
}

impl Code {
    /// Every code, in the order they are documented.
    pub const ALL: &'static [Code] = &[
        Code::Syntax,
        Code::Duplicate,
        Code::Regex,
        Code::UnknownReference,
        Code::Example,
        Code::InvalidValue,
        Code::Config,
        Code::Schema,
        Code::Template,
        Code::NeverTrue,
        Code::Encoding,
        Code::UnknownGroupField,
        Code::ZonelessTime,
        Code::NoExamples,
        Code::NoLiteral,
        Code::RawLineRepeat,
        Code::Disabled,
        Code::UnknownField,
        Code::UnknownSource,
        Code::DeadAlternative,
        Code::NoSource,
        Code::UnknownXdrRule,
        Code::UnknownAction,
        Code::ContentNoLiteral,
        Code::GlobalThreshold,
        Code::UnusedList,
        Code::AttackTag,
    ];

    pub fn name(self) -> &'static str {
        self.info().name
    }

    pub fn level(self) -> Level {
        self.info().level
    }

    /// The code named `name` (case-insensitive: `tl010` works too).
    pub fn from_name(name: &str) -> Option<Code> {
        Code::ALL.iter().copied().find(|c| c.name().eq_ignore_ascii_case(name))
    }

    pub const fn info(self) -> Info {
        use Level::{Error, Note, Warning};
        let (name, level, title, explanation) = match self {
            Code::Syntax => (
                "TL001",
                Error,
                "YAML syntax, unknown key or wrong type in a rule file",
                "The rule file is not valid YAML, uses a key the rule language does not have (often a typo: \
                 `contians` for `contains`), gives a value of the wrong type, or nests collections absurdly deep. \
                 The file cannot be loaded, so none of its rules run; lint still reads its other rules one by \
                 one and reports each one that cannot be read. Fix the text at the position shown; \
                 `trapline schema rules` gives the JSON Schema an editor can check as you type.",
            ),
            Code::Duplicate => (
                "TL002",
                Error,
                "duplicate rule id or list name",
                "Two rules share an id, or two files define the same named list. Ids key detections, \
                 suppression state and XDR incidents, so they must be unique across every rule file loaded \
                 together. Rename one; the message points at the first definition.",
            ),
            Code::Regex => (
                "TL003",
                Error,
                "regex that does not compile or exceeds the size limit",
                "A `regex:` does not compile with Rust's regex syntax (no look-around or back-references), \
                 or compiles to an automaton beyond the size limit that keeps matching linear-time. Fix the \
                 pattern, or split a huge alternation into a named list with `contains`/`equals`.",
            ),
            Code::UnknownReference => (
                "TL004",
                Error,
                "reference to an unknown list, format, action or field",
                "The rule names a list, log format, action or field that does not exist. A misspelt name \
                 would otherwise make the rule silently match nothing. Define the referenced item or fix \
                 the name (the message suggests the closest existing one).",
            ),
            Code::Example => (
                "TL005",
                Error,
                "inline example that does not behave as declared",
                "One of the rule's `examples` (a line it must match, or must not) behaves otherwise when run \
                 through the production engine. Either the rule or the example is wrong; `trapline explain \
                 --line '...' --rule ID` shows which condition decided.",
            ),
            Code::InvalidValue => (
                "TL006",
                Error,
                "invalid value (empty title, bad id, threshold count, network, ...)",
                "A value has the right type but is not acceptable: an empty title, an id with characters \
                 other than letters, digits, `.`, `-` and `_`, a zero threshold count or window, an invalid \
                 CIDR network, and the like. Fix the value at the position shown.",
            ),
            Code::Config => (
                "TL007",
                Error,
                "invalid config file",
                "The file given with `--config` does not load: YAML syntax, an unknown key, an unknown \
                 format or time zone, a duplicate source name, a missing environment variable. `trapline \
                 run` would refuse to start with it. Fix it at the position shown.",
            ),
            Code::Schema => (
                "TL008",
                Error,
                "rule file does not match the rule language's JSON Schema",
                "The file is valid YAML but does not match the JSON Schema of the rule language. Unlike the \
                 loader, which stops at the first problem in a file, the schema check reports every \
                 violation, so all of them can be fixed in one pass.",
            ),
            Code::Template => (
                "TL009",
                Error,
                "XDR template that does not load, names something that does not exist, or renders an invalid \
                 bundle",
                "An XDR template (with `--config`) does not parse, uses a name that does not exist \
                 (`fields.usr`, `detection.nosuch`: names are strict, so what a detection may lack takes `is \
                 defined` or a `default`), or renders a bundle that fails CTIM validation. Templates are rendered \
                 with hostile and empty sample detections (shaped like each rule's for a rule's own templates), and \
                 each rule's template set with a detection of its first `match` example; the finding is at the \
                 template's line and column and names the rule whose render failed. At run time that detection \
                 would never reach XDR. Fix the template; `trapline render` shows the exact bundle for a line (or, \
                 with --file, for a log that fires a threshold or sequence rule).",
            ),
            Code::NeverTrue => (
                "TL010",
                Error,
                "rule whose condition can never be true",
                "The rule's condition is provably never true, so the rule can never fire: an `all` whose \
                 members contradict each other on one field (`equals: GET` beside `regex: ^P`, disjoint \
                 number ranges or networks, `exists: false` beside a test of the same field), a regex that \
                 matches nothing, a case-sensitive capitalised value on a `lowercase`d field, or a `not` of \
                 something always true. Usually a typo or a transform in the wrong place. An exception (a \
                 rule's `except`, an override's, an entry of `exceptions:`) is reported the same way when it \
                 can never be true (it holds nothing back) or is always true (the rules it applies to never \
                 fire).",
            ),
            Code::Encoding => (
                "TL011",
                Error,
                "rule file that is not valid UTF-8",
                "The rule file contains bytes that are not UTF-8 (often a file saved as Latin-1 or \
                 Windows-1252). YAML requires Unicode text, so the file cannot be loaded. Re-save it as \
                 UTF-8; the position is that of the first invalid byte.",
            ),
            Code::UnknownGroupField => (
                "TL012",
                Error,
                "grouping or join field that none of the rule's formats produces",
                "A threshold's `group_by` or `distinct`, a `suppress.group_by`, or a sequence step's `key` names a \
                 field that none of the formats the rule (or the step) applies to produces (`clientip` for \
                 `client_ip`; the message suggests one). No event carries it, so every event falls into one empty \
                 group, a `distinct` never counts, or a sequence step never joins: the rule silently does \
                 something else than written. The formats are decided as for TL106: the rule's (or step's) \
                 `formats:`, else the config's sources, else the fixed built-in formats; a rule or step that may \
                 see JSON lines, or a custom format without a regex, is never flagged, and a custom regex \
                 format produces its named captures.",
            ),
            Code::ZonelessTime => (
                "TL105",
                Warning,
                "time stamps without a zone, and no `timezone` set: they are read as UTC",
                "A source's format writes time stamps without a zone (syslog, the Apache error log, a custom \
                 `time_format` without `%z`) and the config sets no `timezone`, globally or for the source. \
                 They are read as UTC, so event times and threshold windows are off by the server's offset. \
                 Set `timezone:` even when it is UTC, to say so.",
            ),
            Code::NoExamples => (
                "TL101",
                Warning,
                "rule without examples",
                "The rule has no `examples`. Examples are lines it must and must not match, run by `lint` \
                 and `trapline test` through the production engine; without them a later edit can break the \
                 rule unnoticed. Add at least one matching line.",
            ),
            Code::NoLiteral => (
                "TL102",
                Warning,
                "rule with no usable prefilter literal: evaluated on every line",
                "No literal can be extracted from the rule's condition for the prefilter, so the rule is \
                 evaluated on every line instead of only on lines containing one of its literals. That costs \
                 throughput. Add a `contains` or anchor the regex on a literal. Threshold rules are exempt.",
            ),
            Code::RawLineRepeat => (
                "TL103",
                Warning,
                "regex on the raw line with an unbounded repeat that crosses spaces and quotes",
                "A regex on the raw `line` has an unbounded repeat that can cross spaces and quotes \
                 (`GET .*passwd`). It can match across fields, so a client-controlled value (user agent, \
                 referer) can satisfy it. Match the parsed field instead (`field: uri`), or bound the repeat.",
            ),
            Code::Disabled => (
                "TL104",
                Note,
                "disabled rule",
                "The rule has `enabled: false`: it is loaded and validated but never run. This never fails \
                 the run; it only makes a disabled rule visible in reviews.",
            ),
            Code::UnknownField => (
                "TL106",
                Warning,
                "field that none of the rule's formats produces",
                "The rule tests a field that none of the formats it applies to produces (`clientip` for \
                 `client_ip`; the message suggests one), so that test never sees a value. Without `formats:` \
                 and without `--config`, the built-in formats are assumed; a rule that may see JSON lines is \
                 never flagged, since JSON carries any key. An override's or shared exception is flagged \
                 when no format of any rule it applies to produces the field.",
            ),
            Code::UnknownSource => (
                "TL107",
                Warning,
                "`sources:` entry that names no source of the config",
                "(With `--config`.) An entry of the rule's `sources:` names no source of the config, so it \
                 restricts the rule to nothing there. Fix the name or drop the entry.",
            ),
            Code::DeadAlternative => (
                "TL108",
                Warning,
                "alternative of an `any` that can never be true",
                "One alternative of an `any` can never be true, so it is dead code. The rest of the rule \
                 still works, but the alternative was meant to catch something: usually a typo'd value or a \
                 transform applied in the wrong order.",
            ),
            Code::NoSource => (
                "TL109",
                Note,
                "rule that applies to none of the config's sources, so it never runs",
                "(With `--config`.) By its `formats:` and `sources:`, the rule applies to none of the \
                 config's sources, so it never runs with this config. That may be intended for a shared rule \
                 pack; otherwise widen the rule's scope or add the source.",
            ),
            Code::UnknownXdrRule => (
                "TL110",
                Warning,
                "per-rule XDR settings (`actions.xdr.rules`) for a rule id no rule file defines",
                "(With `--config`.) `actions.xdr.rules.<id>` configures a rule id that no rule file defines, \
                 so the settings apply to nothing, usually because the rule was renamed. Fix the id (the \
                 message suggests the closest one).",
            ),
            Code::UnknownAction => (
                "TL111",
                Warning,
                "rule naming an action the config does not set up",
                "(With `--config`.) The rule names the `xdr-incident` action while the config does not set \
                 up `actions.xdr`; `run` skips that action for the rule. Configure `actions.xdr` or remove \
                 the action from the rule.",
            ),
            Code::ContentNoLiteral => (
                "TL112",
                Warning,
                "content rule whose regexes run over every file",
                "A `content:` rule has regexes from which no literal can be extracted for the content \
                 prefilter, and no `ext`, `name` or `magic` narrows the files it looks at, so its regexes run \
                 over the whole of every file a sweep reads. Anchor one regex on a literal of two or more \
                 characters, or restrict the rule to the extensions or names it is about.",
            ),
            Code::GlobalThreshold => (
                "TL113",
                Warning,
                "threshold without group_by: one counter for everyone",
                "A `threshold` without `group_by` counts every matching line of the source together, so \
                 many clients each staying far below the count fire it together, and one detection then names \
                 whoever sent the last line. Group by what the count is about (`group_by: [client_ip]`, \
                 `[user]`); write `group_by: [host]` or similar if a global count is really meant.",
            ),
            Code::UnusedList => (
                "TL114",
                Warning,
                "named list no rule uses",
                "A list under `lists:` is referred to by no rule (`{list: NAME}`): a misspelt reference \
                 elsewhere fails loudly, but a list left behind after a rule changed is silent. Use it or \
                 remove it.",
            ),
            Code::AttackTag => (
                "TL115",
                Warning,
                "malformed MITRE ATT&CK tag",
                "A tag starting `attack.` is none of the shapes Sigma and ATT&CK tooling read: a technique \
                 `attack.t1190`, a sub-technique `attack.t1059.001` (lower-case `t`, four digits, optional \
                 three-digit sub-technique), a tactic id `attack.ta0001`, a group `attack.g0016`, software \
                 `attack.s0002`, or a tactic name such as `attack.initial-access` or `attack.stealth`. Tools \
                 that map detections to the ATT&CK matrix skip such a tag. Only the shape is checked, not \
                 whether the technique exists (`attack.t9999` passes); when only the case is wrong the message \
                 gives the right spelling.",
            ),
        };
        Info { name, level, title, explanation }
    }
}

impl Serialize for Code {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The text `trapline lint --explain CODE` prints.
pub fn explain(code: Code) -> String {
    let i = code.info();
    format!("{} ({}): {}\n\n{}\n", i.name, i.level.as_str(), i.title, i.explanation)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_well_formed() {
        let mut names: Vec<&str> = Code::ALL.iter().map(|c| c.name()).collect();
        assert!(names.iter().all(|n| n.len() == 5 && n.starts_with("TL")), "{names:?}");
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Code::ALL.len());
        assert_eq!(Code::from_name("tl010"), Some(Code::NeverTrue));
    }

    /// The README's table lists exactly these codes, each with its level.
    #[test]
    fn readme_table_matches_the_codes() {
        let readme = include_str!("../../../README.md");
        let rows: Vec<(String, String)> = readme
            .lines()
            .filter_map(|l| l.strip_prefix("| `TL"))
            .filter_map(|rest| {
                let mut cols = rest.split(" | ");
                let code = format!("TL{}", cols.next()?.trim_end_matches('`'));
                Some((code, cols.next()?.trim().to_string()))
            })
            .collect();
        let want: Vec<(String, String)> =
            Code::ALL.iter().map(|c| (c.name().to_string(), c.level().as_str().to_string())).collect();
        assert_eq!(rows, want, "README lint table differs from the typed list (order, codes or levels)");
    }
}
