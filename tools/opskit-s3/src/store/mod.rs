//! The S3 calls opskit makes, signed by rusty-s3 (SigV4, query-string
//! signatures) and sent with ureq: head, put (conditional), multipart
//! uploads, get, list, delete. Every failure is one line naming the
//! endpoint, the bucket and the object, never a secret.

use std::io::Read;
use std::time::Duration;

mod lock;

pub use lock::retain_until;
mod multipart;
mod sign;

use rusty_s3::actions::{ListObjectsV2, ListObjectsV2Response, S3Action};
use rusty_s3::{Bucket, Credentials, UrlStyle};
use ureq::Agent;
use ureq::http::Response;

use chrono::{DateTime, Utc};

use crate::Remote;
use crate::aws::Settings;
use opskit::{Error, Result};

/// How long a signed request stays valid.
const SIGNED_FOR: Duration = Duration::from_secs(3600);
/// The object metadata that carries a file's sha256 (hex).
const META_SHA256: &str = "x-amz-meta-sha256";
/// The most objects one listing holds (about 100 bytes each in memory): a
/// year of a busy server's WAL, and its sets, fit several times over.
pub const MAX_LISTED: usize = 5_000_000;

/// An object as a listing or a HEAD shows it.
#[derive(Debug, Clone)]
pub struct Object {
    pub key: String,
    pub size: u64,
    /// From the object's metadata (objects offsite wrote).
    pub sha256: Option<String>,
}

/// A multipart upload that was started and neither completed nor aborted.
#[derive(Debug, Clone)]
pub struct Unfinished {
    pub key: String,
    pub id: String,
    pub started: Option<DateTime<Utc>>,
}

/// What a conditional write came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    Created,
    /// An object of that name exists already (HTTP 412).
    Exists,
}

/// One bucket on one endpoint, with its credentials.
pub struct Store {
    agent: Agent,
    bucket: Bucket,
    creds: Credentials,
    /// For messages: without userinfo.
    endpoint: String,
    pub remote: Remote,
}

/// How a store is reached.
pub struct Options {
    pub settings: Settings,
    /// Path-style addressing (`endpoint/bucket/key`), as S3-compatible
    /// servers on an address need.
    pub path_style: bool,
    pub ca: Option<std::path::PathBuf>,
    /// Connecting and waiting for an answer.
    pub timeout: Duration,
}

