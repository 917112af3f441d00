//! offsite against a hostile or broken S3 server: what its listings say
//! is bounded (a repeated continuation token, keys outside the prefix).

mod common;
use common::*;

/// A server that answers up to `pages` requests with this listing page
/// (its thread is left waiting for more).
fn hostile_lister(page: String, pages: usize) -> (String, std::thread::JoinHandle<()>) {
    use std::io::{BufRead, BufReader, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", l.local_addr().unwrap());
    let h = std::thread::spawn(move || {
        for conn in l.incoming().take(pages) {
            let Ok(conn) = conn else { return };
            let mut r = BufReader::new(conn);
            let mut line = String::new();
            while r.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                line.clear();
            }
            let _ = write!(
                r.get_mut(),
                "HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{page}",
                page.len()
            );
        }
    });
    (endpoint, h)
}

fn listing(keys: &[&str], token: Option<&str>) -> String {
    let contents: String = keys
        .iter()
        .map(|k| format!("<Contents><Key>{k}</Key><LastModified>2026-01-01T00:00:00.000Z</LastModified><ETag>\"e\"</ETag><Size>1</Size><StorageClass>STANDARD</StorageClass></Contents>"))
        .collect();
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Name>bkt</Name><Prefix>app/</Prefix><KeyCount>{}</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>{}</IsTruncated>{contents}{}</ListBucketResult>",
        keys.len(),
        token.is_some(),
        token
            .map(|t| format!("<NextContinuationToken>{t}</NextContinuationToken>"))
            .unwrap_or_default()
    )
}

/// What a hostile or broken S3 server lists is bounded: a continuation
/// token given again ends the listing (it listed for ever, holding every
/// page), and keys outside the prefix or shorter than it are not sets (a
/// key shorter than the prefix made offsite panic).
#[test]
fn a_listing_that_repeats_itself_or_strays_outside_the_prefix_is_bounded() {
    let page = listing(&["app/app-20260101T000000Z/MANIFEST.json"], Some("again"));
    let (endpoint, h) = hostile_lister(page, 3);
    let out = run_within(
        &mut offsite(&["list", "--url", "s3://bkt/app", "--endpoint", &endpoint]),
        20,
    );
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("same continuation token twice"),
        "{}",
        out.stderr
    );
    drop(h);

    let page = listing(
        &[
            "a",
            "other/app-20260101T000000Z/MANIFEST.json",
            "app/app-20260102T000000Z/MANIFEST.json",
        ],
        None,
    );
    let (endpoint, h) = hostile_lister(page, 1);
    let out = run_within(
        &mut offsite(&["list", "--url", "s3://bkt/app", "--endpoint", &endpoint]),
        20,
    );
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    let sets: Vec<String> = out
        .events("remote_set")
        .iter()
        .map(|r| r["set"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        sets,
        ["app-20260102T000000Z"],
        "{}\n{}",
        out.stdout,
        out.stderr
    );
    h.join().unwrap();
}
