//! The `wal` check of a base set when its root has no WAL archive, or its
//! manifest's start segment does not parse. A real base set (pgbackup
//! --physical) is copied into a root of its own per case, its manifest
//! changed as an older pgbackup or damage would leave it, and signed again.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{copy_set, verify};
use opskit_testkit::forge::edit_manifest;
use opskit_testkit::tools::run;
use opskit_testkit::{bin, cluster};

/// A base set of the test cluster (archive_mode off) under `root`.
fn base_set(root: &Path) -> PathBuf {
    let _one = opskit_testkit::pg::base_backup_lock();
    let c = cluster();
    let db = c.create_db();
    let out = run(opskit_testkit::signing::command(bin("pgbackup"))
        .arg("--physical")
        .arg("--dest")
        .arg(root)
        .args(["--db", &db.url, "--pg-bindir"])
        .arg(c.bindir())
        .env_remove("OPSKIT_LOG"));
    assert_eq!(out.code, 0, "{}", out.stderr);
    PathBuf::from(out.events("backup")[0]["path"].as_str().unwrap())
}

/// `set` copied into a new root `name` under `dir`, its manifest's
/// physical part changed by `edit` and signed again.
fn variant(
    set: &Path,
    dir: &Path,
    name: &str,
    edit: impl FnOnce(&mut serde_json::Value),
) -> PathBuf {
    let root = dir.join(name);
    fs::create_dir(&root).unwrap();
    let copy = copy_set(set, &root);
    edit_manifest(&copy, |m| edit(&mut m["physical"]));
    opskit_testkit::signing::resign(&copy);
    copy
}

/// verify-backup --quick on `set`: its exit code and the `wal` check.
fn wal_check(set: &Path) -> (i32, serde_json::Value) {
    let out = run(verify().arg("--quick").arg(set));
    let check = out.events("verify")[0]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "wal")
        .unwrap_or_else(|| panic!("no wal check: {}", out.stdout))
        .clone();
    (out.code, check)
}

fn detail(check: &serde_json::Value) -> &str {
    check["detail"].as_str().unwrap()
}

#[test]
fn no_archive_fails_only_a_set_taken_with_archiving_on_or_a_root_that_lost_it() {
    let tmp = tempfile::tempdir().unwrap();
    let set = base_set(&tmp.path().join("made"));
    let m = opskit_testkit::forge::manifest(&set);
    assert_eq!(m["physical"]["archive_mode"], "off", "pgbackup records it");

    // Taken with archiving off, no archive: it recovers to its own end only.
    let (code, c) = wal_check(&set);
    assert_eq!((code, &c["ok"]), (0, &true.into()), "{c}");
    assert!(detail(&c).contains("archive_mode off"), "{c}");
    assert!(detail(&c).contains("recovers to its own end only"), "{c}");

    // Taken with archiving on, and the root has no archive: a failure
    // that names it.
    for mode in ["on", "always"] {
        let on = variant(&set, tmp.path(), mode, |p| p["archive_mode"] = mode.into());
        let (code, c) = wal_check(&on);
        assert_eq!((code, &c["ok"]), (1, &false.into()), "{c}");
        let wal = on.parent().unwrap().join("wal");
        assert!(
            detail(&c).contains(&format!("archive_mode {mode}"))
                && detail(&c).contains(&format!("{} does not exist", wal.display())),
            "{c}"
        );
        // Its archive directory there but emptied: the same.
        fs::create_dir_all(wal.join("00000001")).unwrap();
        let (code, c) = wal_check(&on);
        assert_eq!(code, 1, "{c}");
        assert!(detail(&c).contains("holds no archived WAL"), "{c}");
    }

    // An older set (archive_mode not recorded): the root decides. Never
    // had an archive: as before, a pass.
    let old = variant(&set, tmp.path(), "old", |p| {
        p.as_object_mut().unwrap().remove("archive_mode");
    });
    let (code, c) = wal_check(&old);
    assert_eq!((code, &c["ok"]), (0, &true.into()), "{c}");
    assert!(detail(&c).contains("no WAL archive in this root"), "{c}");
    // Its root's archive directory is there with nothing archived: the
    // archive it had is gone.
    let wal = old.parent().unwrap().join("wal");
    fs::create_dir_all(wal.join("00000001")).unwrap();
    fs::write(wal.join("00000001/.push.lock"), "").unwrap();
    let (code, c) = wal_check(&old);
    assert_eq!((code, &c["ok"]), (1, &false.into()), "{c}");
    assert!(
        detail(&c).contains(&format!("{} holds no archived WAL", wal.display()))
            && detail(&c).contains("the archive this root had is gone"),
        "{c}"
    );
}

#[test]
fn a_start_segment_that_does_not_parse_fails_and_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let set = base_set(&tmp.path().join("made"));
    for (name, start) in [("short", "00000001000000000000000"), ("text", "latest")] {
        let bad = variant(&set, tmp.path(), name, |p| p["start_wal"] = start.into());
        let (code, c) = wal_check(&bad);
        assert_eq!((code, &c["ok"]), (1, &false.into()), "{c}");
        assert!(detail(&c).contains(&format!("start_wal '{start}'")), "{c}");
    }
}
