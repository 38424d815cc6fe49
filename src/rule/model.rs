//! The rule language, version 1: the serde + schemars types a rule file deserializes into.
//!
//! These types describe what the user wrote and nothing more. They carry no compiled matcher;
//! [`crate::engine`] turns a validated set of them into matchers and a prefilter. Keeping the
//! two apart means the JSON Schema in `schema/` is generated from exactly what users write.

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

/// A rule file: named lists shared by its rules, and the rules.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    /// Version of the rule language. Only `1` exists.
    #[serde(default = "one")]
    pub version: u32,
    /// Reusable named lists of strings (scanner user agents, sensitive paths, ...). A list is
    /// visible to every rule of every file in the rule directory; names must be unique across
    /// files. Refer to one from a match value as `{list: NAME}`.
    #[serde(default)]
    pub lists: BTreeMap<String, Vec<String>>,
    /// Reusable named conditions, visible to every rule of every file (names unique across
    /// files). Use one as a condition: `{ref: NAME}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub conditions: BTreeMap<String, Condition>,
    /// The rules.
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// Changes to rules defined elsewhere (a shipped pack), applied after every file is
    /// loaded, in file order: keep the pack as shipped and say here what differs on this site.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<Override>,
    /// Exceptions for many rules at once (your own vulnerability scanner, the monitoring's
    /// health check): an event matching one never fires the rules it applies to. Names are
    /// unique across files; each is counted (`trapline scan`'s summary, `trapline status`, the
    /// metrics).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exceptions: Vec<Exception>,
}

/// An exception shared by several rules (or all of them): events matching `match` never fire
/// those rules. It is evaluated only on events that a rule's condition matched, and counted
/// under its name.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Exception {
    /// Unique name, shown in counts and by `explain`: letters, digits, `.`, `-`, `_`.
    pub name: String,
    /// Why the exception exists (whose scanner, which ticket).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The rules it applies to: ids, or `prefix.*` for every rule whose id starts with
    /// `prefix.`. Absent: every rule over events. An entry that selects no rule is an error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<String>>,
    /// The events it holds back (the same language as a rule's `match`). For a sequence rule,
    /// the event of its last step.
    #[serde(rename = "match")]
    pub condition: Condition,
}

/// Whether the selector `sel` (an id, or `prefix.*`) names rule `id`.
pub fn selects(sel: &str, id: &str) -> bool {
    match sel.strip_suffix('*') {
        Some(prefix) => id.starts_with(prefix),
        None => sel == id,
    }
}

/// A change to existing rules. Every key given replaces the rule's own; `except` adds an
/// exception. An override that matches no rule is an error (a typo must not go unnoticed).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Override {
    /// The rule's id, or `prefix.*` for every rule whose id starts with `prefix.`.
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<Severity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actions: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<Threshold>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suppress: Option<Suppress>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sources: Option<Vec<String>>,
    /// Events matching this never fire the rule (an allow-list: your own scanner's address,
    /// a health check's path), as the rule's own `except` does; both are kept and counted
    /// under the override's `id`. For a sequence, it applies to the last step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub except: Option<Condition>,
}

impl Override {
    /// Whether this override applies to rule `id`.
    pub fn selects(&self, id: &str) -> bool {
        selects(&self.id, id)
    }
}

fn one() -> u32 {
    1
}
fn yes() -> bool {
    true
}
fn default_actions() -> Vec<String> {
    vec!["log".to_string()]
}

