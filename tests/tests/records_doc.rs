//! docs/records.md is the record reference, and the record types in
//! `opskit::records` are the contract: the document lists exactly the
//! fields of the types (both ways), every example parses, and every record
//! the tools emit in real runs (migrate included) is of a documented type
//! with only its fields.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use opskit::records::catalog;
use opskit_testkit::tools::{Output, run, run_with_stdin};
use opskit_testkit::{bin, cluster};
use serde_json::Value;

const ENVELOPE: [&str; 3] = ["event", "tool", "ts"];

fn doc() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/records.md")).unwrap()
}

/// What docs/records.md says, per event.
#[derive(Default)]
struct Documented {
    /// Names in the first column of a `| field | meaning |` table.
    fields: BTreeMap<String, BTreeSet<String>>,
    /// The `summary` table: writer -> its counts.
    summary_rows: BTreeMap<String, BTreeSet<String>>,
    /// Example records.
    examples: Vec<Value>,
}

/// The backticked names of a table cell, outside parentheses.
fn names(cell: &str) -> BTreeSet<String> {
    let mut plain = String::new();
    let mut depth = 0;
    for ch in cell.chars() {
        match ch {
            '(' => depth += 1,
            ')' => depth -= 1,
            _ if depth == 0 => plain.push(ch),
            _ => {}
        }
    }
    plain
        .split('`')
        .enumerate()
        .filter(|(i, p)| i % 2 == 1 && !p.starts_with('-'))
        .map(|(_, p)| p.to_string())
        .collect()
}

fn documented() -> Documented {
    let mut d = Documented::default();
    let (mut section, mut table, mut in_json) = (String::new(), "", false);
    for line in doc().lines() {
        if let Some(h) = line.strip_prefix("## `") {
            section = h.split('`').next().unwrap().to_string();
            continue;
        }
        if line.starts_with("```") {
            in_json = line.starts_with("```json");
            continue;
        }
        if in_json {
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("example does not parse ({e}): {line}"));
            for k in ENVELOPE {
                assert!(v.get(k).is_some(), "example lacks {k}: {line}");
            }
            d.examples.push(v);
            continue;
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 3 || section.is_empty() {
            table = "";
            continue;
        }
        match cells[1] {
            "field" => table = "field",
            "tool" => table = "tool",
            c if c.starts_with("---") => {}
            first if table == "field" => d
                .fields
                .entry(section.clone())
                .or_default()
                .extend(names(first)),
            writer if table == "tool" => {
                let writer = if writer.starts_with("any tool") {
                    "any tool".to_string()
                } else if writer.starts_with("procedures") {
                    "procedures".to_string()
                } else {
                    writer.to_string()
                };
                d.summary_rows.insert(writer, names(cells[2]));
            }
            _ => {}
        }
    }
    d
}

/// The fields of the types, per event.
fn typed() -> BTreeMap<&'static str, BTreeSet<String>> {
    let mut out: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for k in catalog() {
        out.entry(k.event).or_default().extend(k.fields);
    }
    out
}

#[test]
fn the_reference_lists_exactly_the_fields_of_the_record_types() {
    let d = documented();
    let common: BTreeSet<String> = ["ok", "duration_s"].map(String::from).into();
    for k in catalog() {
        match k.writer {
            Some(w) => {
                let want: BTreeSet<String> = k.fields.difference(&common).cloned().collect();
                let row = d
                    .summary_rows
                    .get(w)
                    .unwrap_or_else(|| panic!("the summary table has no row for {w}"));
                assert_eq!(row, &want, "summary counts of {w} ({})", k.type_name);
                assert!(
                    k.fields.is_superset(&common),
                    "{} lacks ok or duration_s",
                    k.type_name
                );
            }
            None => assert_eq!(
                d.fields.get(k.event),
                Some(&k.fields),
                "docs/records.md's `{}` table against {}",
                k.event,
                k.type_name
            ),
        }
    }
    let types = typed();
    for section in d.fields.keys() {
        assert!(
            types.contains_key(section.as_str()),
            "docs/records.md documents `{section}`, which no record type has"
        );
    }
    assert_eq!(d.fields.get("summary"), Some(&common));
    let writers: BTreeSet<&str> = catalog().iter().filter_map(|k| k.writer).collect();
    for w in d.summary_rows.keys() {
        assert!(
            writers.contains(w.as_str()),
            "summary row {w} has no counts type"
        );
    }
    for ex in &d.examples {
        check_record(ex, &types, &BTreeSet::new());
    }
}

