//! JSON lines: one object per line, fields picked by key path.
//!
//! Rather than building a `serde_json::Value` per line (an allocation per key and string),
//! the object is walked once by a small hand-written scanner that only looks at the keys some
//! field wants. The wanted keys form a trie ([`Node`]): a key with no wanted descendants has
//! its value skipped with a flat bracket counter, so nesting depth costs no recursion (a line
//! of 100 000 `[` cannot overflow the stack); the scanner only recurses into objects named by
//! a configured path, so its depth is bounded by the configuration, not by the input.
//!
//! Values: strings are a raw span of the line when they have no escapes, else their decoded
//! bytes in the record scratch (`\u00e9`, surrogate pairs; lone surrogates become U+FFFD);
//! numbers, `true`/`false`/`null`, objects and arrays are their raw JSON text, except that
//! an array of strings is the strings joined with `, `.
//!
//! Arrays: a path may index one (`headers.Accept[0]`, `chain[1].subject`: 0-based, an
//! element past the end is absent; `[-1]` the last, read again once the array has ended) or
//! take all its elements (`headers.X-Forwarded-For[*]`,
//! at the end of a path only): that field's value is every element's text (strings decoded,
//! anything else as its JSON text) joined with `, `, and the record keeps each element apart
//! for conditions that test the elements one by one ([`Record::list`]). A value that is not
//! an array is a list of that one value. Indexing and listing walk the array once, element
//! by element, without recursion beyond the configured path.
//!
//! A line that is not an object, or has a syntax error, is rejected (no fields). A line that
//! is cut short (reader limit on a huge line) keeps the fields found before the cut, when
//! there are any, so a truncated attack line still yields its `client_ip`.

use std::ops::Range;

use super::access::derive_request_fields;
use super::scan::MAX_LINE;
use super::std_fields as f;
use super::{FieldId, FieldRegistry, Record, Span};

/// The JSON format: key paths for every registered field.
#[derive(Debug, Clone, Default)]
pub struct JsonFormat {
    /// field name -> dotted key path, for fields not looked up under their own name.
    mapping: Vec<(String, String)>,
    root: Node,
}

/// One level of the key trie.
#[derive(Debug, Clone, Default)]
struct Node {
    children: Vec<(Box<[u8]>, Node)>,
    /// Array elements wanted by index (`[0]`).
    items: Vec<(u32, Node)>,
    /// The last element (`[-1]`).
    last: Option<Box<Node>>,
    /// Fields whose value is the value at this path.
    fields: Vec<FieldId>,
    /// Fields that are the elements of the array at this path (`[*]`).
    each: Vec<FieldId>,
}

/// One step of a field path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seg<'a> {
    Key(&'a str),
    Index(u32),
    /// `[-1]`: the last element.
    Last,
    /// `[*]`: every element.
    Each,
}

/// Splits a field path: keys separated by `.`, each followed by any number of `[N]`, and a
/// last `[*]`: `a.b[0].c`, `headers.X-Forwarded-For[*]`. `Err` says what is wrong.
pub fn parse_path(path: &str) -> Result<Vec<Seg<'_>>, String> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let (key, mut rest) = part.split_at(part.find('[').unwrap_or(part.len()));
        if key.is_empty() {
            return Err("an empty key (write keys between dots, an index after a key: a.b[0])".into());
        }
        out.push(Seg::Key(key));
        while !rest.is_empty() {
            let Some(inner) = rest.strip_prefix('[').and_then(|r| r.split_once(']')) else {
                return Err(format!("{rest:?}: write an index as [0] or [*]"));
            };
            let (idx, tail) = inner;
            if out.last() == Some(&Seg::Each) {
                return Err("[*] must end the path".into());
            }
            out.push(match idx {
                "*" => Seg::Each,
                "-1" => Seg::Last,
                _ if !idx.is_empty() && idx.bytes().all(|b| b.is_ascii_digit()) => {
                    Seg::Index(idx.parse().map_err(|_| format!("index {idx} is too large"))?)
                }
                _ => return Err(format!("[{idx}]: an index is a number from 0, -1 (the last), or *")),
            });
            rest = tail;
        }
    }
    if out.iter().rev().skip(1).any(|s| *s == Seg::Each) {
        return Err("[*] must end the path".into());
    }
    Ok(out)
}

impl Node {
    fn child(&self, key: &[u8]) -> Option<&Node> {
        self.children.iter().find(|(k, _)| **k == *key).map(|(_, n)| n)
    }

    fn item(&self, i: u32) -> Option<&Node> {
        self.items.iter().find(|(k, _)| *k == i).map(|(_, n)| n)
    }

    /// Whether an array here is read element by element.
    fn wants_array(&self) -> bool {
        !self.fields.is_empty() || !self.each.is_empty() || !self.items.is_empty() || self.last.is_some()
    }