/// One detection rule.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Stable unique identifier, e.g. `web.sqli.union-select`. Letters, digits, `.`, `-`, `_`.
    /// Detections, suppression state and external ids are keyed by it: do not reuse an id for
    /// a different detection.
    pub id: String,
    /// One-line human title, shown in every detection.
    pub title: String,
    /// What the rule detects, why it matters, and known false positives.
    #[serde(default)]
    pub description: String,
    /// How serious a detection is.
    pub severity: Severity,
    /// The kind of attack this rule detects, for roll-ups per attacker (counts per class,
    /// escalation when a new class appears): e.g. `sqli`, `xss`, `traversal`,
    /// `file-inclusion`, `cmdi`, `exploit`, `webshell`, `scanner`, `recon`, `brute-force`.
    /// Lower-case letters, digits and `-`. Absent: `other`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-z0-9][a-z0-9-]*$"))]
    pub class: Option<String>,
    /// Free tags, e.g. MITRE ATT&CK ids (`attack.t1190`), CVE ids.
    #[serde(default)]
    pub tags: Vec<String>,
    /// A disabled rule is loaded and validated but never evaluated.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Log formats the rule applies to (`combined`, `common`, `syslog`, `json`, `apache_error`,
    /// `raw`, or the name of a custom format). Empty: every format.
    #[serde(default)]
    pub formats: Vec<String>,
    /// Names of the configured sources the rule applies to. Empty: every source.
    #[serde(default)]
    pub sources: Vec<String>,
    /// The condition a single line must satisfy. A rule has either `match` (log lines and
    /// other events) or `content` (a file's contents, for `sweep` and the web-root source).
    #[serde(rename = "match", default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<Condition>,
    /// Events that match the rule's condition but must never fire it (an allow-list: an
    /// address, a health check's path), in the same language as `match`. Evaluated only after
    /// the condition matched, and counted under the rule's id. For a sequence, it applies to
    /// the last step's event: earlier steps still open and advance a chain, the detection is
    /// what is held back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub except: Option<Condition>,
    /// The condition a file's contents must satisfy, instead of `match`: regexes, magic bytes,
    /// size, extension, name and entropy, all of which must hold. Content rules run in
    /// `trapline sweep` and on every file a web-root source sees written (its `content_rules`
    /// field); thresholds, suppression, formats, sources and examples do not apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<ContentCondition>,
    /// Fields taken out of another field by a regex's named captures, for this rule only:
    /// `{field: message, regex: 'from \[(?P<client_ip>[0-9a-f.:]+)\]'}` makes `client_ip`
    /// a field that `match`, `threshold`, `suppress` and the detection see. Each extract runs
    /// in order, only on lines the prefilter already made candidates for this rule, and may
    /// read what an earlier one captured. A regex that does not match means the rule does
    /// not match the line. A captured field replaces a parsed field of the same name, for
    /// this rule only; a capture that takes no part in the match leaves its field absent.
    /// Not available on `sequence` and `content` rules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extract: Vec<Extract>,
    /// Events in order instead of `match`: a detection when an event matching each step has
    /// been seen, in step order, with the same key, within a time window ("a file created in
    /// the upload directory, then requested"; "failed log-ins, then a success from the same
    /// address"). The detection is made from the last step's event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<Sequence>,
    /// Fire only when enough matching lines occur within a time window (per group key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<Threshold>,
    /// After firing for a key, stay quiet for that key for a while (suppressed hits are counted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suppress: Option<Suppress>,
    /// Actions to fire, by name (`log`; others such as `xdr-incident` as they are configured).
    #[serde(default = "default_actions")]
    pub actions: Vec<String>,
    /// Lines that must and must not match this rule's condition; run by the test suite.
    #[serde(default)]
    pub examples: Examples,
}

/// One extraction: a regex with named captures over a field.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Extract {
    /// The field the regex reads: `line` (default), any parsed field, or a field captured by
    /// an earlier extract of the rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// A regex (Rust `regex` syntax, as in `regex:` conditions) with at least one named
    /// capture `(?P<name>...)`; each name becomes a field. It need not match the whole value.
    pub regex: String,
    /// The regex is case-sensitive when true (default: case-insensitive, as `regex:`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub case_sensitive: Option<bool>,
}

