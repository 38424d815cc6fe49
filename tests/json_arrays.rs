//! JSON arrays through the real binary, on Caddy-style access logs (headers are arrays of
//! strings): elements by index (`[0]`, into objects inside arrays), conditions over every
//! element (`[*]`), `explain --fields`, positioned errors for bad paths, and hostile lines
//! (huge arrays, deep nesting, bytes that are not UTF-8) that must not stop a scan.

mod common;

use common::trapline;

const RULES: &str = r#"rules:
  - id: caddy.xff-internal
    title: a forwarded-for hop inside the internal network
    severity: medium
    formats: [json]
    match: {field: "request.headers.X-Forwarded-For[*]", cidr: [10.0.0.0/8, 192.168.0.0/16]}
  - id: caddy.first-agent-scanner
    title: first User-Agent header of a scanner
    severity: high
    formats: [json]
    match: {field: "request.headers.User-Agent[0]", starts_with: [sqlmap, nikto]}
    examples:
      match: ['{"request":{"headers":{"User-Agent":["sqlmap/1.7"]}}']
      no_match: ['{"request":{"headers":{"User-Agent":["curl/8", "sqlmap/1.7"]}}']
  - id: caddy.second-cert
    title: intermediate certificate of a given issuer
    severity: low
    formats: [json]
    match: {field: "request.tls.chain[1].issuer", contains: Evil}
  - id: caddy.any-agent-encoded
    title: an encoded script tag in any User-Agent header
    severity: high
    formats: [json]
    match:
      field: "request.headers.User-Agent[*]"
      transforms: [url_decode, lowercase]
      contains: "<script"
  - id: caddy.no-agent-is-a-browser
    title: none of the User-Agent headers is a browser
    severity: info
    formats: [json]
    match:
      all:
        - {field: "request.headers.User-Agent[*]", exists: true}
        - not: {field: "request.headers.User-Agent[*]", starts_with: Mozilla/}
    threshold: {count: 2, within: 1m, group_by: ["request.remote_ip"]}
  - id: caddy.last-hop-internal
    title: the proxy nearest to us was reached from the internal network
    severity: low
    formats: [json]
    match: {field: "request.headers.X-Forwarded-For[-1]", cidr: [10.0.0.0/8]}
"#;

fn caddy(ip: &str, sec: u32, headers: &str, extra: &str) -> String {
    format!(
        r#"{{"level":"info","ts":1700000{sec:03}.5,"logger":"http.log.access","msg":"handled request","request":{{"remote_ip":"{ip}","method":"GET","uri":"/","headers":{headers}{extra}}},"status":200}}"#
    )
}

