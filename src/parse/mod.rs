//! **parse**: turn one raw line (`&[u8]`) into named fields.
//!
//! Every format fills the same [`Record`]: a table indexed by [`FieldId`] whose entries are byte
//! spans, either into the raw line (the common case: no copy at all) or into the record's own
//! scratch buffer when the format had to unescape the value (nginx `\x22`, JSON `\"`). The
//! record is reused from line to line, so the hot path allocates nothing once it is warm.
//!
//! Field names are interned once, when the rule set is compiled, into a [`FieldRegistry`]; the
//! well-known names (`client_ip`, `path`, `status`, ...) have fixed ids so parsers can address
//! them directly. Custom formats (regex with named captures) and JSON lines register the extra
//! names they produce or that rules ask for.
//!
//! A line that does not parse is not an error: the record is marked unparsed, raw-line rules
//! still see it, and the engine counts it.

pub mod access;
pub mod apache_error;
pub mod custom;
pub mod json;
mod scan;
pub mod syslog;
pub mod time;

use std::collections::HashMap;
use std::ops::Range;

use chrono::{DateTime, Utc};

pub use time::TimeSettings;

/// Index of a field in a [`Record`].
pub type FieldId = u16;

/// The well-known fields. Their ids are fixed; any other name gets an id above these.
pub mod std_fields {
    use super::FieldId;
    /// The whole raw line (never stored in the table; resolved specially).
    pub const LINE: FieldId = 0;
    pub const CLIENT_IP: FieldId = 1;
    pub const IDENT: FieldId = 2;
    pub const USER: FieldId = 3;
    pub const TIME: FieldId = 4;
    pub const METHOD: FieldId = 5;
    /// Request target as sent (path + `?` + query).
    pub const URI: FieldId = 6;
    /// Path part of the request target (before `?`).
    pub const PATH: FieldId = 7;
    /// Query string without the leading `?` (absent when there is none).
    pub const QUERY: FieldId = 8;
    pub const PROTOCOL: FieldId = 9;
    /// The full request line (`GET /x HTTP/1.1`).
    pub const REQUEST: FieldId = 10;
    pub const STATUS: FieldId = 11;
    pub const BYTES: FieldId = 12;
    pub const REFERER: FieldId = 13;
    pub const USER_AGENT: FieldId = 14;
    /// Host name: syslog HOSTNAME, or a virtual host where a format has one.
    pub const HOST: FieldId = 15;
    /// syslog APP-NAME / program (`sshd`).
    pub const PROGRAM: FieldId = 16;
    pub const PID: FieldId = 17;
    /// Free text payload: the syslog MSG, the error-log message.
    pub const MESSAGE: FieldId = 18;
    /// Severity of an error-log line (`error`, `warn`, ...).
    pub const LEVEL: FieldId = 19;
    /// Apache error-log module (`core`, `php7`, ...).
    pub const MODULE: FieldId = 20;

    /// Names of the fixed fields, indexed by id.
    pub const NAMES: &[&str] = &[
        "line",
        "client_ip",
        "ident",
        "user",
        "time",
        "method",
        "uri",
        "path",
        "query",
        "protocol",
        "request",
        "status",
        "bytes",
        "referer",
        "user_agent",
        "host",
        "program",
        "pid",
        "message",
        "level",
        "module",
    ];
}

/// Interned field names. Built once per compiled rule set and shared read-only.
#[derive(Debug, Clone)]
pub struct FieldRegistry {
    /// Shared, so that every detection names its fields without copying the names.
    names: Vec<std::sync::Arc<str>>,
    ids: HashMap<String, FieldId>,
    /// Per id: 0 for a field every rule sees, else the extract scope of the one rule whose
    /// `extract` fills it (see [`FieldRegistry::intern_scoped`]).
    scopes: Vec<u32>,
}

impl Default for FieldRegistry {
    fn default() -> Self {
        let mut r = FieldRegistry { names: Vec::new(), ids: HashMap::new(), scopes: Vec::new() };
        for n in std_fields::NAMES {
            r.intern(n);
        }
        r
    }
}

impl FieldRegistry {
    /// The id of `name`, adding it when new.
    pub fn intern(&mut self, name: &str) -> FieldId {
        if let Some(id) = self.ids.get(name) {
            return *id;
        }
        let id = FieldId::try_from(self.names.len()).expect("fewer than 65536 field names");
        self.names.push(name.into());
        self.scopes.push(0);
        self.ids.insert(name.to_string(), id);
        id
    }

