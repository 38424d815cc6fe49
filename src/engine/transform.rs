//! Normalising transforms applied to a field before an operator looks at it.
//!
//! They run on the candidate path only (a rule whose literal or field needs them), write into
//! a caller-owned buffer and never allocate once that buffer has grown. Each transform also
//! says cheaply whether it *could* change a value ([`may_change`]); the prefilter uses that to
//! skip work on the large majority of lines that contain nothing to decode.

use crate::rule::Transform;

/// How many URL-decoding rounds at most. Triple encoding is the deepest seen in practice;
/// one more round costs nothing when the text is already stable.
const MAX_URL_ROUNDS: usize = 4;

/// Applies `chain` to `input`, leaving the result in `out`. `tmp` is scratch space.
pub fn apply(chain: &[Transform], input: &[u8], out: &mut Vec<u8>, tmp: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(input);
    for t in chain {
        match t {
            Transform::Lowercase => out.make_ascii_lowercase(),
            Transform::UrlDecode => {
                for _ in 0..MAX_URL_ROUNDS {
                    if memchr::memchr2(b'%', b'+', out).is_none() {
                        break;
                    }
                    tmp.clear();
                    url_decode(out, tmp);
                    if tmp == out {
                        break;
                    }
                    std::mem::swap(out, tmp);
                }
                if out.iter().any(|&b| b >= 0xc0) {
                    tmp.clear();
                    fold_overlong(out, tmp);
                    std::mem::swap(out, tmp);
                }
            }
            Transform::HtmlDecode => {
                if html_may_change(out) {
                    tmp.clear();
                    html_decode(out, tmp);
                    std::mem::swap(out, tmp);
                }
            }
            Transform::NormalizePath => {
                if path_may_change(out) {
                    tmp.clear();
                    normalize_path(out, tmp);
                    std::mem::swap(out, tmp);
                }
            }
            Transform::CompressWhitespace => {
                if ws_may_change(out) {
                    tmp.clear();
                    compress_whitespace(out, tmp);
                    std::mem::swap(out, tmp);
                }
            }
        }
    }
}

/// True when `t` could produce something other than `input` up to ASCII case. (Lower-casing
/// never matters to the prefilter, which is case-insensitive.)
pub fn may_change(t: Transform, input: &[u8]) -> bool {
    match t {
        Transform::Lowercase => false,
        Transform::UrlDecode => url_may_change(input),
        Transform::HtmlDecode => html_may_change(input),
        Transform::NormalizePath => path_may_change(input),
        Transform::CompressWhitespace => ws_may_change(input),
    }
}

/// Bit flags naming the transforms that may change a value (see [`change_mask`]).
pub mod change {
    /// URL decoding of a `%` escape, or overlong UTF-8 folding (non-ASCII bytes).
    pub const URL: u8 = 1;
    /// URL decoding of a `+` (into a space).
    pub const PLUS: u8 = 2;
    pub const HTML: u8 = 4;
    pub const PATH: u8 = 8;
    pub const WS: u8 = 16;
}

/// The [`change`] bits a chain of transforms cares about. `plus_matters`: whether decoding a
/// `+` into a space matters (it does only when some literal looked for contains a space).
pub fn chain_mask(chain: &[Transform], plus_matters: bool) -> u8 {
    chain.iter().fold(0, |m, t| {
        m | match t {
            Transform::Lowercase => 0,
            Transform::UrlDecode => change::URL | if plus_matters { change::PLUS } else { 0 },
            Transform::HtmlDecode => change::HTML,
            Transform::NormalizePath => change::PATH,
            Transform::CompressWhitespace => change::WS,
        }
    })
}

/// Of the [`change`] bits in `needed`, those whose transform may change `input`. One value is
/// tested once per line for all the views over it, instead of once per view and transform.
pub fn change_mask(input: &[u8], needed: u8) -> u8 {
    // Short values (a path, a query) are classified in one pass over a byte table; for long
    // ones (a whole line) a few SIMD `memchr` scans are cheaper than touching every byte.
    if input.len() <= SHORT {
        return change_mask_short(input) & needed;
    }
    change_mask_long(input, needed)
}

const SHORT: usize = 96;

/// Byte classes for [`change_mask_short`]: the low bits are [`change`] bits a byte sets on its
/// own; `SLASH`/`AFTER_SLASH` and `SPACE`/`AFTER_SPACE` are pairs (a byte with the first
/// followed by one with the second), laid out so `(prev << 1) & cur` finds them.
const SLASH: u16 = 1 << 8;
const AFTER_SLASH: u16 = 1 << 9;
const SPACE: u16 = 1 << 10;
const AFTER_SPACE: u16 = 1 << 11;

