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
//! numbers, `true`/`false`/`null`, objects and arrays are their raw JSON text.
//!
//! A line that is not an object, or has a syntax error, is rejected (no fields). A line that
//! is cut short (reader limit on a huge line) keeps the fields found before the cut, when
//! there are any, so a truncated attack line still yields its `client_ip`.

use std::ops::Range;

use super::access::derive_request_fields;
use super::scan::MAX_LINE;
use super::std_fields as f;
use super::{FieldId, FieldRegistry, Record};

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
    /// Fields whose value is the value at this path.
    fields: Vec<FieldId>,
}

impl Node {
    fn child(&self, key: &[u8]) -> Option<&Node> {
        self.children.iter().find(|(k, _)| **k == *key).map(|(_, n)| n)
    }

    fn insert<'a>(&mut self, mut path: impl Iterator<Item = &'a str>, id: FieldId) {
        match path.next() {
            None => {
                if !self.fields.contains(&id) {
                    self.fields.push(id);
                }
            }
            Some(seg) => {
                let pos = match self.children.iter().position(|(k, _)| **k == *seg.as_bytes()) {
                    Some(p) => p,
                    None => {
                        self.children.push((seg.as_bytes().into(), Node::default()));
                        self.children.len() - 1
                    }
                };
                if let Some((_, n)) = self.children.get_mut(pos) {
                    n.insert(path, id);
                }
            }
        }
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
            root.insert(path.split('.'), id);
            if path.contains('.') {
                root.insert(std::iter::once(path), id);
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
    /// deeper keys are wanted.
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
            }
            b'[' if !node.fields.is_empty() => {
                if !self.string_array(node, rec)? {
                    self.i = start;
                    self.skip_value()?;
                    self.store_raw(node, start..self.i, rec);
                }
            }
            _ => {
                self.skip_value()?;
                self.store_raw(node, start..self.i, rec);
            }
        }
        Ok(())
    }

    /// An array of strings (`"User-Agent": ["Mozilla/5.0"]`, as Caddy logs headers) is the
    /// strings joined with `, ` — how HTTP reads a header sent twice — so rules see the text,
    /// not JSON. Returns false, having stored nothing, for any other array (kept as raw JSON).
    fn string_array(&mut self, node: &Node, rec: &mut Record) -> Res<bool> {
        self.expect(b'[')?;
        let start = rec.scratch().len();
        let mut n = 0;
        loop {
            self.ws();
            match self.need()? {
                b']' if n == 0 => {
                    self.i += 1;
                    break;
                }
                b'"' => {
                    let s = self.string()?;
                    if n > 0 {
                        rec.scratch_mut().extend_from_slice(b", ");
                    }
                    let bytes = self.b.get(s.content.clone()).unwrap_or_default();
                    if s.escaped {
                        unescape_json(bytes, rec.scratch_mut())?;
                    } else {
                        rec.scratch_mut().extend_from_slice(bytes);
                    }
                    n += 1;
                }
                _ => {
                    rec.scratch_mut().truncate(start);
                    return Ok(false);
                }
            }
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
        let end = rec.scratch().len();
        for &id in &node.fields {
            rec.set_owned_range(id, start..end);
        }
        self.found += node.fields.len();
        Ok(true)
    }

    fn store_raw(&mut self, node: &Node, r: Range<usize>, rec: &mut Record) {
        for &id in &node.fields {
            rec.set_raw(id, r.clone());
            self.found += 1;
        }
    }

    fn store_string(&mut self, node: &Node, s: &Str, rec: &mut Record) -> Res<()> {
        let Some((&first, rest)) = node.fields.split_first() else {
            return Ok(());
        };
        if !s.escaped {
            self.store_raw(node, s.content.clone(), rec);
            return Ok(());
        }
        let start = rec.scratch().len();
        unescape_json(self.b.get(s.content.clone()).unwrap_or_default(), rec.scratch_mut())?;
        rec.set_owned_from(first, start);
        let end = rec.scratch().len();
        for &id in rest {
            rec.set_owned_range(id, start..end);
        }
        self.found += node.fields.len();
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
