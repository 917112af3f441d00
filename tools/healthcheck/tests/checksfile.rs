//! Checks files that are hostile or broken: a device, a FIFO, a huge file,
//! several bad entries.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use opskit_testkit::tools::{Output, output_of, run, run_with_stdin};
use support::healthcheck;

/// healthcheck under a 300 MB address-space cap, killed if it runs past
/// `limit` (then the test fails).
fn capped(args: &[&str], limit: Duration) -> Output {
    let bin = env!("CARGO_BIN_EXE_healthcheck");
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("ulimit -v 300000; exec \"$0\" \"$@\"")
        .arg(bin)
        .args(args)
        .env_remove("OPSKIT_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            child.kill().unwrap();
            let out = output_of(child);
            panic!("healthcheck {args:?} still running after {limit:?}: {out:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    output_of(child)
}

/// One line on stderr naming the file, exit 3 (UNKNOWN), no check run.
fn refused(out: &Output, file: &str, why: &str) {
    assert_eq!(out.code, 3, "{out:?}");
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(out.stderr.contains(file), "{}", out.stderr);
    assert!(out.stderr.contains(why), "{}", out.stderr);
    assert!(out.events("check").is_empty(), "{}", out.stdout);
}

#[test]
fn checks_file_must_be_a_small_regular_file() {
    let limit = Duration::from_secs(10);
    let out = capped(&["--checks", "/dev/zero"], limit);
    refused(&out, "/dev/zero", "not a regular file");

    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("checks.fifo");
    let st = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(st.success());
    let f = fifo.to_str().unwrap();
    let out = capped(&["--checks", f], limit);
    refused(&out, f, "a FIFO, not a regular file");

    // 2 MiB of valid checks: larger than any checks file needs to be.
    let big = dir.path().join("big.ndjson");
    let line = "{\"target\":\"disk:/\"}\n";
    std::fs::write(&big, line.repeat((2 << 20) / line.len())).unwrap();
    let b = big.to_str().unwrap();
    let out = capped(&["--checks", b], limit);
    refused(&out, b, "larger than 1.0 MiB");

    let out = run_with_stdin(
        healthcheck().args(["--checks", "-"]),
        &line.repeat((2 << 20) / line.len()),
    );
    refused(&out, "<stdin>", "larger than 1.0 MiB");
}

/// Entries with no usable target used to all be named '' and end the run
/// with "two checks are named ''", hiding what was wrong with each.
#[test]
fn several_bad_entries_each_say_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("checks.ndjson");
    std::fs::write(
        &file,
        "{\"name\":\"root\",\"target\":\"disk:/\",\"warn\":\"free_pct < 0\",\"crit\":\"free_pct < 0\"}\n{\"targte\":\"disk:/tmp\"}\n\n{\"tagret\":\"disk:/var\"}\n42\n",
    )
    .unwrap();
    let out = run(healthcheck().arg("--checks").arg(&file));
    assert_eq!(out.code, 3, "{}{}", out.stdout, out.stderr);
    assert!(!out.stderr.contains("two checks"), "{}", out.stderr);
    let c = out.events("check");
    assert_eq!(c.len(), 4, "{}", out.stdout);
    assert_eq!(c[0]["status"], "OK");
    let f = file.display().to_string();
    for (rec, want) in c[1..].iter().zip([
        format!("{f}:2: unknown field `targte`"),
        format!("{f}:4: unknown field `tagret`"),
        format!("{f}:5: invalid type: integer `42`"),
    ]) {
        assert_eq!(rec["status"], "UNKNOWN", "{rec}");
        let d = rec["detail"].as_str().unwrap();
        assert!(d.contains(&want), "{want}: {d}");
    }

    // Two bad entries that share a name: the first real error, not the
    // clash of names.
    std::fs::write(
        &file,
        "{\"target\":\"disk:/\",\"crit\":\"nope < 1\"}\n{\"target\":\"disk:/\",\"crit\":\"nope < 2\"}\n",
    )
    .unwrap();
    let out = run(healthcheck().arg("--checks").arg(&file));
    assert_eq!(out.code, 3, "{}{}", out.stdout, out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "{f}:1: condition 'nope < 1': a disk check has no field 'nope'"
        )),
        "{}",
        out.stderr
    );
}