/// A record is of a known event and carries only the fields of its types
/// (plus `passed` for the records that pass fields through).
fn check_record(
    r: &Value,
    types: &BTreeMap<&'static str, BTreeSet<String>>,
    passed: &BTreeSet<String>,
) {
    let ev = r["event"].as_str().expect("event");
    let listed = types
        .get(ev)
        .unwrap_or_else(|| panic!("event {ev} has no record type: {r}"));
    for k in r.as_object().unwrap().keys() {
        assert!(
            listed.contains(k) || ENVELOPE.contains(&k.as_str()) || passed.contains(k),
            "field {k} of {ev} ({}) is not a field of its type",
            r["tool"]
        );
    }
}

fn check(out: &Output, passed: &BTreeSet<String>) {
    let types = typed();
    for r in out.records() {
        check_record(&r, &types, passed);
    }
    let last = out.records().pop().expect("no records");
    assert_eq!(last["event"], "summary", "last record: {last}");
    assert!(last["duration_s"].is_number(), "{last}");
}

#[test]
fn every_emitted_record_is_of_its_type() {
    let c = cluster();
    let db = c.create_db();
    c.query(
        &db.name,
        "CREATE TABLE t AS SELECT g FROM generate_series(1, 100) g",
    );
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("b");
    let backup = run(opskit_testkit::signing::command(bin("pgbackup"))
        .args(["--dest", root.to_str().unwrap(), "--db", &db.url])
        .args(["--globals", "--row-counts", "--pg-bindir"])
        .arg(c.bindir()));
    assert_eq!(backup.code, 0, "{}", backup.stderr);
    check(&backup, &BTreeSet::new());

    let verify = run_with_stdin(
        opskit_testkit::signing::command(bin("verify-backup"))
            .args(["--record", "--restore-into", &c.url("postgres")])
            .arg("--pg-bindir")
            .arg(c.bindir()),
        &format!("{}\nnot json\n", backup.stdout.lines().next().unwrap()),
    );
    assert_eq!(verify.events("verify")[0]["ok"], true, "{}", verify.stdout);
    // The backup record's own fields pass through into verify.
    check(&verify, &typed()["backup"]);

    std::fs::create_dir(root.join("junk")).unwrap();
    let prune = run(Command::new(bin("prune"))
        .arg(&root)
        .args(["--keep-last", "1", "--dry-run"]));
    assert_eq!(prune.code, 0, "{}", prune.stderr);
    check(&prune, &BTreeSet::new());

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
    check(&health, &BTreeSet::new());
    let health = run(Command::new(bin("healthcheck")).args([&db.url, "disk:/no/such/dir"]));
    assert_eq!(health.code, 2, "{}", health.stdout);
    check(&health, &BTreeSet::new());

    logrotate_records(tmp.path());
    migrate_records(tmp.path(), &db.url);
}

fn logrotate_records(tmp: &std::path::Path) {
    // Rotations, a script, a warning, a config error; then a dry run.
    let logs = tmp.join("logs");
    std::fs::create_dir(&logs).unwrap();
    std::fs::write(logs.join("app.log"), "a line\n").unwrap();
    std::fs::write(logs.join("app.log.1"), "older\n").unwrap();
    std::fs::write(logs.join("empty.log"), "").unwrap();
    let conf = tmp.join("lr.conf");
    std::fs::write(
        &conf,
        format!(
            "{0}/* {{\n rotate 2\n notifempty\n compress\n sharedscripts\n postrotate\n  true\n endscript\n}}\n{0}/x.log {{\n bogus\n}}\n",
            logs.display()
        ),
    )
    .unwrap();
    let state = tmp.join("lr.state");
    let lr = run(Command::new(bin("logrotate-lite"))
        .args(["-f", "-s"])
        .arg(&state)
        .arg(&conf));
    assert_eq!(lr.code, 1, "{}", lr.stderr);
    for ev in ["rotate", "script", "warning", "error", "summary"] {
        assert!(!lr.events(ev).is_empty(), "no {ev} record: {}", lr.stdout);
    }
    check(&lr, &BTreeSet::new());
    let dry = run(Command::new(bin("logrotate-lite"))
        .args(["-d", "-f", "-s"])
        .arg(&state)
        .arg(&conf));
    check(&dry, &BTreeSet::new());
    let checked = run(Command::new(bin("logrotate-lite"))
        .arg("--check")
        .arg(&conf));
    // The block with the unknown directive is skipped, and counted an error.
    assert_eq!(checked.summary()["blocks"], 1, "{}", checked.stdout);
    assert_eq!(checked.summary()["errors"], 1, "{}", checked.stdout);
    check(&checked, &BTreeSet::new());
}

