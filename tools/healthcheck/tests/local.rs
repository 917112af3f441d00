//! disk: and backup: checks on real directories.

mod support;

use std::path::Path;

use chrono::{Duration, Utc};
use opskit_testkit::tools::run;
use support::healthcheck;

#[test]
fn disk_free_space_and_thresholds() {
    let dir = tempfile::tempdir().unwrap();
    let target = format!("disk:{}", dir.path().display());
    let out = run(healthcheck().arg(&target));
    let c = &out.events("check")[0];
    let free = c["values"]["free_pct"].as_f64().unwrap();
    assert!(free > 0.0 && free <= 100.0);
    assert!(c["values"]["free_bytes"].as_u64().unwrap() > 0);
    // A threshold above what is free warns; the kind prefix is accepted.
    let out = run(healthcheck().args([
        &target,
        "--warn",
        &format!("disk.free_pct < {}", free + 0.5),
    ]));
    assert_eq!(out.code, 1, "{}", out.stdout);
    let out = run(healthcheck().args([
        &target,
        "--crit",
        "free_bytes < 1T",
        "--warn",
        "free_bytes < 2T",
    ]));
    let total = out.events("check")[0]["values"]["total_bytes"]
        .as_u64()
        .unwrap();
    assert_eq!(
        out.code,
        if total < 1 << 40 { 2 } else { 0 },
        "{}",
        out.stdout
    );
    if total < 1 << 40 {
        let d = out.events("check")[0]["detail"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            d.starts_with("free_bytes is ")
                && d.contains(" GiB (crit free_bytes < 1T)")
                && !d.contains("warn"),
            "{d}"
        );
    }
}

#[test]
fn disk_path_that_does_not_exist() {
    let out = run(healthcheck().arg("disk:/no/such/mount"));
    assert_eq!(out.code, 2);
    let d = out.events("check")[0]["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        d.contains("/no/such/mount") && d.contains("No such file"),
        "{d}"
    );
}

fn set(root: &Path, hours_ago: i64) -> String {
    let at = Utc::now() - Duration::hours(hours_ago) - Duration::minutes(1);
    let name = opskit::backupset::set_dir_name("app", at);
    let dir = root.join(&name);
    std::fs::create_dir(&dir).unwrap();
    let manifest = serde_json::json!({
        "format": "opskit-set/1", "set": name, "name": "app", "tool": "pgbackup", "tool_version": "0",
        "started_at": at, "finished_at": at, "duration_s": 1.0,
        "files": [{"name": "db.dump.gz", "kind": "database", "bytes": 4096, "sha256": "00"}],
    });
    std::fs::write(dir.join("MANIFEST.json"), manifest.to_string()).unwrap();
    name
}

fn verified(root: &Path, set: &str, ok: bool, restore_s: Option<f64>) {
    verified_at(root, set, ok, restore_s, "structural");
}

fn verified_at(root: &Path, set: &str, ok: bool, restore_s: Option<f64>, depth: &str) {
    // A whole verify record, as verify-backup --record writes it:
    // healthcheck reads the log as typed records.
    let mut rec = serde_json::json!({
        "event": "verify", "tool": "verify-backup", "ts": Utc::now(), "ok": ok, "set": set,
        "path": root.join(set), "depth": depth, "failed_checks": u8::from(!ok),
        "checks": [{"name": "sha256", "file": "db.dump.gz", "ok": ok, "detail": "x"}],
        "duration_s": 0.1,
    });
    if let Some(r) = restore_s {
        rec["restore_s"] = r.into();
    }
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(root.join("verified.ndjson"))
        .unwrap();
    std::io::Write::write_all(&mut log, format!("{rec}\n").as_bytes()).unwrap();
}

#[test]
fn backup_freshness_and_verification() {
    let root = tempfile::tempdir().unwrap();
    let target = format!("backup:{}", root.path().display());
    // No set at all: CRITICAL by default.
    let out = run(healthcheck().arg(&target));
    assert_eq!(out.code, 2);
    assert!(
        out.events("check")[0]["detail"]
            .as_str()
            .unwrap()
            .contains("no complete backup set")
    );

    let old = set(root.path(), 30);
    let out = run(healthcheck().arg(&target));
    assert_eq!(out.code, 2, "30 h old: {}", out.stdout);
    let newest = set(root.path(), 2);
    // An unfinished set (no manifest) and a staging dir do not count.
    std::fs::create_dir(
        root.path()
            .join(opskit::backupset::set_dir_name("app", Utc::now())),
    )
    .unwrap();
    std::fs::create_dir(root.path().join(".app-x.opskit-tmp.1.2")).unwrap();
    let out = run(healthcheck().arg(&target));
    assert_eq!(out.code, 0, "{}", out.stdout);
    let v = &out.events("check")[0]["values"];
    assert_eq!(v["sets"], 2);
    assert_eq!(v["newest"], newest.as_str());
    assert_eq!(v["newest_bytes"], 4096);
    assert!(v["verified"].is_null());

    // "No good backup for 26 h": only the old set passed verification.
    verified(root.path(), &old, true, Some(42.5));
    verified(root.path(), &newest, false, None);
    let gate = [
        "--expect",
        "verified != null",
        "--crit",
        "verified_age_s > 26h",
        "--warn",
        "last_verify_ok == false",
    ];
    let out = run(healthcheck().arg(&target).args(gate));
    assert_eq!(out.code, 2, "{}", out.stdout);
    let c = &out.events("check")[0];
    assert_eq!(c["values"]["verified"], old.as_str());
    assert_eq!(c["values"]["last_verify_ok"], false);
    assert_eq!(c["values"]["restore_s"], 42.5);
    assert!(c["values"]["restore_tested_age_s"].as_f64().unwrap() < 60.0);
    verified(root.path(), &newest, true, None);
    let out = run(healthcheck().arg(&target).args(gate));
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert_eq!(
        out.events("check")[0]["values"]["verified"],
        newest.as_str()
    );
}