    /// The children that a value which is not an array stands for: `[0]` and `[-1]` of the
    /// array of that one value.
    fn sole_element(&self) -> impl Iterator<Item = &Node> {
        self.item(0).into_iter().chain(self.last.as_deref())
    }

    fn insert(&mut self, path: &[Seg<'_>], id: FieldId) {
        let Some((seg, rest)) = path.split_first() else {
            if !self.fields.contains(&id) {
                self.fields.push(id);
            }
            return;
        };
        let next = match *seg {
            Seg::Each => {
                if !self.each.contains(&id) {
                    self.each.push(id);
                }
                return;
            }
            Seg::Key(k) => match self.children.iter().position(|(c, _)| **c == *k.as_bytes()) {
                Some(p) => &mut self.children[p].1,
                None => {
                    self.children.push((k.as_bytes().into(), Node::default()));
                    &mut self.children.last_mut().expect("just pushed").1
                }
            },
            Seg::Last => self.last.get_or_insert_with(Box::default),
            Seg::Index(i) => match self.items.iter().position(|(c, _)| *c == i) {
                Some(p) => &mut self.items[p].1,
                None => {
                    self.items.push((i, Node::default()));
                    &mut self.items.last_mut().expect("just pushed").1
                }
            },
        };
        next.insert(rest, id);
    }
}

impl JsonFormat {
    /// A format with `mapping` (field name -> dotted key path). The mapped field names are
    /// interned into `registry`; the format is bound to `registry` as it stands (call
    /// [`JsonFormat::bind`] again once rules have added their names).
    pub fn new(mapping: &[(String, String)], registry: &mut FieldRegistry) -> JsonFormat {
        for (field, _) in mapping {
            registry.intern(field);
        }
        let mut j = JsonFormat { mapping: mapping.to_vec(), root: Node::default() };
        j.bind(registry);
        j
    }

    /// Rebuilds the key trie for every name in `registry`. A dotted path (`http.request.path`)
    /// is looked up both as nested objects and as a literal top-level key of that name, since
    /// shippers write both shapes.
    pub fn bind(&mut self, registry: &FieldRegistry) {
        let mut root = Node::default();
        for (id, name) in registry.iter() {
            if id == f::LINE {
                continue;
            }
            let path = self.mapping.iter().find(|(n, _)| n == name).map_or(name, |(_, p)| p.as_str());
            // A path that is not of the bracket syntax (a mapped key with odd characters) is
            // plain keys.
            let segs = parse_path(path).unwrap_or_else(|_| path.split('.').map(Seg::Key).collect());
            root.insert(&segs, id);
            // The keys before the first index, as one literal key (`{"a.b": [...]}`).
            let keys = path.find('[').map_or(path, |i| &path[..i]);
            let n = keys.split('.').count();
            if n > 1 && segs.len() >= n {
                let mut alt = vec![Seg::Key(keys)];
                alt.extend_from_slice(&segs[n..]);
                root.insert(&alt, id);
            }
        }
        self.root = root;
    }

    /// Parses one JSON object line. See the module docs for what is accepted.
    pub fn parse(&self, line: &[u8], rec: &mut Record) -> bool {
        if line.len() > MAX_LINE {
            return false;
        }
        let mut s = Scanner { b: line, i: 0, found: 0 };
        s.ws();
        if s.peek() != Some(b'{') {
            return false;
        }
        let ok = match s.object(&self.root, rec) {
            Ok(()) => {
                s.ws();
                s.i >= line.len()
            }
            Err(Error::Truncated) => s.found > 0,
            Err(Error::Syntax) => false,
        };
        if ok {
            derive_request_fields(line, rec);
        } else {
            rec.clear();
        }
        ok
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Error {
    /// The line ended inside the object.
    Truncated,
    /// Something that is not JSON.
    Syntax,
}

type Res<T> = Result<T, Error>;

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
    /// Fields set so far (decides whether a truncated line is still worth keeping).
    found: usize,
}

impl Scanner<'_> {
    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    /// Next byte, or Truncated at the end of the line.
    #[inline]
    fn need(&self) -> Res<u8> {
        self.peek().ok_or(Error::Truncated)
    }

