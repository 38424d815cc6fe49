//! Prometheus metrics of `trapline run`, served at `/metrics`.
//!
//! Nothing here is touched per line: the daemon keeps its own counters (the pipeline's, the
//! detector's per rule) and [`Metrics::update`] moves their growth into the registry when it
//! ticks, a few times a second. No label carries a client address (an attacker would choose
//! the series count).

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabel {
    source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleLabel {
    rule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ExceptionLabel {
    exception: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DetectionLabels {
    rule: String,
    severity: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionEventLabels {
    action: String,
    event: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabel {
    action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MeasureLabels {
    source: String,
    measure: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: String,
}

/// One rule's counters since start.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct RuleCounts {
    pub id: String,
    pub severity: &'static str,
    /// Events whose condition matched.
    pub hits: u64,
    pub detections: u64,
    pub suppressed: u64,
    /// Evaluations of the condition, and their estimated time (see `engine::Profile`).
    pub evaluations: u64,
    pub eval_nanos: u64,
}

/// What the daemon reports at each tick: totals since start (the registry keeps the deltas).
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// Per source: (name, events read, events not recognised by the format).
    pub sources: Vec<(String, u64, u64)>,
    /// Per rule (a sequence's steps summed).
    pub rules: Vec<RuleCounts>,
    /// Per exception name: events held back (names come from rule files, never from events).
    pub exceptions: Vec<(String, u64)>,
    pub action_retries: u64,
    pub action_errors: u64,
    pub history_written: u64,
    pub history_dropped: u64,
    /// Reloads so far: (worked, rejected).
    pub reloads: (u64, u64),
    pub live_clients: i64,
    /// Per action: (action, counter, total) — XDR deliveries, imports, failures...
    pub action_counters: Vec<(String, &'static str, u64)>,
    /// Per action with a queue: (action, waiting now) — the XDR outbox.
    pub action_queues: Vec<(String, u64)>,
    /// Sources' measurements of themselves: (source, what, value) — a web root's files,
    /// watches, and the duration of its last full comparison.
    pub measures: Vec<(String, &'static str, f64)>,
}

pub struct Metrics {
    registry: Registry,
    lines: Family<SourceLabel, Counter>,
    unparsed: Family<SourceLabel, Counter>,
    hits: Family<RuleLabel, Counter>,
    detections: Family<DetectionLabels, Counter>,
    suppressed: Family<RuleLabel, Counter>,
    evaluations: Family<RuleLabel, Counter>,
    eval_seconds: Family<RuleLabel, Counter<f64, std::sync::atomic::AtomicU64>>,
    excepted: Family<ExceptionLabel, Counter>,
    reloads: Family<ResultLabel, Counter>,
    action_retries: Counter,
    action_errors: Counter,
    history_written: Counter,
    history_dropped: Counter,
    live_clients: Gauge,
    action_events: Family<ActionEventLabels, Counter>,
    action_queue: Family<ActionLabel, Gauge>,
    measures: Family<MeasureLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// The last snapshot moved into the registry.
    last: Mutex<Snapshot>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("trapline");
        let m = Metrics {
            lines: Family::default(),
            unparsed: Family::default(),
            hits: Family::default(),
            detections: Family::default(),
            suppressed: Family::default(),
            evaluations: Family::default(),
            eval_seconds: Family::default(),
            excepted: Family::default(),
            reloads: Family::default(),
            action_retries: Counter::default(),
            action_errors: Counter::default(),
            history_written: Counter::default(),
            history_dropped: Counter::default(),
            live_clients: Gauge::default(),
            action_events: Family::default(),
            action_queue: Family::default(),
            measures: Family::default(),
            last: Mutex::new(Snapshot::default()),
            registry: Registry::default(),
        };
        registry.register("lines", "Lines (events) read, per source", m.lines.clone());
        registry.register("unparsed_lines", "Lines the source's format did not recognise", m.unparsed.clone());
        registry.register("rule_matches", "Lines whose condition matched, per rule", m.hits.clone());
        registry.register("detections", "Detections emitted, per rule and severity", m.detections.clone());
        registry.register("suppressed", "Detections held back by suppression, per rule", m.suppressed.clone());
        registry.register(
            "rule_evaluations",
            "Evaluations of each rule's condition (lines the prefilter made it a candidate for)",
            m.evaluations.clone(),
        );
        registry.register(
            "rule_evaluation_seconds",
            "Time spent evaluating each rule's condition, estimated from one line in 64 timed",
            m.eval_seconds.clone(),
        );
        registry.register(
            "held_back",
            "Events a rule's condition matched that an exception held back, per exception",
            m.excepted.clone(),
        );
        registry.register("reloads", "Rule reloads by result (ok, rejected)", m.reloads.clone());
        registry.register("action_retries", "Transient action failures retried", m.action_retries.clone());
        registry.register("action_errors", "Permanent action failures", m.action_errors.clone());
        registry.register("history_written", "Detections written to the history", m.history_written.clone());
        registry.register(
            "history_dropped",
            "Detections left out of the history because its writer could not keep up",
            m.history_dropped.clone(),
        );
        registry.register("live_clients", "Clients of the live event stream", m.live_clients.clone());
        registry.register(
            "action_events",
            "What each action did (xdr-incident: queued, delivered, failed, requests, retries, imports, incident_updates, ...)",
            m.action_events.clone(),
        );
        registry.register(
            "action_queue",
            "Detections waiting in an action's queue (the XDR outbox)",
            m.action_queue.clone(),
        );
        registry.register(
            "source_measure",
            "A source's own measurements (web root: webroot_files, webroot_watches, webroot_scan_seconds of the last full comparison; worker: worker_partitions held, worker_replayed events at takeovers, worker_refired detections the server already had)",
            m.measures.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Moves the growth since the last snapshot into the registry.
    pub fn update(&self, now: Snapshot) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let inc = |c: &Counter, new: u64, old: u64| {
            if new > old {
                c.inc_by(new - old);
            }
        };
        for (name, lines, unparsed) in &now.sources {
            let (ol, ou) = last.sources.iter().find(|(n, _, _)| n == name).map_or((0, 0), |(_, l, u)| (*l, *u));
            let l = SourceLabel { source: name.clone() };
            inc(&self.lines.get_or_create(&l), *lines, ol);
            inc(&self.unparsed.get_or_create(&l), *unparsed, ou);
        }
        for now in &now.rules {
            let zero = RuleCounts::default();
            let old = last.rules.iter().find(|r| r.id == now.id).unwrap_or(&zero);
            let r = RuleLabel { rule: now.id.clone() };
            if now.hits > old.hits {
                inc(&self.hits.get_or_create(&r), now.hits, old.hits);
            }
            if now.detections > old.detections {
                let d = DetectionLabels { rule: now.id.clone(), severity: now.severity.to_string() };
                inc(&self.detections.get_or_create(&d), now.detections, old.detections);
            }
            if now.suppressed > old.suppressed {
                inc(&self.suppressed.get_or_create(&r), now.suppressed, old.suppressed);
            }
            if now.evaluations > old.evaluations {
                inc(&self.evaluations.get_or_create(&r), now.evaluations, old.evaluations);
            }
            if now.eval_nanos > old.eval_nanos {
                self.eval_seconds.get_or_create(&r).inc_by((now.eval_nanos - old.eval_nanos) as f64 / 1e9);
            }
        }
        for (name, n) in &now.exceptions {
            let old = last.exceptions.iter().find(|e| &e.0 == name).map_or(0, |e| e.1);
            if *n > old {
                inc(&self.excepted.get_or_create(&ExceptionLabel { exception: name.clone() }), *n, old);
            }
        }
        inc(&self.action_retries, now.action_retries, last.action_retries);
        inc(&self.action_errors, now.action_errors, last.action_errors);
        inc(&self.history_written, now.history_written, last.history_written);
        inc(&self.history_dropped, now.history_dropped, last.history_dropped);
        let ok = ResultLabel { result: "ok".into() };
        let bad = ResultLabel { result: "rejected".into() };
        inc(&self.reloads.get_or_create(&ok), now.reloads.0, last.reloads.0);
        inc(&self.reloads.get_or_create(&bad), now.reloads.1, last.reloads.1);
        self.live_clients.set(now.live_clients);
        for (action, event, total) in &now.action_counters {
            let old = last.action_counters.iter().find(|c| &c.0 == action && c.1 == *event).map_or(0, |c| c.2);
            if *total > old {
                let l = ActionEventLabels { action: action.clone(), event: event.to_string() };
                inc(&self.action_events.get_or_create(&l), *total, old);
            }
        }
        for (source, measure, v) in &now.measures {
            self.measures
                .get_or_create(&MeasureLabels { source: source.clone(), measure: measure.to_string() })
                .set(*v);
        }
        for (action, waiting) in &now.action_queues {
            self.action_queue.get_or_create(&ActionLabel { action: action.clone() }).set(*waiting as i64);
        }
        *last = now;
    }

    /// The per-rule counters of the last snapshot.
    pub fn rule_counts(&self, id: &str) -> Option<RuleCounts> {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).rules.iter().find(|r| r.id == id).cloned()
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_is_counted_once() {
        let m = Metrics::new();
        let snap = |lines, dets| Snapshot {
            sources: vec![("web".into(), lines, 1)],
            rules: vec![RuleCounts {
                id: "web.sqli".into(),
                severity: "high",
                hits: dets,
                detections: dets,
                evaluations: lines,
                eval_nanos: lines * 1000,
                ..Default::default()
            }],
            ..Default::default()
        };
        m.update(snap(10, 2));
        m.update(snap(15, 3));
        m.update(Snapshot { exceptions: vec![("scanner-allowlist".into(), 4)], ..snap(15, 3) });
        let text = m.encode();
        assert!(text.contains("trapline_held_back_total{exception=\"scanner-allowlist\"} 4"), "{text}");
        assert!(text.contains("trapline_lines_total{source=\"web\"} 15"), "{text}");
        assert!(text.contains("trapline_detections_total{rule=\"web.sqli\",severity=\"high\"} 3"), "{text}");
        assert!(text.contains("trapline_unparsed_lines_total{source=\"web\"} 1"), "{text}");
        assert!(text.contains("trapline_rule_evaluations_total{rule=\"web.sqli\"} 15"), "{text}");
        assert!(text.contains("trapline_rule_evaluation_seconds_total{rule=\"web.sqli\"} 0.000015"), "{text}");
    }

    #[test]
    fn action_counters_and_queues() {
        let m = Metrics::new();
        let snap = |delivered, pending| Snapshot {
            action_counters: vec![
                ("xdr-incident".into(), "delivered", delivered),
                ("xdr-incident".into(), "failed", 0),
            ],
            action_queues: vec![("xdr-incident".into(), pending)],
            ..Default::default()
        };
        m.update(snap(3, 7));
        m.update(snap(5, 2));
        let text = m.encode();
        assert!(text.contains("trapline_action_events_total{action=\"xdr-incident\",event=\"delivered\"} 5"), "{text}");
        assert!(text.contains("trapline_action_queue{action=\"xdr-incident\"} 2"), "{text}");
        assert!(!text.contains("event=\"failed\""), "a counter that never moved has no series yet: {text}");
    }
}