static CLASSES: [u16; 256] = {
    let mut t = [0u16; 256];
    let mut b = 0x80;
    while b < 256 {
        t[b] = change::URL as u16;
        b += 1;
    }
    t[b'%' as usize] = change::URL as u16;
    t[b'+' as usize] = change::PLUS as u16;
    t[b'&' as usize] = change::HTML as u16;
    t[b'\\' as usize] = change::PATH as u16;
    t[b'/' as usize] = SLASH | AFTER_SLASH;
    t[b'.' as usize] = AFTER_SLASH;
    t[b' ' as usize] = SPACE | AFTER_SPACE;
    let ws = [b'\t', b'\r', b'\n', 0x0b, 0x0c];
    let mut i = 0;
    while i < ws.len() {
        t[ws[i] as usize] = change::WS as u16 | AFTER_SPACE;
        i += 1;
    }
    t
};

fn change_mask_short(input: &[u8]) -> u8 {
    let mut all = 0u16;
    let mut pairs = 0u16;
    let mut prev = 0u16;
    for &b in input {
        let c = CLASSES[b as usize];
        all |= c;
        pairs |= (prev << 1) & c;
        prev = c;
    }
    let mut m = (all & 0xff) as u8;
    // A `&` alone (query strings are full of them) changes nothing: only an entity does.
    if m & change::HTML != 0 && !html_may_change(input) {
        m &= !change::HTML;
    }
    if pairs & AFTER_SLASH != 0 || input.first() == Some(&b'.') {
        m |= change::PATH;
    }
    if pairs & AFTER_SPACE != 0 {
        m |= change::WS;
    }
    m
}

fn change_mask_long(input: &[u8], needed: u8) -> u8 {
    let mut m = 0;
    if needed & change::URL != 0 && (memchr::memchr(b'%', input).is_some() || !input.is_ascii()) {
        m |= change::URL;
    }
    if needed & change::PLUS != 0 && memchr::memchr(b'+', input).is_some() {
        m |= change::PLUS;
    }
    if needed & change::HTML != 0 && html_may_change(input) {
        m |= change::HTML;
    }
    if needed & change::PATH != 0 && path_may_change(input) {
        m |= change::PATH;
    }
    if needed & change::WS != 0 && ws_may_change(input) {
        m |= change::WS;
    }
    m
}

/// Named entities [`html_decode`] knows, without their `&`.
const HTML_NAMED: &[(&[u8], u8)] = &[
    (b"lt;", b'<'),
    (b"gt;", b'>'),
    (b"amp;", b'&'),
    (b"quot;", b'"'),
    (b"apos;", b'\''),
    (b"sol;", b'/'),
    (b"colon;", b':'),
    (b"lpar;", b'('),
    (b"rpar;", b')'),
    (b"tab;", b'\t'),
    (b"newline;", b'\n'),
];

/// Whether [`html_decode`] changes `s`: exactly when some `&` starts an entity it decodes.
/// Query strings are full of `&` separators that are none, and deciding that here is far
/// cheaper than decoding the value and scanning it again.
pub fn html_may_change(s: &[u8]) -> bool {
    memchr::memchr_iter(b'&', s).any(|i| {
        let rest = &s[i + 1..];
        match rest.first() {
            Some(b'#') => match rest.get(1) {
                Some(b'x' | b'X') => rest.get(2).and_then(|&b| hex(b)).is_some(),
                Some(b) => b.is_ascii_digit(),
                None => false,
            },
            _ => HTML_NAMED
                .iter()
                .any(|(name, _)| rest.len() >= name.len() && rest[..name.len()].eq_ignore_ascii_case(name)),
        }
    })
}

fn url_may_change(s: &[u8]) -> bool {
    memchr::memchr2(b'%', b'+', s).is_some() || !s.is_ascii()
}

// These run for every view on every line: a few memchr calls, no per-call searcher setup.
fn path_may_change(s: &[u8]) -> bool {
    memchr::memchr(b'\\', s).is_some()
        || s.starts_with(b".")
        || memchr::memchr_iter(b'/', s).any(|i| matches!(s.get(i + 1), Some(b'/' | b'.')))
}

