//! What was attacked: the `target` of the XDR templates.
//!
//! The server a request was for is named in the log when the format carries it (Apache's
//! `vhost_combined`, a JSON log's host field: the `host` field); otherwise the config names it
//! (`variables.target`: `hostname`, `ip`, `base_url`). trapline never guesses an address from
//! the machine it runs on: a honeypot's primary interface is rarely what the attacker hit
//! (a request to 127.0.0.1 is not one to 192.0.2.2).

use std::net::IpAddr;

use serde_json::{Value, json};

/// `{hostname, ip, base_url, from}` for a detection's fields and the config's variables;
/// `from` says where it came from (`log`, `config`, or null when nothing is known).
pub fn attacked(fields: &Value, vars: &Value) -> Value {
    if let Some((host, port)) = fields.get("host").and_then(Value::as_str).and_then(split_host_port) {
        let scheme = if port == Some(443) { "https" } else { "http" };
        let port_part = match port {
            Some(p) if p != 80 && p != 443 => format!(":{p}"),
            _ => String::new(),
        };
        return match host.parse::<IpAddr>() {
            Ok(ip) => {
                let shown = if ip.is_ipv6() { format!("[{ip}]") } else { ip.to_string() };
                json!({"hostname": null, "ip": ip.to_string(),
                       "base_url": format!("{scheme}://{shown}{port_part}"), "from": "log"})
            }
            Err(_) => json!({"hostname": host, "ip": null,
                             "base_url": format!("{scheme}://{host}{port_part}"), "from": "log"}),
        };
    }
    let t = &vars["target"];
    let text = |k: &str| t.get(k).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string);
    let (hostname, ip) = (text("hostname"), text("ip").filter(|i| i.parse::<IpAddr>().is_ok()));
    let base_url = text("base_url").map(|u| u.trim_end_matches('/').to_string());
    let known = hostname.is_some() || ip.is_some() || base_url.is_some();
    json!({"hostname": hostname, "ip": ip, "base_url": base_url, "from": if known { json!("config") } else { Value::Null }})
}

/// `name:port`, `[v6]:port`, `name` or a bare IPv6 address, when it is a plausible host
/// name or address (the field may come from a client-controlled header: anything else is
/// ignored rather than put into a URL).
fn split_host_port(s: &str) -> Option<(String, Option<u16>)> {
    let s = s.trim();
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        (h, after.strip_prefix(':'))
    } else if s.parse::<IpAddr>().is_ok() {
        (s, None)
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    let port = match port {
        Some(p) => Some(p.parse::<u16>().ok()?),
        None => None,
    };
    let host = host.to_ascii_lowercase();
    let ok = host.parse::<IpAddr>().is_ok()
        || (!host.is_empty()
            && host.len() <= 253
            && host.split('.').all(|l| {
                !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            }));
    ok.then_some((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_names_the_target_first_then_the_config_never_a_guess() {
        let vars =
            json!({"target": {"hostname": "honeypot-1", "ip": "198.51.100.10", "base_url": "https://hp.example/"}});
        let t = attacked(&json!({"host": "WWW.Example.org:443"}), &vars);
        assert_eq!(
            t,
            json!({"hostname": "www.example.org", "ip": null, "base_url": "https://www.example.org", "from": "log"})
        );
        let t = attacked(&json!({"host": "127.0.0.1:8080"}), &vars);
        assert_eq!(t["ip"], "127.0.0.1");
        assert_eq!(t["base_url"], "http://127.0.0.1:8080");
        assert_eq!(attacked(&json!({"host": "[::1]:80"}), &vars)["base_url"], "http://[::1]");
        let t = attacked(&json!({}), &vars);
        assert_eq!(
            t,
            json!({"hostname": "honeypot-1", "ip": "198.51.100.10", "base_url": "https://hp.example", "from": "config"})
        );
        let t = attacked(&json!({}), &json!({"target": {"hostname": "", "ip": ""}}));
        assert_eq!(t, json!({"hostname": null, "ip": null, "base_url": null, "from": null}));
    }

    #[test]
    fn hostile_host_values_are_not_targets() {
        let vars = json!({});
        for h in ["evil.com/x?y", "a b", "\"><script>", "x:99999", "", "[::1", "a..b", &"a".repeat(300)] {
            assert_eq!(attacked(&json!({"host": h}), &vars)["from"], Value::Null, "{h:?}");
        }
    }
}
