//! `extract` through the real binary: captures of a regex become fields of one rule (its
//! condition, threshold key and detections), for syslog mail logs where the address sits
//! inside the message; other rules keep the parsed fields; errors are positioned.

mod common;

use common::trapline;

const RULES: &str = r#"rules:
  - id: mail.auth.brute
    title: mail log-in failures from one address
    severity: high
    class: brute-force
    formats: [syslog]
    extract:
      - field: message
        regex: '\[(?P<client_ip>[0-9a-f.:]+)\]: SASL (?P<mech>\w+) authentication failed'
    match: {field: mech, equals: [LOGIN, PLAIN]}
    threshold: {count: 3, within: 1m, group_by: [client_ip], distinct: mech}
    examples:
      match: ['Oct 11 22:14:10 mx postfix/smtpd[41]: warning: unknown[203.0.113.7]: SASL LOGIN authentication failed: UGFzc3dvcmQ6']
      no_match:
        - 'Oct 11 22:14:10 mx postfix/smtpd[41]: warning: unknown[203.0.113.7]: SASL CRAM-MD5 authentication failed: x'
        - 'Oct 11 22:14:10 mx postfix/smtpd[41]: connect from unknown[203.0.113.7]'
  - id: mail.dovecot.brute
    title: IMAP log-in failures from one address
    severity: medium
    class: brute-force
    formats: [syslog]
    extract:
      - {field: message, regex: 'auth failed.*user=<(?P<user>[^>]*)>, method=(?P<method>\w+), (?P<rest>.*)'}
      - {field: rest, regex: 'rip=(?P<client_ip>[0-9a-f.:]+)'}
    match: {all: [{field: message, starts_with: 'imap-login:'}, {field: user, exists: true}]}
    threshold: {count: 3, within: 1m, group_by: [client_ip]}
  - id: mail.internal-relay
    title: a relay from the internal network, as the syslog format reads the address
    severity: info
    formats: [syslog]
    match: {field: client_ip, cidr: 10.0.0.0/8}
"#;

/// Postfix SASL failures (three mechanisms in turn from one address, one from each of
/// several others) and Dovecot IMAP failures, with unrelated mail lines between them.
fn mail_log() -> String {
    let mut lines = Vec::new();
    let mechs = ["LOGIN", "PLAIN", "LOGIN", "PLAIN"];
    for (i, mech) in mechs.iter().enumerate() {
        lines.push(format!(
            "Oct 11 22:14:{:02} mx postfix/smtpd[4123]: warning: unknown[203.0.113.7]: SASL {mech} authentication failed: UGFzc3dvcmQ6",
            10 + i
        ));
        lines.push(format!(
            "Oct 11 22:14:{:02} mx postfix/smtpd[4124]: warning: unknown[198.51.100.{i}]: SASL LOGIN authentication failed: x",
            10 + i
        ));
        lines.push(format!("Oct 11 22:14:{:02} mx postfix/smtpd[4125]: connect from unknown[192.0.2.{i}]", 10 + i));
        lines.push(format!(
            "Oct 11 22:14:{:02} mx dovecot: imap-login: Disconnected (auth failed, 1 attempts in 2 secs): user=<bob{i}>, method=PLAIN, rip=2001:db8::9, lip=192.0.2.1, TLS",
            20 + i
        ));
    }
    // The format's own reading of the address (after "from") differs from the extracted one.
    lines.push(
        "Oct 11 22:15:00 mx postfix/smtpd[4126]: warning: unknown[203.0.113.50]: SASL LOGIN authentication failed: relayed from 10.9.9.9".to_string(),
    );
    lines.join("\n") + "\n"
}

fn setup() -> (tempfile::TempDir, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("r.yml");
    std::fs::write(&rules, RULES).unwrap();
    let log = dir.path().join("mail.log");
    std::fs::write(&log, mail_log()).unwrap();
    let (r, l) = (rules.to_str().unwrap().to_string(), log.to_str().unwrap().to_string());
    (dir, r, l)
}