    #[inline]
    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            self.i += 1;
        }
    }

    fn expect(&mut self, c: u8) -> Res<()> {
        self.ws();
        if self.need()? != c {
            return Err(Error::Syntax);
        }
        self.i += 1;
        Ok(())
    }

    /// An object at `self.i` (which is `{`), extracting the fields of `node`'s subtree.
    fn object(&mut self, node: &Node, rec: &mut Record) -> Res<()> {
        self.i += 1;
        self.ws();
        if self.need()? == b'}' {
            self.i += 1;
            return Ok(());
        }
        loop {
            self.ws();
            if self.need()? != b'"' {
                return Err(Error::Syntax);
            }
            let key = self.string()?;
            self.expect(b':')?;
            self.ws();
            match self.key_node(node, &key)? {
                Some(child) => self.wanted_value(child, rec)?,
                None => self.skip_value()?,
            }
            self.ws();
            match self.need()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return Err(Error::Syntax),
            }
        }
    }

    /// The trie child for a key; escaped keys (rare) are decoded before comparing.
    fn key_node<'n>(&self, node: &'n Node, key: &Str) -> Res<Option<&'n Node>> {
        if node.children.is_empty() {
            return Ok(None);
        }
        let raw = self.b.get(key.content.clone()).unwrap_or_default();
        if !key.escaped {
            return Ok(node.child(raw));
        }
        let mut decoded = Vec::with_capacity(raw.len());
        unescape_json(raw, &mut decoded)?;
        Ok(node.child(&decoded))
    }

    /// A value whose key is in the trie: store it for the node's fields, and descend when
    /// deeper keys or array elements are wanted.
    fn wanted_value(&mut self, node: &Node, rec: &mut Record) -> Res<()> {
        let start = self.i;
        match self.need()? {
            b'{' if !node.children.is_empty() => {
                self.object(node, rec)?;
                self.store_raw(node, start..self.i, rec);
            }
            b'"' => {
                let s = self.string()?;
                self.store_string(node, &s, rec)?;
                // A value that is not an array is an array of that one value: `[0]` is it.
                for sole in node.sole_element() {
                    self.store_string(sole, &s, rec)?;
                }
            }
            b'[' if node.wants_array() => self.array(node, rec)?,
            _ => {
                self.skip_value()?;
                self.store_raw(node, start..self.i, rec);
                for sole in node.sole_element() {
                    self.store_raw(sole, start..self.i, rec);
                }
            }
        }
        Ok(())
    }

    /// An array at `self.i` (which is `[`), element by element: elements wanted by index are
    /// read as values of their own; for the node's fields, an array of strings is the
    /// strings joined with `, ` (`"User-Agent": ["Mozilla/5.0"]`, as Caddy logs headers: how
    /// HTTP reads a header sent twice) and any other array its JSON text; for its `[*]`
    /// fields, every element's text joined, and each element kept apart in the record.
    fn array(&mut self, node: &Node, rec: &mut Record) -> Res<()> {
        let start = self.i;
        self.i += 1;
        let keep = !node.fields.is_empty() || !node.each.is_empty();
        let mark = rec.pending_mark();
        let mut all_strings = true;
        let mut n: u32 = 0;
        let mut last_at = None;
        loop {
            self.ws();
            if n == 0 && self.need()? == b']' {
                self.i += 1;
                break;
            }
            let at = self.i;
            last_at = Some(at);
            let item = node.item(n);
            if self.need()? == b'"' {
                let s = self.string()?;
                if let Some(child) = item {
                    self.store_string(child, &s, rec)?;
                }
                if keep {
                    let span = self.string_span(&s, rec)?;
                    rec.push_pending(span);
                }
            } else {
                all_strings = false;
                match item {
                    Some(child) => self.wanted_value(child, rec)?,
                    None => self.skip_value()?,
                }
                if keep {
                    rec.push_pending(Span::Raw(at as u32..self.i as u32));
                }
            }
            n = n.saturating_add(1);
            self.ws();
            match self.need()? {
                b',' => self.i += 1,
                b']' => {
                    self.i += 1;
                    break;
                }
                _ => return Err(Error::Syntax),
            }
        }
        if keep && (all_strings || !node.each.is_empty()) {
            // Every element's text joined: the value of `[*]` fields, and of plain ones
            // when every element is a string.
            let j0 = rec.scratch().len();
            for k in 0..rec.pending_since(mark).len() {
                let span = rec.pending_since(mark)[k].clone();
                if k > 0 {
                    rec.scratch_mut().extend_from_slice(b", ");
                }
                match span {
                    Span::Raw(r) => {
                        let bytes = self.b.get(r.start as usize..r.end as usize).unwrap_or_default();
                        rec.scratch_mut().extend_from_slice(bytes);
                    }
                    Span::Owned(r) => rec.scratch_mut().extend_from_within(r.start as usize..r.end as usize),
                }
            }
            let joined = j0..rec.scratch().len();
            for &id in &node.each {
                rec.set_owned_range(id, joined.clone());
            }
            for &id in &node.fields {
                if all_strings {
                    rec.set_owned_range(id, joined.clone());
                } else {
                    rec.set_raw(id, start..self.i);
                }
            }
            self.found += node.fields.len() + node.each.len();
        } else if keep {
            self.store_raw(node, start..self.i, rec);
        }
        rec.finish_pending(mark, &node.each);
        // `[-1]`: only now is the last element known; read it again (one element).
        if let (Some(child), Some(at)) = (node.last.as_deref(), last_at) {
            let end = self.i;
            self.i = at;
            self.wanted_value(child, rec)?;
            self.i = end;
        }
        Ok(())
    }

    /// Where a scanned string's text is: the line, or (with escapes) its decoded copy in the
    /// record's scratch.
    fn string_span(&self, s: &Str, rec: &mut Record) -> Res<Span> {
        let bytes = self.b.get(s.content.clone()).unwrap_or_default();
        if !s.escaped {
            return Ok(Span::Raw(s.content.start as u32..s.content.end as u32));
        }
        let start = rec.scratch().len();
        unescape_json(bytes, rec.scratch_mut())?;
        Ok(Span::Owned(start as u32..rec.scratch().len() as u32))
    }

    fn store_raw(&mut self, node: &Node, r: Range<usize>, rec: &mut Record) {
        for &id in node.fields.iter().chain(&node.each) {
            rec.set_raw(id, r.clone());
            self.found += 1;
        }
        for &id in &node.each {
            rec.clear_list(id);
        }
    }

    fn store_string(&mut self, node: &Node, s: &Str, rec: &mut Record) -> Res<()> {
        if node.fields.is_empty() && node.each.is_empty() {
            return Ok(());
        }
        if !s.escaped {
            self.store_raw(node, s.content.clone(), rec);
            return Ok(());
        }
        let start = rec.scratch().len();
        unescape_json(self.b.get(s.content.clone()).unwrap_or_default(), rec.scratch_mut())?;
        let end = rec.scratch().len();
        for &id in node.fields.iter().chain(&node.each) {
            rec.set_owned_range(id, start..end);
        }
        for &id in &node.each {
            rec.clear_list(id);
        }
        self.found += node.fields.len() + node.each.len();
        Ok(())
    }

    /// A string at `self.i` (which is `"`): its content range and whether it has escapes.
    fn string(&mut self) -> Res<Str> {
        let start = self.i + 1;
        let mut i = start;
        let mut escaped = false;
        loop {
            let rest = self.b.get(i..).ok_or(Error::Truncated)?;
            let off = memchr::memchr2(b'"', b'\\', rest).ok_or(Error::Truncated)?;
            let p = i + off;
            if self.b.get(p) == Some(&b'"') {
                self.i = p + 1;
                return Ok(Str { content: start..p, escaped });
            }
            escaped = true;
            i = p + 2;
            if i > self.b.len() {
                return Err(Error::Truncated);
            }
        }
    }

    /// Skips any value without recursion: containers are crossed with a depth counter.
    fn skip_value(&mut self) -> Res<()> {
        match self.need()? {
            b'"' => self.string().map(|_| ()),
            b'{' | b'[' => self.skip_container(),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.number(),
            _ => Err(Error::Syntax),
        }
    }

    fn skip_container(&mut self) -> Res<()> {
        let mut depth = 0usize;
        loop {
            match self.need()? {
                b'"' => {
                    self.string()?;
                    continue;
                }
                b'{' | b'[' => depth += 1,
                b'}' | b']' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        self.i += 1;
                        return Ok(());
                    }
                }
                _ => {}
            }
            self.i += 1;
        }
    }

    fn literal(&mut self, word: &[u8]) -> Res<()> {
        let have = self.b.get(self.i..).unwrap_or_default();
        let n = word.len().min(have.len());
        if have.get(..n) != word.get(..n) {
            return Err(Error::Syntax);
        }
        if n < word.len() {
            return Err(Error::Truncated);
        }
        self.i += n;
        Ok(())
    }

    fn number(&mut self) -> Res<()> {
        let start = self.i;
        while matches!(self.peek(), Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')) {
            self.i += 1;
        }
        match self.peek() {
            None => Err(Error::Truncated),
            Some(_) if self.i == start => Err(Error::Syntax),
            Some(_) => Ok(()),
        }
    }
}

