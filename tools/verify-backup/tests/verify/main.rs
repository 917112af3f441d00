//! verify-backup against real sets written by pgbackup from a real server;
//! `hostile` against sets an attacker or a broken disk wrote.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use opskit_testkit::tools::{Rng, run, run_with_stdin};
use opskit_testkit::{Cluster, cluster};

#[path = "../common/mod.rs"]
mod common;
use common::*;

mod dumpindex;
mod hostile;

#[test]
fn a_good_set_passes_every_depth() {
    let c = cluster();
    let db = c.create_db();
    seed(c, &db, 5000);
    let tmp = tempfile::tempdir().unwrap();
    let set = make_set(c, &db, tmp.path());
    let mut scratch = vec![];
    for args in [
        vec!["--quick"],
        vec![],
        vec!["--restore-into", &c.url("postgres")],
    ] {
        let out = run(verify()
            .args(&args)
            .arg(&set)
            .arg("--pg-bindir")
            .arg(c.bindir()));
        assert_eq!(
            out.code,
            0,
            "{args:?}: {}\n{:?}",
            out.stderr,
            failed_checks(&out)
        );
        scratch.extend(scratch_names(&out.stderr));
        let rec = &out.events("verify")[0];
        assert_eq!(rec["ok"], true);
        let names: Vec<&str> = rec["checks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        if args.is_empty() {
            for want in [
                "toc",
                "gzip",
                "tar",
                "complete",
                "sha256",
                "sums",
                "permissions",
                "unlisted",
            ] {
                assert!(names.contains(&want), "{want} missing from {names:?}");
            }
        }
        if args.len() == 2 {
            assert!(rec["restore_s"].as_f64().unwrap() > 0.0);
            let rc = rec["checks"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["name"] == "row_counts")
                .unwrap();
            assert_eq!(rc["ok"], true, "{rc}");
            assert!(
                rc["detail"].as_str().unwrap().contains("2 tables match"),
                "{rc}"
            );
        }
        assert_eq!(out.summary()["passed"], 1);
    }
    // No scratch database is left behind (its own, by name: other tests
    // restore at the same time).
    assert!(!scratch.is_empty());
    let left = databases(c);
    assert!(
        scratch.iter().all(|s| !left.contains(s)),
        "{scratch:?} in {left:?}"
    );
}

#[test]
fn records_on_stdin_pass_their_fields_through_and_bad_lines_are_reported() {
    let c = cluster();
    let db = c.create_db();
    seed(c, &db, 100);
    let tmp = tempfile::tempdir().unwrap();
    let set = make_set(c, &db, tmp.path());
    // The backup record pgbackup wrote for the set, with a field of the
    // caller's own.
    let mut backup = serde_json::json!({"event": "backup", "tool": "pgbackup", "ok": true,
        "set": set.file_name().unwrap().to_str(), "path": set, "database": db.name,
        "server_version": "15", "files": [], "bytes": 0, "duration_s": 1.0});
    backup["job"] = "nightly-7".into();
    let input = format!("{backup}\nnot json at all\n[1]\n");
    let out = run_with_stdin(&mut verify(), &input);
    assert_eq!(
        out.code, 2,
        "malformed input makes the run incomplete: {}",
        out.stderr
    );
    let v = &out.events("verify")[0];
    assert_eq!(v["ok"], true);
    assert_eq!(v["job"], "nightly-7", "unknown field passed through");
    assert_eq!(v["tool"], "verify-backup");
    let errs = out.events("error");
    assert_eq!(errs.len(), 2);
    assert_eq!(errs[0]["line"], 2);
    assert_eq!(errs[1]["line"], 3);
    assert_eq!(out.summary()["errors"], 2);
}

