//! docs/records.md is the record reference: every example in it parses, and
//! every field the tools emit in a real pgbackup | verify-backup | prune run
//! (and in their failures) is listed there for its event.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use opskit_testkit::tools::{Output, run, run_with_stdin};
use opskit_testkit::{bin, cluster};
use serde_json::Value;

fn doc() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/records.md")).unwrap()
}

/// Fields documented per event: example keys plus backticked names in the
/// tables of the event's section (summary and error share theirs).
fn documented() -> BTreeMap<String, BTreeSet<String>> {
    let text = doc();
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut section = String::new();
    let mut in_json = false;
    for line in text.lines() {
        if let Some(h) = line.strip_prefix("## `") {
            section = h.split('`').next().unwrap().to_string();
            continue;
        }
        if line.starts_with("```json") {
            in_json = true;
            continue;
        }
        if line.starts_with("```") {
            in_json = false;
            continue;
        }
        if in_json {
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("example does not parse ({e}): {line}"));
            let obj = v
                .as_object()
                .unwrap_or_else(|| panic!("example is not an object: {line}"));
            for k in ["event", "tool", "ts"] {
                assert!(obj.contains_key(k), "example lacks {k}: {line}");
            }
            let ev = obj["event"].as_str().unwrap().to_string();
            out.entry(ev).or_default().extend(obj.keys().cloned());
        } else if line.starts_with('|') && !section.is_empty() {
            let set = out.entry(section.clone()).or_default();
            for (i, part) in line.split('`').enumerate() {
                if i % 2 == 1 {
                    set.insert(part.to_string());
                }
            }
        }
    }
    out
}

fn check(out: &Output, docs: &BTreeMap<String, BTreeSet<String>>, exempt: &BTreeSet<String>) {
    for r in out.records() {
        let ev = r["event"].as_str().unwrap();
        let listed = docs
            .get(ev)
            .unwrap_or_else(|| panic!("event {ev} is not documented"));
        for k in r.as_object().unwrap().keys() {
            assert!(
                listed.contains(k) || exempt.contains(k),
                "field {k} of {ev} ({}) is not in docs/records.md",
                r["tool"]
            );
        }
    }
}

#[test]
fn every_example_parses_and_every_emitted_field_is_documented() {
    let docs = documented();
    for ev in ["error", "summary", "backup", "verify", "prune"] {
        assert!(docs.contains_key(ev), "{ev} has no section or example");
    }
    let c = cluster();
    let db = c.create_db();
    c.query(
        &db.name,
        "CREATE TABLE t AS SELECT g FROM generate_series(1, 100) g",
    );
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("b");
    let backup = run(Command::new(bin("pgbackup"))
        .args([
            "--dest",
            root.to_str().unwrap(),
            "--db",
            &db.url,
            "--globals",
            "--row-counts",
            "--pg-bindir",
        ])
        .arg(c.bindir()));
    assert_eq!(backup.code, 0, "{}", backup.stderr);
    check(&backup, &docs, &BTreeSet::new());

    let verify = run_with_stdin(
        Command::new(bin("verify-backup"))
            .args([
                "--record",
                "--restore-into",
                &c.url("postgres"),
                "--pg-bindir",
            ])
            .arg(c.bindir()),
        &format!("{}\nnot json\n", backup.stdout.lines().next().unwrap()),
    );
    assert_eq!(verify.events("verify")[0]["ok"], true, "{}", verify.stdout);
    // The backup record's own fields pass through into verify.
    let passed: BTreeSet<String> = docs["backup"].clone();
    check(&verify, &docs, &passed);

    std::fs::create_dir(root.join("junk")).unwrap();
    let prune = run(Command::new(bin("prune"))
        .arg(&root)
        .args(["--keep-last", "1", "--dry-run"]));
    assert_eq!(prune.code, 0, "{}", prune.stderr);
    check(&prune, &docs, &BTreeSet::new());

    // healthcheck reads the set pgbackup made and the result verify-backup logged.
    let health = run(Command::new(bin("healthcheck")).args([
        &format!("backup:{}", root.display()),
        "--expect",
        "verified != null",
        "--crit",
        "verified_age_s > 1h",
    ]));
    assert_eq!(health.code, 0, "{}", health.stdout);
    let set = verify.events("verify")[0]["set"].clone();
    assert_eq!(health.events("check")[0]["values"]["verified"], set);
    check(&health, &docs, &BTreeSet::new());
    let health = run(Command::new(bin("healthcheck")).args([&db.url, "disk:/no/such/dir"]));
    assert_eq!(health.code, 2, "{}", health.stdout);
    check(&health, &docs, &BTreeSet::new());

    // logrotate-lite: rotations, a script, a warning, a config error.
    let logs = tmp.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    std::fs::write(logs.join("app.log"), "a line\n").unwrap();
    std::fs::write(logs.join("app.log.1"), "older\n").unwrap();
    std::fs::write(logs.join("empty.log"), "").unwrap();
    let conf = tmp.path().join("lr.conf");
    std::fs::write(
        &conf,
        format!(
            "{0}/* {{\n rotate 2\n notifempty\n compress\n sharedscripts\n postrotate\n  true\n endscript\n}}\n{0}/x.log {{\n bogus\n}}\n",
            logs.display()
        ),
    )
    .unwrap();
    let lr = run(Command::new(bin("logrotate-lite"))
        .args(["-f", "-s"])
        .arg(tmp.path().join("lr.state"))
        .arg(&conf));
    assert_eq!(lr.code, 1, "{}", lr.stderr);
    for ev in ["rotate", "script", "warning", "error", "summary"] {
        assert!(!lr.events(ev).is_empty(), "no {ev} record: {}", lr.stdout);
    }
    check(&lr, &docs, &BTreeSet::new());
    let dry = run(Command::new(bin("logrotate-lite"))
        .args(["-d", "-f", "-s"])
        .arg(tmp.path().join("lr.state"))
        .arg(&conf));
    check(&dry, &docs, &BTreeSet::new());

    // Failures: a usage error from the run, and a refused record.
    let bad = run(Command::new(bin("pgbackup")).args([
        "--dest",
        root.to_str().unwrap(),
        "--db",
        "mysql://x",
    ]));
    check(&bad, &docs, &BTreeSet::new());
}

#[test]
fn backup_verify_prune_pipeline_runs_in_order() {
    // All three start together; prune must wait for its input before it
    // looks at the root (and before it takes the root's lock).
    let c = cluster();
    let db = c.create_db();
    c.query(
        &db.name,
        "CREATE TABLE t AS SELECT g FROM generate_series(1, 50000) g",
    );
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("b");
    let script = format!(
        "set -o pipefail; '{}' --dest '{}' --db '{}' --pg-bindir '{}' | '{}' --record | '{}' '{}' --keep-daily 7",
        bin("pgbackup").display(),
        root.display(),
        db.url,
        c.bindir().display(),
        bin("verify-backup").display(),
        bin("prune").display(),
        root.display()
    );
    let out = run(Command::new("bash").arg("-c").arg(&script));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let p = out.events("prune");
    assert_eq!(p.len(), 1, "{}", out.stdout);
    assert_eq!(p[0]["action"], "keep");
    assert_eq!(p[0]["verified"], true);
    assert!(root.join("verified.ndjson").exists());
}
