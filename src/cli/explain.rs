//! `trapline explain`: which rules match a line and, for a rule that does not, which condition
//! failed and what it saw; with `--file`, the threshold window and suppression state a rule
//! has for the last line's key after the whole file went through the engine.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use chrono::{TimeZone, Utc};
use clap::Args;

use super::setup::InputArgs;
use crate::action::console::escape;
use crate::engine::{Detector, RuleSet};
use crate::event::{Event, Origin};
use crate::pipeline::Pipeline;
use crate::source::read::BlockReader;

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The log line to explain.
    #[arg(long, conflicts_with = "file")]
    pub line: Option<String>,
    /// A log file: every line goes through the engine (thresholds included); the last line is
    /// explained.
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Explain this rule (default: list every matching rule).
    #[arg(long)]
    pub rule: Option<String>,
    /// Also list every field the format parsed from the line, with its value (what rules can
    /// test with `field:`).
    #[arg(long)]
    pub fields: bool,
    #[command(flatten)]
    pub input: InputArgs,
}

pub fn explain(a: ExplainArgs) -> Result<i32> {
    let (_cfg, rule_paths, setup) = a.input.setup("explain")?;
    let mut pipeline = Pipeline::new(setup, crate::engine::DEFAULT_MAX_KEYS);
    let setup = Arc::clone(pipeline.setup());
    let (rules, source) = (&setup.rules, &setup.sources[0]);
    let mut scratch = rules.scratch();
    // With --file, every line but the last feeds the cross-line state first.
    let line: Vec<u8> = match (&a.line, &a.file) {
        (Some(l), _) => l.as_bytes().to_vec(),
        (None, Some(f)) => {
            let info = source.info(&f.display().to_string());
            let content = xxhash_rust::xxh3::xxh3_64(f.display().to_string().as_bytes());
            let mut reader = BlockReader::open(f).with_context(|| format!("cannot open {}", f.display()))?;
            let mut last: Option<(Vec<u8>, Origin)> = None;
            while let Some(b) = reader.next_block(256 << 10)? {
                for (i, (start, l)) in b.lines().enumerate() {
                    if let Some((prev, origin)) = last.take() {
                        let ev = Event::line(&prev, origin, Utc::now(), false);
                        pipeline.process(0, &info, &ev, &mut crate::pipeline::CountOnly)?;
                    }
                    let origin =
                        Origin::Line { content, offset: b.offset + start as u64, line_number: b.first_line + i as u64 };
                    last = Some((l.to_vec(), origin));
                }
            }
            match last {
                Some((l, _)) => l,
                None => bail!("{} is empty", f.display()),
            }
        }
        (None, None) => bail!("give --line '...' or --file FILE"),
    };
    let detector = pipeline.detector_mut();
    rules.match_line(&source.parser, &source.applicable, &line, &mut scratch);
    let hits: Vec<usize> = scratch.hits.iter().map(|&i| i as usize).collect();
    let at = source.parser.event_time(&line, &scratch.record).map(|t| t.timestamp_millis());
    println!("line: {}", escape(&String::from_utf8_lossy(&line)));
    if !scratch.record.parsed {
        println!("  (not recognised as {}: only raw-line conditions can match)", source.parser.name);
    }
    if a.fields {
        // With --rule, the fields as that rule sees them (its extract run on the line whether
        // or not the prefilter made it a candidate); else every rule's fields, and what each
        // matching rule extracted.
        let shown: Vec<usize> = match a.rule.as_deref().and_then(|id| rules.rule_index(id)) {
            Some(i) => vec![i],
            None => hits.iter().copied().filter(|&i| rules.rules[i].extract.is_some()).collect(),
        };
        for &i in &shown {
            let _ = rules.extract(i, &line, &mut scratch.record, &mut scratch.extract);
        }
        let mut fields: Vec<(&str, String, String)> = scratch
            .record
            .iter(&line)
            .filter(|(id, _)| match (a.rule.is_some(), shown.first()) {
                (true, Some(&i)) => rules.shows_field(i, *id),
                _ => rules.registry.scope(*id) == 0,
            })
            .map(|(id, v)| (rules.registry.name(id), String::from_utf8_lossy(v).into_owned(), String::new()))
            .collect();
        for &i in shown.iter().filter(|_| a.rule.is_none()) {
            let Some(x) = &rules.rules[i].extract else { continue };
            for (id, v) in scratch.record.iter(&line).filter(|(id, _)| rules.registry.scope(*id) == x.scope) {
                let by = format!(" (extracted by {})", rules.rules[i].id);
                fields.push((rules.registry.name(id), String::from_utf8_lossy(v).into_owned(), by));
            }
        }
        if let Some(x) =
            a.rule.as_deref().and_then(|id| rules.rule_index(id)).and_then(|i| rules.rules[i].extract.as_ref())
        {
            for f in &mut fields {
                if x.names.iter().any(|n| **n == *f.0) {
                    f.2 = " (extracted)".to_string();
                }
            }
        }
        fields.sort();
        println!("fields ({}):", source.parser.name);
        if fields.is_empty() {
            println!("  (none)");
        }
        for (name, value, by) in fields {
            println!("  {name} = \"{}\"{by}", escape(&value));
            // A list (`[*]`): each element, as conditions on it see them.
            let Some(list) = rules.registry.get(name).and_then(|id| scratch.record.list(id)) else { continue };
            const SHOWN: usize = 32;
            for (k, span) in list.iter().take(SHOWN).enumerate() {
                let v = scratch.record.bytes(&line, span).unwrap_or_default();
                println!("    [{k}] = \"{}\"", escape(&String::from_utf8_lossy(v)));
            }
            if list.len() > SHOWN {
                println!("    ... {} more elements", list.len() - SHOWN);
            }
        }
    }
    match &a.rule {
        None => {
            if hits.is_empty() {
                println!("no rule matches");
            }
            for &i in &hits {
                let r = &rules.rules[i];
                println!("matches {} ({}, {})", r.id, r.severity.as_str(), escape(&r.title));
                state(rules, detector, i, &line, &scratch.record, at);
            }
            for &(i, e) in &scratch.held {
                let r = &rules.rules[i as usize];
                println!(
                    "held back {}: the condition matches, but {} holds the line back",
                    r.id,
                    escape(&rules.describe_exception(e))
                );
            }
        }
        Some(id) => {
            let Some(first) = rules.rule_index(id) else { bail!("no rule {id:?} in {}", list(&rule_paths)) };
            // A sequence rule: the step this line is (the first whose condition matches), else
            // why the first step does not match.
            let steps = rules.rules[first].sequence.as_ref().map_or(1, |s| s.steps);
            let i = (first..first + steps)
                .find(|&k| {
                    source.applicable.get(k) && rules.explain_rule(k, &source.parser, &line, &mut scratch).is_ok()
                })
                .unwrap_or(first);
            let r = &rules.rules[i];
            if !source.applicable.get(i) {
                println!(
                    "rule {id} does not apply to format {} (formats: {:?}, enabled: {})",
                    a.input.format, r.formats, r.enabled
                );
            }
            let verdict = rules.explain_rule(i, &source.parser, &line, &mut scratch);
            let root = match &r.sequence {
                Some(sq) => format!("sequence.steps[{}].match", sq.step),
                None => "match".to_string(),
            };
            let trace =
                rules.trace(i, &root, &line, &mut scratch, crate::engine::condition::EventTime::Parse(&source.parser));
            match verdict {
                Ok(()) => {
                    let by = decided_by(&trace);
                    let through = if by.is_empty() { String::new() } else { format!(", through {}", by.join(", ")) };
                    if let Some(e) = rules.holding_exception(i, &line, &mut scratch, false) {
                        println!(
                            "rule {id}: the condition matches{through}, but {} holds the line back: it never fires the rule",
                            escape(&rules.describe_exception(e))
                        );
                        print_trace(r, &trace);
                        return Ok(1);
                    }
                    println!("rule {id}: the condition matches{through}");
                    print_trace(r, &trace);
                    state(rules, detector, i, &line, &scratch.record, at);
                }
                Err(path) => {
                    let what = rules.describe_condition(i, &path, &line, &mut scratch).unwrap_or_default();
                    println!("rule {id}: no match: {path} is false");
                    if !what.is_empty() {
                        println!("  it looked at {}", escape(&what));
                    }
                    print_trace(r, &trace);
                    return Ok(1);
                }
            }
        }
    }
    Ok(if hits.is_empty() { 1 } else { 0 })
}

