//! `http://` and `https://`: one request, the body read up to a cap.

use std::io::Read;
use std::time::Instant;

use ureq::{Agent, ResponseExt};

use super::{Observation, is_loopback, secs};
use crate::spec::Check;

pub fn probe(c: &Check) -> Result<Observation, String> {
    let o = &c.http;
    let uri: ureq::http::Uri = c
        .target
        .parse()
        .map_err(|e| format!("bad URL {}: {e}", c.shown))?;
    let agent = agent(c, &uri)?;
    let start = Instant::now();
    let mut req = if o.method == "HEAD" {
        agent.head(&uri)
    } else {
        agent.get(&uri)
    }
    .header("Accept", "application/json, text/plain;q=0.9, */*;q=0.5");
    for (k, v) in &o.headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let resp = req.call().map_err(|e| describe(&e, c))?;
    observe(c, resp, start)
}

/// An agent for one check: its deadline, redirects, small buffers, trust,
/// and no proxy for loopback.
fn agent(c: &Check, uri: &ureq::http::Uri) -> Result<Agent, String> {
    let o = &c.http;
    let host = uri.host().unwrap_or("");
    let https = uri.scheme_str() == Some("https");
    let mut cfg = Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(c.timeout))
        .max_redirects(if o.follow_redirects { 10 } else { 0 })
        .save_redirect_history(true)
        .user_agent(concat!("opskit-healthcheck/", env!("CARGO_PKG_VERSION")))
        .max_idle_connections(0)
        // ureq's 128 KiB buffers each way, times 100 checks at once, would
        // be most of the memory; health answers are small.
        .input_buffer_size(32 << 10)
        .output_buffer_size(8 << 10)
        .max_response_header_size(32 << 10)
        // ureq honours HTTP(S)_PROXY, even for a loopback check.
        .proxy(if is_loopback(host) {
            None
        } else {
            ureq::Proxy::try_from_env()
        });
    if https || o.follow_redirects {
        cfg = cfg.tls_config(opskit::certs::ureq_tls(o.ca.as_deref(), o.insecure)?);
    }
    Ok(cfg.build().into())
}

/// What the response shows: status, headers, redirects, the body up to
/// its cap.
fn observe(
    c: &Check,
    mut resp: ureq::http::Response<ureq::Body>,
    start: Instant,
) -> Result<Observation, String> {
    let o = &c.http;
    let status = resp.status().as_u16();
    let headers: Vec<(String, String)> = resp
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let redirects = resp
        .get_redirect_history()
        .map(|h| h.len().saturating_sub(1))
        .unwrap_or(0);
    let final_url = crate::spec::redact(&resp.get_uri().to_string());
    let mut body = Vec::new();
    resp.body_mut()
        .as_reader()
        .take(o.body_limit + 1)
        .read_to_end(&mut body)
        .map_err(|e| {
            format!(
                "HTTP {status}, then the body broke off after {} bytes: {}",
                body.len(),
                io_reason(&e, c)
            )
        })?;
    let truncated = body.len() as u64 > o.body_limit;
    body.truncate(o.body_limit as usize);
    let elapsed = start.elapsed();
    let mut obs = Observation::default();
    obs.set("status", status);
    obs.set("time_s", secs(elapsed));
    obs.set("body_bytes", body.len());
    obs.set("body_truncated", truncated);
    obs.set("redirects", redirects);
    obs.set("url", final_url);
    obs.json = serde_json::from_slice(&body).ok();
    obs.body = Some(String::from_utf8_lossy(&body).into_owned());
    obs.headers = headers;
    obs.summary = format!(
        "HTTP {status} in {} ms{}",
        elapsed.as_millis(),
        if truncated {
            format!(
                ", body over the {} cap (read no further)",
                opskit::units::format_size(o.body_limit)
            )
        } else {
            String::new()
        }
    );
    Ok(obs)
}

fn io_reason(e: &std::io::Error, c: &Check) -> String {
    let s = e.to_string();
    if let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        format!("TLS error: {tls}")
    } else if s.contains("timeout")
        || s.contains("timed out")
        || e.kind() == std::io::ErrorKind::TimedOut
    {
        format!(
            "timed out after {}",
            opskit::units::format_duration(c.timeout)
        )
    } else if s.contains("lookup address") {
        format!("host not found (DNS): {s}")
    } else if e.kind() == std::io::ErrorKind::ConnectionRefused {
        "connection refused".into()
    } else {
        s
    }
}

/// An HTTP failure in words an operator acts on.
fn describe(e: &ureq::Error, c: &Check) -> String {
    use ureq::Error as E;
    match e {
        E::Timeout(t) => format!(
            "timed out after {} ({t})",
            opskit::units::format_duration(c.timeout)
        ),
        E::HostNotFound => "host not found (DNS lookup failed)".into(),
        E::ConnectionFailed => "connection failed".into(),
        E::Io(io) => io_reason(io, c),
        E::TooManyRedirects => "too many redirects (more than 10; a redirect loop?)".into(),
        E::Protocol(p) => format!("not a valid HTTP response: {p}"),
        E::Rustls(r) => format!("TLS error: {r}"),
        E::Tls(t) => format!("TLS error: {t}"),
        // ureq's text holds the URL (the target's, or a redirect's).
        E::BadUri(u) => format!("bad URL: {}", opskit::pgconn::redact_urls_in(u)),
        other => other.to_string(),
    }
}
