//! Secrets in targets and webhook URLs never reach stdout, stderr or the
//! Prometheus textfile: each test puts a canary in the secret and looks for
//! it everywhere the run wrote.

mod support;

use std::path::Path;

use opskit_testkit::tools::{Output, run, run_with_stdin};
use support::{healthcheck, serve};

/// Fails if any canary is in the run's output or in `files`.
fn nowhere(out: &Output, files: &[&Path], canaries: &[&str]) {
    let mut texts = vec![
        ("stdout", out.stdout.clone()),
        ("stderr", out.stderr.clone()),
    ];
    for f in files {
        let t = std::fs::read_to_string(f).unwrap_or_default();
        texts.push((f.to_str().unwrap(), t));
    }
    for (what, text) in texts {
        for c in canaries {
            assert!(!text.contains(c), "{c} in {what}:\n{text}");
        }
    }
}

#[test]
fn database_password_with_hash_and_question_mark() {
    let dir = tempfile::tempdir().unwrap();
    let prom = dir.path().join("opskit.prom");
    // Nothing listens on port 1: the check fails to connect, after
    // parsing the URL as libpq does.
    let url = "postgresql://app2:Pw#Cnry7Q?Zx9K@127.0.0.1:1/app";
    let out = run(healthcheck()
        .args([url, "--timeout", "2s", "--prometheus"])
        .arg(&prom));
    nowhere(&out, &[&prom], &["Cnry7Q", "Zx9K"]);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    let c = &out.events("check")[0];
    assert_eq!(c["target"], "postgresql://app2:***@127.0.0.1:1/app");
    assert_eq!(c["name"], c["target"]);
    let d = c["detail"].as_str().unwrap();
    assert!(d.contains("cannot connect to 127.0.0.1:1"), "{d}");
}

#[test]
fn http_userinfo_and_query_secrets() {
    let s = serve();
    let dir = tempfile::tempdir().unwrap();
    let prom = dir.path().join("opskit.prom");
    let url = s
        .url("/ok?token=TkCnry&access_token=AtCnry&x=1")
        .replace("http://", "http://ops:PwCnry@");
    let out = run(healthcheck().arg(&url).arg("--prometheus").arg(&prom));
    nowhere(&out, &[&prom], &["TkCnry", "AtCnry", "PwCnry"]);
    let c = &out.events("check")[0];
    assert_eq!(
        c["target"],
        s.url("/ok?token=***&access_token=***&x=1")
            .replace("http://", "http://***@")
    );
    // A password with a '/' in it, in a URL that is wrong anyway: hidden
    // up to its '@' all the same.
    let out = run(healthcheck().arg("http://ops:Pw/Cnry@[::1/x?sig=SgCnry"));
    assert!(out.code >= 2, "{}", out.stderr);
    nowhere(&out, &[], &["Cnry"]);
}

#[test]
fn conninfo_target_in_the_unknown_kind_error() {
    let out = run(healthcheck().arg("host=db password=Cnry7Q dbname=app"));
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(out.stderr.contains("unknown kind"), "{}", out.stderr);
    assert!(out.stderr.contains("password=***"), "{}", out.stderr);
    nowhere(&out, &[], &["Cnry7Q"]);
    let out = run(healthcheck().arg("host=db password='Cnry 7Q' dbname=app"));
    nowhere(&out, &[], &["Cnry"]);
}

#[test]
fn webhook_token_in_warnings_and_records() {
    let app = serve();
    let hook = serve();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    // The hook answers 404 here: a warning and a failed `notify` record.
    let url = hook.url("/services/T0/B0/HkCnry?token=QCnry");
    let out = run(healthcheck().args([
        &app.url("/down"),
        "--notify",
        &url,
        "--notify-after",
        "1",
        "--state",
        state.to_str().unwrap(),
    ]));
    assert_eq!(out.code, 2, "{}", out.stderr);
    nowhere(&out, &[&state], &["HkCnry", "QCnry", "B0"]);
    assert!(out.stderr.contains("will retry"), "{}", out.stderr);
    let n = &out.events("notify")[0];
    assert_eq!(n["ok"], false);
    assert_eq!(n["url"], hook.url("/services/***?token=***"));

    // --announce-failure: the error line and record.
    let out = run_with_stdin(
        healthcheck().args(["--notify", &url, "--announce-failure", "x.service"]),
        "detail",
    );
    assert_eq!(out.code, 2, "{}", out.stderr);
    nowhere(&out, &[], &["HkCnry", "QCnry"]);
    // Not a URL at all: refused, without echoing it.
    let out = run_with_stdin(
        healthcheck().args([
            "--notify",
            "hooks.example.com/services/T0/B0/HkCnry",
            "--announce-failure",
            "x.service",
        ]),
        "detail",
    );
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(out.stderr.contains("--notify"), "{}", out.stderr);
    nowhere(&out, &[], &["HkCnry"]);
}
