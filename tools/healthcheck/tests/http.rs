//! HTTP and HTTPS checks against a server that misbehaves in every way an
//! endpoint can: each fault gives the right status and a clear detail
//! within the timeout, and never a panic.

mod support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use opskit_testkit::pki::{Pki, self_signed};
use opskit_testkit::tools::{Output, run};
use serde_json::Value;
use support::{healthcheck, serve, serve_tls};

fn check(args: &[&str]) -> (Output, Value, Duration) {
    let t = Instant::now();
    let out = run(healthcheck().args(args));
    let took = t.elapsed();
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    let checks = out.events("check");
    assert_eq!(checks.len(), 1, "{}", out.stdout);
    let c = checks[0].clone();
    (out, c, took)
}

#[test]
fn healthy_endpoint_with_json_conditions() {
    let s = serve();
    let (out, c, _) = check(&[
        &s.url("/ok"),
        "--expect",
        "status == 200",
        "--expect",
        "json.status == healthy",
        "--expect",
        "json.checks.0.ok == true",
        "--warn",
        "json.db.latency_ms > 50",
        "--expect",
        "body contains healthy",
        "--expect",
        "header.content-type =~ ^application/json",
    ]);
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert_eq!(c["status"], "OK");
    assert_eq!(c["values"]["status"], 200);
    assert_eq!(c["conditions"].as_array().unwrap().len(), 6);
    assert_eq!(c["conditions"][1]["value"], "healthy");
    assert_eq!(c["conditions"][5]["expr"], "json.db.latency_ms > 50");
    assert_eq!(c["conditions"][5]["value"], 12);
    assert_eq!(c["conditions"][5]["met"], false);
    assert_eq!(out.summary()["status"], "OK");
}