fn migrate_records(tmp: &std::path::Path, url: &str) {
    let dir = tmp.join("migrations");
    let migrate = |args: &[&str]| {
        let out = run(Command::new(bin("migrate"))
            .args(["--db", url, "--dir"])
            .arg(&dir)
            .args(args));
        check(&out, &BTreeSet::new());
        out
    };
    let new = migrate(&["new", "add_things"]);
    let path = new.events("new")[0]["path"].as_str().unwrap().to_string();
    std::fs::write(
        &path,
        "-- migrate:up\nCREATE TABLE things (id int);\n-- migrate:down\nDROP TABLE things;\n",
    )
    .unwrap();
    let failing = dir.join("29990101000000_broken.sql");
    std::fs::write(&failing, "-- migrate:up\nSELECT * FROM no_such_table;\n").unwrap();
    for args in [&["plan"][..], &["status"], &["validate"]] {
        assert_eq!(migrate(args).code, 0);
    }
    let up = migrate(&["up"]);
    assert_eq!(up.code, 1, "{}", up.stdout);
    assert_eq!(up.events("migration").len(), 2, "{}", up.stdout);
    std::fs::remove_file(&failing).unwrap();
    assert_eq!(migrate(&["down"]).code, 0);
    assert_eq!(migrate(&["wait", "--timeout", "5s"]).code, 0);
    assert_eq!(migrate(&["up"]).code, 0);
    // A changed file: validate reports it, repair accepts it.
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{text}-- changed\n")).unwrap();
    assert_eq!(migrate(&["validate"]).code, 1);
    let version = new.events("new")[0]["version"]
        .as_str()
        .unwrap()
        .to_string();
    let repaired = migrate(&["repair", "--accept-checksum", &version]);
    assert_eq!(repaired.events("repair").len(), 1, "{}", repaired.stdout);
    assert_eq!(migrate(&["baseline", &version]).code, 0);
}

/// Each tool's failure path, after the record stream exists: an `error`
/// record, and a last line that is the `summary`, with `ok` false and
/// `duration_s`.
#[test]
fn every_failure_ends_with_an_error_and_a_summary() {
    let tmp = tempfile::tempdir().unwrap();
    let unreachable = "postgres://nobody@127.0.0.1:1/none?connect_timeout=2";
    // pgbackup creates its --dest before it connects: the others get
    // paths of their own.
    let dest = tmp.path().join("dest");
    let dest = dest.to_str().unwrap();
    let nowhere = tmp.path().join("no/such/dir");
    let nowhere = nowhere.to_str().unwrap();
    let state = "/proc/1/no-such/state";
    let cases: [(&str, Vec<&str>, i32); 6] = [
        ("pgbackup", vec!["--dest", dest, "--db", unreachable], 2),
        ("verify-backup", vec!["--latest", nowhere], 2),
        ("prune", vec![nowhere, "--keep-last", "1"], 2),
        (
            "healthcheck",
            vec!["--notify", "http://127.0.0.1:1/", "disk:/"],
            3,
        ),
        (
            "migrate",
            vec!["--db", unreachable, "--dir", nowhere, "status"],
            2,
        ),
        (
            "logrotate-lite",
            vec!["-s", state, "--rotate", "1", nowhere],
            2,
        ),
    ];
    let types = typed();
    for (tool, args, code) in cases {
        let out = run(opskit_testkit::signing::command(bin(tool)).args(&args));
        assert_eq!(
            out.code, code,
            "{tool} {args:?}: {}{}",
            out.stdout, out.stderr
        );
        let records = out.records();
        for r in &records {
            check_record(r, &types, &BTreeSet::new());
        }
        let err = records.iter().find(|r| r["event"] == "error");
        assert!(err.is_some(), "{tool}: no error record: {}", out.stdout);
        let last = records.last().unwrap();
        assert_eq!(last["event"], "summary", "{tool}: {}", out.stdout);
        assert_eq!(last["ok"], false, "{tool}: {last}");
        assert_eq!(last["exit"], code, "{tool}: {last}");
        assert!(last["duration_s"].is_number(), "{tool}: {last}");
    }
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
    let out = run(opskit_testkit::signing::command("bash")
        .arg("-c")
        .arg(&script));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let p = out.events("prune");
    assert_eq!(p.len(), 1, "{}", out.stdout);
    assert_eq!(p[0]["action"], "keep");
    assert_eq!(p[0]["verified"], true);
    assert!(root.join("verified.ndjson").exists());
}
