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
        let unparsed =
            |name: &str| format!("the example is not a valid `{name}` line (the format did not recognise it)");
        // Examples test the rule as written: its condition and its own `except`. Overrides and
        // shared exceptions are a site's policy, tested with fixtures and `explain`.
        for (i, line) in r.examples.should_match.iter().enumerate() {
            match rules.explain_rule(ri, &parser, line.as_bytes(), &mut scratch) {
                Ok(()) => match rules.holding_exception(ri, line.as_bytes(), &mut scratch, true) {
                    None => report.passed += 1,
                    Some(_) => report.failures.push(ExampleFailure {
                        rule: r.id.clone(),
                        path: format!("examples.match[{i}]"),
                        line: line.clone(),
                        reason: "did not match: the rule's `except` holds it back".into(),
                    }),
                },
                Err(at) => report.failures.push(ExampleFailure {
                    rule: r.id.clone(),
                    path: format!("examples.match[{i}]"),
                    line: line.clone(),
                    reason: if scratch.record.parsed {
                        format!("did not match: {at} is false")
                    } else {
                        format!("did not match: {}", unparsed(&parser.name))
                    },
                }),
            }
        }
        for (i, line) in r.examples.no_match.iter().enumerate() {
            // A line the format cannot read is a legitimate `no_match` (such lines are not
            // counted by a rule over fields), so it passes.
            let matched = rules.explain_rule(ri, &parser, line.as_bytes(), &mut scratch).is_ok()
                && rules.holding_exception(ri, line.as_bytes(), &mut scratch, true).is_none();
            if matched {
                report.failures.push(ExampleFailure {
                    rule: r.id.clone(),
                    path: format!("examples.no_match[{i}]"),
                    line: line.clone(),
                    reason: "matched, but it must not".into(),
                });
            } else {
                report.passed += 1;
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