    /// A new id for a field that one rule's `extract` fills (`scope` > 0, one per such rule).
    /// It is shown as `name`, but [`FieldRegistry::get`] never finds it: formats, the
    /// source's own fields and other rules keep the field of that name they had, so a value
    /// extracted for one rule cannot leak into another rule's view of the line.
    pub fn intern_scoped(&mut self, scope: u32, name: &str) -> FieldId {
        let id = FieldId::try_from(self.names.len()).expect("fewer than 65536 field names");
        self.names.push(name.into());
        self.scopes.push(scope);
        id
    }

    /// The extract scope of `id` (0: a field of every rule).
    pub fn scope(&self, id: FieldId) -> u32 {
        self.scopes.get(id as usize).copied().unwrap_or(0)
    }

    pub fn get(&self, name: &str) -> Option<FieldId> {
        self.ids.get(name).copied()
    }

    pub fn name(&self, id: FieldId) -> &str {
        &self.names[id as usize]
    }

    /// The name of `id`, shared.
    pub fn shared_name(&self, id: FieldId) -> std::sync::Arc<str> {
        std::sync::Arc::clone(&self.names[id as usize])
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Every (id, name) of the fields every rule sees, in id order (not those of one rule's
    /// `extract`).
    pub fn iter(&self) -> impl Iterator<Item = (FieldId, &str)> {
        self.names.iter().enumerate().filter(|(i, _)| self.scopes[*i] == 0).map(|(i, n)| (i as FieldId, &**n))
    }
}

/// Where a field's bytes live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Span {
    /// A range of the raw line.
    Raw(Range<u32>),
    /// A range of [`Record::scratch`] (the value was unescaped while parsing).
    Owned(Range<u32>),
}

/// The parsed form of one line. Reused across lines: call [`Record::reset`] (parsers do).
#[derive(Debug, Default, Clone)]
pub struct Record {
    values: Vec<Option<Span>>,
    scratch: Vec<u8>,
    /// The elements of arrays read as lists (`headers.X-Forwarded-For[*]`), back to back.
    elems: Vec<Span>,
    /// Per list field: its range of `elems`.
    lists: Vec<(FieldId, Range<u32>)>,
    /// Elements of the arrays being read, a stack: a nested array's elements are moved to
    /// `elems` when it ends, so each array's elements end up contiguous.
    pending: Vec<Span>,
    /// True when the format recognised the line.
    pub parsed: bool,
}

impl Record {
    pub fn new(fields: usize) -> Self {
        Record { values: vec![None; fields], ..Record::default() }
    }

    /// Clears all fields, keeping the allocations.
    pub fn reset(&mut self, fields: usize) {
        if self.values.len() != fields {
            self.values.resize(fields, None);
        }
        for v in &mut self.values {
            *v = None;
        }
        self.clear_lists();
        self.scratch.clear();
        self.parsed = false;
    }

    fn clear_lists(&mut self) {
        self.elems.clear();
        self.lists.clear();
        self.pending.clear();
    }

    /// Clears every field (and the scratch buffer) but keeps the table size: what a parser
    /// does when it gives up half-way, so a rejected line leaves no partial fields behind.
    pub fn clear(&mut self) {
        for v in &mut self.values {
            *v = None;
        }
        self.clear_lists();
        self.scratch.clear();
        self.parsed = false;
    }

    /// Where the value of `id` lives, if it has one.
    #[inline]
    pub fn span(&self, id: FieldId) -> Option<&Span> {
        self.values.get(id as usize)?.as_ref()
    }

    /// The scratch buffer that [`Span::Owned`] ranges point into.
    #[inline]
    pub fn scratch(&self) -> &[u8] {
        &self.scratch
    }

    /// Sets `id` to `range` of the scratch buffer: lets a parser point several fields into one
    /// unescaped value (e.g. method/uri/protocol inside an unescaped request line).
    #[inline]
    pub fn set_owned_range(&mut self, id: FieldId, range: Range<usize>) {
        if let Some(slot) = self.values.get_mut(id as usize) {
            *slot = Some(Span::Owned(range.start as u32..range.end as u32));
        }
    }

    /// Sets (or, with `None`, clears) the span of `id` as it is.
    #[inline]
    pub fn set_span(&mut self, id: FieldId, span: Option<Span>) {
        if let Some(slot) = self.values.get_mut(id as usize) {
            *slot = span;
        }
    }

    /// Sets `id` to a range of the raw line.
    #[inline]
    pub fn set_raw(&mut self, id: FieldId, range: Range<usize>) {
        if let Some(slot) = self.values.get_mut(id as usize) {
            *slot = Some(Span::Raw(range.start as u32..range.end as u32));
        }
    }

