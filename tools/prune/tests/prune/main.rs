//! prune on real directory trees: what it deletes and keeps; `hostile`
//! holds what it refuses and never touches.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use opskit_testkit::tools::{Output, run, run_with_stdin};

mod hostile;

fn prune(root: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_prune"));
    c.arg(root).env_remove("OPSKIT_LOG");
    c
}

fn with_stdin(cmd: &mut Command, input: &str) -> Output {
    run_with_stdin(cmd, input)
}

/// A set directory as pgbackup lays it out (the contents do not matter to prune).
fn set(root: &Path, name: &str) -> PathBuf {
    let d = root.join(name);
    fs::create_dir(&d).unwrap();
    fs::write(
        d.join("MANIFEST.json"),
        opskit_testkit::tools::minimal_manifest(name),
    )
    .unwrap();
    fs::write(d.join("db.dump.gz"), vec![7u8; 1000]).unwrap();
    d
}

/// Ten daily sets, newest 2026-11-23.
fn ten_days(root: &Path) -> Vec<PathBuf> {
    (0..10)
        .map(|i| set(root, &format!("app-202611{:02}T030000Z", 23 - i)))
        .collect()
}

/// How many `app-` sets are still in the root.
fn sets_left(root: &Path) -> usize {
    names(root).iter().filter(|n| n.starts_with("app-")).count()
}

fn names(root: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into())
        .collect();
    v.sort();
    v
}

fn action_of(out: &Output, name: &str) -> String {
    out.events("prune")
        .into_iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no record for {name}"))["action"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A whole verify record, as verify-backup writes it (prune reads typed
/// records: a partial one is an input error that holds deletion).
fn verify_record(path: &Path, name: &str, ok: bool) -> serde_json::Value {
    serde_json::json!({"event": "verify", "tool": "verify-backup", "ok": ok, "set": name,
        "path": path, "depth": "structural", "failed_checks": u8::from(!ok), "duration_s": 0.1,
        "checks": [{"name": "sha256", "file": "db.dump.gz", "ok": ok, "detail": ""}]})
}

fn verify_line(root: &Path, name: &str, ok: bool) -> String {
    verify_record(&root.join(name), name, ok).to_string()
}

#[test]
fn keeps_the_policy_deletes_the_rest_and_leaves_other_things_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("backups");
    fs::create_dir(&root).unwrap();
    let sets = ten_days(&root);
    fs::create_dir(root.join("lost+found")).unwrap();
    fs::write(root.join("notes.txt"), "keep me").unwrap();
    // A symlink with a set's name pointing outside the root is never followed.
    let outside = tmp.path().join("elsewhere");
    set(tmp.path(), "elsewhere");
    std::os::unix::fs::symlink(&outside, root.join("app-20200101T000000Z")).unwrap();

    let out = run(prune(&root).args(["--keep-daily", "3"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let kept: Vec<String> = sets[..3]
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into())
        .collect();
    let mut want = kept.clone();
    want.extend([
        "app-20200101T000000Z".into(),
        "lost+found".into(),
        "notes.txt".into(),
        ".opskit.lock".into(),
    ]);
    want.sort();
    assert_eq!(names(&root), want);
    assert!(
        outside.join("MANIFEST.json").exists(),
        "followed a symlink out of the root"
    );
    let rec = out
        .events("prune")
        .into_iter()
        .find(|r| r["name"] == kept[0].as_str())
        .unwrap();
    assert_eq!(
        rec["reasons"],
        serde_json::json!(["daily 2026-11-23", "newest", "min-keep unverified"])
    );
    assert_eq!(action_of(&out, "app-20261120T030000Z"), "delete");
    assert_eq!(action_of(&out, "notes.txt"), "ignored");
    assert_eq!(action_of(&out, "app-20200101T000000Z"), "ignored");
    let s = out.summary();
    assert_eq!(
        (
            s["kept"].as_u64(),
            s["deleted"].as_u64(),
            s["ignored"].as_u64()
        ),
        (Some(3), Some(7), Some(3))
    );
    let manifest = opskit_testkit::tools::minimal_manifest("app-20261120T030000Z").len();
    assert_eq!(s["bytes_freed"], 7 * (1000 + manifest) as u64);
}

#[test]
fn dry_run_reports_the_same_and_deletes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    ten_days(tmp.path());
    let before = names(tmp.path());
    let out = run(prune(tmp.path()).args(["--keep-last", "2", "--dry-run"]));
    assert_eq!(out.code, 0);
    let mut after = names(tmp.path());
    after.retain(|n| n != ".opskit.lock");
    assert_eq!(after, before);
    assert_eq!(
        out.events("prune")
            .iter()
            .filter(|r| r["action"] == "delete")
            .count(),
        8
    );
    assert_eq!(out.summary()["dry_run"], true);
}

#[test]
fn refusals_are_one_line_usage_errors() {
    let tmp = tempfile::tempdir().unwrap();
    ten_days(tmp.path());
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec![], "no keep rule"),
        (vec!["--keep-daily", "x"], "not a count"),
        (vec!["--keep-daily", "-2"], "not a count"),
        (vec!["--keep-within", "7w"], "invalid duration '7w'"),
        (
            vec!["--keep-last", "1", "--tz", "Mars/Olympus"],
            "unknown time zone",
        ),
        (vec!["--keep-last", "1", "--glob", "a["], "invalid --glob"),
    ];
    for (args, want) in cases {
        let out = run(prune(tmp.path()).args(&args));
        assert_eq!(out.code, 64, "{args:?}: {}", out.stderr);
        assert_eq!(out.stderr.lines().count(), 1, "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(want), "{args:?}: {}", out.stderr);
    }
    assert_eq!(sets_left(tmp.path()), 10);
}