impl Store {
    pub fn new(remote: Remote, o: Options) -> Result<Store> {
        let s = &o.settings;
        let endpoint = s
            .endpoint
            .clone()
            .unwrap_or_else(|| format!("https://s3.{}.amazonaws.com", s.region));
        // Messages name the endpoint without its userinfo.
        let shown = opskit::pgconn::redact(&endpoint);
        let url: ureq::http::Uri = endpoint
            .parse()
            .map_err(|_| Error::usage(format!("endpoint '{shown}' is not a URL")))?;
        let host = url.host().unwrap_or_default().to_string();
        let local = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok();
        let style = if o.path_style || local {
            UrlStyle::Path
        } else {
            UrlStyle::VirtualHost
        };
        let bucket = Bucket::new(
            endpoint
                .parse()
                .map_err(|e| Error::usage(format!("endpoint '{shown}': {e}")))?,
            style,
            remote.bucket.clone(),
            s.region.clone(),
        )
        .map_err(|e| Error::usage(format!("endpoint '{shown}': {e}")))?;
        let creds = match &s.token {
            Some(t) => Credentials::new_with_token(&s.key, &s.secret, t),
            None => Credentials::new(&s.key, &s.secret),
        };
        let ca = o.ca.as_deref().or(s.ca_bundle.as_deref());
        let loopback = host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|a| a.is_loopback());
        let agent = Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(o.timeout))
            .timeout_recv_response(Some(o.timeout))
            .user_agent(concat!("opskit-offsite/", env!("CARGO_PKG_VERSION")))
            .proxy(if loopback {
                None
            } else {
                ureq::Proxy::try_from_env()
            })
            .tls_config(opskit::certs::ureq_tls(ca, false).map_err(Error::usage)?)
            .build()
            .into();
        Ok(Store {
            agent,
            bucket,
            creds,
            endpoint: shown,
            remote,
        })
    }

    /// "bucket B at ENDPOINT", for messages.
    fn whereis(&self) -> String {
        format!("bucket {} at {}", self.remote.bucket, self.endpoint)
    }

    /// `e` may quote the signed request URL (ureq's "bad uri"): its
    /// userinfo and signature are hidden.
    fn fail(&self, key: &str, what: &str, e: impl std::fmt::Display) -> Error {
        let e = opskit::pgconn::redact_urls_in(&e.to_string());
        self.line(key, what, &e, tls_hint(&e))
    }

    /// "WHAT s3://BUCKET/KEY (bucket B at ENDPOINT): WHY HINT".
    fn line(&self, key: &str, what: &str, why: &str, hint: &str) -> Error {
        Error::failure(format!(
            "{what} s3://{}/{key} ({}): {why}{hint}",
            self.remote.bucket,
            self.whereis()
        ))
    }

    /// A non-2xx answer as one line: the S3 error code and message.
    fn refused(&self, key: &str, what: &str, mut resp: Response<ureq::Body>) -> Error {
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .with_config()
            .limit(64 << 10)
            .read_to_string()
            .unwrap_or_default();
        let tag = |t: &str| {
            body.split_once(&format!("<{t}>"))
                .and_then(|(_, r)| r.split_once(&format!("</{t}>")))
                .map(|(v, _)| v.to_string())
        };
        let code = tag("Code").unwrap_or_else(|| format!("HTTP {status}"));
        let why = match code.as_str() {
            "InvalidAccessKeyId" | "SignatureDoesNotMatch" | "AccessDenied" => {
                " (the credentials are wrong or not allowed)"
            }
            "NoSuchBucket" => " (the bucket does not exist)",
            _ => "",
        };
        let msg = tag("Message").map(|m| format!(": {m}")).unwrap_or_default();
        // An answer, not a transport failure: no TLS hint.
        let answer = opskit::pgconn::redact_urls_in(&format!("{code}{msg}{why}"));
        self.line(key, what, &answer, "")
    }

    /// Send a request without a body; no answer at all is an error naming
    /// the object and what was being done.
    fn call(
        &self,
        method: &str,
        url: &url::Url,
        key: &str,
        what: &str,
    ) -> Result<Response<ureq::Body>> {
        let req = ureq::http::Request::builder()
            .method(method)
            .uri(url.as_str())
            .body(())
            .map_err(|e| self.fail(key, what, e))?;
        self.agent.run(req).map_err(|e| self.fail(key, what, e))
    }

    pub fn head(&self, key: &str) -> Result<Option<Object>> {
        let url = self
            .bucket
            .head_object(Some(&self.creds), key)
            .sign(SIGNED_FOR);
        let resp = self.call("HEAD", &url, key, "checking")?;
        match resp.status().as_u16() {
            200 => Ok(Some(Object {
                key: key.into(),
                size: header_u64(&resp, "content-length").unwrap_or(0),
                sha256: header(&resp, META_SHA256),
            })),
            404 => Ok(None),
            _ => Err(self.refused(key, "checking", resp)),
        }
    }

    /// PUT a whole object of `len` bytes from `body`, only if no object of
    /// that name exists (`If-None-Match: *`).
    pub fn put(
        &self,
        key: &str,
        len: u64,
        sha256: &str,
        lock: Option<&str>,
        body: impl Read,
    ) -> Result<Put> {
        let mut headers = object_headers(sha256, lock);
        // The checksum, and the algorithm named as the SDKs name it: AWS
        // refuses a PUT under Object Lock without Content-MD5 or
        // x-amz-sdk-checksum-algorithm.
        headers.push(("x-amz-checksum-sha256", b64_of_hex(sha256)));
        headers.push(("x-amz-sdk-checksum-algorithm", "SHA256".into()));
        let mut action = self.bucket.put_object(Some(&self.creds), key);
        for (k, v) in &headers {
            action.headers_mut().insert(*k, v.clone());
        }
        let url = action.sign(SIGNED_FOR);
        let mut req = self
            .agent
            .put(url.as_str())
            .header("content-length", len.to_string())
            .header("if-none-match", "*");
        for (k, v) in &headers {
            req = req.header(*k, v);
        }
        let mut body = body;
        let resp = req
            .send(ureq::SendBody::from_reader(&mut body))
            .map_err(|e| self.fail(key, "uploading", e))?;
        match resp.status().as_u16() {
            200..=299 => Ok(Put::Created),
            412 => Ok(Put::Exists),
            _ => Err(self.refused(key, "uploading", resp)),
        }
    }

    /// Stream an object: its size and a reader of its bytes.
    pub fn get(&self, key: &str) -> Result<(u64, impl Read + use<>)> {
        let url = self
            .bucket
            .get_object(Some(&self.creds), key)
            .sign(SIGNED_FOR);
        let resp = self.call("GET", &url, key, "downloading")?;
        if !resp.status().is_success() {
            return Err(self.refused(key, "downloading", resp));
        }
        let size = header_u64(&resp, "content-length").unwrap_or(0);
        Ok((size, resp.into_body().into_reader()))
    }

    /// Every object under `prefix` (all pages, at most [`MAX_LISTED`]),
    /// and with a delimiter the common prefixes.
    pub fn list(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
    ) -> Result<(Vec<Object>, Vec<String>)> {
        let mut objects = Vec::new();
        let mut prefixes = Vec::new();
        let mut token: Option<String> = None;
        let mut seen = std::collections::HashSet::new();
        let mut listed = 0usize;
        loop {
            let mut action = ListObjectsV2::new(&self.bucket, Some(&self.creds));
            action.with_prefix(prefix);
            if let Some(d) = delimiter {
                action.with_delimiter(d);
            }
            if let Some(t) = &token {
                action.with_continuation_token(t.as_str());
            }
            let url = action.sign(SIGNED_FOR);
            let mut resp = self.call("GET", &url, prefix, "listing")?;
            if !resp.status().is_success() {
                return Err(self.refused(prefix, "listing", resp));
            }
            let text = resp
                .body_mut()
                .with_config()
                .limit(64 << 20)
                .read_to_string()
                .map_err(|e| self.fail(prefix, "listing", e))?;
            let page: ListObjectsV2Response = ListObjectsV2::parse_response(&text)
                .map_err(|e| self.fail(prefix, "listing", e))?;
            // What a server answers is bounded: at most MAX_LISTED entries
            // in all (counted before any is dropped), keys under the prefix
            // only, and never a token it gave before.
            listed += page.contents.len() + page.common_prefixes.len() + 1;
            objects.extend(
                page.contents
                    .into_iter()
                    .filter(|c| c.key.starts_with(prefix))
                    .map(|c| Object {
                        key: c.key,
                        size: c.size.unwrap_or(0),
                        sha256: None,
                    }),
            );
            prefixes.extend(
                page.common_prefixes
                    .into_iter()
                    .map(|p| p.prefix)
                    .filter(|p| p.starts_with(prefix)),
            );
            if listed > MAX_LISTED {
                return Err(self.fail(
                    prefix,
                    "listing",
                    format!("more than {MAX_LISTED} objects: not a backup prefix, or the server repeats itself"),
                ));
            }
            match page.next_continuation_token {
                Some(t) if !seen.insert(t.clone()) => {
                    return Err(self.fail(
                        prefix,
                        "listing",
                        "the server gave the same continuation token twice",
                    ));
                }
                Some(t) => token = Some(t),
                None => return Ok((objects, prefixes)),
            }
        }
    }

    pub fn delete(&self, key: &str) -> Result<()> {
        let url = self
            .bucket
            .delete_object(Some(&self.creds), key)
            .sign(SIGNED_FOR);
        let resp = self.call("DELETE", &url, key, "deleting")?;
        match resp.status().as_u16() {
            200..=299 | 404 => Ok(()),
            _ => Err(self.refused(key, "deleting", resp)),
        }
    }
}