#[test]
fn garbage_on_stdin_is_an_error_record_per_line_and_a_few_lines_on_stderr() {
    // 100 KB of lines that are not records.
    let lines = 2000;
    let input = "this is not a record\n".repeat(lines);
    let out = run_with_stdin(&mut verify(), &input);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert_eq!(
        out.events("error").len(),
        lines,
        "one error record per line"
    );
    assert_eq!(out.summary()["errors"], lines);
    let stderr: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(stderr.len(), 6, "{}", out.stderr);
    assert!(
        stderr[0].contains("stdin line 1: not JSON"),
        "{}",
        out.stderr
    );
    assert!(
        stderr[5].contains("stdin: … and 1995 more lines that are not records"),
        "{}",
        out.stderr
    );
}

#[test]
fn every_kind_of_damage_is_caught_and_named() {
    let c = cluster();
    let db = c.create_db();
    seed(c, &db, 20_000);
    let tmp = tempfile::tempdir().unwrap();
    let good = make_set(c, &db, tmp.path());
    let work = tmp.path().join("work");
    fs::create_dir(&work).unwrap();
    type Damage = Box<dyn Fn(&Path)>;
    let cases: Vec<(&str, Damage, &str)> = vec![
        (
            "missing file",
            Box::new(|s: &Path| fs::remove_file(s.join("globals.sql.gz")).unwrap()),
            "exists globals.sql.gz missing",
        ),
        (
            "extra file",
            Box::new(|s: &Path| fs::write(s.join("extra.txt"), "x").unwrap()),
            "unlisted - files not in the manifest: extra.txt",
        ),
        (
            "manifest changed after signing",
            Box::new(|s: &Path| {
                let p = s.join("MANIFEST.json");
                let t = fs::read_to_string(&p).unwrap();
                fs::write(&p, t.replacen("\"bytes\": ", "\"bytes\": 1", 1)).unwrap();
            }),
            "signature MANIFEST.json.minisig",
        ),
        (
            "signature removed",
            Box::new(|s: &Path| fs::remove_file(s.join("MANIFEST.json.minisig")).unwrap()),
            "signature MANIFEST.json.minisig",
        ),
        (
            "manifest not JSON, signed",
            Box::new(|s: &Path| {
                fs::write(s.join("MANIFEST.json"), "{oops").unwrap();
                opskit_testkit::signing::resign(s);
            }),
            "manifest MANIFEST.json",
        ),
        (
            "truncated dump",
            Box::new(|s: &Path| truncate(&s.join("db.dump.gz"), 0.5)),
            "db.dump.gz",
        ),
        (
            "truncated archive",
            Box::new(|s: &Path| truncate(&s.join("files-appfiles.tar.gz"), 0.9)),
            "files-appfiles.tar.gz",
        ),
        (
            "empty dump",
            Box::new(|s: &Path| truncate(&s.join("db.dump.gz"), 0.0)),
            "size db.dump.gz",
        ),
        (
            "loose permissions",
            Box::new(|s: &Path| chmod(&s.join("db.dump.gz"), 0o644)),
            "permissions - group/world access: db.dump.gz is 644",
        ),
        (
            "sums edited",
            Box::new(|s: &Path| {
                let p = s.join("SHA256SUMS");
                let t = fs::read_to_string(&p).unwrap();
                fs::write(&p, t.replacen('a', "b", 1)).unwrap();
            }),
            "sums SHA256SUMS",
        ),
    ];
    for (what, damage, want) in cases {
        let set = copy_set(&good, &work);
        damage(&set);
        let out = run(verify().arg(&set).arg("--pg-bindir").arg(c.bindir()));
        assert_eq!(out.code, 1, "{what}: {}", out.stdout);
        let failed = failed_checks(&out);
        assert!(
            failed.iter().any(|f| f.contains(want)),
            "{what}: want {want:?} in {failed:?}"
        );
        fs::remove_dir_all(&set).unwrap();
    }
}

fn truncate(p: &Path, frac: f64) {
    let len = fs::metadata(p).unwrap().len();
    let f = fs::OpenOptions::new().write(true).open(p).unwrap();
    f.set_len((len as f64 * frac) as u64).unwrap();
}