/// A scanned string: content range (between the quotes) and whether it contains escapes.
struct Str {
    content: Range<usize>,
    escaped: bool,
}

fn hex4(b: &[u8]) -> Option<u32> {
    let d = b.get(..4)?;
    d.iter().try_fold(0u32, |acc, &c| Some(acc * 16 + (c as char).to_digit(16)?))
}

/// Decodes JSON string escapes into `out`. Invalid escapes are a syntax error; surrogate
/// halves that do not pair up decode to U+FFFD rather than failing the whole line.
fn unescape_json(src: &[u8], out: &mut Vec<u8>) -> Res<()> {
    let mut i = 0;
    while i < src.len() {
        let rest = src.get(i..).unwrap_or_default();
        let Some(off) = memchr::memchr(b'\\', rest) else {
            out.extend_from_slice(rest);
            break;
        };
        out.extend_from_slice(rest.get(..off).unwrap_or_default());
        let p = i + off;
        let esc = *src.get(p + 1).ok_or(Error::Syntax)?;
        i = p + 2;
        let simple = match esc {
            b'"' => b'"',
            b'\\' => b'\\',
            b'/' => b'/',
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => {
                let (c, used) = decode_u(src.get(i..).unwrap_or_default())?;
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                i += used;
                continue;
            }
            _ => return Err(Error::Syntax),
        };
        out.push(simple);
    }
    Ok(())
}

