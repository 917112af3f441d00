//! zstd sets: written by `pgbackup --compress zstd`, read by the stock
//! `zstd` tool and by verify-backup at every depth; damage in a zstd file
//! is named; a set mixing gzip and zstd files verifies; a bad `--compress`
//! value is a one-line usage error.

use std::fs;
use std::path::Path;
use std::process::Command;

use opskit_testkit::tools::run;
use opskit_testkit::{bin, cluster};

mod common;
use common::*;

/// Whether one of the check lines is about `name_file` ("zstd db.dump.zst").
fn has(lines: &[String], name_file: &str) -> bool {
    lines
        .iter()
        .any(|l| l.starts_with(&format!("{name_file} ")))
}

fn manifest(set: &Path) -> serde_json::Value {
    serde_json::from_str(&fs::read_to_string(set.join("MANIFEST.json")).unwrap()).unwrap()
}

#[test]
fn a_zstd_set_is_standard_zstd_and_passes_every_depth() {
    let c = cluster();
    let db = c.create_db();
    seed(c, &db, 20_000);
    let tmp = tempfile::tempdir().unwrap();
    let set = make_set_with(c, &db, tmp.path(), &["--compress", "zstd"]);
    let m = manifest(&set);
    let names: Vec<&str> = m["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["db.dump.zst", "globals.sql.zst", "files-appfiles.tar.zst"]
    );
    for f in m["files"].as_array().unwrap() {
        assert_eq!(f["compression"], "zstd", "{f}");
        let st = Command::new("zstd")
            .arg("-tq")
            .arg(set.join(f["name"].as_str().unwrap()))
            .status();
        assert!(st.unwrap().success(), "zstd -t {f}");
    }
    let cmd = m["database"]["restore_command"].as_str().unwrap();
    assert!(
        cmd.starts_with("zstd -dc db.dump.zst | pg_restore"),
        "{cmd}"
    );

    let out = run(verify().arg(&set).arg("--pg-bindir").arg(c.bindir()));
    assert_eq!(out.code, 0, "{:?}", check_lines(&out, false));
    let ok = check_lines(&out, true);
    for f in &names {
        assert!(has(&ok, &format!("zstd {f}")), "zstd {f} not in {ok:?}");
    }
    assert!(has(&ok, "toc db.dump.zst"), "{ok:?}");
    let out = run(verify()
        .args(["--restore-into", &c.url("postgres")])
        .arg(&set)
        .arg("--pg-bindir")
        .arg(c.bindir()));
    assert_eq!(
        out.code,
        0,
        "{}\n{:?}",
        out.stderr,
        check_lines(&out, false)
    );
    let rec = &out.events("verify")[0];
    assert!(
        rec["checks"].to_string().contains("2 tables match"),
        "{rec}"
    );

    // The manifest's restore command, with the stock tools.
    let target = c.create_db();
    let out = c.restore_with_manifest(&set, &m, &target.name);
    assert_eq!(out.code, 0, "{cmd}: {}", out.stderr);
    assert_eq!(
        c.query(&target.name, "SELECT count(*) FROM items"),
        ["20000"]
    );
}

#[test]
fn damage_in_a_zstd_file_is_named() {
    let c = cluster();
    let db = c.create_db();
    seed(c, &db, 20_000);
    let tmp = tempfile::tempdir().unwrap();
    let good = make_set_with(c, &db, tmp.path(), &["--compress", "zstd:1"]);
    let work = tmp.path().join("work");
    fs::create_dir(&work).unwrap();
    for (what, file) in [
        ("flip", "db.dump.zst"),
        ("cut", "db.dump.zst"),
        ("flip", "files-appfiles.tar.zst"),
    ] {
        let set = copy_set(&good, &work);
        let p = set.join(file);
        let mut bytes = fs::read(&p).unwrap();
        if what == "flip" {
            let i = bytes.len() * 2 / 3;
            bytes[i] ^= 0x10;
        } else {
            bytes.truncate(bytes.len() * 3 / 4);
        }
        fs::write(&p, bytes).unwrap();
        let out = run(verify().arg(&set).arg("--pg-bindir").arg(c.bindir()));
        assert_eq!(out.code, 1, "{what} {file}: {}", out.stdout);
        let f = check_lines(&out, false);
        assert!(has(&f, &format!("sha256 {file}")), "{what} {file}: {f:?}");
        assert!(has(&f, &format!("zstd {file}")), "{what} {file}: {f:?}");
        fs::remove_dir_all(&set).unwrap();
    }
}