/// What a file must look like for a content rule to match. Every part that is given must
/// hold; a part left out does not constrain. Regexes use Rust `regex` syntax over the raw bytes
/// (Unicode off, so `.` matches any byte; `^`/`$` match at line ends; case-insensitive unless
/// `case_sensitive: true`). Write PHP's `$_GET[...]` as `\$_GET\[`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContentCondition {
    /// At least one of these regexes matches somewhere in the content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub any: Option<Values>,
    /// Every one of these regexes matches somewhere in the content (not necessarily in order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all: Option<Values>,
    /// None of these regexes matches (to leave out known benign look-alikes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub none: Option<Values>,
    /// The content starts with one of these signatures: a known type (`gif`, `png`, `jpeg`,
    /// `bmp`, `webp`, `ico`, `pdf`, `zip`, `gzip`, `elf`, `pe`) or `hex:` and hex digits
    /// (`hex:89504e47`, spaces allowed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub magic: Vec<String>,
    /// `true`: the content must *not* start with any `magic` signature instead.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub magic_not: bool,
    /// The file name's extension (after the last `.`, without it; case-insensitive) is one of
    /// these, e.g. `[php, phtml, php5]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ext: Vec<String>,
    /// The file name (case-insensitive) is one of these, e.g. `[.htaccess, .user.ini]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub name: Vec<String>,
    /// Bounds on the file size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<SizeBounds>,
    /// Bounds on the Shannon entropy in bits per byte (0 to 8): packed or encrypted payloads
    /// are high (above 6), source code is low (4.5 to 5.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entropy: Option<EntropyBounds>,
    /// Regexes are case-sensitive when true (default: case-insensitive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub case_sensitive: Option<bool>,
}

/// Size bounds in bytes, both inclusive.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SizeBounds {
    /// At least this many bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<u64>,
    /// At most this many bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u64>,
}

/// Entropy bounds in bits per byte, both inclusive.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EntropyBounds {
    /// At least this entropy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// At most this entropy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// Measure over windows of this many bytes (stepping half a window) and use the highest
    /// value, so that one packed blob inside an ordinary file stands out. Absent: the whole
    /// content. At least 256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<u32>,
}

/// A sequence rule's steps and window.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Sequence {
    /// Longest time from the first step's event to the last step's, on event time, e.g. `10m`.
    pub within: DurationText,
    /// The steps, in order: 2 to 8.
    pub steps: Vec<SequenceStep>,
}

/// One step of a sequence: which events it takes and the key that joins them to the other
/// steps. Steps may read different sources and formats (a web root, then an access log).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SequenceStep {
    /// Formats this step applies to (as a rule's `formats`). Empty: every log format.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub formats: Vec<String>,
    /// Names of the configured sources this step applies to. Empty: every source.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<String>,
    /// The condition an event must satisfy to be this step.
    #[serde(rename = "match")]
    pub condition: Condition,
    /// The join key: a field name, `{field: NAME, transforms: [...]}`, or a list of those
    /// (compared together). Values compare exactly, after the transforms; an event without
    /// one of the key fields is not a step.
    pub key: SequenceKey,
}

/// A sequence step's key: one field or several.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(untagged, expecting = "a field name, {field: NAME, transforms: [...]}, or a list of them")]
pub enum SequenceKey {
    One(KeyField),
    Many(Vec<KeyField>),
}

impl SequenceKey {
    pub fn fields(&self) -> &[KeyField] {
        match self {
            SequenceKey::One(f) => std::slice::from_ref(f),
            SequenceKey::Many(v) => v,
        }
    }
}

/// One field of a key, with optional transforms.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
// `deny_unknown_fields` reaches the `Full` variant: a typo such as `transfroms` is an error, not
// a key silently compared without its transforms.
#[serde(untagged, deny_unknown_fields, expecting = "a field name or {field: NAME, transforms: [...]}")]
pub enum KeyField {
    Name(String),
    Full {
        field: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        transforms: Vec<Transform>,
    },
}