    /// Sets `id` to a copy of `bytes` (used when the value had to be unescaped).
    pub fn set_owned(&mut self, id: FieldId, bytes: &[u8]) {
        if (id as usize) >= self.values.len() {
            return;
        }
        let start = self.scratch.len();
        self.scratch.extend_from_slice(bytes);
        self.values[id as usize] = Some(Span::Owned(start as u32..self.scratch.len() as u32));
    }

    /// Appends to the scratch buffer and returns a writer handle: lets a parser unescape
    /// straight into the record without an intermediate buffer.
    pub fn scratch_mut(&mut self) -> &mut Vec<u8> {
        &mut self.scratch
    }

    /// Marks `scratch[start..]` (written through [`Record::scratch_mut`]) as the value of `id`.
    pub fn set_owned_from(&mut self, id: FieldId, start: usize) {
        if let Some(slot) = self.values.get_mut(id as usize) {
            *slot = Some(Span::Owned(start as u32..self.scratch.len() as u32));
        }
    }

    /// The bytes of field `id` for the raw `line` it was parsed from. `LINE` is the line itself.
    #[inline]
    pub fn get<'a>(&'a self, line: &'a [u8], id: FieldId) -> Option<&'a [u8]> {
        if id == std_fields::LINE {
            return Some(line);
        }
        match self.values.get(id as usize)? {
            None => None,
            Some(Span::Raw(r)) => line.get(r.start as usize..r.end as usize),
            Some(Span::Owned(r)) => self.scratch.get(r.start as usize..r.end as usize),
        }
    }

    /// The bytes a span points at.
    #[inline]
    pub fn bytes<'a>(&'a self, line: &'a [u8], span: &Span) -> Option<&'a [u8]> {
        match span {
            Span::Raw(r) => line.get(r.start as usize..r.end as usize),
            Span::Owned(r) => self.scratch.get(r.start as usize..r.end as usize),
        }
    }

    /// The elements of list field `id` (`None`: the field is not a list on this line; its
    /// value, if any, is then its one element).
    #[inline]
    pub fn list(&self, id: FieldId) -> Option<&[Span]> {
        let (_, r) = self.lists.iter().find(|(f, _)| *f == id)?;
        self.elems.get(r.start as usize..r.end as usize)
    }

    /// Forgets the list of `id` (its value is no longer an array: a key given twice).
    #[inline]
    pub(crate) fn clear_list(&mut self, id: FieldId) {
        if !self.lists.is_empty() {
            self.lists.retain(|(f, _)| *f != id);
        }
    }

    /// The elements of the array being read: where its own start (see [`Record::pending`]).
    pub(crate) fn pending_mark(&self) -> usize {
        self.pending.len()
    }

    pub(crate) fn push_pending(&mut self, span: Span) {
        self.pending.push(span);
    }

    /// The array whose elements start at `mark` ended: its elements as they stand.
    pub(crate) fn pending_since(&self, mark: usize) -> &[Span] {
        self.pending.get(mark..).unwrap_or_default()
    }

    /// The array whose elements start at `mark` ended: they become the list of each of
    /// `ids` (when there are any), and leave the stack.
    pub(crate) fn finish_pending(&mut self, mark: usize, ids: &[FieldId]) {
        if !ids.is_empty() {
            let start = self.elems.len() as u32;
            self.elems.extend(self.pending.drain(mark.min(self.pending.len())..));
            let end = self.elems.len() as u32;
            for &id in ids {
                if (id as usize) < self.values.len() {
                    self.lists.retain(|(f, _)| *f != id);
                    self.lists.push((id, start..end));
                }
            }
        }
        self.pending.truncate(mark);
    }

    /// True when the value of `id` is a verbatim slice of the raw line (so a literal search over
    /// the raw line also covers it).
    #[inline]
    pub fn is_raw(&self, id: FieldId) -> bool {
        id == std_fields::LINE || matches!(self.values.get(id as usize), Some(Some(Span::Raw(_))))
    }

    /// Every field that has a value, as (id, bytes).
    pub fn iter<'a>(&'a self, line: &'a [u8]) -> impl Iterator<Item = (FieldId, &'a [u8])> + 'a {
        (1..self.values.len() as FieldId).filter_map(move |id| self.get(line, id).map(|v| (id, v)))
    }
}

