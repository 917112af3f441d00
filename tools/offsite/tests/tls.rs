//! offsite over https: moto's S3 server with a certificate for
//! `localhost` from a test CA of its own. The CA is trusted through
//! `--ca` or through `AWS_CA_BUNDLE`, and a server the client cannot
//! trust is refused in one line naming the endpoint.

use std::process::Command;

use opskit_testkit::Output;
use opskit_testkit::s3::S3Server;
use opskit_testkit::tools::run;

mod common;
use common::*;

/// The https server of this test binary (moto, whatever OPSKIT_TEST_S3
/// says).
fn tls_server() -> &'static S3Server {
    static S: std::sync::OnceLock<S3Server> = std::sync::OnceLock::new();
    S.get_or_init(S3Server::moto_tls)
}

/// `offsite ARGS` against the https server, with the machine's
/// AWS_CA_BUNDLE and the server's CA left out: each test says how the CA
/// is trusted.
fn offsite_tls(args: &[&str]) -> Command {
    let srv = tls_server();
    let mut c = opskit_testkit::signing::command(env!("CARGO_BIN_EXE_offsite"));
    srv.configure(&mut c);
    c.env_remove("AWS_CA_BUNDLE")
        .env_remove("OPSKIT_LOG")
        .env_remove("OPSKIT_BACKUP_ROOT")
        .args(args);
    c
}

fn ca() -> String {
    tls_server().ca.as_ref().unwrap().display().to_string()
}

/// One line on stderr naming the endpoint, the bucket and the reason.
fn refused_in_one_line(out: &Output, endpoint: &str, why: &[&str]) {
    assert_eq!(out.code, 2, "{}", out.stderr);
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{}", out.stderr);
    assert!(lines[0].contains(endpoint), "{}", lines[0]);
    let lower = lines[0].to_lowercase();
    assert!(
        why.iter().any(|w| lower.contains(w)),
        "{why:?}: {}",
        lines[0]
    );
}

#[test]
fn push_list_and_pull_over_https_with_ca_or_aws_ca_bundle() {
    let local = Local::new(10);
    let set = local.set(false);
    let bucket = tls_server().bucket("https");
    let url = format!("s3://{bucket}/app");
    // --ca: a push with a multipart file, then list.
    ok(&run(offsite_tls(&["push", &url, set.to_str().unwrap()])
        .arg("--ca")
        .arg(ca())));
    let out = run(offsite_tls(&["list", &url, "--ca", &ca()])
        .arg("--root")
        .arg(&local.root));
    ok(&out);
    let rows = out.events("remote_set");
    assert_eq!(rows.len(), 1, "{}", out.stdout);
    assert_eq!(rows[0]["location"], "both", "{}", out.stdout);
    assert_eq!(rows[0]["complete"], true, "{}", out.stdout);
    // AWS_CA_BUNDLE: the pull, checked byte for byte.
    let dest = local.tmp.path().join("pulled");
    ok(&run(offsite_tls(&["pull", &url, "latest", "--dest"])
        .arg(&dest)
        .env("AWS_CA_BUNDLE", ca())));
    assert_eq!(files_of(&dest.join(name_of(&set))), files_of(&set));
}

#[test]
fn an_unknown_ca_is_refused_in_one_line_naming_the_endpoint() {
    let bucket = tls_server().bucket("unknownca");
    let url = format!("s3://{bucket}/app");
    let out = run(&mut offsite_tls(&["list", &url]));
    refused_in_one_line(
        &out,
        &tls_server().endpoint,
        &["give its ca with --ca file or aws_ca_bundle"],
    );
    // Another CA given is no better.
    let other = tempfile::tempdir().unwrap();
    let pem = other.path().join("other-ca.pem");
    opskit_testkit::pki::Pki::new("not the server's CA").write_ca(&pem);
    let out = run(offsite_tls(&["list", &url, "--ca"]).arg(&pem));
    refused_in_one_line(
        &out,
        &tls_server().endpoint,
        &["give its ca with --ca file or aws_ca_bundle"],
    );
}

#[test]
fn a_certificate_for_another_name_is_refused_in_one_line_naming_the_endpoint() {
    let bucket = tls_server().bucket("wrongname");
    let url = format!("s3://{bucket}/app");
    // The certificate is for localhost; 127.0.0.1 is the same server
    // under a name the certificate does not carry.
    let endpoint = tls_server().endpoint.replace("localhost", "127.0.0.1");
    let out = run(offsite_tls(&["list", &url, "--ca", &ca()]).args(["--endpoint", &endpoint]));
    refused_in_one_line(
        &out,
        &endpoint,
        &["host name is not one the certificate names"],
    );
}