fn sha256(p: &Path) -> String {
    let out = Command::new("sha256sum").arg(p).output().unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// A set whose globals are gzip and the rest zstd (as after recompressing
/// one file by hand) verifies file by file by its own codec.
#[test]
fn a_set_mixing_gzip_and_zstd_verifies() {
    let c = cluster();
    let db = c.create_db();
    seed(c, &db, 100);
    let tmp = tempfile::tempdir().unwrap();
    let set = make_set_with(c, &db, tmp.path(), &["--compress", "zstd"]);
    let sql = Command::new("zstd")
        .arg("-dc")
        .arg(set.join("globals.sql.zst"))
        .output()
        .unwrap();
    assert!(sql.status.success());
    let gz = Command::new("gzip")
        .arg("-c")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut gz = gz;
    use std::io::Write;
    gz.stdin.take().unwrap().write_all(&sql.stdout).unwrap();
    let packed = gz.wait_with_output().unwrap().stdout;
    fs::remove_file(set.join("globals.sql.zst")).unwrap();
    fs::write(set.join("globals.sql.gz"), &packed).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(
        set.join("globals.sql.gz"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let mut m = manifest(&set);
    for f in m["files"].as_array_mut().unwrap() {
        if f["kind"] == "globals" {
            f["name"] = "globals.sql.gz".into();
            f["compression"] = "gzip".into();
            f["bytes"] = packed.len().into();
            f["sha256"] = sha256(&set.join("globals.sql.gz")).into();
        }
    }
    fs::write(
        set.join("MANIFEST.json"),
        serde_json::to_string_pretty(&m).unwrap(),
    )
    .unwrap();
    let mut sums = String::new();
    for f in m["files"].as_array().unwrap() {
        sums.push_str(&format!(
            "{}  {}\n",
            f["sha256"].as_str().unwrap(),
            f["name"].as_str().unwrap()
        ));
    }
    sums.push_str(&format!(
        "{}  MANIFEST.json\n",
        sha256(&set.join("MANIFEST.json"))
    ));
    fs::write(set.join("SHA256SUMS"), sums).unwrap();
    opskit_testkit::signing::resign(&set);
    let out = run(verify().arg(&set).arg("--pg-bindir").arg(c.bindir()));
    assert_eq!(
        out.code,
        0,
        "{:?}\n{}",
        check_lines(&out, false),
        out.stdout
    );
    let ok = check_lines(&out, true);
    assert!(has(&ok, "gzip globals.sql.gz"), "{ok:?}");
    assert!(has(&ok, "zstd db.dump.zst"), "{ok:?}");
}

#[test]
fn a_bad_compress_value_is_a_usage_error() {
    for bad in ["lz4", "zstd:20", "zstd:0", "gzip:10", "10", "zstd:fast"] {
        let out = run(opskit_testkit::signing::command(bin("pgbackup")).args([
            "--dest",
            "/nonexistent/never-created",
            "--compress",
            bad,
        ]));
        assert_eq!(out.code, 64, "{bad}: {}", out.stderr);
        let line = out.stderr.trim();
        assert!(!line.contains('\n') && line.contains(bad), "{bad}: {line}");
        assert!(!Path::new("/nonexistent/never-created").exists());
    }
}