fn chmod(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn any_flipped_byte_in_any_file_is_detected() {
    let c = cluster();
    let db = c.create_db();
    seed(c, &db, 3000);
    let tmp = tempfile::tempdir().unwrap();
    let good = make_set(c, &db, tmp.path());
    let work = tmp.path().join("work");
    fs::create_dir(&work).unwrap();
    let files: Vec<PathBuf> = fs::read_dir(&good)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ std::process::id() as u64);
    let rounds = 24;
    // Flip bytes in many copies, then verify them all in one run.
    let mut damaged = Vec::new();
    for i in 0..rounds {
        let set = work.join(format!("case{i:02}"));
        Command::new("cp")
            .arg("-a")
            .arg(&good)
            .arg(&set)
            .status()
            .unwrap();
        let victim = &files[(rng.next_u64() % files.len() as u64) as usize];
        let p = set.join(victim.file_name().unwrap());
        let mut bytes = fs::read(&p).unwrap();
        let at = (rng.next_u64() % bytes.len() as u64) as usize;
        let mask = (rng.next_u64() % 255 + 1) as u8;
        bytes[at] ^= mask;
        fs::write(&p, &bytes).unwrap();
        damaged.push((
            set,
            format!(
                "{} byte {at} ^ {mask:#x}",
                victim.file_name().unwrap().to_string_lossy()
            ),
        ));
    }
    let out = run(verify()
        .args(damaged.iter().map(|(s, _)| s))
        .arg("--pg-bindir")
        .arg(c.bindir()));
    assert_eq!(out.code, 1);
    let recs = out.events("verify");
    assert_eq!(recs.len(), rounds);
    for (rec, (_, what)) in recs.iter().zip(&damaged) {
        assert_eq!(rec["ok"], false, "not detected: {what}");
    }
    let s = out.summary();
    assert_eq!(
        (s["failed"].as_u64(), s["passed"].as_u64()),
        (Some(rounds as u64), Some(0))
    );
}

#[test]
fn a_damaged_set_does_not_stop_the_others_and_latest_picks_the_newest() {
    let c = cluster();
    let db = c.create_db();
    seed(c, &db, 100);
    let tmp = tempfile::tempdir().unwrap();
    let first = make_set(c, &db, tmp.path());
    std::thread::sleep(Duration::from_millis(1100));
    let second = make_set(c, &db, tmp.path());
    fs::write(first.join("db.dump.gz"), "garbage").unwrap();
    let out = run(verify()
        .arg(&first)
        .arg(&second)
        .arg("/nonexistent/set")
        .arg("--pg-bindir")
        .arg(c.bindir()));
    assert_eq!(out.code, 1);
    let recs = out.events("verify");
    assert_eq!(
        recs.iter().map(|r| r["ok"] == true).collect::<Vec<_>>(),
        vec![false, true, false]
    );
    let s = out.summary();
    assert_eq!(
        (s["passed"].as_u64(), s["failed"].as_u64()),
        (Some(1), Some(2))
    );

    let out = run(verify()
        .arg("--latest")
        .arg(tmp.path().join("sets"))
        .arg("--record"));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.events("verify")[0]["path"], second.to_str().unwrap());
    let log = fs::read_to_string(tmp.path().join("sets/verified.ndjson")).unwrap();
    let line: serde_json::Value = serde_json::from_str(log.lines().last().unwrap()).unwrap();
    assert_eq!(line["event"], "verify");
    assert_eq!(line["ok"], true);
    assert_eq!(line["set"], second.file_name().unwrap().to_str().unwrap());
}

fn databases(c: &Cluster) -> Vec<String> {
    c.query("postgres", "SELECT datname FROM pg_database ORDER BY 1")
}

