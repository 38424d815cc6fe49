//! HTTPS of `trapline run`'s HTTP server: a real certificate made with `openssl`, a real TLS
//! client. Runs under libtest-mimic (`harness = false`): without the `openssl` command the
//! test is reported *ignored*, unless TRAPLINE_E2E_REQUIRED=1 (CI), where it fails.

mod common;

use common::http::exchange;
use common::{Daemon, project};

const RULE: &str = "rules:\n  - id: t.x\n    title: x\n    severity: low\n    match: {contains: zzz}\n";
const TOKEN: &str = "s3cret-token-for-tests";

fn config(listen: &str) -> String {
    format!(
        "rules: [rules]\nstate_dir: state\nactions:\n  log: {{path: out.txt}}\nsources:\n  - name: web\n    paths: [logs/access.log]\nhttp:\n  listen: \"{listen}\"\n  token_file: token.txt\n"
    )
}

fn main() {
    let args = libtest_mimic::Arguments::from_args();
    let required = std::env::var("TRAPLINE_E2E_REQUIRED").is_ok_and(|v| v == "1");
    let have = std::process::Command::new("openssl").arg("version").output().is_ok_and(|o| o.status.success());
    let ignored = !have && !required;
    if ignored {
        eprintln!("ignored: https: no openssl command to make a test certificate");
    }
    let trial = libtest_mimic::Trial::test("tls_with_a_certificate_and_beyond_loopback", move || {
        if !have {
            return Err("TRAPLINE_E2E_REQUIRED=1 but there is no openssl command".into());
        }
        tls_with_a_certificate_and_beyond_loopback();
        Ok(())
    })
    .with_ignored_flag(ignored);
    libtest_mimic::run(&args, vec![trial]).exit();
}

/// With a certificate, the server speaks HTTPS only and may listen beyond loopback; the
/// session cookie is `Secure`.
fn tls_with_a_certificate_and_beyond_loopback() {
    let (_d, p) = project(Some(RULE), &config("0.0.0.0:0"));
    std::fs::write(p.join("token.txt"), TOKEN).unwrap();
    std::fs::write(p.join("logs/access.log"), "").unwrap();
    let made = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-addext", "basicConstraints=critical,CA:FALSE"])
        .args(["-addext", "extendedKeyUsage=serverAuth", "-keyout", "key.pem", "-out", "cert.pem"])
        .current_dir(&p)
        .output()
        .unwrap();
    assert!(made.status.success(), "openssl: {}", String::from_utf8_lossy(&made.stderr));
    let cfg = std::fs::read_to_string(p.join("trapline.yml")).unwrap();
    std::fs::write(p.join("trapline.yml"), format!("{cfg}  tls: {{cert: cert.pem, key: key.pem}}\n")).unwrap();
    let d = Daemon::start(&p.join("trapline.yml"));
    let port = d.http_addr().rsplit(':').next().unwrap().to_string();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let cert = reqwest::Certificate::from_pem(&std::fs::read(p.join("cert.pem")).unwrap()).unwrap();
    let client = reqwest::Client::builder().add_root_certificate(cert).build().unwrap();
    let (status, body) = rt.block_on(async {
        let r = client.get(format!("https://localhost:{port}/metrics")).bearer_auth(TOKEN).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    });
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("trapline_lines_total") || body.contains("# EOF"), "{body}");
    let login = rt.block_on(async {
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(p.join("cert.pem")).unwrap()).unwrap())
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
            .post(format!("https://localhost:{port}/login"))
            .form(&[("token", TOKEN)])
            .send()
            .await
            .unwrap()
    });
    let cookie = login.headers().get("set-cookie").unwrap().to_str().unwrap().to_string();
    assert!(cookie.contains("; Secure") && cookie.contains("HttpOnly"), "{cookie}");
    // Plain HTTP on the TLS port gets no answer.
    let bearer = format!("Bearer {TOKEN}");
    let (status, _) = exchange(&format!("127.0.0.1:{port}"), "GET", "/metrics", &[("Authorization", &bearer)], "");
    assert_eq!(status, 0, "no HTTP answer without TLS");
}