#[test]
fn a_set_that_failed_verification_never_fills_a_slot() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap();
    ten_days(&root);
    // The result log says the 22nd is corrupt and the 23rd good.
    let log = [
        verify_line(&root, "app-20261122T030000Z", false),
        verify_line(&root, "app-20261123T030000Z", true),
    ]
    .join("\n");
    fs::write(root.join("verified.ndjson"), log + "\n").unwrap();
    let out = run(prune(&root).args(["--keep-daily", "3"]));
    assert_eq!(
        out.code, 1,
        "corrupt sets make the run report a failed check"
    );
    assert_eq!(action_of(&out, "app-20261122T030000Z"), "corrupt");
    for kept in [
        "app-20261123T030000Z",
        "app-20261121T030000Z",
        "app-20261120T030000Z",
    ] {
        assert_eq!(action_of(&out, kept), "keep", "{kept}");
    }
    assert!(
        root.join("app-20261122T030000Z").exists(),
        "corrupt sets stay without --delete-corrupt"
    );
    assert_eq!(out.summary()["corrupt"], 1);

    let out = run(prune(&root).args(["--keep-daily", "3", "--delete-corrupt"]));
    assert_eq!(action_of(&out, "app-20261122T030000Z"), "delete");
    assert!(!root.join("app-20261122T030000Z").exists());
}

#[test]
fn verification_records_on_stdin_are_used_and_bad_input_holds_deletion() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap();
    ten_days(&root);
    let good = verify_line(&root, "app-20261123T030000Z", true);
    // A record naming a path outside the root is refused, and nothing is deleted.
    let outside = verify_record(
        Path::new("/etc/app-20261123T030000Z"),
        "app-20261123T030000Z",
        false,
    )
    .to_string();
    let out = with_stdin(
        prune(&root).args(["--keep-last", "1"]),
        &format!("{good}\n{outside}\n"),
    );
    assert_eq!(out.code, 2, "{}", out.stderr);
    let err = &out.events("error")[0];
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("not directly under"),
        "{err}"
    );
    assert_eq!(err["line"], 2);
    assert_eq!(sets_left(&root), 10);
    assert_eq!(
        out.summary()["held"],
        "some verification records could not be read"
    );

    // An upstream failure (pgbackup or verify-backup failed) holds deletion too.
    let upstream =
        r#"{"event":"error","tool":"pgbackup","ok":false,"message":"no space left on /b"}"#;
    let out = with_stdin(
        prune(&root).args(["--keep-last", "1"]),
        &format!("{upstream}\n"),
    );
    assert_eq!(out.code, 2);
    assert_eq!(sets_left(&root), 10);

    // Good records alone: pruning goes ahead.
    let out = with_stdin(
        prune(&root).args(["--keep-last", "1"]),
        &format!("{good}\nnot json\n"),
    );
    assert_eq!(out.code, 2, "a malformed line still holds deletion");
    let out = with_stdin(
        prune(&root).args(["--keep-last", "1", "--min-keep", "0"]),
        &format!("{good}\n"),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(sets_left(&root), 1);
}