/// Threshold and suppression state of rule `i` for this line's key (after `--file` history).
/// `at`: the line's event time (ms), as the window sees it.
fn state(rules: &RuleSet, det: &mut Detector, i: usize, line: &[u8], rec: &crate::parse::Record, at: Option<i64>) {
    let r = &rules.rules[i];
    let fmt = |ms: i64| Utc.timestamp_millis_opt(ms).single().map(|t| t.to_rfc3339()).unwrap_or_default();
    if let Some(t) = &r.threshold {
        let group: Vec<String> = t
            .group_by
            .iter()
            .map(|f| {
                format!("{}={}", rules.registry.name(*f), String::from_utf8_lossy(rec.get(line, *f).unwrap_or(b"-")))
            })
            .collect();
        match det.window_state(i, line, rec, at) {
            Some((n, oldest, w, values)) => {
                let what = if t.distinct.is_some() { "distinct values" } else { "matching lines" };
                print!(
                    "  threshold: {n} of {} {what} within {} s for {}",
                    t.count,
                    w / 1000,
                    escape(&group.join(", "))
                );
                match oldest {
                    Some(o) => println!("; oldest expires at {}", fmt(o + w)),
                    None => println!(),
                }
                if !values.is_empty() {
                    let more = if (values.len() as u32) < n {
                        format!(" (+{} not recorded)", n - values.len() as u32)
                    } else {
                        String::new()
                    };
                    let shown: Vec<String> = values.iter().map(|v| format!("\"{}\"", escape(v))).collect();
                    println!("  distinct values counted: {}{more}", shown.join(", "));
                }
                println!("  (this line would be number {} in the window)", n + 1);
            }
            None => println!(
                "  threshold: {} within {:?}; the line lacks a group field ({})",
                t.count,
                t.window,
                escape(&group.join(", "))
            ),
        }
    }
    if let Some(sq) = &r.sequence
        && let Some((key, started)) = det.sequence_state(i, line, rec)
    {
        let key = if key.is_empty() { "(a key field is absent: not a step)".to_string() } else { key };
        print!("  sequence: this line is step {} of {} for key {}", sq.step + 1, sq.steps, escape(&key));
        match (sq.step, started) {
            (0, _) => println!("; it starts a chain (the rule fires at step {})", sq.steps),
            (_, Some(s)) => println!("; the chain started at {} (within {} s)", fmt(s), sq.within.as_secs()),
            (_, None) => println!("; no chain is open for this key: nothing happens"),
        }
    }
    if r.suppress.is_some() {
        match det.suppressed_until(i, line, rec) {
            Some(u) => println!("  suppression: this key is quiet until {}", fmt(u)),
            None => println!("  suppression: not active for this key"),
        }
    }
}

