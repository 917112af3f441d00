//! Query-signed (SigV4) URLs for the calls rusty-s3 has no action for,
//! or signs in a form AWS does not read (`?uploads=1`).

use super::{SIGNED_FOR, Store};

impl Store {
    /// A query-signed URL for `method` on `url` with these subresources
    /// and query parameters (an empty value is signed as `name=`, AWS's
    /// canonical form) and these signed headers, valid for an hour.
    pub(super) fn presign(
        &self,
        method: rusty_s3::Method,
        url: url::Url,
        query: &[(&str, &str)],
        headers: &[(&'static str, String)],
    ) -> url::Url {
        let now = jiff::Timestamp::now();
        self.presign_at(method, url, query, headers, &now, SIGNED_FOR.as_secs())
    }

    /// [`Store::presign`] at a given time, for `expires` seconds.
    fn presign_at(
        &self,
        method: rusty_s3::Method,
        url: url::Url,
        query: &[(&str, &str)],
        headers: &[(&'static str, String)],
        at: &jiff::Timestamp,
        expires: u64,
    ) -> url::Url {
        let mut query = query.to_vec();
        query.sort_unstable();
        let mut headers: Vec<(&str, &str)> =
            headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        headers.sort_unstable();
        rusty_s3::signing::sign(
            at,
            method,
            url,
            self.creds.key(),
            self.creds.secret(),
            self.creds.token(),
            self.bucket.region(),
            expires,
            query.into_iter(),
            headers.into_iter(),
        )
    }
}

/// The URLs and signatures pinned against AWS's published Signature
/// Version 4 example of a query-signed GET (the S3 API reference,
/// "Authenticating Requests: Using Query Parameters"), and an independent
/// signer (HMAC-SHA256 written out here) checked against that example
/// first, then used for path style and for `?uploads`.
#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    use super::super::{Options, Store, object_headers};
    use crate::Remote;

    const KEY: &str = "AKIAIOSFODNN7EXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    /// 2013-05-24T00:00:00Z, valid 86400 s: AWS's example.
    const DATE: &str = "20130524T000000Z";
    const EXAMPLE_URL: &str = "https://examplebucket.s3.amazonaws.com/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404";
    const EXAMPLE_SIGNATURE: &str =
        "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404";
    const CREDENTIAL: &str = "AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request";

    fn at() -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_369_353_600).unwrap()
    }

    fn store(endpoint: Option<&str>) -> Store {
        let env = |k: &str| match k {
            "AWS_ACCESS_KEY_ID" => Some(KEY.to_string()),
            "AWS_SECRET_ACCESS_KEY" => Some(SECRET.to_string()),
            "AWS_REGION" => Some("us-east-1".to_string()),
            "AWS_ENDPOINT_URL" => endpoint.map(str::to_string),
            _ => None,
        };
        let settings = crate::aws::resolve(&env).unwrap();
        let o = Options {
            settings,
            path_style: false,
            ca: None,
            timeout: std::time::Duration::from_secs(1),
        };
        Store::new(Remote::parse("s3://examplebucket").unwrap(), o).unwrap()
    }

    /// A GET of `test.txt` signed at AWS's example time, for a day.
    fn get_test_txt(s: &Store) -> url::Url {
        let url = s.bucket.object_url("test.txt");
        s.presign_at(rusty_s3::Method::Get, url, &[], &[], &at(), 86_400)
    }

    fn hmac(key: &[u8], msg: &[u8]) -> Vec<u8> {
        let mut k = [0u8; 64];
        if key.len() > 64 {
            k[..32].copy_from_slice(&Sha256::digest(key));
        } else {
            k[..key.len()].copy_from_slice(key);
        }
        let pad = |b: u8| k.iter().map(|x| x ^ b).collect::<Vec<u8>>();
        let inner = Sha256::new()
            .chain_update(pad(0x36))
            .chain_update(msg)
            .finalize();
        Sha256::new()
            .chain_update(pad(0x5c))
            .chain_update(inner)
            .finalize()
            .to_vec()
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// SigV4 of a canonical request, for AWS's example date and key.
    fn signature(canonical: &str) -> String {
        let scope = "20130524/us-east-1/s3/aws4_request";
        let to_sign = format!(
            "AWS4-HMAC-SHA256\n{DATE}\n{scope}\n{}",
            hex(&Sha256::digest(canonical))
        );
        let mut key = format!("AWS4{SECRET}").into_bytes();
        for part in ["20130524", "us-east-1", "s3", "aws4_request"] {
            key = hmac(&key, part.as_bytes());
        }
        hex(&hmac(&key, to_sign.as_bytes()))
    }

    fn canonical(
        method: &str,
        path: &str,
        query: &str,
        host: &str,
        signed: &[(&str, &str)],
    ) -> String {
        let mut headers = vec![("host", host)];
        headers.extend_from_slice(signed);
        headers.sort();
        let lines: String = headers.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
        let names: Vec<&str> = headers.iter().map(|(k, _)| *k).collect();
        format!(
            "{method}\n{path}\n{query}\n{lines}\n{}\nUNSIGNED-PAYLOAD",
            names.join(";")
        )
    }

    fn query_of(signed_headers: &str, extra: &str) -> String {
        format!(
            "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={CREDENTIAL}&X-Amz-Date={DATE}&X-Amz-Expires=86400&X-Amz-SignedHeaders={signed_headers}{extra}"
        )
    }

    #[test]
    fn the_independent_signer_gives_aws_published_signature() {
        let c = canonical(
            "GET",
            "/test.txt",
            &query_of("host", ""),
            "examplebucket.s3.amazonaws.com",
            &[],
        );
        assert_eq!(signature(&c), EXAMPLE_SIGNATURE);
    }

    /// An AWS endpoint: virtual-hosted style, byte for byte AWS's URL.
    #[test]
    fn aws_endpoints_are_virtual_hosted_and_sign_as_aws_does() {
        let s = store(Some("https://s3.amazonaws.com"));
        assert_eq!(get_test_txt(&s).as_str(), EXAMPLE_URL);
        // No endpoint: the region's, still virtual-hosted.
        let s = store(None);
        let got = get_test_txt(&s);
        assert!(
            got.as_str()
                .starts_with("https://examplebucket.s3.us-east-1.amazonaws.com/test.txt?"),
            "{got}"
        );
    }

    /// An address: path style, the bucket in the path, signed with the
    /// address as host.
    #[test]
    fn an_address_is_path_style_and_signs_the_path() {
        let s = store(Some("http://127.0.0.1:9000"));
        let got = get_test_txt(&s);
        let c = canonical(
            "GET",
            "/examplebucket/test.txt",
            &query_of("host", ""),
            "127.0.0.1:9000",
            &[],
        );
        assert_eq!(
            got.as_str(),
            format!(
                "http://127.0.0.1:9000/examplebucket/test.txt?{}&X-Amz-Signature={}",
                query_of("host", ""),
                signature(&c)
            )
        );
    }

    /// CreateMultipartUpload: `uploads=` (empty) in the canonical query,
    /// as the AWS SDKs sign it, with the object's signed headers.
    #[test]
    fn create_multipart_signs_uploads_with_an_empty_value() {
        let s = store(Some("https://s3.amazonaws.com"));
        let sha = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let headers = object_headers(sha, None);
        let got = s.presign_at(
            rusty_s3::Method::Post,
            s.bucket.object_url("big.bin"),
            &[("uploads", "")],
            &headers,
            &at(),
            86_400,
        );
        let query = query_of("host%3Bx-amz-meta-sha256", "&uploads=");
        let c = canonical(
            "POST",
            "/big.bin",
            &query,
            "examplebucket.s3.amazonaws.com",
            &[("x-amz-meta-sha256", sha)],
        );
        assert_eq!(
            got.as_str(),
            format!(
                "https://examplebucket.s3.amazonaws.com/big.bin?{query}&X-Amz-Signature={}",
                signature(&c)
            )
        );
    }
}