/// (line, rule) of every detection of `scan --json`, in order.
fn scan(rules: &std::path::Path, log: &std::path::Path) -> Vec<(u64, String)> {
    let out =
        trapline(&["scan", "--json", "--format", "json", "--rules", rules.to_str().unwrap(), log.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|d| (d["source"]["line_number"].as_u64().unwrap(), d["rule"]["id"].as_str().unwrap().to_string()))
        .collect()
}

#[test]
fn index_and_any_element_conditions_on_caddy_lines() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("r.yml");
    std::fs::write(&rules, RULES).unwrap();
    let lines = [
        // 1: a browser, behind two public proxies: nothing.
        caddy(
            "203.0.113.1",
            1,
            r#"{"User-Agent":["Mozilla/5.0"],"X-Forwarded-For":["198.51.100.1","198.51.100.2"]}"#,
            "",
        ),
        // 2: the second hop is internal; the first agent is sqlmap.
        caddy(
            "203.0.113.2",
            2,
            r#"{"User-Agent":["sqlmap/1.7#stable"],"X-Forwarded-For":["198.51.100.1","10.1.2.3"]}"#,
            "",
        ),
        // 3: sqlmap only as the second agent; an encoded script tag in it.
        caddy("203.0.113.3", 3, r#"{"User-Agent":["curl/8.4","sqlmap %3CScript%3E"]}"#, ""),
        // 4: a certificate chain: the issuer of the second certificate.
        caddy(
            "203.0.113.4",
            4,
            r#"{"User-Agent":["Mozilla/5.0"]}"#,
            r#","tls":{"chain":[{"issuer":"Evil Root"},{"issuer":"CN=Evil Intermediate","serial":[1,2]}]}"#,
        ),
        // 5: a header written as a string rather than an array: its one element.
        caddy("203.0.113.5", 5, r#"{"User-Agent":"nikto/2.5","X-Forwarded-For":"192.168.7.7"}"#, ""),
        // 6, 7: non-browser agents from one address (the second fires the threshold).
        caddy("203.0.113.6", 6, r#"{"User-Agent":["python-requests/2.31"]}"#, ""),
        caddy("203.0.113.6", 7, r#"{"User-Agent":["Go-http-client/1.1","okhttp"]}"#, ""),
        // 8: a number, null and an object among the elements: no element is an address.
        caddy(
            "203.0.113.8",
            8,
            r#"{"User-Agent":["Mozilla/5.0"],"X-Forwarded-For":[1,null,{"ip":"10.0.0.1"},[]]}"#,
            "",
        ),
    ];
    let log = dir.path().join("access.json");
    std::fs::write(&log, lines.join("\n") + "\n").unwrap();
    let got = scan(&rules, &log);
    let want: Vec<(u64, String)> = [
        (2, "caddy.xff-internal"),
        (2, "caddy.first-agent-scanner"),
        (2, "caddy.last-hop-internal"),
        (3, "caddy.any-agent-encoded"),
        (4, "caddy.second-cert"),
        (5, "caddy.xff-internal"),
        (5, "caddy.first-agent-scanner"),
        (7, "caddy.no-agent-is-a-browser"),
    ]
    .iter()
    .map(|(l, r)| (*l, r.to_string()))
    .collect();
    assert_eq!(got, want);
    // The inline examples run through the same engine.
    let out = trapline(&["test", rules.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    // explain --fields shows the elements the rules name.
    let out =
        trapline(&["explain", "--format", "json", "--rules", rules.to_str().unwrap(), "--fields", "--line", &lines[3]]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("request.tls.chain[1].issuer = \"CN=Evil Intermediate\""), "{text}");
    assert!(text.contains("request.headers.User-Agent[0] = \"Mozilla/5.0\""), "{text}");
    assert!(text.contains("matches caddy.second-cert"), "{text}");
    let out =
        trapline(&["explain", "--format", "json", "--rules", rules.to_str().unwrap(), "--fields", "--line", &lines[1]]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(
            "request.headers.X-Forwarded-For[*] = \"198.51.100.1, 10.1.2.3\"\n    [0] = \"198.51.100.1\"\n    [1] = \"10.1.2.3\"\n"
        ),
        "{text}"
    );
}

#[test]
fn bad_paths_are_positioned_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("r.yml");
    for (field, what) in [
        ("a[*].b", "[*] must end the path"),
        ("a[x]", "an index is a number"),
        ("a[-2]", "-1 (the last)"),
        ("a[0", "write an index as [0] or [*]"),
    ] {
        std::fs::write(
            &p,
            format!("rules:\n  - id: t.x\n    title: x\n    severity: low\n    formats: [json]\n    match: {{field: \"{field}\", exists: true}}\n"),
        )
        .unwrap();
        let out = trapline(&["lint", p.to_str().unwrap()]);
        let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "{text}");
        assert!(text.contains("r.yml:6:20") && text.contains("invalid field path") && text.contains(what), "{text}");
    }
}

#[test]
fn hostile_json_lines_do_not_stop_the_scan() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("r.yml");
    std::fs::write(&rules, RULES).unwrap();
    let mut log: Vec<u8> = Vec::new();
    // 50 000 elements (under the 1 MiB line limit), the internal address last.
    log.extend_from_slice(br#"{"request":{"remote_ip":"203.0.113.9","headers":{"X-Forwarded-For":["#);
    for _ in 0..50_000 {
        log.extend_from_slice(br#""198.51.100.1","#);
    }
    log.extend_from_slice(b"\"10.9.9.9\"]}}}\n");
    // Deep nesting inside the arrays rules index into.
    log.extend_from_slice(br#"{"request":{"tls":{"chain":[1,"#);
    log.extend(std::iter::repeat_n(b'[', 200_000));
    log.extend(std::iter::repeat_n(b']', 200_000));
    log.extend_from_slice(b"]},\"headers\":{\"User-Agent\":[\"nikto\"]}}}\n");
    // Not UTF-8 in the elements, and elements of every kind.
    log.extend_from_slice(b"{\"request\":{\"headers\":{\"User-Agent\":[\"\xff\xfe%3cscript\", 1e400, true, {\"a\":[]}, \"sql\xc3\x28map\"]}}}\n");
    // Broken and cut arrays.
    log.extend_from_slice(b"{\"request\":{\"headers\":{\"User-Agent\":[\"a\" \"b\"]}}}\n");
    log.extend_from_slice(b"{\"request\":{\"headers\":{\"User-Agent\":[[[[[[\n");
    log.extend_from_slice(b"{\"request\":{\"headers\":{\"X-Forwarded-For\":[\"10.0.0.1\",\n");
    let path = dir.path().join("hostile.json");
    std::fs::write(&path, &log).unwrap();
    let got = scan(&rules, &path);
    assert!(got.contains(&(1, "caddy.xff-internal".to_string())), "the last of 50 001 elements is seen: {got:?}");
    assert!(got.contains(&(2, "caddy.first-agent-scanner".to_string())), "{got:?}");
    assert!(got.contains(&(3, "caddy.any-agent-encoded".to_string())), "{got:?}");
    assert!(got.iter().all(|(l, _)| *l <= 3 || *l == 6), "{got:?}");
}

/// `test --coverage` judges a value of a condition over list elements element by element:
/// `a` is exercised by a line whose second element is `a`, `b` by none.
#[test]
fn coverage_looks_at_each_element() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("r.yml");
    std::fs::write(
        &p,
        "rules:\n  - id: j.cov\n    title: t\n    severity: low\n    formats: [json]\n    match: {field: \"h[*]\", equals: [a, b]}\n    examples:\n      match: ['{\"h\":[\"x\",\"a\"]}']\n      no_match: ['{\"h\":[\"x\"]}']\n",
    )
    .unwrap();
    let out = trapline(&["test", "--coverage", p.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("1 passed, 0 failed"), "{text}");
    assert!(text.contains("value \"b\" (") && !text.contains("value \"a\" ("), "{text}");
}
