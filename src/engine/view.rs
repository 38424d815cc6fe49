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
}

impl Views {
    pub fn intern(&mut self, v: View) -> ViewId {
        if let Some(i) = self.list.iter().position(|x| *x == v) {
            return i as ViewId;
        }
        self.list.push(v);
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
        let v = views.get(id);
        let raw = rec.get(line, v.field)?;
        // Most values contain nothing to decode: hand out the field itself, no copy.
        if v.transforms.iter().all(|t| *t != crate::rule::Transform::Lowercase && !transform::may_change(*t, raw)) {
            return Some(raw);
        }
        let slot = &self.slots[id as usize];
        if slot.0 != self.generation {
            transform::apply(&v.transforms, raw, &mut self.out, &mut self.tmp);
            let start = self.buf.len();
            self.buf.extend_from_slice(&self.out);
            self.slots[id as usize] = (self.generation, Some(start..self.buf.len()));
        }
        let range = self.slots[id as usize].1.clone()?;
        Some(&self.buf[range])
    }
}