fn detections(out: &std::process::Output) -> Vec<serde_json::Value> {
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn extracted_fields_drive_the_condition_the_threshold_key_and_the_detection() {
    let (_d, rules, log) = setup();
    for threads in ["1", "3"] {
        let out = trapline(&["scan", "--json", "--threads", threads, "--format", "syslog", "--rules", &rules, &log]);
        let dets = detections(&out);
        let of = |id: &str| dets.iter().filter(|d| d["rule"]["id"] == id).collect::<Vec<_>>();
        // Postfix, counting distinct mechanisms: 203.0.113.7 tries only LOGIN and PLAIN (two
        // of the three needed), every other address one.
        let postfix = of("mail.auth.brute");
        assert!(postfix.is_empty(), "distinct mech reaches 2, not 3: {postfix:?}");
        // Dovecot: the address comes from the second extract, which reads the first's capture.
        let dovecot = of("mail.dovecot.brute");
        assert_eq!(dovecot.len(), 1, "threads {threads}: {dets:?}");
        let d = dovecot[0];
        assert_eq!(d["threshold"]["group"]["client_ip"], "2001:db8::9");
        assert_eq!(d["fields"]["client_ip"], "2001:db8::9");
        assert_eq!(d["fields"]["user"], "bob2");
        assert_eq!(d["fields"]["method"], "PLAIN");
        assert_eq!(d["fields"]["program"], "dovecot", "parsed fields are still there");
        // The rule without extract sees the format's client_ip, never another rule's capture.
        let relay = of("mail.internal-relay");
        assert_eq!(relay.len(), 1, "{dets:?}");
        assert_eq!(relay[0]["fields"]["client_ip"], "10.9.9.9");
        assert!(relay[0]["fields"].get("mech").is_none(), "no other rule's capture: {}", relay[0]["fields"]);
    }
}

#[test]
fn a_threshold_grouped_by_an_extracted_address_fires_for_that_address_only() {
    let (dir, _, log) = setup();
    // The same rule without `distinct`: three lines from one address fire, once.
    let rules = dir.path().join("plain.yml");
    std::fs::write(&rules, RULES.replace(", distinct: mech}", "}")).unwrap();
    let out = trapline(&["scan", "--json", "--format", "syslog", "--rules", rules.to_str().unwrap(), &log]);
    let dets = detections(&out);
    let postfix: Vec<_> = dets.iter().filter(|d| d["rule"]["id"] == "mail.auth.brute").collect();
    assert_eq!(postfix.len(), 1, "{dets:?}");
    let d = postfix[0];
    assert_eq!(d["threshold"]["group"]["client_ip"], "203.0.113.7");
    assert_eq!(d["threshold"]["count"], 3);
    assert_eq!(d["source"]["line_number"], 9, "the third failure from 203.0.113.7");
    assert_eq!(d["fields"]["client_ip"], "203.0.113.7", "the capture replaces the format's field");
    assert_eq!(d["fields"]["mech"], "LOGIN");
    // The line where the format reads another address: the rule still sees its own capture.
    let line = mail_log().lines().last().unwrap().to_string();
    let rules = rules.to_str().unwrap();
    let out = trapline(&["explain", "--format", "syslog", "--rules", rules, "--fields", "--line", &line]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("client_ip = \"10.9.9.9\"\n"), "{text}");
    assert!(text.contains("client_ip = \"203.0.113.50\" (extracted by mail.auth.brute)"), "{text}");
    assert!(text.contains("mech = \"LOGIN\" (extracted by mail.auth.brute)"), "{text}");
    assert!(text.contains("matches mail.auth.brute") && text.contains("matches mail.internal-relay"), "{text}");
    let out = trapline(&[
        "explain",
        "--format",
        "syslog",
        "--rules",
        rules,
        "--fields",
        "--rule",
        "mail.auth.brute",
        "--line",
        &line,
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("client_ip = \"203.0.113.50\" (extracted)"), "{text}");
    assert!(!text.contains("client_ip = \"10.9.9.9\""), "the rule's view replaces the parsed address: {text}");
    assert!(text.contains("threshold: 0 of 3 matching lines within 60 s for client_ip=203.0.113.50"), "{text}");
    // The conditions the rule went through start with its extract, at its position.
    assert!(
        text.contains("true  extract from message regex /")
            && text.contains(": client_ip = \"203.0.113.50\", mech = \"LOGIN\"  (")
            && text.contains("plain.yml:9:9)"),
        "{text}"
    );
    // A line the extract does not match: explain says which extract and what it read.
    let other = "Oct 11 22:14:10 mx postfix/smtpd[41]: connect from unknown[192.0.2.1]";
    let out =
        trapline(&["explain", "--format", "syslog", "--rules", rules, "--rule", "mail.auth.brute", "--line", other]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("no match: extract[0] is false"), "{text}");
    assert!(text.contains("false extract from message regex /"), "{text}");
    assert!(text.contains("message = \"connect from unknown[192.0.2.1]\", which its regex does not match"), "{text}");
}

#[test]
fn examples_lint_and_test_run_the_extract() {
    let (dir, rules, _) = setup();
    let out = trapline(&["test", &rules]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Lint knows captured fields: `mech` and `user` are no unknown fields of syslog, but a
    // group key that is neither captured nor parsed is (an error: TL012), with the capture it
    // probably meant.
    let out = trapline(&["lint", &rules]);
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!text.contains("TL106"), "{text}");
    let typo = dir.path().join("typo.yml");
    std::fs::write(
        &typo,
        RULES.replace("group_by: [client_ip], distinct: mech", "group_by: [clientip], distinct: mech"),
    )
    .unwrap();
    let out = trapline(&["lint", typo.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("error[TL012]") && text.contains("typo.yml:11:50"), "{text}");
    assert_eq!(out.status.code(), Some(1), "an unknown group key is an error: {text}");
    assert!(text.contains("\"clientip\" (did you mean \"client_ip\"?)"), "{text}");
    assert!(text.contains("the rule's extract captures only client_ip, mech"), "{text}");
}

#[test]
fn extract_errors_are_positioned() {
    let dir = tempfile::tempdir().unwrap();
    let write = |text: &str| {
        let p = dir.path().join("r.yml");
        std::fs::write(&p, text).unwrap();
        let out = trapline(&["lint", p.to_str().unwrap()]);
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
    };
    let head = "rules:\n  - id: t.x\n    title: x\n    severity: low\n    formats: [syslog]\n";
    let text = write(&format!(
        "{head}    extract:\n      - field: message\n        regex: 'from (?P<client_ip>[0-9.+)'\n    match: {{field: client_ip, exists: true}}\n"
    ));
    assert!(text.contains("r.yml:8:16") && text.contains("invalid regex"), "{text}");
    let text = write(&format!(
        "{head}    extract:\n      - regex: 'from [0-9.]+'\n    match: {{field: client_ip, exists: true}}\n"
    ));
    assert!(text.contains("r.yml:7:16") && text.contains("needs a named capture"), "{text}");
    let text = write(&format!(
        "{head}    extract:\n      - regex: 'from (?P<line>[0-9.]+)'\n    match: {{field: client_ip, exists: true}}\n"
    ));
    assert!(text.contains("r.yml:7:16") && text.contains("`line` is the raw line"), "{text}");
    let text = write(&format!(
        "{head}    extract:\n      - regex: '(?P<a>x)'\n      - regex: '(?P<a>y)'\n    match: {{field: a, exists: true}}\n"
    ));
    assert!(text.contains("r.yml:8:16") && text.contains("captured by an earlier extract"), "{text}");
    let text = write(&format!(
        "{head}    extract:\n      - regex: '(?P<a>x)'\n        cases: 1\n    match: {{field: a, exists: true}}\n"
    ));
    assert!(text.contains("r.yml:8:16") && text.contains("unknown key `cases`"), "{text}");
    // Not on sequence rules.
    let text = write(
        "rules:\n  - id: t.s\n    title: s\n    severity: low\n    extract: [{regex: '(?P<a>x)'}]\n    sequence:\n      within: 1m\n      steps:\n        - {match: {contains: a}, key: client_ip}\n        - {match: {contains: b}, key: client_ip}\n",
    );
    assert!(text.contains("r.yml:5:14") && text.contains("cannot have `extract`"), "{text}");
}

/// The prefilter never hides a match of a rule with `extract` (its regexes' literals, and
/// literals of conditions on captured fields looked for in the field they come from) or of a
/// condition over list elements: the candidate path gives what evaluating every rule gives.
#[test]
fn prefilter_agrees_with_brute_force_for_extracts_and_lists() {
    use trapline::engine::RuleSet;
    use trapline::parse::{FieldRegistry, TimeSettings};
    use trapline::rule::load::{SourceFile, load_sources};
    let json_rules = r#"
  - id: j.any
    title: any element
    severity: low
    formats: [json]
    match: {field: "h.a[*]", equals: [sqlmap, "10.0.0.1"]}
  - id: j.any-decoded
    title: any element decoded
    severity: low
    formats: [json]
    match: {field: "h.a[*]", transforms: [url_decode], contains: "<script"}
  - id: j.index
    title: an element by index
    severity: low
    formats: [json]
    match: {field: "h.a[1]", starts_with: nikto}
  - id: j.extract-from-element
    title: extract over an element
    severity: low
    formats: [json]
    extract: [{field: "h.a[0]", regex: 'id=(?P<id>\d+)'}]
    match: {field: id, equals: "42"}
"#;
    let text = format!("{RULES}{json_rules}");
    let loaded = load_sources(vec![SourceFile { path: "r.yml".into(), text }]).unwrap();
    let rules =
        RuleSet::compile(&loaded, &trapline::pipeline::setup::compile_options(), FieldRegistry::default()).unwrap();
    let mut lines: Vec<(&str, String)> = mail_log().lines().map(|l| ("syslog", l.to_string())).collect();
    for l in [
        r#"{"h":{"a":["x","sqlmap"]}}"#,
        r#"{"h":{"a":["%3Cscript%3E","nikto/2"]}}"#,
        r#"{"h":{"a":"10.0.0.1"}}"#,
        r#"{"h":{"a":["id=42","nikto"]}}"#,
        r#"{"h":{"a":["id=4\u0032",[1,"sqlmap"],{"x":"sqlmap"}]}}"#,
        r#"{"h":{"a":["SQLMAP","%253Cscript"]}}"#,
        r#"{"h":{"a":[]}}"#,
    ] {
        lines.push(("json", l.to_string()));
    }
    let mut checked = 0;
    let mut hit = std::collections::BTreeSet::new();
    let mut s = rules.scratch();
    for (fmt, line) in &lines {
        for variant in [line.clone(), line.to_uppercase(), line.replace("SASL", "sasl")] {
            let mut parser = trapline::config::parser_for(
                fmt,
                &Default::default(),
                TimeSettings::default(),
                &mut FieldRegistry::default(),
            )
            .unwrap();
            parser.bind(&rules.registry);
            let all = rules.applicable("any", fmt);
            rules.match_line(&parser, &all, variant.as_bytes(), &mut s);
            let fast = s.hits.clone();
            let brute: Vec<u32> = (0..rules.rules.len())
                .filter(|&i| all.get(i) && rules.explain_rule(i, &parser, variant.as_bytes(), &mut s).is_ok())
                .map(|i| i as u32)
                .collect();
            assert_eq!(fast, brute, "prefilter disagrees on {variant}");
            checked += usize::from(!brute.is_empty());
            hit.extend(brute.iter().map(|&i| rules.rules[i as usize].id.clone()));
        }
    }
    assert!(checked > 10, "{checked}");
    // Every rule matched some line (line 3 of the mail log matches none of them).
    let ids: std::collections::BTreeSet<String> = rules.rules.iter().map(|r| r.id.clone()).collect();
    assert_eq!(hit, ids);
}

/// `trapline run` (the live path, one event at a time) gives the detection the scan gives:
/// grouped by the extracted address, with the captures among its fields in the log output.
#[test]
fn run_detects_with_extracted_fields() {
    let plain = RULES.replace(", distinct: mech}", "}");
    let (_dir, root) = common::project(
        Some(&plain),
        "rules: [rules]\ntimezone: UTC\nsources:\n  - name: mail\n    paths: [\"-\"]\n    format: syslog\nactions:\n  log: {path: out.txt, console: false}\n",
    );
    let (_, stderr) = common::run_piped(&root, &mail_log());
    let got = common::detections(&root.join("out.txt"));
    let postfix: Vec<_> = got.iter().filter(|d| d["rule"]["id"] == "mail.auth.brute").collect();
    assert_eq!(postfix.len(), 1, "{got:?} {stderr}");
    assert_eq!(postfix[0]["fields"]["client_ip"], "203.0.113.7");
    assert_eq!(postfix[0]["fields"]["mech"], "LOGIN");
    assert_eq!(postfix[0]["threshold"]["group"]["client_ip"], "203.0.113.7");
    let relay: Vec<_> = got.iter().filter(|d| d["rule"]["id"] == "mail.internal-relay").collect();
    assert_eq!(relay.len(), 1, "{got:?}");
    assert_eq!(relay[0]["fields"]["client_ip"], "10.9.9.9");
}

/// Suppression without `group_by` keys on the rule's own `client_ip` when its extract
/// captures one (not on the address the format parsed, absent from these lines).
#[test]
fn default_suppression_keys_on_the_extracted_address() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("r.yml");
    let text = RULES.replace(
        "    threshold: {count: 3, within: 1m, group_by: [client_ip], distinct: mech}\n",
        "    suppress: {for: 10m}\n",
    );
    assert_ne!(text, RULES);
    std::fs::write(&rules, text).unwrap();
    let log = dir.path().join("mail.log");
    std::fs::write(&log, mail_log()).unwrap();
    let out =
        trapline(&["scan", "--json", "--format", "syslog", "--rules", rules.to_str().unwrap(), log.to_str().unwrap()]);
    let dets = detections(&out);
    let mut ips: Vec<String> = dets
        .iter()
        .filter(|d| d["rule"]["id"] == "mail.auth.brute")
        .map(|d| d["fields"]["client_ip"].as_str().unwrap().to_string())
        .collect();
    ips.sort();
    assert_eq!(ips, ["198.51.100.0", "198.51.100.1", "198.51.100.2", "198.51.100.3", "203.0.113.50", "203.0.113.7"]);
}