/// The alternative that made each `any` on the way true (the first true one, as the engine
/// stops there).
fn decided_by(trace: &[crate::authoring::explain::TraceStep]) -> Vec<String> {
    let mut out = Vec::new();
    for (k, step) in trace.iter().enumerate() {
        if step.label != "any" || !step.verdict {
            continue;
        }
        // Only an `any` whose parents are all true decided anything.
        let parents_true = trace[..k].iter().rev().fold((step.depth, true), |(d, ok), p| {
            if p.depth < d { (p.depth, ok && p.verdict != (p.label == "not")) } else { (d, ok) }
        });
        if !parents_true.1 {
            continue;
        }
        if let Some(alt) =
            trace[k + 1..].iter().take_while(|c| c.depth > step.depth).find(|c| c.depth == step.depth + 1 && c.verdict)
        {
            out.push(alt.path.clone());
        }
    }
    out
}

/// Every condition of the rule with its verdict and where it is written (file:line:col).
fn print_trace(r: &crate::engine::CompiledRule, trace: &[crate::authoring::explain::TraceStep]) {
    let text = crate::assets::read_to_string(std::path::Path::new(&r.origin)).unwrap_or_default();
    // A key's own position (`any:`) where the entry has one, else where its value starts (an
    // item of a list).
    let (keys, index) = (crate::rule::locate::keys(&text), crate::rule::locate::index(&text));
    let position = |path: &str| {
        let mut p = format!("rules[{}].{path}", r.index);
        loop {
            if let Some(pos) = keys.get(&p).or_else(|| index.get(&p)) {
                return format!("{}:{}:{}", r.origin, pos.line, pos.col);
            }
            match p.rfind(['.', '[']) {
                Some(cut) => p.truncate(cut),
                None => return r.origin.clone(),
            }
        }
    };
    println!("  conditions:");
    for step in trace {
        let indent = "  ".repeat(step.depth);
        let looked = step.looked.as_deref().map(|l| format!(": {}", escape(l))).unwrap_or_default();
        println!(
            "    {:<5} {indent}{}{looked}  ({})",
            if step.verdict { "true" } else { "false" },
            crate::action::console::escape_controls(&step.label),
            // A combinator is written as its key (`any:`) inside the entry at its path.
            position(&if matches!(step.label.as_str(), "any" | "all" | "not") {
                format!("{}.{}", step.path, step.label)
            } else {
                step.path.clone()
            })
        );
    }
}

fn list(p: &[PathBuf]) -> String {
    p.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
}
