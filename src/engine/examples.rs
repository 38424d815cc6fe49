//! Running rules' inline examples through the production matching path.

use std::collections::HashMap;

use super::RuleSet;
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

/// Runs every rule's examples. `parser_for` supplies parsers for custom format names; built-in
/// formats are handled here.
pub fn run(loaded: &Loaded, rules: &RuleSet, parser_for: &dyn Fn(&str) -> Option<Parser>) -> ExampleReport {
    let mut report = ExampleReport::default();
    let mut scratch = rules.scratch();
    let mut parsers: HashMap<String, Option<Parser>> = HashMap::new();
    for lr in &loaded.rules {
        let r = &lr.rule;
        let Some(ri) = rules.rule_index(&r.id) else { continue };
        let format =
            r.examples.format.clone().or_else(|| r.formats.first().cloned()).unwrap_or_else(|| "combined".to_string());
        let parser = parsers
            .entry(format.clone())
            .or_insert_with(|| match FormatKind::from_name(&format) {
                Some(k) if k != FormatKind::Custom => Some(Parser::builtin(k, TimeSettings::default())),
                _ => parser_for(&format).map(|mut p| {
                    p.bind(&rules.registry);
                    p
                }),
            })
            .clone();
        let Some(parser) = parser else {
            report.failures.push(ExampleFailure {
                rule: r.id.clone(),
                path: "examples.format".into(),
                line: String::new(),
                reason: format!("unknown format {format:?}"),
            });
            continue;
        };
        for (i, line) in r.examples.should_match.iter().enumerate() {
            match rules.explain_rule(ri, &parser, line.as_bytes(), &mut scratch) {
                Ok(()) => report.passed += 1,
                Err(at) => report.failures.push(ExampleFailure {
                    rule: r.id.clone(),
                    path: format!("examples.match[{i}]"),
                    line: line.clone(),
                    reason: format!("did not match: {at} is false"),
                }),
            }
        }
        for (i, line) in r.examples.no_match.iter().enumerate() {
            match rules.explain_rule(ri, &parser, line.as_bytes(), &mut scratch) {
                Err(_) => report.passed += 1,
                Ok(()) => report.failures.push(ExampleFailure {
                    rule: r.id.clone(),
                    path: format!("examples.no_match[{i}]"),
                    line: line.clone(),
                    reason: "matched, but it must not".into(),
                }),
            }
        }
    }
    report
}
