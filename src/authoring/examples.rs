//! Running rules' inline examples through the production matching path.

use std::collections::HashMap;

use super::CoveragePoint;
use crate::engine::RuleSet;
use crate::parse::{FormatKind, Parser, TimeSettings};
use crate::rule::Loaded;

/// An example that did not behave as declared.
#[derive(Debug, Clone)]
pub struct ExampleFailure {
    pub rule: String,
    /// `examples.match[i]` or `examples.no_match[i]`.
    pub path: String,
    pub line: String,
    /// Why: the condition that failed for a `match` example, or "matched" for `no_match`.
    pub reason: String,
}

/// Outcome of running all examples.
#[derive(Debug, Default)]
pub struct ExampleReport {
    pub passed: usize,
    pub failures: Vec<ExampleFailure>,
}

/// Parsers for the formats examples name, built once per format.
struct Parsers<'a> {
    rules: &'a RuleSet,
    parser_for: &'a dyn Fn(&str) -> Option<Parser>,
    cache: HashMap<String, Option<Parser>>,
}

impl Parsers<'_> {
    /// The parser of a rule's examples: `examples.format`, else the rule's first format, else
    /// `combined`. `Err(name)` when that format is unknown.
    fn for_rule(&mut self, r: &crate::rule::Rule) -> Result<Parser, String> {
        let format =
            r.examples.format.clone().or_else(|| r.formats.first().cloned()).unwrap_or_else(|| "combined".to_string());
        let (rules, parser_for) = (self.rules, self.parser_for);
        self.cache
            .entry(format.clone())
            .or_insert_with(|| {
                let parser = match FormatKind::from_name(&format) {
                    Some(k) if k != FormatKind::Custom => Some(Parser::builtin(k, TimeSettings::default())),
                    _ if format == crate::source::webroot::FORMAT => {
                        Some(crate::source::webroot::parser(TimeSettings::default()))
                    }
                    _ => parser_for(&format),
                };
                // JSON looks up exactly the field names rules use: bind it to the rule set's.
                parser.map(|mut p| {
                    p.bind(&rules.registry);
                    p
                })
            })
            .clone()
            .ok_or(format)
    }
}

/// Runs every rule's examples. `parser_for` supplies parsers for custom format names; built-in
/// formats are handled here.
pub fn run(loaded: &Loaded, rules: &RuleSet, parser_for: &dyn Fn(&str) -> Option<Parser>) -> ExampleReport {
    let mut report = ExampleReport::default();
    let mut scratch = rules.scratch();
    let mut parsers = Parsers { rules, parser_for, cache: HashMap::new() };
    for lr in &loaded.rules {
        let r = &lr.rule;
        let Some(ri) = rules.rule_index(&r.id) else { continue };
        let parser = match parsers.for_rule(r) {
            Ok(p) => p,
            Err(format) => {
                report.failures.push(ExampleFailure {
                    rule: r.id.clone(),
                    path: "examples.format".into(),
                    line: String::new(),
                    reason: format!("unknown format {format:?}"),
                });
                continue;
            }
        };
        // A line the format cannot read is reported as such, whichever list it is in: as a
        // `no_match` it would pass without showing anything (fields rules never see it), as a
        // `match` it would fail for a reason that is not the rule's.
        let unparsed = |list: &str, i: usize| {
            format!(
                "line {} of {list} does not parse as {}: the format does not recognise it, so it tests nothing \
                 about the rule's condition",
                i + 1,
                parser.name
            )
        };
        // Examples test the rule as written: its condition and its own `except`. Overrides and
        // shared exceptions are a site's policy, tested with fixtures and `explain`.
        for (i, line) in r.examples.should_match.iter().enumerate() {
            let result = rules.explain_rule(ri, &parser, line.as_bytes(), &mut scratch);
            let failure = |reason| ExampleFailure {
                rule: r.id.clone(),
                path: format!("examples.match[{i}]"),
                line: line.clone(),
                reason,
            };
            match result {
                _ if !scratch.record.parsed => report.failures.push(failure(unparsed("match", i))),
                Ok(()) => match rules.holding_exception(ri, line.as_bytes(), &mut scratch, true) {
                    None => report.passed += 1,
                    Some(_) => report.failures.push(failure("did not match: the rule's `except` holds it back".into())),
                },
                Err(at) => report.failures.push(failure(format!("did not match: {at} is false"))),
            }
        }
        for (i, line) in r.examples.no_match.iter().enumerate() {
            let result = rules.explain_rule(ri, &parser, line.as_bytes(), &mut scratch);
            let failure = |reason| ExampleFailure {
                rule: r.id.clone(),
                path: format!("examples.no_match[{i}]"),
                line: line.clone(),
                reason,
            };
            match result {
                _ if !scratch.record.parsed => report.failures.push(failure(unparsed("no_match", i))),
                Ok(()) if rules.holding_exception(ri, line.as_bytes(), &mut scratch, true).is_none() => {
                    report.failures.push(failure("matched, but it must not".into()))
                }
                Ok(()) | Err(_) => report.passed += 1,
            }
        }
    }
    report
}