impl KeyField {
    pub fn name(&self) -> &str {
        match self {
            KeyField::Name(n) | KeyField::Full { field: n, .. } => n,
        }
    }
    pub fn transforms(&self) -> &[Transform] {
        match self {
            KeyField::Name(_) => &[],
            KeyField::Full { transforms, .. } => transforms,
        }
    }
}

/// Detection severity, lowest to highest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// A match condition. Exactly one of the combinators (`any`, `all`, `not`) or one operator
/// (`contains`, `equals`, `starts_with`, `ends_with`, `regex`, `count`, `gt`/`gte`/`lt`/`lte`,
/// `cidr`, `exists`, `time`) per node. Operators apply to `field` (default: the raw `line`) after the
/// `transforms`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// True when at least one sub-condition is true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub any: Option<Vec<Condition>>,
    /// True when every sub-condition is true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all: Option<Vec<Condition>>,
    /// True when the sub-condition is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not: Option<Box<Condition>>,

    /// The field the operator looks at: `line` (default, the raw line), a standard field
    /// (`client_ip`, `method`, `uri`, `path`, `query`, `protocol`, `request`, `status`, `bytes`,
    /// `referer`, `user_agent`, `time`, `host`, `program`, `pid`, `message`, `level`, `module`,
    /// `user`, `ident`), a named capture / JSON key of the source's format, or a field of the
    /// rule's `extract`. A JSON path may index arrays (`headers.User-Agent[0]`,
    /// `chain[1].issuer`, `[-1]` for the last) and may end in `[*]`: then the condition holds when it holds for at
    /// least one element. A missing field never matches (except under `not`, and
    /// `exists: false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Normalising transforms applied to the field, in order, before the operator. Without
    /// transforms the operator sees the text exactly as logged (still URL-encoded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transforms: Vec<Transform>,
    /// String comparisons are case-insensitive (ASCII) unless this is true. Also applies to
    /// `regex` (as the `i` flag) and `count`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub case_sensitive: Option<bool>,

    /// True when the value contains any of these strings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contains: Option<Values>,
    /// True when the value equals any of these strings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<Values>,
    /// True when the value starts with any of these strings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts_with: Option<Values>,
    /// True when the value ends with any of these strings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends_with: Option<Values>,
    /// True when any of these regular expressions (Rust `regex` syntax: linear time, no
    /// look-around or back-references) matches somewhere in the value. Anchor with `^`/`$`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<Values>,
    /// True when a substring occurs at least N times in the value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<Count>,
    /// Numeric comparison: the value, read as a number, is greater than this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gt: Option<f64>,
    /// Numeric comparison: greater than or equal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gte: Option<f64>,
    /// Numeric comparison: less than.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lt: Option<f64>,
    /// Numeric comparison: less than or equal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lte: Option<f64>,
    /// True when the value is an IP address inside any of these networks (`10.0.0.0/8`,
    /// `2001:db8::/32`, or a single address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr: Option<Values>,
    /// `true`: the field is present; `false`: it is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exists: Option<bool>,
    /// The named condition NAME of `conditions:` (in any rule file), as if written here.
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// True when the event's time (the parsed `time`, a file change's time, else the arrival
    /// time) falls inside these days and hours. For "outside office hours" put it under
    /// `not`. Takes no `field`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<TimeWindow>,
}

/// A normalising transform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Transform {
    /// ASCII lower case (mostly useful with `case_sensitive: true` or before a regex).
    Lowercase,
    /// Decode `%XX` and `+` (as space) repeatedly until the text stops changing (at most 4
    /// rounds), which defeats double and triple encoding. Invalid escapes stay as they are.
    UrlDecode,
    /// Decode HTML entities: `&lt;`, `&gt;`, `&amp;`, `&quot;`, `&apos;`, `&#NN;`, `&#xHH;`.
    HtmlDecode,
    /// Normalise a path: `\` becomes `/`, runs of `/` collapse, `.` segments drop and `..`
    /// segments remove their parent (never above the root).
    NormalizePath,
    /// Collapse runs of white space (space, tab, CR, LF, VT, FF) into one space.
    CompressWhitespace,
}