/// The built-in log formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FormatKind {
    /// Apache/nginx combined: common + `"referer" "user-agent"`.
    Combined,
    /// Apache/nginx common log format.
    Common,
    /// Apache 2.2 / 2.4 error log.
    ApacheError,
    /// syslog, RFC 3164 or RFC 5424.
    Syslog,
    /// One JSON object per line.
    Json,
    /// A user regex with named captures.
    Custom,
    /// No fields: rules see the raw line only.
    Raw,
}

impl FormatKind {
    pub const ALL: &[(&str, FormatKind)] = &[
        ("combined", FormatKind::Combined),
        ("common", FormatKind::Common),
        ("apache_error", FormatKind::ApacheError),
        ("syslog", FormatKind::Syslog),
        ("json", FormatKind::Json),
        ("custom", FormatKind::Custom),
        ("raw", FormatKind::Raw),
    ];

    pub fn from_name(name: &str) -> Option<FormatKind> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, k)| *k)
    }

    pub fn name(self) -> &'static str {
        Self::ALL.iter().find(|(_, k)| *k == self).map(|(n, _)| *n).unwrap_or("raw")
    }

    /// The fields a built-in format can fill (besides `line`, which every format has), for
    /// `trapline lint` to catch rule fields no format of the rule produces. `None` for the
    /// formats whose fields come from the config or the data itself (custom regex, JSON).
    /// A test parses sample lines of each format and checks they stay within this list.
    pub fn fields(self) -> Option<&'static [FieldId]> {
        use std_fields::*;
        const ACCESS: &[FieldId] =
            &[CLIENT_IP, IDENT, USER, TIME, METHOD, URI, PATH, QUERY, PROTOCOL, REQUEST, STATUS, BYTES, HOST];
        const COMBINED: &[FieldId] = &[
            CLIENT_IP, IDENT, USER, TIME, METHOD, URI, PATH, QUERY, PROTOCOL, REQUEST, STATUS, BYTES, HOST, REFERER,
            USER_AGENT,
        ];
        match self {
            FormatKind::Combined => Some(COMBINED),
            FormatKind::Common => Some(ACCESS),
            FormatKind::ApacheError => Some(&[CLIENT_IP, TIME, LEVEL, MODULE, PID, MESSAGE, REFERER]),
            FormatKind::Syslog => Some(&[CLIENT_IP, TIME, HOST, PROGRAM, PID, MESSAGE]),
            FormatKind::Raw => Some(&[]),
            FormatKind::Json | FormatKind::Custom => None,
        }
    }
}

/// A ready-to-use parser for one source: the format plus its settings (time zone, custom
/// regex, JSON key mapping). Cheap to clone; immutable while parsing.
#[derive(Debug, Clone)]
pub struct Parser {
    pub kind: FormatKind,
    /// Name the user gave this format (the built-in name, or a custom format's name).
    pub name: String,
    pub time: TimeSettings,
    custom: Option<custom::CustomFormat>,
    json: Option<json::JsonFormat>,
}

impl Parser {
    /// A parser for a built-in format that needs no extra settings.
    pub fn builtin(kind: FormatKind, time: TimeSettings) -> Parser {
        let json = (kind == FormatKind::Json).then(json::JsonFormat::default);
        Parser { kind, name: kind.name().to_string(), time, custom: None, json }
    }

    /// A parser for a custom regex format. Capture names are interned into `registry`.
    pub fn custom(
        name: &str,
        pattern: &str,
        time_format: Option<String>,
        time: TimeSettings,
        registry: &mut FieldRegistry,
    ) -> Result<Parser, regex::Error> {
        let custom = custom::CustomFormat::new(pattern, time_format, registry)?;
        Ok(Parser { kind: FormatKind::Custom, name: name.to_string(), time, custom: Some(custom), json: None })
    }

    /// A JSON-lines parser. `mapping` maps a field name (standard or not) to a dotted key path
    /// in the object; every other registered field name is looked up as a key of its own name.
    pub fn json(name: &str, mapping: &[(String, String)], time: TimeSettings, registry: &mut FieldRegistry) -> Parser {
        let json = json::JsonFormat::new(mapping, registry);
        Parser { kind: FormatKind::Json, name: name.to_string(), time, custom: None, json: Some(json) }
    }

    /// Lets the parser know the final registry (JSON needs every name rules refer to).
    pub fn bind(&mut self, registry: &FieldRegistry) {
        if let Some(j) = &mut self.json {
            j.bind(registry);
        }
    }