/// Coverage: for every rule with `match` examples, the [`CoveragePoint`]s (alternatives of
/// `any`s, values of literal lists) that none of the examples that match the rule exercises,
/// evaluated with the real operators on the transformed field. An alternative or value nobody
/// has shown to work is where a typo hides. A rule without `match` examples is listed with no
/// points.
pub fn coverage(
    loaded: &Loaded,
    rules: &RuleSet,
    parser_for: &dyn Fn(&str) -> Option<Parser>,
) -> Vec<(String, Option<Vec<CoveragePoint>>)> {
    let mut out = Vec::new();
    let mut scratch = rules.scratch();
    let mut parsers = Parsers { rules, parser_for, cache: HashMap::new() };
    for lr in &loaded.rules {
        let r = &lr.rule;
        let Some(ri) = rules.rule_index(&r.id) else { continue };
        if r.examples.should_match.is_empty() {
            out.push((r.id.clone(), None));
            continue;
        }
        let mut open = rules.coverage_points(ri);
        let Ok(parser) = parsers.for_rule(r) else { continue };
        for line in &r.examples.should_match {
            if open.is_empty() {
                break;
            }
            if rules.explain_rule(ri, &parser, line.as_bytes(), &mut scratch).is_err() {
                continue; // a failing example is reported as such, not as coverage
            }
            open.retain(|p| !rules.exercises(ri, p, line.as_bytes(), &mut scratch));
        }
        if !open.is_empty() {
            out.push((r.id.clone(), Some(open)));
        }
    }
    out
}

/// A detection of each rule that has a `match` example that parses and matches: the first
/// such example's fields, line and time, with the rule's facts and (placeholder) threshold or
/// sequence details. What lint renders each rule's XDR templates with, so a template naming a
/// field or attribute its rule's detections lack fails in CI rather than at the first attack.
pub fn sample_detections(
    loaded: &Loaded,
    rules: &RuleSet,
    parser_for: &dyn Fn(&str) -> Option<Parser>,
) -> Vec<crate::engine::Detection> {
    let shapes = crate::action::xdr::shapes(rules);
    let mut out = Vec::new();
    let mut scratch = rules.scratch();
    let mut parsers = Parsers { rules, parser_for, cache: HashMap::new() };
    for lr in &loaded.rules {
        let r = &lr.rule;
        let (Some(ri), Some(shape)) = (rules.rule_index(&r.id), shapes.get(&r.id)) else { continue };
        let Ok(parser) = parsers.for_rule(r) else { continue };
        for (i, line) in r.examples.should_match.iter().enumerate() {
            let bytes = line.as_bytes();
            if rules.explain_rule(ri, &parser, bytes, &mut scratch).is_err() || !scratch.record.parsed {
                continue;
            }
            let mut d = shape.clone();
            let rec = &scratch.record;
            let names = &rules.registry;
            d.fields = rec
                .iter(bytes)
                .filter(|(id, _)| (*id as usize) < names.len())
                .map(|(id, v)| (names.shared_name(id), String::from_utf8_lossy(v).into_owned()))
                .collect();
            d.line = line.clone();
            d.event_time = parser.event_time(bytes, rec).unwrap_or(d.event_time);
            d.source.format = parser.name.as_str().into();
            d.source.line_number = i as u64 + 1;
            let value = |k: &str| d.fields.get(k).cloned().unwrap_or_default();
            if let Some(t) = &mut d.threshold {
                for (k, v) in &mut t.group {
                    *v = value(k);
                }
                if let Some(f) = &t.distinct {
                    t.distinct_values = vec![value(f)];
                }
                t.first_seen = d.event_time;
                t.last_seen = d.event_time;
            }
            if let Some(s) = &mut d.sequence {
                s.key = value("client_ip");
                s.first_seen = d.event_time;
                s.last_seen = d.event_time;
            }
            out.push(d);
            break;
        }
    }
    out
}