impl Transform {
    pub fn as_str(self) -> &'static str {
        match self {
            Transform::Lowercase => "lowercase",
            Transform::UrlDecode => "url_decode",
            Transform::HtmlDecode => "html_decode",
            Transform::NormalizePath => "normalize_path",
            Transform::CompressWhitespace => "compress_whitespace",
        }
    }
}

/// `count` operator: how often a substring must occur.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Count {
    /// The substring to count (occurrences do not overlap).
    pub of: String,
    /// Minimum number of occurrences ("more than 2" is `at_least: 3`).
    pub at_least: u32,
}

/// Cross-line threshold: a sliding window over event time, per group key.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Threshold {
    /// How many matching lines (or distinct values, with `distinct`) fire the rule.
    pub count: u32,
    /// Window length, e.g. `10s`, `1m`, `1h 30m`.
    pub within: DurationText,
    /// Fields that form the group key, e.g. `[client_ip]`. Empty: one group for the source.
    #[serde(default)]
    pub group_by: Vec<String>,
    /// Count distinct values of this field instead of lines (e.g. `path`: "more than 30
    /// distinct paths per IP per minute").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distinct: Option<String>,
}

/// Suppression after a detection: per key, stay quiet for a while and count what was held back.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Suppress {
    /// How long to stay quiet after firing, e.g. `5m`.
    #[serde(rename = "for")]
    pub duration: DurationText,
    /// Fields forming the suppression key. Default: the threshold's `group_by`, else
    /// `[client_ip]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_by: Option<Vec<String>>,
}

/// Inline examples: raw log lines, in the rule's first format (or `format`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Examples {
    /// Format the example lines are written in. Default: the rule's first format, else
    /// `combined`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// Lines the rule's condition must match.
    #[serde(default, rename = "match", skip_serializing_if = "Vec::is_empty")]
    pub should_match: Vec<String>,
    /// Lines the rule's condition must not match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub no_match: Vec<String>,
}

/// A duration written as text: `500ms`, `10s`, `5m`, `1h`, `1h 30m`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DurationText(pub std::time::Duration, pub String);

impl<'de> Deserialize<'de> for DurationText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let dur = humantime::parse_duration(&s)
            .map_err(|e| de::Error::custom(format!("invalid duration {s:?}: {e} (write e.g. 10s, 5m, 1h)")))?;
        if dur.is_zero() {
            return Err(de::Error::custom("a duration must be longer than zero"));
        }
        Ok(DurationText(dur, s))
    }
}

impl JsonSchema for DurationText {
    fn schema_name() -> String {
        "Duration".to_string()
    }
    fn json_schema(_: &mut schemars::r#gen::SchemaGenerator) -> schemars::schema::Schema {
        let mut s = schemars::schema::SchemaObject {
            instance_type: Some(schemars::schema::InstanceType::String.into()),
            ..Default::default()
        };
        s.string().pattern = Some(r"^\s*[0-9]+\s*[a-z]+(\s*[0-9]+\s*[a-z]+)*\s*$".to_string());
        s.metadata().description = Some("A duration such as `500ms`, `10s`, `5m`, `1h 30m`.".to_string());
        s.into()
    }
}

/// One or more match values. Each item is a string or a reference `{list: NAME}` to a named list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Values(pub Vec<ValueItem>);

/// One match value: a literal string, or every entry of a named list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum ValueItem {
    Text(String),
    List { list: String },
}

impl<'de> Deserialize<'de> for Values {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValuesVisitor)
    }
}

struct ValuesVisitor;

