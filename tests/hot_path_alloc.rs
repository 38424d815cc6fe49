//! The matching path allocates nothing per line once warm, also for rules that extract fields
//! and conditions over JSON list elements: a counting allocator around the library's
//! `match_line` and `hit_keys` (what `scan` and `run` call for every line).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use trapline::engine::RuleSet;
use trapline::parse::{FieldRegistry, TimeSettings};
use trapline::rule::load::{SourceFile, load_sources};

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const RULES: &str = r#"rules:
  - id: mail.sasl
    title: t
    severity: high
    formats: [syslog]
    extract:
      - {field: message, regex: '\[(?P<client_ip>[0-9a-f.:]+)\]: SASL (?P<mech>\w+) authentication failed'}
    match: {field: mech, equals: [LOGIN, PLAIN]}
    threshold: {count: 5, within: 1m, group_by: [client_ip], distinct: mech}
  - id: json.xff
    title: t
    severity: low
    formats: [json]
    match:
      any:
        - {field: "req.h.xff[*]", cidr: [10.0.0.0/8]}
        - {field: "req.h.ua[*]", transforms: [url_decode], contains: "<script"}
        - {field: "req.h.ua[0]", starts_with: sqlmap}
    threshold: {count: 5, within: 1m, group_by: ["req.ip"]}
"#;

/// Allocations made by matching `lines` (after matching them once to warm every buffer).
fn allocations(rules: &RuleSet, format: &str, lines: &[String]) -> usize {
    let mut parser = trapline::config::parser_for(
        format,
        &Default::default(),
        TimeSettings::default(),
        &mut FieldRegistry::default(),
    )
    .unwrap();
    parser.bind(&rules.registry);
    let all = rules.applicable("any", format);
    let mut s = rules.scratch();
    let mut keys = Vec::new();
    let mut hits = 0;
    let mut run = |s: &mut trapline::engine::Scratch, keys: &mut Vec<_>| {
        for l in lines {
            rules.match_line(&parser, &all, l.as_bytes(), s);
            keys.clear();
            let (hits_now, rec, buf) = (&s.hits, &s.record, &mut s.key_buf);
            rules.hit_keys(l.as_bytes(), rec, hits_now, buf, keys);
            hits += hits_now.len();
        }
    };
    run(&mut s, &mut keys);
    let before = ALLOCS.load(Ordering::Relaxed);
    run(&mut s, &mut keys);
    let n = ALLOCS.load(Ordering::Relaxed) - before;
    assert!(hits > lines.len() / 2, "the lines match: {hits}");
    n
}

#[test]
fn matching_allocates_nothing_per_line_once_warm() {
    // The counter counts.
    let before = ALLOCS.load(Ordering::Relaxed);
    drop(std::hint::black_box(vec![1u8; 10]));
    assert!(ALLOCS.load(Ordering::Relaxed) > before);
    let loaded = load_sources(vec![SourceFile { path: "r.yml".into(), text: RULES.to_string() }]).unwrap();
    let rules =
        RuleSet::compile(&loaded, &trapline::pipeline::setup::compile_options(), FieldRegistry::default()).unwrap();
    let syslog: Vec<String> = (0..500)
        .map(|i| {
            format!(
                "Oct 11 22:14:15 mx postfix/smtpd[41]: warning: unknown[203.0.113.{}]: SASL {} authentication failed: x",
                i % 250,
                if i % 2 == 0 { "LOGIN" } else { "PLAIN" }
            )
        })
        .collect();
    assert_eq!(allocations(&rules, "syslog", &syslog), 0, "syslog lines with extract");
    let json: Vec<String> = (0..500)
        .map(|i| {
            format!(
                r#"{{"req":{{"ip":"203.0.113.{}","h":{{"ua":["sqlmap/1.{i}","x%3Cscript\u0020"],"xff":["198.51.100.1","10.0.{}.1",{i},{{"a":[1]}}]}}}}}}"#,
                i % 250,
                i % 250
            )
        })
        .collect();
    assert_eq!(allocations(&rules, "json", &json), 0, "JSON lines with list elements");
}
