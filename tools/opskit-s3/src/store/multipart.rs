//! Multipart uploads: start (signed `?uploads`, as AWS reads it), parts
//! with their Content-MD5, complete (conditional), abort, and the
//! unfinished uploads under a prefix.

use chrono::{DateTime, Utc};
use rusty_s3::S3Action;
use rusty_s3::actions::CreateMultipartUpload;

use super::{Put, SIGNED_FOR, Store, Unfinished, header, object_headers};
use opskit::Result;

impl Store {
    /// Start a multipart upload; its id. The subresource is signed as the
    /// AWS SDKs send it, `?uploads` with an empty value (rusty-s3's
    /// `?uploads=1` is refused by servers that follow AWS's rules).
    pub fn create_multipart(&self, key: &str, sha256: &str, lock: Option<&str>) -> Result<String> {
        let headers = object_headers(sha256, lock);
        let url = self.presign(
            rusty_s3::Method::Post,
            self.bucket.object_url(key),
            &[("uploads", "")],
            &headers,
        );
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
        let signed = self.presign(
            rusty_s3::Method::Get,
            url,
            &[("prefix", prefix), ("uploads", "")],
            &[],
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
}