#[test]
fn a_restore_that_fails_leaves_no_scratch_database() {
    let c = cluster();
    let db = c.create_db();
    let role = format!("ghost_{}", std::process::id());
    seed(c, &db, 100);
    c.query(
        &db.name,
        &format!("CREATE ROLE {role}; GRANT SELECT ON items TO {role}"),
    );
    let tmp = tempfile::tempdir().unwrap();
    let set = make_set(c, &db, tmp.path());
    c.query(
        &db.name,
        &format!("REVOKE SELECT ON items FROM {role}; DROP ROLE {role}"),
    );
    let out = run(verify()
        .arg(&set)
        .args(["--restore-into", &c.url("postgres"), "--pg-bindir"])
        .arg(c.bindir()));
    assert_eq!(out.code, 1, "{}", out.stderr);
    // Its own scratch database, by name: other tests of this binary create
    // and drop databases at the same time.
    let scratch = scratch_names(&out.stderr)
        .pop()
        .expect("the scratch database is named on stderr");
    let failed = failed_checks(&out);
    assert!(
        failed.iter().any(
            |f| f.starts_with("restore db.dump.gz pg_restore") // --jobs N by default
                && f.contains(" failed: ")
                && f.contains(&role)
        ),
        "{failed:?}"
    );
    assert!(
        !databases(c).contains(&scratch),
        "{scratch} was left behind"
    );
}

#[test]
fn row_count_mismatches_name_table_expected_and_found() {
    let c = cluster();
    let db = c.create_db();
    seed(c, &db, 100);
    let tmp = tempfile::tempdir().unwrap();
    let set = make_set(c, &db, tmp.path());
    // Edit the recorded count and re-seal the set, as if the dump had lost rows.
    let mp = set.join("MANIFEST.json");
    let mut m: serde_json::Value = serde_json::from_str(&fs::read_to_string(&mp).unwrap()).unwrap();
    m["database"]["row_counts"]["public.items"] = serde_json::json!(101);
    let text = serde_json::to_string_pretty(&m).unwrap() + "\n";
    fs::write(&mp, &text).unwrap();
    let sums = fs::read_to_string(set.join("SHA256SUMS")).unwrap();
    let fixed: String = sums
        .lines()
        .map(|l| {
            if l.ends_with("  MANIFEST.json") {
                format!(
                    "{}  MANIFEST.json\n",
                    opskit::gz::sha256_hex(text.as_bytes())
                )
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    fs::write(set.join("SHA256SUMS"), fixed).unwrap();
    opskit_testkit::signing::resign(&set);
    let out = run(verify()
        .arg(&set)
        .args(["--restore-into", &c.url("postgres"), "--pg-bindir"])
        .arg(c.bindir()));
    assert_eq!(out.code, 1, "{}", out.stderr);
    let failed = failed_checks(&out);
    assert_eq!(
        failed,
        vec!["row_counts - public.items: expected 101, found 100".to_string()]
    );
}

#[test]
fn unreachable_restore_server_is_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = run(verify().arg(tmp.path()).args([
        "--restore-into",
        &format!("postgres://u:pw@127.0.0.1:{port}/postgres"),
    ]));
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains(&format!("127.0.0.1:{port}")),
        "{}",
        out.stderr
    );
}

/// #20 item 12: `--record SET` verifies SET and records beside it; the
/// value of --record is taken only as `--record=FILE`.
#[test]
fn record_without_equals_does_not_swallow_the_set() {
    let c = cluster();
    let db = c.create_db();
    seed(c, &db, 10);
    let tmp = tempfile::tempdir().unwrap();
    let set = make_set(c, &db, tmp.path());
    let out = run(verify().arg("--quick").arg("--record").arg(&set));
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(out.events("verify")[0]["path"], set.to_str().unwrap());
    assert!(tmp.path().join("sets/verified.ndjson").exists());
    let log = tmp.path().join("mine.ndjson");
    let out = run(verify()
        .arg("--quick")
        .arg(format!("--record={}", log.display()))
        .arg(&set));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(fs::read_to_string(&log).unwrap().lines().count(), 1);
}