#[test]
fn leftovers_of_interrupted_runs_are_removed_once_stale() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    ten_days(root);
    let old = root.join(".app-20261101T030000Z.opskit-tmp.4242.000000001");
    let fresh = root.join(".app-20261123T040000Z.opskit-tmp.4343.000000002");
    let trash = root.join(".app-20261001T030000Z.opskit-trash.4444.000000003");
    for d in [&old, &fresh, &trash] {
        fs::create_dir(d).unwrap();
        fs::write(d.join("db.dump.gz"), "partial").unwrap();
    }
    let st = Command::new("touch")
        .args(["-d", "3 days ago"])
        .arg(&old)
        .status()
        .unwrap();
    assert!(st.success());
    let out = run(prune(root).args(["--keep-last", "100"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!old.exists() && !trash.exists());
    assert!(fresh.exists(), "an in-progress run's directory was removed");
    assert_eq!(out.summary()["leftovers_removed"], 2);
    assert_eq!(
        action_of(&out, &fresh.file_name().unwrap().to_string_lossy()),
        "ignored"
    );
}

#[test]
fn legacy_one_liner_backups_are_pruned_by_the_time_in_their_names() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    for day in 10..20 {
        fs::write(root.join(format!("backup_202611{day}_030000.sql.gz")), "x").unwrap();
    }
    fs::write(root.join("backup_undated.sql.gz"), "x").unwrap();
    fs::write(root.join("README"), "x").unwrap();
    let out = run(prune(root).args(["--keep-daily", "3", "--glob", "backup_*.sql.gz"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let left = names(root);
    // The undated file's time is its mtime (now): it is the newest.
    for want in [
        "README",
        "backup_20261119_030000.sql.gz",
        "backup_20261118_030000.sql.gz",
        "backup_undated.sql.gz",
    ] {
        assert!(
            left.contains(&want.to_string()),
            "{want} missing from {left:?}"
        );
    }
    assert!(
        !left.contains(&"backup_20261117_030000.sql.gz".to_string()),
        "{left:?}"
    );
    assert_eq!(out.summary()["deleted"], 8);
}

#[test]
fn concurrent_backup_holds_the_root() {
    let tmp = tempfile::tempdir().unwrap();
    ten_days(tmp.path());
    let _held =
        opskit::lock::acquire(&tmp.path().join(".opskit.lock"), std::time::Duration::ZERO).unwrap();
    let out = run(prune(tmp.path()).args(["--keep-last", "1"]));
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("another run holds"), "{}", out.stderr);
    assert_eq!(sets_left(tmp.path()), 10);
}

#[test]
fn records_say_how_deep_a_kept_set_was_verified() {
    // An encrypted set verified on the server without its identity passes
    // at depth quick (checksums only); one verified in full elsewhere later
    // stays "structural" even when the nightly quick check follows.
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap();
    ten_days(&root);
    let at = |name: &str, ok: bool, depth: &str| {
        let mut r = verify_record(&root.join(name), name, ok);
        r["depth"] = depth.into();
        r.to_string()
    };
    let log = [
        at("app-20261123T030000Z", true, "quick"),
        at("app-20261122T030000Z", true, "structural"),
        at("app-20261122T030000Z", true, "quick"),
        at("app-20261121T030000Z", true, "restore"),
        at("app-20261121T030000Z", false, "quick"),
    ]
    .join("\n");
    fs::write(root.join("verified.ndjson"), log + "\n").unwrap();
    let out = run(prune(&root).args(["--keep-daily", "3"]));
    let depth = |name: &str| {
        out.events("prune")
            .into_iter()
            .find(|r| r["name"] == name)
            .unwrap()["verified_depth"]
            .clone()
    };
    assert_eq!(depth("app-20261123T030000Z"), "quick");
    assert_eq!(depth("app-20261122T030000Z"), "structural");
    // Failed since: no depth, and corrupt.
    assert!(depth("app-20261121T030000Z").is_null());
    assert_eq!(action_of(&out, "app-20261121T030000Z"), "corrupt");
    assert!(depth("app-20261120T030000Z").is_null());
}