    /// Parses `line` (without its trailing newline) into `rec`. Never panics on any input.
    pub fn parse(&self, line: &[u8], rec: &mut Record, fields: usize) {
        rec.reset(fields);
        rec.parsed = match self.kind {
            FormatKind::Combined | FormatKind::Common => access::parse(line, rec),
            FormatKind::ApacheError => apache_error::parse(line, rec),
            FormatKind::Syslog => syslog::parse(line, rec),
            FormatKind::Json => self.json.as_ref().is_some_and(|j| j.parse(line, rec)),
            FormatKind::Custom => self.custom.as_ref().is_some_and(|c| c.parse(line, rec)),
            FormatKind::Raw => true,
        };
    }

    /// The event time of a parsed record, in UTC, if the line carried a readable one.
    pub fn event_time(&self, line: &[u8], rec: &Record) -> Option<DateTime<Utc>> {
        let raw = rec.get(line, std_fields::TIME)?;
        let text = std::str::from_utf8(raw).ok()?;
        match self.kind {
            FormatKind::Combined | FormatKind::Common => time::parse_clf(text),
            FormatKind::ApacheError => time::parse_apache_error(text, &self.time),
            FormatKind::Syslog => time::parse_syslog(text, &self.time),
            FormatKind::Json => time::parse_any(text, &self.time),
            FormatKind::Custom => match self.custom.as_ref().and_then(|c| c.time_format.as_deref()) {
                Some(fmt) => time::parse_with(text, fmt, &self.time),
                None => time::parse_any(text, &self.time),
            },
            FormatKind::Raw => None,
        }
    }
}

/// Helpers shared by the parsers' unit tests.
#[cfg(test)]
pub(crate) mod test_util {
    use super::{FieldId, FieldRegistry, Record};

    /// Runs a format's `parse` on `line` into a fresh record: (parsed, record).
    pub fn run(parse: fn(&[u8], &mut Record) -> bool, line: &[u8]) -> (bool, Record) {
        let mut rec = Record::new(FieldRegistry::default().len());
        let ok = parse(line, &mut rec);
        (ok, rec)
    }

    /// A field as text (test lines are UTF-8).
    pub fn field<'a>(line: &'a [u8], rec: &'a Record, id: FieldId) -> Option<&'a str> {
        rec.get(line, id).map(|b| std::str::from_utf8(b).unwrap())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `FormatKind::fields` is what lint trusts: every field a parser fills on real-looking
    /// lines (including the variants: vhost prefix, error log with client and referer, syslog
    /// with an sshd client address) must be in the declared list.
    #[test]
    fn declared_fields_cover_what_parsers_fill() {
        let samples: &[(FormatKind, &[&str])] = &[
            (
                FormatKind::Combined,
                &[
                    r#"203.0.113.9 - bob [10/Oct/2025:13:55:36 +0000] "GET /a?b=c HTTP/1.1" 200 12 "http://r/" "curl/8""#,
                    r#"www.example.com:443 192.0.2.5 - - [10/Oct/2025:13:55:36 +0000] "GET / HTTP/1.1" 404 0 "-" "x""#,
                ],
            ),
            (FormatKind::Common, &[r#"203.0.113.9 - - [10/Oct/2025:13:55:36 +0000] "POST /login HTTP/1.0" 302 -"#]),
            (
                FormatKind::ApacheError,
                &[
                    "[Wed Oct 11 14:32:52.123456 2025] [core:error] [pid 1234:tid 5678] [client 198.51.100.7:4242] AH00126: Invalid URI, referer: http://x/",
                    "[Wed Oct 11 14:32:52 2025] [error] [client 198.51.100.7] File does not exist: /var/www/x",
                ],
            ),
            (
                FormatKind::Syslog,
                &[
                    "Oct 11 22:14:15 bastion sshd[4123]: Failed password for root from 198.51.100.7 port 22 ssh2",
                    "<34>1 2025-10-11T22:14:15.003Z mymachine su 77 ID47 - 'su root' failed on /dev/pts/8",
                ],
            ),
            (FormatKind::Raw, &["anything at all"]),
        ];
        let registry = FieldRegistry::default();
        for (kind, lines) in samples {
            let declared = kind.fields().unwrap();
            let parser = Parser::builtin(*kind, TimeSettings::default());
            let mut rec = Record::new(registry.len());
            for line in *lines {
                parser.parse(line.as_bytes(), &mut rec, registry.len());
                assert!(rec.parsed, "{kind:?} did not parse {line}");
                let filled: Vec<FieldId> = rec.iter(line.as_bytes()).map(|(id, _)| id).collect();
                assert!(*kind == FormatKind::Raw || filled.len() > 3, "{kind:?} filled too little of {line}");
                for id in filled {
                    assert!(declared.contains(&id), "{kind:?} fills {} but does not declare it", registry.name(id));
                }
            }
        }
    }
}
