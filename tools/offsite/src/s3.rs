//! The S3 calls offsite makes, signed by rusty-s3 (SigV4, query-string
//! signatures) and sent with ureq: head, put (conditional), multipart
//! uploads, get, list, delete. Every failure is one line naming the
//! endpoint, the bucket and the object, never a secret.

use std::io::Read;
use std::time::Duration;

use rusty_s3::actions::{CreateMultipartUpload, ListObjectsV2, ListObjectsV2Response, S3Action};
use rusty_s3::{Bucket, Credentials, UrlStyle};
use ureq::Agent;
use ureq::http::Response;

use chrono::{DateTime, Utc};

use crate::aws::Settings;
use opskit::{Error, Result};

/// How long a signed request stays valid.
const SIGNED_FOR: Duration = Duration::from_secs(3600);
/// The object metadata that carries a file's sha256 (hex).
pub const META_SHA256: &str = "x-amz-meta-sha256";

/// `s3://BUCKET/PREFIX`: where sets go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    pub bucket: String,
    /// Empty, or ending with `/`.
    pub prefix: String,
}

impl Remote {
    pub fn parse(url: &str) -> Result<Remote> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| Error::usage(format!("'{url}' is not an s3://BUCKET[/PREFIX] URL")))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let valid =
            |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.');
        if bucket.len() < 3 || bucket.len() > 63 || !bucket.chars().all(valid) {
            return Err(Error::usage(format!(
                "'{url}': '{bucket}' is not an S3 bucket name (3-63 of a-z, 0-9, '.', '-')"
            )));
        }
        let prefix = prefix.trim_matches('/');
        Ok(Remote {
            bucket: bucket.into(),
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
        })
    }

    /// The key of a set's file.
    pub fn key(&self, set: &str, file: &str) -> String {
        format!("{}{set}/{file}", self.prefix)
    }

    /// `s3://bucket/prefix/rest`.
    pub fn url(&self, rest: &str) -> String {
        format!("s3://{}/{}{rest}", self.bucket, self.prefix)
    }
}

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
        let url: ureq::http::Uri = endpoint
            .parse()
            .map_err(|_| Error::usage(format!("endpoint '{endpoint}' is not a URL")))?;
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
                .map_err(|e| Error::usage(format!("endpoint '{endpoint}': {e}")))?,
            style,
            remote.bucket.clone(),
            s.region.clone(),
        )
        .map_err(|e| Error::usage(format!("endpoint '{endpoint}': {e}")))?;
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
            endpoint,
            remote,
        })
    }

    /// "bucket B at ENDPOINT", for messages.
    pub fn whereis(&self) -> String {
        format!("bucket {} at {}", self.remote.bucket, self.endpoint)
    }

    fn fail(&self, key: &str, what: &str, e: impl std::fmt::Display) -> Error {
        Error::failure(format!(
            "{what} s3://{}/{key} ({}): {e}",
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
        self.fail(key, what, format!("{code}{msg}{why}"))
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
        headers.push(("x-amz-checksum-sha256", b64_of_hex(sha256)));
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

    /// Start a multipart upload; its id.
    pub fn create_multipart(&self, key: &str, sha256: &str, lock: Option<&str>) -> Result<String> {
        let headers = object_headers(sha256, lock);
        let mut action = CreateMultipartUpload::new(&self.bucket, Some(&self.creds), key);
        for (k, v) in &headers {
            action.headers_mut().insert(*k, v.clone());
        }
        let url = action.sign(SIGNED_FOR);
        let mut req = self.agent.post(url.as_str());
        for (k, v) in &headers {
            req = req.header(*k, v);
        }
        let mut resp = req
            .send_empty()
            .map_err(|e| self.fail(key, "starting the upload of", e))?;
        if !resp.status().is_success() {
            return Err(self.refused(key, "starting the upload of", resp));
        }
        let text = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| self.fail(key, "starting the upload of", e))?;
        CreateMultipartUpload::parse_response(&text)
            .map(|r| r.upload_id().to_string())
            .map_err(|e| self.fail(key, "starting the upload of", e))
    }

    /// Upload one part, with its Content-MD5 (the server refuses a part
    /// that arrives changed); its ETag.
    pub fn upload_part(&self, key: &str, id: &str, number: u16, part: &[u8]) -> Result<String> {
        use base64::Engine;
        use md5::Digest;
        let md5 = base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(part));
        let mut action = self.bucket.upload_part(Some(&self.creds), key, number, id);
        action.headers_mut().insert("content-md5", md5.clone());
        let url = action.sign(SIGNED_FOR);
        let resp = self
            .agent
            .put(url.as_str())
            .header("content-md5", md5)
            .send(part)
            .map_err(|e| self.fail(key, &format!("uploading part {number} of"), e))?;
        if !resp.status().is_success() {
            return Err(self.refused(key, &format!("uploading part {number} of"), resp));
        }
        header(&resp, "etag").ok_or_else(|| self.fail(key, "uploading", "no ETag for a part"))
    }

    /// Complete a multipart upload from its parts' ETags, in order, only if
    /// no object of that name exists.
    pub fn complete(&self, key: &str, id: &str, etags: &[String]) -> Result<Put> {
        let action = self.bucket.complete_multipart_upload(
            Some(&self.creds),
            key,
            id,
            etags.iter().map(String::as_str),
        );
        let url = action.sign(SIGNED_FOR);
        let body = action.body();
        let mut resp = self
            .agent
            .post(url.as_str())
            .header("if-none-match", "*")
            .send(body.as_bytes())
            .map_err(|e| self.fail(key, "completing the upload of", e))?;
        match resp.status().as_u16() {
            412 => Ok(Put::Exists),
            // S3 can answer 200 with an error in the body.
            200 => {
                let text = resp.body_mut().read_to_string().unwrap_or_default();
                if text.contains("<Error>") {
                    Err(self.fail(key, "completing the upload of", text.trim()))
                } else {
                    Ok(Put::Created)
                }
            }
            _ => Err(self.refused(key, "completing the upload of", resp)),
        }
    }

    /// Abort a multipart upload (its parts are freed).
    pub fn abort(&self, key: &str, id: &str) -> Result<()> {
        let url = self
            .bucket
            .abort_multipart_upload(Some(&self.creds), key, id)
            .sign(SIGNED_FOR);
        let resp = self.call("DELETE", &url, key, "aborting the upload of")?;
        match resp.status().as_u16() {
            200..=299 | 404 => Ok(()),
            _ => Err(self.refused(key, "aborting the upload of", resp)),
        }
    }

    /// The unfinished multipart uploads under `prefix`.
    pub fn uploads(&self, prefix: &str) -> Result<Vec<Unfinished>> {
        let mut url = self.bucket.base_url().clone();
        url.set_query(None);
        let signed = rusty_s3::signing::sign(
            &jiff_now(),
            rusty_s3::Method::Get,
            url,
            self.creds.key(),
            self.creds.secret(),
            self.creds.token(),
            self.bucket.region(),
            SIGNED_FOR.as_secs(),
            [("prefix", prefix), ("uploads", "")].into_iter(),
            std::iter::empty(),
        );
        let mut resp = self.call(
            "GET",
            &signed,
            prefix,
            "listing the unfinished uploads under",
        )?;
        if !resp.status().is_success() {
            return Err(self.refused(prefix, "listing the unfinished uploads under", resp));
        }
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        let mut out = Vec::new();
        for upload in text.split("<Upload>").skip(1) {
            let tag = |t: &str| {
                upload
                    .split_once(&format!("<{t}>"))
                    .and_then(|(_, r)| r.split_once(&format!("</{t}>")))
                    .map(|(v, _)| v.to_string())
            };
            if let (Some(k), Some(id)) = (tag("Key"), tag("UploadId")) {
                let started = tag("Initiated")
                    .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
                    .map(|t| t.with_timezone(&Utc));
                out.push(Unfinished {
                    key: k,
                    id,
                    started,
                });
            }
        }
        Ok(out)
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

    /// Every object under `prefix` (all pages), and with a delimiter the
    /// common prefixes.
    pub fn list(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
    ) -> Result<(Vec<Object>, Vec<String>)> {
        let mut objects = Vec::new();
        let mut prefixes = Vec::new();
        let mut token: Option<String> = None;
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
            objects.extend(page.contents.into_iter().map(|c| Object {
                key: c.key,
                size: c.size.unwrap_or(0),
                sha256: None,
            }));
            prefixes.extend(page.common_prefixes.into_iter().map(|p| p.prefix));
            match page.next_continuation_token {
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

fn jiff_now() -> jiff::Timestamp {
    jiff::Timestamp::now()
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
pub fn b64_of_hex(hex: &str) -> String {
    use base64::Engine;
    let bytes: Vec<u8> = (0..hex.len() / 2)
        .filter_map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
        .collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_urls() {
        let r = Remote::parse("s3://backups/db/prod/").unwrap();
        assert_eq!(r.prefix, "db/prod/");
        assert_eq!(
            r.key("app-1", "MANIFEST.json"),
            "db/prod/app-1/MANIFEST.json"
        );
        assert_eq!(Remote::parse("s3://backups").unwrap().prefix, "");
        for bad in ["backups/x", "s3://B", "s3://a", "http://x/y"] {
            let e = Remote::parse(bad).unwrap_err();
            assert_eq!(e.exit, opskit::Exit::Usage, "{bad}");
        }
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
