//! A rule's `extract`: regexes whose named captures become fields of that rule only.
//!
//! Each captured name has an id of its own in the registry (a *scoped* field, see
//! [`crate::parse::FieldRegistry::intern_scoped`]), so the values of several rules' extracts
//! sit side by side in one [`Record`] without seeing each other, and every later stage (group
//! keys, detections) reads them from the record like any field. A capture is stored as a span
//! of the value it was taken from (a range of the line, or of the record's scratch buffer),
//! so extracting copies nothing; the capture positions are written into per-thread
//! [`regex::bytes::CaptureLocations`] kept in the engine's scratch, one per extract regex.

use std::sync::Arc;

use regex::bytes::{CaptureLocations, Regex};

use crate::parse::{FieldId, Record, Span, std_fields};

/// The compiled `extract` of one rule.
#[derive(Debug)]
pub struct Extracts {
    /// The rule's scope in the registry (> 0).
    pub scope: u32,
    pub steps: Vec<ExtractStep>,
    /// Every captured name, for showing a detection's fields: a parsed field of one of these
    /// names is replaced by the rule's own.
    pub names: Vec<Arc<str>>,
}

/// One regex of an `extract`.
#[derive(Debug)]
pub struct ExtractStep {
    /// The field read (possibly one captured by an earlier step).
    pub from: FieldId,
    pub re: Regex,
    /// Index of this regex's capture locations in the scratch ([`ExtractScratch`]).
    pub slot: usize,
    /// (capture group index, field it fills).
    pub groups: Vec<(usize, FieldId)>,
}

/// Per-thread capture locations, one per extract regex of the rule set.
#[derive(Debug, Default)]
pub struct ExtractScratch(Vec<CaptureLocations>);

impl ExtractScratch {
    pub fn new<'a>(regexes: impl Iterator<Item = &'a Regex>) -> ExtractScratch {
        ExtractScratch(regexes.map(Regex::capture_locations).collect())
    }
}

impl Extracts {
    /// Runs every step on the record, setting the captured fields. `Err(i)`: step `i` found
    /// no value to read or its regex did not match, and the rule does not match the line.
    pub fn apply(&self, line: &[u8], rec: &mut Record, scratch: &mut ExtractScratch) -> Result<(), usize> {
        for (i, st) in self.steps.iter().enumerate() {
            // Where the value read lives, so that a capture becomes a span of the same place.
            let (value, base): (&[u8], Span) = if st.from == std_fields::LINE {
                (line, Span::Raw(0..0))
            } else {
                let Some(span) = rec.span(st.from).cloned() else { return Err(i) };
                let Some(v) = rec.get(line, st.from) else { return Err(i) };
                (v, span)
            };
            let Some(locs) = scratch.0.get_mut(st.slot) else { return Err(i) };
            if st.re.captures_read(locs, value).is_none() {
                return Err(i);
            }
            for &(g, id) in &st.groups {
                let span = locs.get(g).map(|(s, e)| {
                    let (s, e) = (s as u32, e as u32);
                    match &base {
                        Span::Raw(r) => Span::Raw(r.start + s..r.start + e),
                        Span::Owned(r) => Span::Owned(r.start + s..r.start + e),
                    }
                });
                rec.set_span(id, span);
            }
        }
        Ok(())
    }

    /// Whether a detection of this rule shows the field `id` named `name`: its own captures,
    /// and every field of every rule except those its captures replace.
    pub fn shows(&self, scope: u32, name: &str) -> bool {
        if scope == 0 { !self.names.iter().any(|n| &**n == name) } else { scope == self.scope }
    }
}