#[test]
fn checksums_only_is_told_from_verified_in_full() {
    // Encrypted sets verified on the server without the identity reach
    // depth quick; the weekly full verification elsewhere goes deeper.
    let root = tempfile::tempdir().unwrap();
    let target = format!("backup:{}", root.path().display());
    let old = set(root.path(), 30);
    let newest = set(root.path(), 2);
    verified_at(root.path(), &old, true, None, "structural");
    verified_at(root.path(), &newest, true, None, "quick");
    let gate = ["--crit", "full_verified_age_s > 26h"];
    let out = run(healthcheck().arg(&target).args(gate));
    assert_eq!(out.code, 2, "{}", out.stdout);
    let c = &out.events("check")[0];
    let v = &c["values"];
    assert_eq!(v["verified"], newest.as_str());
    assert_eq!(v["verified_depth"], "quick");
    assert_eq!(v["full_verified"], old.as_str());
    assert!(
        v["full_verified_age_s"].as_f64().unwrap() > 29.0 * 3600.0,
        "{v}"
    );
    assert!(
        c["detail"]
            .as_str()
            .unwrap()
            .contains("old, checksums only)"),
        "{c}"
    );
    // A later full verification of the newest set: its deepest depth counts.
    verified_at(root.path(), &newest, true, None, "structural");
    verified_at(root.path(), &newest, true, None, "quick");
    let out = run(healthcheck().arg(&target).args(gate));
    assert_eq!(out.code, 0, "{}", out.stdout);
    let v = &out.events("check")[0]["values"];
    assert_eq!(v["verified_depth"], "structural");
    assert_eq!(v["full_verified"], newest.as_str());
    let prom = root.path().join("opskit.prom");
    let out = run(healthcheck().arg(&target).arg("--prometheus").arg(&prom));
    assert_eq!(out.code, 0);
    let text = std::fs::read_to_string(&prom).unwrap();
    assert!(
        text.contains("opskit_backup_full_verified_age_seconds"),
        "{text}"
    );
}

/// A newest set whose MANIFEST.json does not parse is no backup: CRITICAL,
/// naming the set and what is wrong, however the manifest is broken.
#[test]
fn a_corrupt_newest_manifest_is_critical() {
    let good = |root: &Path| {
        set(root, 30);
        set(root, 1)
    };
    type Corrupt = fn(&Path);
    let cases: [(&str, Corrupt, &str); 6] = [
        (
            "truncated",
            |m| {
                let text = std::fs::read(m).unwrap();
                std::fs::write(m, &text[..100]).unwrap();
            },
            "not a valid manifest: EOF while parsing",
        ),
        (
            "empty",
            |m| std::fs::write(m, "").unwrap(),
            "not a valid manifest",
        ),
        (
            "{}",
            |m| std::fs::write(m, "{}").unwrap(),
            "not a valid manifest: missing field",
        ),
        (
            "wrong format",
            |m| {
                let mut v: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(m).unwrap()).unwrap();
                v["format"] = "tarball/9".into();
                std::fs::write(m, v.to_string()).unwrap();
            },
            "unknown manifest format 'tarball/9'",
        ),
        (
            "FIFO",
            |m| {
                std::fs::remove_file(m).unwrap();
                let st = std::process::Command::new("mkfifo").arg(m).status();
                assert!(st.unwrap().success());
            },
            "not a regular file",
        ),
        (
            "directory",
            |m| {
                std::fs::remove_file(m).unwrap();
                std::fs::create_dir(m).unwrap();
            },
            "not a regular file",
        ),
    ];
    for (what, corrupt, why) in cases {
        let root = tempfile::tempdir().unwrap();
        let newest = good(root.path());
        corrupt(&root.path().join(&newest).join("MANIFEST.json"));
        let target = format!("backup:{}", root.path().display());
        let out = run(healthcheck().args([&target, "--timeout", "5s"]));
        assert_eq!(out.code, 2, "{what}: {}", out.stdout);
        let d = out.events("check")[0]["detail"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            d.contains(&format!("newest set {newest}")) && d.contains(why),
            "{what}: {d}"
        );
    }
}
