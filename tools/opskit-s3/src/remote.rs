//! `s3://BUCKET/PREFIX`: where a store's sets are, and the keys and URLs
//! of their files.

use opskit::{Error, Result};

/// `s3://BUCKET/PREFIX`: where sets go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    pub bucket: String,
    /// Empty, or ending with `/`.
    pub prefix: String,
}

impl Remote {
    /// Messages show the URL without its userinfo (`s3://KEY:SECRET@…`).
    pub fn parse(url: &str) -> Result<Remote> {
        let shown = opskit::pgconn::redact(url);
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| Error::usage(format!("'{shown}' is not an s3://BUCKET[/PREFIX] URL")))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.contains('@') {
            return Err(Error::usage(format!(
                "'{shown}': credentials do not belong in the URL (give AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or a profile)"
            )));
        }
        let valid =
            |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.');
        if bucket.len() < 3 || bucket.len() > 63 || !bucket.chars().all(valid) {
            return Err(Error::usage(format!(
                "'{shown}': the bucket is not an S3 bucket name (3-63 of a-z, 0-9, '.', '-')"
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
}
