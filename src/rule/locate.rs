//! Map a path inside a YAML document (`rules[3].match.any[1].regex`) to its line and column.
//!
//! serde_yaml reports positions for syntax and type errors, but the checks that run after
//! deserialization (a regex that does not compile, an unknown list) only know *which value*
//! is wrong. This module re-reads the file with a marked event parser to find where that
//! value is written. It only runs when there is an error to report, so it costs nothing on
//! the normal path.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// A position in a file, 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

/// Returns where the value at `path` starts in `text`, or, when the path is not found, where
/// its longest existing parent starts.
pub fn locate(text: &str, path: &str) -> Option<Pos> {
    let index = index(text);
    let mut p = path.to_string();
    loop {
        if let Some(pos) = index.get(&p) {
            return Some(*pos);
        }
        // Strip the last component: `.key` or `[n]`.
        let cut = p.rfind(['.', '['])?;
        p.truncate(cut);
    }
}

/// Every node of the first document, by path.
pub fn index(text: &str) -> HashMap<String, Pos> {
    build(text).out
}

/// Where the mapping *key* of the entry at `path` is written (`actions.xdr.rules.web.x` →
/// the `web.x:` key), for findings about a key rather than its value.
pub fn key(text: &str, path: &str) -> Option<Pos> {
    build(text).keys.get(path).copied()
}

/// Where every mapping key is written, by the path of its entry (see [`key`]).
pub fn keys(text: &str) -> HashMap<String, Pos> {
    build(text).keys
}

fn build(text: &str) -> Builder {
    let mut b = Builder::default();
    let mut parser = Parser::new_from_str(text);
    // A syntax error leaves a partial index, which is still useful for what came before it.
    let _ = parser.load(&mut b, false);
    b
}

enum Frame {
    Map { path: String, key: Option<String> },
    Seq { path: String, next: usize },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    out: HashMap<String, Pos>,
    keys: HashMap<String, Pos>,
}