#[test]
fn failing_conditions_say_which_and_why() {
    let s = serve();
    let (out, c, _) = check(&[&s.url("/degraded"), "--expect", "json.status == healthy"]);
    assert_eq!(out.code, 2);
    assert_eq!(c["status"], "CRITICAL");
    let d = c["detail"].as_str().unwrap();
    assert!(
        d.starts_with("json.status is degraded (expect json.status == healthy)"),
        "{d}"
    );
    // A missing JSON field fails an expectation.
    let (out, c, _) = check(&[&s.url("/ok"), "--expect", "json.nope == 1"]);
    assert_eq!(out.code, 2);
    assert!(
        c["detail"].as_str().unwrap().contains("json.nope is null"),
        "{c}"
    );
    // warn / crit thresholds on the response time.
    let (out, c, _) = check(&[
        &s.url("/slow/300"),
        "--warn",
        "time_s > 100ms",
        "--crit",
        "time_s > 5s",
    ]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert_eq!(c["status"], "WARNING");
}

#[test]
fn default_is_2xx() {
    let s = serve();
    let (out, c, _) = check(&[&s.url("/down")]);
    assert_eq!(out.code, 2);
    assert!(
        c["detail"]
            .as_str()
            .unwrap()
            .starts_with("status is 503 (expect status == 2xx)"),
        "{c}"
    );
    let (out, _, _) = check(&[&s.url("/teapot"), "--expect", "status == 418"]);
    assert_eq!(out.code, 0);
}

#[test]
fn hang_after_accept_times_out_on_time() {
    let s = serve();
    let (out, c, took) = check(&[&s.url("/hang"), "--timeout", "1s"]);
    assert_eq!(out.code, 2);
    assert!(c["detail"].as_str().unwrap().contains("timed out"), "{c}");
    assert!(took < Duration::from_secs(3), "took {took:?}");
}

#[test]
fn slow_answer_within_and_beyond_the_timeout() {
    let s = serve();
    let (out, c, _) = check(&[&s.url("/slow/400"), "--timeout", "3s"]);
    assert_eq!(out.code, 0, "{c}");
    assert!(c["values"]["time_s"].as_f64().unwrap() >= 0.4);
    let (out, c, took) = check(&[&s.url("/slow/3000"), "--timeout", "500ms"]);
    assert_eq!(out.code, 2);
    assert!(c["detail"].as_str().unwrap().contains("timed out"), "{c}");
    assert!(took < Duration::from_secs(2), "took {took:?}");
}

#[test]
fn a_1gb_body_is_read_only_up_to_the_cap() {
    let s = serve();
    let (out, c, took) = check(&[&s.url("/huge"), "--body-limit", "1M"]);
    assert_eq!(out.code, 0, "{c}");
    assert_eq!(c["values"]["body_truncated"], true);
    assert_eq!(c["values"]["body_bytes"], 1 << 20);
    assert!(
        c["detail"]
            .as_str()
            .unwrap()
            .contains("over the 1.0 MiB cap"),
        "{c}"
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");
    // The client hung up long before the gigabyte was sent.
    std::thread::sleep(Duration::from_millis(200));
    let written = s.stats.written.load(Ordering::Relaxed);
    assert!(written < 256 << 20, "server wrote {written} bytes");
}

#[test]
fn garbage_instead_of_http() {
    let s = serve();
    let (out, c, _) = check(&[&s.url("/garbage"), "--timeout", "2s"]);
    assert_eq!(out.code, 2);
    assert!(
        c["detail"]
            .as_str()
            .unwrap()
            .contains("not a valid HTTP response"),
        "{c}"
    );
}

#[test]
fn redirects_followed_looped_or_not_followed() {
    let s = serve();
    let (out, c, _) = check(&[&s.url("/moved"), "--expect", "json.status == healthy"]);
    assert_eq!(out.code, 0, "{c}");
    assert_eq!(c["values"]["redirects"], 1);
    assert!(c["values"]["url"].as_str().unwrap().ends_with("/ok"));
    let (out, c, _) = check(&[&s.url("/loop")]);
    assert_eq!(out.code, 2);
    assert!(
        c["detail"].as_str().unwrap().contains("too many redirects"),
        "{c}"
    );
    let (out, c, _) = check(&[&s.url("/moved"), "--no-follow"]);
    assert_eq!(out.code, 2);
    assert_eq!(c["values"]["status"], 301);
    let (out, _, _) = check(&[&s.url("/moved"), "--no-follow", "--expect", "status == 3xx"]);
    assert_eq!(out.code, 0);
}

#[test]
fn connection_closed_mid_body() {
    let s = serve();
    let (out, c, _) = check(&[&s.url("/midbody"), "--timeout", "2s"]);
    assert_eq!(out.code, 2, "{c}");
    let d = c["detail"].as_str().unwrap();
    assert!(
        d.contains("HTTP 200, then the body broke off after 14 bytes"),
        "{d}"
    );
}

#[test]
fn refused_and_unresolvable() {
    let (out, c, _) = check(&["http://127.0.0.1:1/health"]);
    assert_eq!(out.code, 2);
    assert!(c["detail"].as_str().unwrap().contains("refused"), "{c}");
    let (out, c, _) = check(&["http://no-such-host.invalid/health", "--timeout", "3s"]);
    assert_eq!(out.code, 2);
    assert!(
        c["detail"].as_str().unwrap().contains("host not found"),
        "{c}"
    );
}

#[test]
fn custom_headers_are_sent_and_passwords_not_shown() {
    let s = serve();
    let url = s.url("/headers").replace("http://", "http://ops:s3cret@");
    let (out, c, _) = check(&[
        &url,
        "-H",
        "X-Probe: opskit",
        "--expect",
        "body contains x-probe: opskit",
    ]);
    assert_eq!(out.code, 0, "{c}");
    assert!(!out.stdout.contains("s3cret"));
    // The whole userinfo of a web URL is hidden: a user name alone may be
    // a token (https://TOKEN@host/).
    assert!(c["target"].as_str().unwrap().contains("://***@"), "{c}");
}

#[test]
fn proxy_settings_do_not_divert_a_loopback_check() {
    let s = serve();
    let out = run(healthcheck()
        .arg(s.url("/ok"))
        .env("http_proxy", "http://127.0.0.1:1")
        .env("HTTP_PROXY", "http://127.0.0.1:1"));
    assert_eq!(out.code, 0, "{}", out.stdout);
}

#[test]
fn https_trusted_expired_and_self_signed() {
    let pki = Pki::default();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    pki.write_ca(&ca);
    let good = pki.leaf(-1, 90);
    let s = serve_tls(good.chain, good.key);
    // Not trusted without the CA...
    let (out, c, _) = check(&[&s.https("/ok"), "--timeout", "3s"]);
    assert_eq!(out.code, 2);
    assert!(c["detail"].as_str().unwrap().contains("TLS error"), "{c}");
    // ...trusted with it, and the tls:// check reads the expiry.
    let (out, c, _) = check(&[&s.https("/ok"), "--ca", ca.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{c}");
    let tls = format!("tls://localhost:{}", s.addr.port());
    let (out, c, _) = check(&[&tls, "--ca", ca.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{c}");
    assert_eq!(c["values"]["trusted"], true);
    let days = c["values"]["days_left"].as_f64().unwrap();
    assert!((88.0..=90.0).contains(&days), "{days}");
    // --insecure skips verification.
    let (out, _, _) = check(&[&s.https("/ok"), "--insecure"]);
    assert_eq!(out.code, 0);

    let expired = pki.leaf(-60, -2);
    let s = serve_tls(expired.chain, expired.key);
    let (out, c, _) = check(&[&s.https("/ok"), "--ca", ca.to_str().unwrap()]);
    assert_eq!(out.code, 2);
    assert!(
        c["detail"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("expired"),
        "{c}"
    );
    let tls = format!("tls://localhost:{}", s.addr.port());
    let (out, c, _) = check(&[&tls, "--ca", ca.to_str().unwrap()]);
    assert_eq!(out.code, 2, "{c}");
    assert!(c["values"]["days_left"].as_f64().unwrap() < 0.0);
    assert_eq!(c["values"]["trusted"], false);

    let soon = pki.leaf(-80, 10);
    let s = serve_tls(soon.chain, soon.key);
    let tls = format!("tls://localhost:{}", s.addr.port());
    let (out, c, _) = check(&[&tls, "--ca", ca.to_str().unwrap()]);
    assert_eq!(out.code, 1, "{c}");
    assert_eq!(c["status"], "WARNING");

    let own = self_signed();
    let s = serve_tls(own.chain, own.key);
    let (out, c, _) = check(&[&s.https("/ok")]);
    assert_eq!(out.code, 2);
    assert!(c["detail"].as_str().unwrap().contains("TLS error"), "{c}");
    let tls = format!("tls://localhost:{}", s.addr.port());
    let (out, c, _) = check(&[&tls]);
    assert_eq!(out.code, 2);
    assert_eq!(c["values"]["trusted"], false);
    assert!(
        c["detail"].as_str().unwrap().contains("trusted is false"),
        "{c}"
    );
}

#[test]
fn tls_handshake_that_never_comes() {
    let s = serve();
    let tls = format!("tls://127.0.0.1:{}", s.addr.port());
    // A plain HTTP server waits for a request line; the TLS hello gets no answer.
    let (out, c, took) = check(&[&tls, "--timeout", "1s"]);
    assert_eq!(out.code, 2, "{c}");
    assert!(took < Duration::from_secs(3));
}

#[test]
fn cert_files() {
    let pki = Pki::default();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("leaf.pem");
    std::fs::write(&p, pki.leaf(-1, 5).pem).unwrap();
    let (out, c, _) = check(&[&format!("cert:{}", p.display())]);
    assert_eq!(out.code, 2, "{c}");
    assert!(
        c["detail"].as_str().unwrap().contains("days_left is 4"),
        "{c}"
    );
    let (out, c, _) = check(&[&format!("cert:{}", p.display()), "--crit", "days_left < 1"]);
    assert_eq!(out.code, 0, "{c}");
    std::fs::write(&p, "not a certificate").unwrap();
    let (out, c, _) = check(&[&format!("cert:{}", p.display())]);
    assert_eq!(out.code, 2);
    assert!(
        c["detail"].as_str().unwrap().contains("no certificate"),
        "{c}"
    );
}