/// The headers a new object carries (signed): its sha256, and with Object
/// Lock its retention.
fn object_headers(sha256: &str, lock: Option<&str>) -> Vec<(&'static str, String)> {
    let mut h = vec![(META_SHA256, sha256.to_string())];
    if let Some(until) = lock {
        h.push(("x-amz-object-lock-mode", "COMPLIANCE".into()));
        h.push(("x-amz-object-lock-retain-until-date", until.to_string()));
    }
    h
}

/// What an operator does about a certificate the client refused.
fn tls_hint(e: &str) -> &'static str {
    if e.contains("UnknownIssuer") {
        " (no trusted CA signed the server's certificate: give its CA with --ca FILE or AWS_CA_BUNDLE)"
    } else if e.contains("not valid for name") {
        " (the endpoint's host name is not one the certificate names: use a name it does)"
    } else if e.contains("certificate expired") {
        " (the server's certificate has expired)"
    } else if e.contains("certificate not valid yet") {
        " (the server's certificate is not valid yet: check both clocks)"
    } else {
        ""
    }
}

fn header(resp: &Response<ureq::Body>, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn header_u64(resp: &Response<ureq::Body>, name: &str) -> Option<u64> {
    header(resp, name).and_then(|v| v.parse().ok())
}

/// The base64 of the bytes a hex string spells (S3's checksum headers).
fn b64_of_hex(hex: &str) -> String {
    use base64::Engine;
    let bytes: Vec<u8> = (0..hex.len() / 2)
        .filter_map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
        .collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `s3://KEY:SECRET@bucket` and an endpoint with userinfo: no message
    /// shows the userinfo.
    #[test]
    fn credentials_in_urls_are_never_shown() {
        for url in [
            "s3://AKIACNRY:SecretCnry@backups/db",
            "https://AKIACNRY:SecretCnry@host/backups",
        ] {
            let e = Remote::parse(url).unwrap_err();
            assert_eq!(e.exit, opskit::Exit::Usage, "{url}");
            assert!(!e.msg.contains("Cnry"), "{}", e.msg);
        }
        let store = |endpoint: &str| {
            let mut settings =
                crate::aws::resolve(&|k: &str| k.starts_with("AWS_").then(|| "x".to_string()))
                    .unwrap();
            (settings.endpoint, settings.ca_bundle) = (Some(endpoint.into()), None);
            let timeout = Duration::from_secs(2);
            let o = Options {
                settings,
                path_style: true,
                ca: None,
                timeout,
            };
            Store::new(Remote::parse("s3://backups").unwrap(), o)
        };
        let e = store("http://AKIACNRY:SecretCnry@[::1").err().unwrap();
        assert!(!e.msg.contains("Cnry"), "{}", e.msg);
        // Nothing listens on port 1: the error names the endpoint.
        let s = store("http://AKIACNRY:SecretCnry@127.0.0.1:1").unwrap();
        assert!(!s.whereis().contains("Cnry"), "{}", s.whereis());
        let e = s.head("x").unwrap_err();
        assert!(e.msg.contains("127.0.0.1:1"), "{}", e.msg);
        assert!(!e.msg.contains("Cnry"), "{}", e.msg);
    }

    /// The hints match rustls's own wording of each refusal (rustls
    /// 0.23's `CertificateError` display), and nothing else.
    #[test]
    fn refused_certificates_are_named_with_what_to_do() {
        let io = |e: &str| format!("io: invalid peer certificate: {e}");
        for (e, hint) in [
            (io("UnknownIssuer"), "give its CA with --ca FILE"),
            (
                io(
                    r#"certificate not valid for name "127.0.0.1"; certificate is only valid for DnsName("localhost")"#,
                ),
                "host name is not one the certificate names",
            ),
            (
                io(
                    "certificate expired: verification time 1765000000 (UNIX), but certificate is not valid after 1764000000 (1000000 seconds ago)",
                ),
                "has expired",
            ),
            (
                io(
                    "certificate not valid yet: verification time 1764000000 (UNIX), but certificate is not valid before 1765000000 (1000000 seconds in the future)",
                ),
                "not valid yet",
            ),
        ] {
            assert!(tls_hint(&e).contains(hint), "{e}");
        }
        assert_eq!(
            tls_hint("ExpiredToken: The provided token has expired."),
            ""
        );
    }

    #[test]
    fn checksum_header_is_base64_of_the_digest() {
        // sha256("") in hex and base64.
        assert_eq!(
            b64_of_hex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
        );
    }
}
