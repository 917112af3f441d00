//! Object Lock: every object pushed with a retention must carry one in
//! COMPLIANCE mode until at least the date asked, whether this push wrote
//! it or found it there.

use chrono::{DateTime, Utc};

use rusty_s3::S3Action;

use super::{SIGNED_FOR, Store, header};
use opskit::{Error, Result};

/// `--retain-days N` as the date S3 takes: now + N days, in seconds, UTC.
pub fn retain_until(days: u32) -> String {
    (Utc::now() + chrono::Duration::days(i64::from(days)))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// An object version's retention.
#[derive(Debug, PartialEq, Eq)]
struct Retention {
    mode: String,
    until: DateTime<Utc>,
}

impl Store {
    /// Make sure the object's current version is locked in COMPLIANCE mode
    /// until at least `until` (a date from [`retain_until`]). An object
    /// without that (a server that took the upload's lock headers for a
    /// single PUT but not for a multipart one, as moto does; an object
    /// pushed before without --retain-days; a shorter or GOVERNANCE lock)
    /// gets it with PutObjectRetention, which may extend a lock but never
    /// shorten one. An object the server will not lock is an error, never
    /// a silent copy that stolen credentials can delete.
    pub fn ensure_locked(&self, key: &str, until: &str) -> Result<()> {
        let want = DateTime::parse_from_rfc3339(until)
            .map_err(|e| Error::usage(format!("retention date '{until}': {e}")))?
            .with_timezone(&Utc);
        let enough = |r: &Option<Retention>| {
            r.as_ref()
                .is_some_and(|r| r.mode == "COMPLIANCE" && r.until >= want)
        };
        if enough(&self.retention(key)?) {
            return Ok(());
        }
        self.put_retention(key, until)?;
        match self.retention(key)? {
            r if enough(&r) => Ok(()),
            None => Err(self.fail(
                key,
                "locking",
                "the server stored the object but shows no retention (is Object Lock enabled on the bucket, and may this key s3:GetObjectRetention?)",
            )),
            Some(r) => Err(self.fail(
                key,
                "locking",
                format!(
                    "the server shows {} until {} after being asked for COMPLIANCE until {until}",
                    r.mode,
                    r.until.format("%Y-%m-%dT%H:%M:%SZ")
                ),
            )),
        }
    }

    /// The mode and date of the current version's retention, as HEAD shows
    /// them (AWS shows them to a key allowed s3:GetObjectRetention; moto
    /// has no GetObjectRetention), or None.
    fn retention(&self, key: &str) -> Result<Option<Retention>> {
        const WHAT: &str = "reading the retention of";
        let url = self
            .bucket
            .head_object(Some(&self.creds), key)
            .sign(SIGNED_FOR);
        let resp = self.call("HEAD", &url, key, WHAT)?;
        if !resp.status().is_success() {
            return Err(self.refused(key, WHAT, resp));
        }
        let until = header(&resp, "x-amz-object-lock-retain-until-date")
            .and_then(|d| DateTime::parse_from_rfc3339(&d).ok());
        Ok(match (header(&resp, "x-amz-object-lock-mode"), until) {
            (Some(mode), Some(until)) => Some(Retention {
                mode,
                until: until.with_timezone(&Utc),
            }),
            _ => None,
        })
    }

    /// PutObjectRetention: COMPLIANCE until `until` (`?retention`, with
    /// the Content-MD5 AWS requires).
    fn put_retention(&self, key: &str, until: &str) -> Result<()> {
        use base64::Engine;
        use md5::Digest;
        let body = format!(
            r#"<Retention xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Mode>COMPLIANCE</Mode><RetainUntilDate>{until}</RetainUntilDate></Retention>"#
        );
        let md5 = base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(&body));
        let url = self.presign(
            rusty_s3::Method::Put,
            self.bucket.object_url(key),
            &[("retention", "")],
            &[("content-md5", md5.clone())],
        );
        let resp = self
            .agent
            .put(url.as_str())
            .header("content-md5", md5)
            .send(body.as_bytes())
            .map_err(|e| self.fail(key, "locking", e))?;
        match resp.status().as_u16() {
            200..=299 => Ok(()),
            403 => {
                let e = self.refused(key, "locking", resp);
                Err(Error::failure(format!(
                    "{} (--retain-days needs s3:PutObjectRetention and s3:GetObjectRetention)",
                    e.msg
                )))
            }
            _ => Err(self.refused(key, "locking", resp)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_dates_are_whole_seconds_in_utc() {
        let day = retain_until(1);
        assert!(day.ends_with('Z') && day.len() == 20, "{day}");
    }
}
