//! Probes: each kind of check looks at its target and reports its fields.
//! A probe that cannot look (refused, timed out, no such path) returns the
//! reason, and the check is CRITICAL.

mod http;
mod local;
mod net;
mod pg;
mod remote;
mod replication;
mod trust;

use serde_json::{Map, Value};

use crate::spec::{Check, Kind};

/// What a probe saw.
#[derive(Debug, Default)]
pub struct Observation {
    /// The check's fields (see `spec`), null where there is no value.
    pub values: Map<String, Value>,
    /// A short line for people: "HTTP 200 in 12 ms".
    pub summary: String,
    /// HTTP: the body parsed as JSON, for `json.PATH`.
    pub json: Option<Value>,
    /// HTTP: the response headers, names in lower case, for `header.NAME`.
    pub headers: Vec<(String, String)>,
    /// HTTP: the body as read (up to the cap), for `body` conditions.
    pub body: Option<String>,
}

impl Observation {
    pub fn set(&mut self, field: &str, v: impl Into<Value>) {
        self.values.insert(field.to_string(), v.into());
    }

    /// The value of a field as conditions see it.
    pub fn value(&self, field: &str) -> Value {
        if let Some(path) = field.strip_prefix("json") {
            let Some(mut v) = self.json.as_ref() else {
                return Value::Null;
            };
            for part in path.split('.').filter(|p| !p.is_empty()) {
                v = match v {
                    Value::Object(m) => m.get(part),
                    Value::Array(a) => part.parse::<usize>().ok().and_then(|i| a.get(i)),
                    _ => None,
                }
                .unwrap_or(&Value::Null);
            }
            return v.clone();
        }
        if let Some(name) = field.strip_prefix("header.") {
            return self
                .headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| Value::from(v.as_str()))
                .unwrap_or(Value::Null);
        }
        if field == "body" {
            return self.body.clone().map(Value::from).unwrap_or(Value::Null);
        }
        self.values.get(field).cloned().unwrap_or(Value::Null)
    }
}

/// Run the probe for one check (no retries, no outer timeout).
pub fn run(check: &Check) -> Result<Observation, String> {
    match check.kind {
        Kind::Http => http::probe(check),
        Kind::Postgres => pg::probe(check),
        Kind::Tcp => net::tcp(check),
        Kind::Tls => net::tls(check),
        Kind::Cert => net::cert_file(check),
        Kind::Disk => local::disk(check),
        Kind::Backup => local::backup(check),
        Kind::Migrations => local::migrations(check),
        Kind::Offsite => remote::offsite(check),
        Kind::Wal => local::wal(check),
    }
}

/// `HOST:PORT` of a `tcp://` or `tls://` target.
fn host_port(check: &Check, default_port: Option<u16>) -> Result<(String, u16), String> {
    let rest = check
        .target
        .split_once("://")
        .map(|(_, r)| r)
        .unwrap_or("")
        .trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (
            h,
            p.parse::<u16>()
                .map_err(|_| format!("bad port '{p}' in {}", check.shown))?,
        ),
        _ => (
            rest,
            default_port.ok_or_else(|| format!("{}: expected HOST:PORT", check.shown))?,
        ),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("{}: expected HOST:PORT", check.shown));
    }
    Ok((host.to_string(), port))
}

/// Milliseconds, rounded, as a float of seconds.
fn secs(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1e4).round() / 1e4
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host.ends_with(".localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}