/// `XXXX` (after `\u`), possibly followed by `\uXXXX` completing a surrogate pair. Returns the
/// char and the number of bytes consumed.
fn decode_u(s: &[u8]) -> Res<(char, usize)> {
    let hi = hex4(s).ok_or(Error::Syntax)?;
    if (0xD800..0xDC00).contains(&hi) {
        if s.get(4..6) == Some(b"\\u")
            && let Some(lo) = s.get(6..).and_then(hex4).filter(|lo| (0xDC00..0xE000).contains(lo))
        {
            let c = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
            return Ok((char::from_u32(c).unwrap_or(char::REPLACEMENT_CHARACTER), 10));
        }
        return Ok((char::REPLACEMENT_CHARACTER, 4));
    }
    Ok((char::from_u32(hi).unwrap_or(char::REPLACEMENT_CHARACTER), 4))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(mapping: &[(&str, &str)], extra: &[&str]) -> (JsonFormat, FieldRegistry) {
        let mut reg = FieldRegistry::default();
        for n in extra {
            reg.intern(n);
        }
        let mapping: Vec<(String, String)> = mapping.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
        let mut j = JsonFormat::new(&mapping, &mut reg);
        j.bind(&reg);
        (j, reg)
    }

    fn run(j: &JsonFormat, reg: &FieldRegistry, line: &[u8]) -> (bool, Record) {
        let mut rec = Record::new(reg.len());
        let ok = j.parse(line, &mut rec);
        (ok, rec)
    }

    fn get<'a>(rec: &'a Record, line: &'a [u8], reg: &FieldRegistry, name: &str) -> Option<&'a [u8]> {
        rec.get(line, reg.get(name)?)
    }

    #[test]
    fn arrays_of_strings_are_their_text() {
        let (j, reg) = setup(&[], &["request.headers.User-Agent", "request.headers.Accept", "tags", "mixed", "empty"]);
        let l = br#"{"request":{"headers":{"User-Agent":["sqlmap/1.7"],"Accept":["a/b", "c\/dA"]}},"tags":["x",  "y"],"mixed":["x",1,{"a":[2]}],"empty":[],"after":"ok"}"#;
        let (ok, r) = run(&j, &reg, l);
        assert!(ok);
        assert_eq!(get(&r, l, &reg, "request.headers.User-Agent"), Some(&b"sqlmap/1.7"[..]));
        assert_eq!(get(&r, l, &reg, "request.headers.Accept"), Some(&b"a/b, c/dA"[..]));
        assert_eq!(get(&r, l, &reg, "tags"), Some(&b"x, y"[..]));
        assert_eq!(get(&r, l, &reg, "mixed"), Some(&br#"["x",1,{"a":[2]}]"#[..]), "not all strings: the JSON");
        assert_eq!(get(&r, l, &reg, "empty"), Some(&b""[..]));
        // Broken arrays are a parse error, never a panic.
        for bad in [&br#"{"tags":["x" "y"]}"#[..], br#"{"tags":["x",]}"#, br#"{"tags":["x""#, br#"{"tags":[}"#] {
            let _ = run(&j, &reg, bad);
        }
    }

    #[test]
    fn paths_with_indexes_and_lists() {
        assert_eq!(parse_path("a.b[0].c"), Ok(vec![Seg::Key("a"), Seg::Key("b"), Seg::Index(0), Seg::Key("c")]));
        assert_eq!(parse_path("x[1][2]"), Ok(vec![Seg::Key("x"), Seg::Index(1), Seg::Index(2)]));
        assert_eq!(parse_path("h.X-F[*]"), Ok(vec![Seg::Key("h"), Seg::Key("X-F"), Seg::Each]));
        for bad in
            ["a[*].b", "a[*][0]", "a[x]", "a[-2]", "a[", "a[]", "a..b", "[0]", "a.[0]", "a[0]b", "a[99999999999]"]
        {
            assert!(parse_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn elements_by_index_and_as_lists() {
        assert_eq!(parse_path("a[-1].b"), Ok(vec![Seg::Key("a"), Seg::Last, Seg::Key("b")]));
        let names = [
            "h.ua[-1]", "c[-1].s", "s[-1]", "e[-1]", "h.ua[0]", "h.ua[1]", "h.ua[5]", "h.xff[*]", "h.xff", "c[1].s",
            "c[0]", "n[*]", "m[1][0]", "s[0]", "s[*]", "e[*]",
        ];
        let (j, reg) = setup(&[], &names);
        let l = br#"{"h":{"ua":["sqlmap","curl\/8"],"xff":["203.0.113.9","10.0.0.1"]},"c":[{"s":"a"},{"s":"CN=x","t":[1]}],"n":[1,"two",null,{"k":[3]},[4]],"m":[[0],["deep"]],"s":"one","e":[]}"#;
        let (ok, r) = run(&j, &reg, l);
        assert!(ok);
        let list = |name: &str| -> Vec<String> {
            r.list(reg.get(name).unwrap())
                .unwrap()
                .iter()
                .map(|s| String::from_utf8_lossy(r.bytes(l, s).unwrap()).into_owned())
                .collect()
        };
        assert_eq!(get(&r, l, &reg, "h.ua[0]"), Some(&b"sqlmap"[..]));
        assert_eq!(get(&r, l, &reg, "h.ua[1]"), Some(&b"curl/8"[..]));
        assert_eq!(get(&r, l, &reg, "h.ua[5]"), None);
        assert_eq!(get(&r, l, &reg, "h.ua[-1]"), Some(&b"curl/8"[..]));
        assert_eq!(get(&r, l, &reg, "c[-1].s"), Some(&b"CN=x"[..]));
        assert_eq!(get(&r, l, &reg, "s[-1]"), Some(&b"one"[..]));
        assert_eq!(get(&r, l, &reg, "e[-1]"), None);
        assert_eq!(get(&r, l, &reg, "h.xff[*]"), Some(&b"203.0.113.9, 10.0.0.1"[..]));
        assert_eq!(get(&r, l, &reg, "h.xff"), Some(&b"203.0.113.9, 10.0.0.1"[..]));
        assert_eq!(list("h.xff[*]"), ["203.0.113.9", "10.0.0.1"]);
        assert_eq!(get(&r, l, &reg, "c[1].s"), Some(&b"CN=x"[..]));
        assert_eq!(get(&r, l, &reg, "c[0]"), Some(&br#"{"s":"a"}"#[..]));
        assert_eq!(list("n[*]"), ["1", "two", "null", r#"{"k":[3]}"#, "[4]"]);
        assert_eq!(get(&r, l, &reg, "n[*]"), Some(&br#"1, two, null, {"k":[3]}, [4]"#[..]));
        assert_eq!(get(&r, l, &reg, "m[1][0]"), Some(&b"deep"[..]));
        // Not an array: the one value is element 0 and the whole list.
        assert_eq!(get(&r, l, &reg, "s[0]"), Some(&b"one"[..]));
        assert_eq!(get(&r, l, &reg, "s[*]"), Some(&b"one"[..]));
        assert!(r.list(reg.get("s[*]").unwrap()).is_none());
        assert_eq!(list("e[*]"), Vec::<String>::new());
        // A key given twice: the last value wins, list or not.
        let l = br#"{"e":["a","b"],"e":"c"}"#;
        let (_, r) = run(&j, &reg, l);
        assert_eq!(get(&r, l, &reg, "e[*]"), Some(&b"c"[..]));
        assert!(r.list(reg.get("e[*]").unwrap()).is_none());
        // A literal dotted key holding the array.
        let l = br#"{"h.xff":["a","b"]}"#;
        let (_, r) = run(&j, &reg, l);
        assert_eq!(get(&r, l, &reg, "h.xff[*]"), Some(&b"a, b"[..]));
    }

    /// A list inside an indexed element and the list around it keep their own elements.
    #[test]
    fn nested_lists_keep_their_own_elements() {
        let (j, reg) = setup(&[], &["a[*]", "a[1][*]", "a[1][0]"]);
        let l = br#"{"a":["x",["y","z"],"w"]}"#;
        let (ok, r) = run(&j, &reg, l);
        assert!(ok);
        let list = |name: &str| -> Vec<Vec<u8>> {
            r.list(reg.get(name).unwrap()).unwrap().iter().map(|s| r.bytes(l, s).unwrap().to_vec()).collect()
        };
        assert_eq!(list("a[*]"), [&b"x"[..], br#"["y","z"]"#, b"w"]);
        assert_eq!(list("a[1][*]"), [&b"y"[..], b"z"]);
        assert_eq!(get(&r, l, &reg, "a[1][0]"), Some(&b"y"[..]));
    }

    /// Attacker-sized arrays: many elements, deep nesting inside them, bytes that are not
    /// UTF-8, broken and truncated arrays: never a panic, elements where the JSON has them.
    #[test]
    fn hostile_arrays() {
        let (j, reg) = setup(&[], &["a[*]", "a[3][0][0]", "a[0]", "b[*]"]);
        let mut big = b"{\"a\":[".to_vec();
        for i in 0..200_000 {
            big.extend_from_slice(if i % 2 == 0 { b"\"x\"," } else { b"1," });
        }
        big.extend_from_slice(b"\"\xff\xfe\"]}");
        let (ok, r) = run(&j, &reg, &big);
        assert!(ok);
        let id = reg.get("a[*]").unwrap();
        assert_eq!(r.list(id).unwrap().len(), 200_001);
        assert_eq!(r.bytes(&big, r.list(id).unwrap().last().unwrap()), Some(&b"\xff\xfe"[..]));
        let mut deep = b"{\"a\":[1,2,3,".to_vec();
        deep.extend(std::iter::repeat_n(b'[', 100_000));
        deep.extend(std::iter::repeat_n(b']', 100_000));
        deep.extend_from_slice(b"],\"b\":[\"ok\"]}");
        let (ok, r) = run(&j, &reg, &deep);
        assert!(ok);
        // Indexes descend as deep as the path says, and the rest is skipped flat.
        assert_eq!(get(&r, &deep, &reg, "a[3][0][0]").map(<[u8]>::len), Some(2 * (100_000 - 2)));
        assert_eq!(get(&r, &deep, &reg, "b[*]"), Some(&b"ok"[..]));
        for bad in [
            &br#"{"a":["x" "y"]}"#[..],
            br#"{"a":["x",]}"#,
            br#"{"a":[1,"#,
            br#"{"a":[}"#,
            br#"{"a":[[[[["#,
            br#"{"a":["\q"]}"#,
            b"{\"a\":[\"\xc3\x28\", 1e999, -, ]}",
        ] {
            let _ = run(&j, &reg, bad);
        }
        // Cut inside an array: the fields found before the cut stay, no list half-made.
        let l = br#"{"b":["ok"],"a":["x","y"#;
        let (ok, r) = run(&j, &reg, l);
        assert!(ok);
        assert_eq!(get(&r, l, &reg, "b[*]"), Some(&b"ok"[..]));
        assert!(r.list(reg.get("a[*]").unwrap()).is_none());
    }

    #[test]
    fn flat_and_mapped() {
        let (j, reg) = setup(&[("client_ip", "remote_addr")], &[]);
        let l = br#"{"remote_addr":"203.0.113.4","status":404,"path":"/x","client_ip":"ignored","ok":true}"#;
        let (ok, r) = run(&j, &reg, l);
        assert!(ok);
        assert_eq!(get(&r, l, &reg, "client_ip"), Some(&b"203.0.113.4"[..]));
        assert_eq!(get(&r, l, &reg, "status"), Some(&b"404"[..]));
        assert_eq!(get(&r, l, &reg, "path"), Some(&b"/x"[..]));
        assert!(r.is_raw(f::CLIENT_IP));
    }

    #[test]
    fn nested_paths_and_literal_dotted_keys() {
        let (j, reg) = setup(&[("user", "auth.user.name")], &["http.request.path", "http"]);
        let l = br#" { "http" : { "request" : { "path" : "/admin", "n": [1, {"a": "}"}] } , "x": 1 }, "auth": {"user": {"name": "bob"}} } "#;
        let (ok, r) = run(&j, &reg, l);
        assert!(ok);
        assert_eq!(get(&r, l, &reg, "http.request.path"), Some(&b"/admin"[..]));
        assert_eq!(get(&r, l, &reg, "user"), Some(&b"bob"[..]));
        let http = get(&r, l, &reg, "http").unwrap();
        assert!(http.starts_with(b"{ \"request\"") && http.ends_with(b"\"x\": 1 }"));
        let l = br#"{"http.request.path":"/flat"}"#;
        let (_, r) = run(&j, &reg, l);
        assert_eq!(get(&r, l, &reg, "http.request.path"), Some(&b"/flat"[..]));
    }

    #[test]
    fn escapes_are_decoded() {
        let (j, reg) = setup(&[], &["msg"]);
        let l = br#"{"user_agent":"a\"b\\c\/d\n\u00e9\ud83d\ude00\ud800x","msg":"\u0041"}"#;
        let (ok, r) = run(&j, &reg, l);
        assert!(ok);
        assert_eq!(get(&r, l, &reg, "user_agent"), Some("a\"b\\c/d\n\u{e9}\u{1F600}\u{FFFD}x".as_bytes()));
        assert!(!r.is_raw(f::USER_AGENT));
        assert_eq!(get(&r, l, &reg, "msg"), Some(&b"A"[..]));
        // An escaped key still matches.
        let l = br#"{"p\u0061th":"/y"}"#;
        let (_, r) = run(&j, &reg, l);
        assert_eq!(get(&r, l, &reg, "path"), Some(&b"/y"[..]));
    }

    #[test]
    fn values_of_every_kind() {
        let (j, reg) = setup(&[], &["a", "b", "c", "d", "e"]);
        let l = br#"{"a":-1.5e3,"b":null,"c":[1,"]",{"x":[]}],"d":{},"e":false}"#;
        let (ok, r) = run(&j, &reg, l);
        assert!(ok);
        assert_eq!(get(&r, l, &reg, "a"), Some(&b"-1.5e3"[..]));
        assert_eq!(get(&r, l, &reg, "b"), Some(&b"null"[..]));
        assert_eq!(get(&r, l, &reg, "c"), Some(&br#"[1,"]",{"x":[]}]"#[..]));
        assert_eq!(get(&r, l, &reg, "d"), Some(&b"{}"[..]));
        assert_eq!(get(&r, l, &reg, "e"), Some(&b"false"[..]));
    }

    #[test]
    fn request_and_uri_are_split() {
        let (j, reg) = setup(&[("request", "req")], &[]);
        let l = br#"{"req":"GET /a?b=\"1\" HTTP/1.1"}"#;
        let (_, r) = run(&j, &reg, l);
        assert_eq!(r.get(l, f::METHOD), Some(&b"GET"[..]));
        assert_eq!(r.get(l, f::PATH), Some(&b"/a"[..]));
        assert_eq!(r.get(l, f::QUERY), Some(&b"b=\"1\""[..]));
        assert_eq!(r.get(l, f::PROTOCOL), Some(&b"HTTP/1.1"[..]));
    }

    #[test]
    fn rejects_non_objects_and_bad_syntax() {
        let (j, reg) = setup(&[], &[]);
        for l in [
            &b""[..],
            b"   ",
            b"[1,2]",
            b"\"str\"",
            b"plain text {\"path\":\"/\"}",
            br#"{"path":"/a" "x":1}"#,
            br#"{"path":"/a",}"#,
            br#"{"path":"\q"}"#,
            br#"{"path":tru}"#,
            br#"{"path":"/a"} trailing"#,
            br#"{path:"/a"}"#,
        ] {
            let (ok, r) = run(&j, &reg, l);
            assert!(!ok, "{}", String::from_utf8_lossy(l));
            assert_eq!(r.iter(l).count(), 0, "{}", String::from_utf8_lossy(l));
        }
    }

    #[test]
    fn truncated_keeps_found_fields() {
        let (j, reg) = setup(&[], &[]);
        let l = br#"{"client_ip":"1.2.3.4","path":"/aaaaaaaa"#;
        let (ok, r) = run(&j, &reg, l);
        assert!(ok);
        assert_eq!(r.get(l, f::CLIENT_IP), Some(&b"1.2.3.4"[..]));
        assert_eq!(r.get(l, f::PATH), None);
        assert!(!run(&j, &reg, br#"{"other":"#).0);
        assert!(!run(&j, &reg, b"{").0);
    }

    #[test]
    fn invalid_utf8_deep_nesting_and_huge() {
        let (j, reg) = setup(&[], &[]);
        let l = b"{\"path\":\"/\xff\xfe\",\"x\":\"\xc3\x28\"}";
        let (ok, r) = run(&j, &reg, l);
        assert!(ok);
        assert_eq!(r.get(l, f::PATH), Some(&b"/\xff\xfe"[..]));
        let mut deep = b"{\"x\":".to_vec();
        deep.extend(std::iter::repeat_n(b'[', 200_000));
        deep.extend(std::iter::repeat_n(b']', 200_000));
        deep.extend_from_slice(b",\"path\":\"/deep\"}");
        let (ok, r) = run(&j, &reg, &deep);
        assert!(ok);
        assert_eq!(r.get(&deep, f::PATH), Some(&b"/deep"[..]));
        let mut big = b"{\"user_agent\":\"".to_vec();
        big.extend(std::iter::repeat_n(b'A', 100_000));
        big.extend_from_slice(b"\\u0022\",\"status\":200}");
        let (ok, r) = run(&j, &reg, &big);
        assert!(ok);
        assert_eq!(r.get(&big, f::USER_AGENT).map(<[u8]>::len), Some(100_001));
        assert_eq!(r.get(&big, f::STATUS), Some(&b"200"[..]));
    }

    #[test]
    fn default_format_extracts_nothing_but_accepts_objects() {
        let j = JsonFormat::default();
        let mut rec = Record::new(30);
        assert!(j.parse(br#"{"path":"/"}"#, &mut rec));
        assert_eq!(rec.iter(br#"{"path":"/"}"#).count(), 0);
    }
}
