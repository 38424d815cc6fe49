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
}