impl<'de> Visitor<'de> for ValuesVisitor {
    type Value = Values;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string, a list of strings, or {list: NAME}")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Values, E> {
        Ok(Values(vec![ValueItem::Text(v.to_string())]))
    }
    // YAML scalars such as `404` or `true` arrive as numbers/bools; users mean the text.
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Values, E> {
        Ok(Values(vec![ValueItem::Text(v.to_string())]))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Values, E> {
        Ok(Values(vec![ValueItem::Text(v.to_string())]))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Values, E> {
        Ok(Values(vec![ValueItem::Text(v.to_string())]))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Values, E> {
        Ok(Values(vec![ValueItem::Text(v.to_string())]))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Values, A::Error> {
        let mut out = Vec::new();
        while let Some(item) = seq.next_element::<ItemDe>()? {
            out.push(item.0);
        }
        Ok(Values(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Values, A::Error> {
        let item = ListRef::deserialize(de::value::MapAccessDeserializer::new(map))?;
        Ok(Values(vec![ValueItem::List { list: item.list }]))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListRef {
    list: String,
}

struct ItemDe(ValueItem);

impl<'de> Deserialize<'de> for ItemDe {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ItemDe;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or {list: NAME}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ItemDe, E> {
                Ok(ItemDe(ValueItem::Text(v.to_string())))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ItemDe, E> {
                Ok(ItemDe(ValueItem::Text(v.to_string())))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ItemDe, E> {
                Ok(ItemDe(ValueItem::Text(v.to_string())))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<ItemDe, E> {
                Ok(ItemDe(ValueItem::Text(v.to_string())))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<ItemDe, E> {
                Ok(ItemDe(ValueItem::Text(v.to_string())))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ItemDe, A::Error> {
                let item = ListRef::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(ItemDe(ValueItem::List { list: item.list }))
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for Values {
    fn schema_name() -> String {
        "Values".to_string()
    }
    fn json_schema(generator: &mut schemars::r#gen::SchemaGenerator) -> schemars::schema::Schema {
        use schemars::schema::{InstanceType, Schema, SchemaObject, SubschemaValidation};
        let text = || -> Schema {
            SchemaObject { instance_type: Some(InstanceType::String.into()), ..Default::default() }.into()
        };
        let list_ref: Schema = generator.subschema_for::<ListRefSchema>();
        let item: Schema = SchemaObject {
            subschemas: Some(Box::new(SubschemaValidation {
                any_of: Some(vec![text(), list_ref.clone()]),
                ..Default::default()
            })),
            ..Default::default()
        }
        .into();
        let mut arr = SchemaObject { instance_type: Some(InstanceType::Array.into()), ..Default::default() };
        arr.array().items = Some(item.into());
        let mut s = SchemaObject {
            subschemas: Some(Box::new(SubschemaValidation {
                any_of: Some(vec![text(), list_ref, arr.into()]),
                ..Default::default()
            })),
            ..Default::default()
        };
        s.metadata().description =
            Some("A string, a list of strings, or `{list: NAME}` items referring to named lists.".to_string());
        s.into()
    }
}

/// Schema-only mirror of a `{list: NAME}` reference.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct ListRefSchema {
    /// Name of a list declared under `lists:` in any rule file.
    list: String,
}

/// Days and hours of the week in a time zone: `{days: [mon, tue, wed, thu, fri], hours:
/// "08:00-18:00", timezone: Europe/Paris}`. Used by the `time` operator (true when the event
/// time falls inside) and by maintenance windows.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TimeWindow {
    /// Week days inside the window (`mon` ... `sun`). Empty: every day.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub days: Vec<Day>,
    /// Local time range `HH:MM-HH:MM`, start included, end excluded. A range that wraps
    /// midnight (`22:00-06:00`) belongs to the day it starts on. Absent: the whole day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^\d{1,2}:\d{2}\s*-\s*\d{1,2}:\d{2}$"))]
    pub hours: Option<String>,
    /// IANA time zone of `days` and `hours`, e.g. `Europe/Paris`. Default `UTC`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
}

/// A day of the week.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Day {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}