fn ws_may_change(s: &[u8]) -> bool {
    memchr::memchr3(b'\t', b'\r', b'\n', s).is_some()
        || memchr::memchr2(0x0b, 0x0c, s).is_some()
        || memchr::memchr_iter(b' ', s).any(|i| s.get(i + 1).is_some_and(|&b| is_ws(b)))
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n' | 0x0b | 0x0c)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// One round of `%XX` / `%uXXXX` / `+` decoding. Invalid escapes are kept verbatim.
///
/// `+` means a space only in query strings: after a `?`, or anywhere in a value that is not a
/// path (does not start with `/`), such as a `query` field. In a path it is a literal `+`
/// (`/+CSCOE+/`).
pub fn url_decode(s: &[u8], out: &mut Vec<u8>) {
    out.reserve(s.len());
    let mut i = 0;
    let mut in_query = s.first() != Some(&b'/');
    while i < s.len() {
        // Runs of bytes that decode to themselves are copied whole.
        let next = memchr::memchr3(b'%', b'+', b'?', &s[i..]).map_or(s.len(), |k| i + k);
        out.extend_from_slice(&s[i..next]);
        i = next;
        if i == s.len() {
            break;
        }
        match s[i] {
            b'?' => {
                in_query = true;
                out.push(b'?');
                i += 1;
            }
            b'%' => {
                if let (Some(h), Some(l)) = (s.get(i + 1).and_then(|&b| hex(b)), s.get(i + 2).and_then(|&b| hex(b))) {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                // IIS-style %uXXXX, still used to dodge filters.
                if matches!(s.get(i + 1), Some(b'u' | b'U')) {
                    let digits: Option<Vec<u8>> = (2..6).map(|k| s.get(i + k).and_then(|&b| hex(b))).collect();
                    if let Some(d) = digits {
                        let cp = (d[0] as u32) << 12 | (d[1] as u32) << 8 | (d[2] as u32) << 4 | d[3] as u32;
                        push_char(cp, out);
                        i += 6;
                        continue;
                    }
                }
                out.push(b'%');
                i += 1;
            }
            b'+' if in_query => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
}

/// Folds the encodings that decode to ASCII in lenient decoders but are not ASCII bytes:
/// overlong UTF-8 (`C0 AE` is `.`, `E0 80 AF` is `/`) and the fullwidth `．／＼`. Attackers use
/// them (`%c0%ae%c0%ae/`) to smuggle traversal past filters that look for `../`.
pub fn fold_overlong(s: &[u8], out: &mut Vec<u8>) {
    let cont = |b: Option<&u8>| b.is_some_and(|b| (0x80..0xc0).contains(b));
    let mut i = 0;
    while i < s.len() {
        let b = s[i];
        if (b == 0xc0 || b == 0xc1) && cont(s.get(i + 1)) {
            out.push(((b & 0x01) << 6) | (s[i + 1] & 0x3f));
            i += 2;
        } else if b == 0xe0 && s.get(i + 1).is_some_and(|c| (0x80..0xa0).contains(c)) && cont(s.get(i + 2)) {
            let cp = (((s[i + 1] & 0x3f) as u32) << 6) | (s[i + 2] & 0x3f) as u32;
            if cp < 0x80 {
                out.push(cp as u8);
            } else {
                out.extend_from_slice(&s[i..i + 3]);
            }
            i += 3;
        } else if b == 0xef && s.get(i + 1) == Some(&0xbc) && matches!(s.get(i + 2), Some(0x8e | 0x8f | 0xbc)) {
            out.push(match s[i + 2] {
                0x8e => b'.',
                0x8f => b'/',
                _ => b'\\',
            });
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
}

fn push_char(cp: u32, out: &mut Vec<u8>) {
    match char::from_u32(cp) {
        Some(c) => {
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        }
        None => out.extend_from_slice("\u{fffd}".as_bytes()),
    }
}

/// Decodes the common named entities and numeric character references.
pub fn html_decode(s: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    'outer: while i < s.len() {
        if s[i] != b'&' {
            out.push(s[i]);
            i += 1;
            continue;
        }
        let rest = &s[i + 1..];
        for (name, ch) in HTML_NAMED {
            if rest.len() >= name.len() && rest[..name.len()].eq_ignore_ascii_case(name) {
                out.push(*ch);
                i += 1 + name.len();
                continue 'outer;
            }
        }
        if rest.first() == Some(&b'#') {
            let (radix, start) = if matches!(rest.get(1), Some(b'x' | b'X')) { (16, 2) } else { (10, 1) };
            let mut j = start;
            let mut cp: u32 = 0;
            while let Some(&b) = rest.get(j) {
                let d = match (radix, b) {
                    (10, b'0'..=b'9') => (b - b'0') as u32,
                    (16, _) => match hex(b) {
                        Some(d) => d as u32,
                        None => break,
                    },
                    _ => break,
                };
                cp = cp.saturating_mul(radix).saturating_add(d);
                j += 1;
            }
            if j > start {
                push_char(cp.min(0x10FFFF), out);
                // The `;` is optional in browsers' parsers, so it is here too.
                i += 1 + j + usize::from(rest.get(j) == Some(&b';'));
                continue;
            }
        }
        out.push(b'&');
        i += 1;
    }
}

/// Resolves `.`/`..` segments, folds `\` into `/` and collapses repeated slashes.
pub fn normalize_path(s: &[u8], out: &mut Vec<u8>) {
    let absolute = matches!(s.first(), Some(b'/' | b'\\'));
    // Segment boundaries inside `out`, to pop on `..`.
    let mut starts: Vec<usize> = Vec::new();
    if absolute {
        out.push(b'/');
    }
    let base = out.len();
    let trailing = matches!(s.last(), Some(b'/' | b'\\'));
    for seg in s.split(|&b| b == b'/' || b == b'\\') {
        match seg {
            b"" | b"." => {}
            b".." => {
                if let Some(st) = starts.pop() {
                    out.truncate(st);
                } else if !absolute {
                    // A relative path cannot climb above its start; keep the `..` visible.
                    if out.len() > base {
                        out.push(b'/');
                    }
                    out.extend_from_slice(b"..");
                }
            }
            seg => {
                let st = out.len();
                if out.len() > base {
                    out.push(b'/');
                }
                out.extend_from_slice(seg);
                starts.push(st);
            }
        }
    }
    if trailing && out.len() > base {
        out.push(b'/');
    }
}

/// Replaces every run of white space by one space.
pub fn compress_whitespace(s: &[u8], out: &mut Vec<u8>) {
    let mut in_ws = false;
    for &b in s {
        if is_ws(b) {
            if !in_ws {
                out.push(b' ');
            }
            in_ws = true;
        } else {
            out.push(b);
            in_ws = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(chain: &[Transform], s: &str) -> String {
        let (mut out, mut tmp) = (Vec::new(), Vec::new());
        apply(chain, s.as_bytes(), &mut out, &mut tmp);
        String::from_utf8_lossy(&out).into_owned()
    }

    #[test]
    fn url_decode_copies_runs_as_the_byte_by_byte_decoder_did() {
        let parts: [&[u8]; 14] =
            [b"%", b"+", b"?", b"/", b"a", b"%2", b"%41", b"%u00", b"%u0041", b"%zz", b"\xff", b"=", b"&", b"%c0%ae"];
        let mut rng = fastrand::Rng::with_seed(3);
        for _ in 0..50_000 {
            let s: Vec<u8> =
                (0..rng.usize(0..12)).flat_map(|_| parts[rng.usize(..parts.len())].iter().copied()).collect();
            let (mut fast, mut slow) = (Vec::new(), Vec::new());
            url_decode(&s, &mut fast);
            url_decode_bytewise(&s, &mut slow);
            assert_eq!(fast, slow, "{:?}", String::from_utf8_lossy(&s));
        }
    }

    fn url_decode_bytewise(s: &[u8], out: &mut Vec<u8>) {
        let mut i = 0;
        let mut in_query = s.first() != Some(&b'/');
        while i < s.len() {
            match s[i] {
                b'?' => {
                    in_query = true;
                    out.push(b'?');
                    i += 1;
                }
                b'%' => {
                    if let (Some(h), Some(l)) = (s.get(i + 1).and_then(|&b| hex(b)), s.get(i + 2).and_then(|&b| hex(b)))
                    {
                        out.push(h << 4 | l);
                        i += 3;
                        continue;
                    }
                    // IIS-style %uXXXX, still used to dodge filters.
                    if matches!(s.get(i + 1), Some(b'u' | b'U')) {
                        let digits: Option<Vec<u8>> = (2..6).map(|k| s.get(i + k).and_then(|&b| hex(b))).collect();
                        if let Some(d) = digits {
                            let cp = (d[0] as u32) << 12 | (d[1] as u32) << 8 | (d[2] as u32) << 4 | d[3] as u32;
                            push_char(cp, out);
                            i += 6;
                            continue;
                        }
                    }
                    out.push(b'%');
                    i += 1;
                }
                b'+' if in_query => {
                    out.push(b' ');
                    i += 1;
                }
                b => {
                    out.push(b);
                    i += 1;
                }
            }
        }
    }

    #[test]
    fn url_decode_defeats_double_encoding() {
        assert_eq!(run(&[Transform::UrlDecode], "%252e%252e%252fetc"), "../etc");
        assert_eq!(run(&[Transform::UrlDecode], "union+select%20a"), "union select a");
        assert_eq!(run(&[Transform::UrlDecode], "100%"), "100%");
        assert_eq!(run(&[Transform::UrlDecode], "%zz%4"), "%zz%4");
        assert_eq!(run(&[Transform::UrlDecode], "%u003cscript"), "<script");
    }

    #[test]
    fn plus_is_a_space_only_in_queries() {
        assert_eq!(run(&[Transform::UrlDecode], "/+CSCOE+/x?a=b+c"), "/+CSCOE+/x?a=b c");
        assert_eq!(run(&[Transform::UrlDecode], "id=1+or+1"), "id=1 or 1");
    }

    #[test]
    fn overlong_and_fullwidth_fold_to_ascii() {
        assert_eq!(run(&[Transform::UrlDecode], "%c0%ae%c0%ae%c0%af"), "../");
        assert_eq!(run(&[Transform::UrlDecode], "%25c0%25ae%25c0%25ae/etc"), "../etc");
        assert_eq!(run(&[Transform::UrlDecode], "%e0%80%ae%uff0e/"), "../");
        assert_eq!(run(&[Transform::UrlDecode], "caf%c3%a9"), "café");
    }

    #[test]
    fn normalize_path_resolves_traversal() {
        assert_eq!(run(&[Transform::NormalizePath], "/a/./b/../../etc//passwd"), "/etc/passwd");
        assert_eq!(run(&[Transform::NormalizePath], "/../../../etc/passwd"), "/etc/passwd");
        assert_eq!(run(&[Transform::NormalizePath], "..\\..\\windows\\win.ini"), "../../windows/win.ini");
        assert_eq!(run(&[Transform::NormalizePath], "/dir/"), "/dir/");
        assert_eq!(run(&[Transform::NormalizePath], "/"), "/");
    }

    #[test]
    fn html_and_whitespace() {
        assert_eq!(run(&[Transform::HtmlDecode], "&lt;script&gt;&#97;&#x6c;ert"), "<script>alert");
        assert_eq!(run(&[Transform::HtmlDecode], "a & b &#"), "a & b &#");
        assert_eq!(run(&[Transform::CompressWhitespace], "union \t\n select"), "union select");
        assert_eq!(run(&[Transform::UrlDecode, Transform::Lowercase], "UNION%20SeLeCt"), "union select");
    }

    /// `html_may_change` is exact: true when decoding changes the value, false otherwise (a
    /// `&` that starts no entity is left alone).
    #[test]
    fn html_may_change_is_exact() {
        let parts: [&[u8]; 12] =
            [b"&", b"#", b"x", b"X", b"3", b"f", b";", b"lt;", b"AMP;", b"amp", b"q=1", b"newline;"];
        let mut rng = fastrand::Rng::with_seed(5);
        for _ in 0..50_000 {
            let s: Vec<u8> =
                (0..rng.usize(0..8)).flat_map(|_| parts[rng.usize(..parts.len())].iter().copied()).collect();
            let mut out = Vec::new();
            html_decode(&s, &mut out);
            assert_eq!(out != s, html_may_change(&s), "{:?}", String::from_utf8_lossy(&s));
        }
    }

    #[test]
    fn may_change_agrees_with_apply() {
        for s in ["plain/path", "a%41", "a+b", "/a/../b", "x&amp;", "a  b", "ok"] {
            for t in
                [Transform::UrlDecode, Transform::HtmlDecode, Transform::NormalizePath, Transform::CompressWhitespace]
            {
                let changed = run(&[t], s) != s;
                assert!(!changed || may_change(t, s.as_bytes()), "{t:?} changed {s:?} but may_change said no");
            }
        }
    }

    /// The one-pass byte-table classification of short values and the `memchr` one of long
    /// values agree, and both agree with `may_change` transform by transform.
    #[test]
    fn change_masks_agree() {
        let alphabet: &[u8] = b"ab/.%+& \t\n\\\xc3";
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 12) as usize;
            let v: Vec<u8> =
                (0..len).map(|i| alphabet[((seed >> (i * 4 + 8)) % alphabet.len() as u64) as usize]).collect();
            let all = change::URL | change::PLUS | change::HTML | change::PATH | change::WS;
            let short = change_mask_short(&v);
            assert_eq!(short, change_mask_long(&v, all), "{:?}", String::from_utf8_lossy(&v));
            for (t, bits) in [
                (Transform::HtmlDecode, change::HTML),
                (Transform::NormalizePath, change::PATH),
                (Transform::CompressWhitespace, change::WS),
                (Transform::UrlDecode, change::URL | change::PLUS),
            ] {
                assert_eq!(short & bits != 0, may_change(t, &v), "{t:?} on {:?}", String::from_utf8_lossy(&v));
            }
        }
    }
}
