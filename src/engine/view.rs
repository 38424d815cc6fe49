//! Views: a field seen through a chain of transforms (`path` URL-decoded, `line` as is, ...).
//!
//! Every distinct (field, transforms) pair used by any rule gets one id. On a line, each view is
//! computed at most once, on first use, into a shared buffer; rules that look at the same view
//! share the work. Views without transforms are plain borrows of the record.

use std::ops::Range;

use super::transform;
use crate::parse::{FieldId, Record};
use crate::rule::Transform;

pub type ViewId = u16;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct View {
    pub field: FieldId,
    pub transforms: Vec<Transform>,
}

/// All views of a rule set.
#[derive(Debug, Default)]
pub struct Views {
    pub list: Vec<View>,
    /// Per view with two or more transforms: the view of the same field through all but the
    /// last one. `uri` URL-decoded then HTML-decoded starts from `uri` URL-decoded, so a line
    /// whose rules look at several chains decodes the shared prefix once.
    parents: Vec<Option<ViewId>>,
}

impl Views {
    pub fn intern(&mut self, v: View) -> ViewId {
        if let Some(i) = self.list.iter().position(|x| *x == v) {
            return i as ViewId;
        }
        let parent = (v.transforms.len() >= 2).then(|| {
            let prefix = v.transforms[..v.transforms.len() - 1].to_vec();
            self.intern(View { field: v.field, transforms: prefix })
        });
        self.list.push(v);
        self.parents.push(parent);
        (self.list.len() - 1) as ViewId
    }

    pub fn get(&self, id: ViewId) -> &View {
        &self.list[id as usize]
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

/// Where a view's value is: the field itself, or a range of the cache's buffer.
enum Value<'a> {
    Field(&'a [u8]),
    Computed(Range<usize>),
}

/// Per-line cache of computed views. Reused across lines; `generation` avoids clearing it.
#[derive(Debug, Default)]
pub struct ViewCache {
    generation: u32,
    /// Per view: the generation it was computed in and its range in `buf` (or `None` when the
    /// field is absent).
    slots: Vec<(u32, Option<Range<usize>>)>,
    buf: Vec<u8>,
    out: Vec<u8>,
    tmp: Vec<u8>,
}

impl ViewCache {
    /// Forgets the previous line's views.
    pub fn next_line(&mut self, views: usize) {
        if self.slots.len() != views {
            self.slots = vec![(0, None); views];
            self.generation = 0;
        }
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            // Wrapped: stale slots could alias the new generation.
            for s in &mut self.slots {
                s.0 = 0;
            }
            self.generation = 1;
        }
        self.buf.clear();
    }

    /// The value of view `id` for this line, computing it on first use.
    pub fn get<'a>(&'a mut self, id: ViewId, views: &Views, line: &'a [u8], rec: &'a Record) -> Option<&'a [u8]> {
        match self.resolve(id, views, line, rec)? {
            Value::Field(raw) => Some(raw),
            Value::Computed(range) => Some(&self.buf[range]),
        }
    }

    /// Whether `test` holds for at least one element of the list under view `id`, each
    /// element through the view's transforms. A field that is not a list on this line is
    /// the list of its one value; with no element at all, `test` sees an absent value.
    pub fn any_element(
        &mut self,
        id: ViewId,
        views: &Views,
        line: &[u8],
        rec: &Record,
        mut test: impl FnMut(Option<&[u8]>) -> bool,
    ) -> bool {
        let v = views.get(id);
        let Some(list) = rec.list(v.field) else {
            return test(self.get(id, views, line, rec));
        };
        if list.is_empty() {
            return test(None);
        }
        list.iter().any(|span| {
            let Some(raw) = rec.bytes(line, span) else { return false };
            if v.transforms.is_empty() {
                return test(Some(raw));
            }
            transform::apply(&v.transforms, raw, &mut self.out, &mut self.tmp);
            test(Some(&self.out))
        })
    }

    fn resolve<'a>(&mut self, id: ViewId, views: &Views, line: &'a [u8], rec: &'a Record) -> Option<Value<'a>> {
        let v = views.get(id);
        let raw = rec.get(line, v.field)?;
        // Most values contain nothing to decode: hand out the field itself, no copy.
        if v.transforms.iter().all(|t| *t != crate::rule::Transform::Lowercase && !transform::may_change(*t, raw)) {
            return Some(Value::Field(raw));
        }
        let slot = &self.slots[id as usize];
        if slot.0 == self.generation {
            return slot.1.clone().map(Value::Computed);
        }
        // From the parent view's value when there is one (computed once for all its chains).
        let (input, chain) = match views.parents[id as usize] {
            Some(p) => (self.resolve(p, views, line, rec)?, &v.transforms[v.transforms.len() - 1..]),
            None => (Value::Field(raw), &v.transforms[..]),
        };
        let input: &[u8] = match &input {
            Value::Field(f) => f,
            Value::Computed(r) => &self.buf[r.clone()],
        };
        transform::apply(chain, input, &mut self.out, &mut self.tmp);
        let start = self.buf.len();
        self.buf.extend_from_slice(&self.out);
        self.slots[id as usize] = (self.generation, Some(start..self.buf.len()));
        Some(Value::Computed(start..self.buf.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::std_fields;

    /// A chain computed from its parent's cached value equals the whole chain applied to the
    /// field, whichever view of the family a line asks for first.
    #[test]
    fn chains_built_on_their_parent_view_equal_the_whole_chain() {
        use Transform::*;
        let chains: [&[Transform]; 4] =
            [&[UrlDecode, HtmlDecode], &[UrlDecode, NormalizePath], &[UrlDecode, HtmlDecode, Lowercase], &[UrlDecode]];
        let mut views = Views::default();
        let ids: Vec<ViewId> =
            chains.iter().map(|c| views.intern(View { field: std_fields::URI, transforms: c.to_vec() })).collect();
        // [UrlDecode] and [UrlDecode, HtmlDecode] are shared parents, not interned twice.
        assert_eq!(views.len(), 4);
        assert_eq!(views.parents[ids[2] as usize], Some(ids[0]));
        let values = ["/a/%2e%2e/b?q=%26lt%3Bscript%26gt%3B+x", "/plain/path", "/x/%252e%252e/&amp;%41", "%"];
        for value in values {
            let mut rec = Record::new(std_fields::NAMES.len());
            rec.set_owned(std_fields::URI, value.as_bytes());
            for order in [[0, 1, 2, 3], [3, 2, 1, 0], [2, 0, 3, 1]] {
                let mut cache = ViewCache::default();
                cache.next_line(views.len());
                for i in order {
                    let got = cache.get(ids[i], &views, b"", &rec).unwrap().to_vec();
                    let (mut want, mut tmp) = (Vec::new(), Vec::new());
                    transform::apply(chains[i], value.as_bytes(), &mut want, &mut tmp);
                    assert_eq!(got, want, "{value} through {:?}", chains[i]);
                }
            }
        }
    }
}