impl Builder {
    /// The path of the node that is about to start, or `None` when it is a mapping key.
    fn next_path(&mut self) -> Option<String> {
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Map { key: None, .. }) => None,
            Some(Frame::Map { path, key: Some(k) }) => {
                let k = std::mem::take(k);
                let p = if path.is_empty() { k } else { format!("{path}.{k}") };
                if let Some(Frame::Map { key, .. }) = self.stack.last_mut() {
                    *key = None;
                }
                Some(p)
            }
            Some(Frame::Seq { path, next }) => {
                let p = format!("{path}[{next}]");
                *next += 1;
                Some(p)
            }
        }
    }

    fn mark(&mut self, path: &str, m: Marker) {
        self.out.entry(path.to_string()).or_insert(Pos { line: m.line(), col: m.col() + 1 });
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, m: Marker) {
        match ev {
            Event::Scalar(v, ..) => match self.next_path() {
                Some(p) => self.mark(&p, m),
                None => {
                    if let Some(Frame::Map { key, path }) = self.stack.last_mut() {
                        let full = if path.is_empty() { v.clone() } else { format!("{path}.{v}") };
                        self.keys.entry(full).or_insert(Pos { line: m.line(), col: m.col() + 1 });
                        *key = Some(v);
                    }
                }
            },
            Event::MappingStart(..) => {
                let p = self.next_path().unwrap_or_default();
                self.mark(&p, m);
                self.stack.push(Frame::Map { path: p, key: None });
            }
            Event::SequenceStart(..) => {
                let p = self.next_path().unwrap_or_default();
                self.mark(&p, m);
                self.stack.push(Frame::Seq { path: p, next: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            Event::Alias(_) => {
                let _ = self.next_path();
            }
            _ => {}
        }
    }
}

/// How deeply collections may nest in a rule or config file. Real files stay under ten levels;
/// the limit only exists so that hostile input (`[[[[...` thousands deep) is refused before
/// the parsers, whose cost and stack use grow with depth, ever see it.
/// [`check_depth`] estimates from above (up to twice the real depth), hence the headroom.
pub const MAX_DEPTH: usize = 128;

/// Refuses YAML nested deeper than `max` collections, in one linear pass over the text,
/// returning where the first too-deep collection starts.
///
/// This is a conservative approximation of YAML's structure, not a parser: flow collections
/// (`[`, `{` in flow position) count one level each, quoted scalars, comments and block
/// scalars (`|`, `>`) are skipped, and block nesting counts distinct indentation levels plus
/// the entries that open on each line (`- - - x`, `- a: - b`). That can count a level twice
/// (a `- key:` line is one indentation level and two entries), never zero times, so the
/// estimate is an upper bound of at most twice the real depth.
pub fn check_depth(text: &str, max: usize) -> Result<(), Pos> {
    let mut indents: Vec<usize> = Vec::new();
    let mut flow = 0usize;
    // While inside a block scalar: the indentation of the line that introduced it.
    let mut block_scalar: Option<usize> = None;
    let mut quote: Option<u8> = None;
    for (ln, line) in text.lines().enumerate() {
        let b = line.as_bytes();
        let indent = b.iter().take_while(|&&c| c == b' ').count();
        let blank = b[indent..].iter().all(|c| c.is_ascii_whitespace());
        if let Some(parent) = block_scalar {
            if blank || indent > parent {
                continue;
            }
            block_scalar = None;
        }
        let mut i = indent;
        let mut depth_here = 0usize;
        if quote.is_none() && flow == 0 {
            if blank || b[indent] == b'#' || line.starts_with("---") || line.starts_with("...") {
                continue;
            }
            while indents.last().is_some_and(|&top| top >= indent) {
                indents.pop();
            }
            indents.push(indent);
        }
        // Only the start of a value can open a flow collection or a block scalar in block
        // context; elsewhere `[` and `|` are ordinary characters of a plain scalar.
        let mut value_start = flow == 0 && quote.is_none();
        while i < b.len() {
            let c = b[i];
            if let Some(q) = quote {
                if c == b'\\' && q == b'"' {
                    i += 2;
                    continue;
                }
                if c == q {
                    if q == b'\'' && b.get(i + 1) == Some(&b'\'') {
                        i += 2;
                        continue;
                    }
                    quote = None;
                    value_start = false;
                }
                i += 1;
                continue;
            }
            let at_space = i == 0 || b[i - 1] == b' ' || b[i - 1] == b'\t';
            match c {
                b'#' if at_space => break,
                b'\'' | b'"' if flow > 0 || value_start => quote = Some(c),
                b'[' | b'{' if flow > 0 || value_start => {
                    flow += 1;
                    if indents.len() + depth_here + flow > max {
                        return Err(Pos { line: ln + 1, col: line[..i].chars().count() + 1 });
                    }
                }
                b']' | b'}' if flow > 0 => {
                    flow -= 1;
                    value_start = false;
                }
                b'|' | b'>' if flow == 0 && value_start => {
                    block_scalar = Some(indent);
                    break;
                }
                b' ' | b'\t' => {}
                // An anchor or tag before a value: the value still starts after it.
                b'&' | b'!' if flow == 0 && value_start => {
                    while i < b.len() && b[i] != b' ' {
                        i += 1;
                    }
                    continue;
                }
                b'-' | b'?' if flow == 0 && value_start && matches!(b.get(i + 1), None | Some(b' ')) => {
                    depth_here += 1;
                    if indents.len() + depth_here > max {
                        return Err(Pos { line: ln + 1, col: line[..i].chars().count() + 1 });
                    }
                }
                b':' if flow == 0 && matches!(b.get(i + 1), None | Some(b' ')) => {
                    depth_here += 1;
                    value_start = true;
                    if indents.len() + depth_here > max {
                        return Err(Pos { line: ln + 1, col: line[..i].chars().count() + 1 });
                    }
                }
                b',' if flow > 0 => {}
                _ if flow > 0 => {}
                _ => value_start = false,
            }
            i += 1;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nested_values() {
        let text = "rules:\n  - id: a\n    match:\n      any:\n        - regex: '('\n        - contains: [x, y]\n";
        assert_eq!(locate(text, "rules[0].id"), Some(Pos { line: 2, col: 9 }));
        assert_eq!(locate(text, "rules[0].match.any[0].regex"), Some(Pos { line: 5, col: 18 }));
        assert_eq!(locate(text, "rules[0].match.any[1].contains[1]"), Some(Pos { line: 6, col: 25 }));
        assert_eq!(key(text, "rules[0].match.any"), Some(Pos { line: 4, col: 7 }));
        // Unknown child: falls back to the parent.
        assert_eq!(locate(text, "rules[0].match.any[0].nothing").map(|p| p.line), Some(5));
    }

    #[test]
    fn depth_is_bounded_in_flow_and_block_style() {
        let deep = |n: usize| format!("rules: {}{}\n", "[".repeat(n), "]".repeat(n));
        assert!(check_depth(&deep(20), 64).is_ok());
        assert_eq!(check_depth(&deep(100_000), 64), Err(Pos { line: 1, col: 8 + 62 }));
        let dashes = format!("rules:\n  {}x\n", "- ".repeat(100));
        assert_eq!(check_depth(&dashes, 64).map_err(|p| p.line), Err(2));
        let indented: String = (0..100).map(|i| format!("{}k{i}:\n", " ".repeat(i))).collect();
        assert!(check_depth(&indented, 64).is_err());
        let tagged = format!("a: {}\n", "&x [".repeat(100));
        assert!(check_depth(&tagged, 64).is_err());
        // Brackets in plain and quoted scalars, comments and block scalars are not nesting.
        let b = "[".repeat(200);
        let text = format!(
            "rules:\n  - id: a # {b}\n    match: {{regex: '{b}'}}\n    title: x{b}\n    note: |\n      {b}\n    t: \"{b}\"\n"
        );
        assert_eq!(check_depth(&text, 64), Ok(()));
    }
}
