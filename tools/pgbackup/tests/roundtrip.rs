//! A database with the awkward parts real schemas have survives a backup
//! and a restore with the documented stock command, byte for byte.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use common::*;
use opskit_testkit::cluster;
use opskit_testkit::tools::run;

const AWKWARD: &str = r#"
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN posint AS integer CHECK (VALUE > 0);
CREATE TABLE "MixedCase Table" (
    id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    m mood, p posint, tags text[], doc jsonb, raw bytea, amount numeric(20,6),
    at timestamptz, local_at timestamp, note text);
INSERT INTO "MixedCase Table" (m, p, tags, doc, raw, amount, at, local_at, note) VALUES
    ('happy', 1, ARRAY['a', 'b,c', '"q"'], '{"k": [1, 2, {"x": null}]}', '\x00ff10', 12345678901234.123456,
     '2026-03-29 01:30:00+01', '2026-10-25 02:30:00', E'tab\there\nnewline \\ backslash'),
    ('sad', 2, '{}', NULL, '\x', -0.000001, 'infinity', NULL, 'üñí ✓');
CREATE SEQUENCE counter START 1000 INCREMENT 7;
SELECT setval('counter', 4242);
CREATE TABLE events (id bigserial, at date NOT NULL, v int) PARTITION BY RANGE (at);
CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
INSERT INTO events (at, v) SELECT date '2025-06-01' + g, g FROM generate_series(1, 400) g;
CREATE FUNCTION bump() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.v := NEW.v + 1; RETURN NEW; END $$;
CREATE TRIGGER events_bump BEFORE INSERT ON events_2026 FOR EACH ROW EXECUTE FUNCTION bump();
CREATE VIEW happy AS SELECT id, note FROM "MixedCase Table" WHERE m = 'happy';
CREATE MATERIALIZED VIEW event_totals AS SELECT date_trunc('month', at) AS month, sum(v) AS s FROM events GROUP BY 1;
SELECT lo_from_bytea(0, 'large object payload'::bytea);
"#;

/// A plain dump for comparison, without the per-dump \restrict keys.
fn plain_dump(c: &opskit_testkit::Cluster, db: &str) -> String {
    c.run_bin("pg_dump", db, &["--no-owner", "--format=plain"])
        .lines()
        .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn awkward_schema_round_trips_with_the_documented_command() {
    let c = cluster();
    let db = c.create_db();
    c.query(&db.name, AWKWARD);
    let dest = tempfile::tempdir().unwrap();
    let out = run(pgbackup(c, &db, dest.path()).args(["--row-counts", "--globals"]));
    assert_eq!(out.code, 0, "{}", out.stderr);

    // One backup record and a summary.
    let backups = out.events("backup");
    assert_eq!(backups.len(), 1);
    let rec = &backups[0];
    assert_eq!(rec["ok"], true);
    assert_eq!(out.summary()["sets"], 1);
    let set = std::path::PathBuf::from(rec["path"].as_str().unwrap());
    assert_eq!(sets(dest.path()), vec![set.clone()]);
    assert!(temps(dest.path()).is_empty());

    // Permissions: the set 0700, every file 0600.
    assert_eq!(
        fs::metadata(&set).unwrap().permissions().mode() & 0o777,
        0o700
    );
    for n in names(&set) {
        let mode = fs::metadata(set.join(&n)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{n}");
    }

    // sha256sum -c accepts SHA256SUMS, which covers the manifest too.
    let sums = run(Command::new("sha256sum")
        .arg("-c")
        .arg("SHA256SUMS")
        .current_dir(&set));
    assert_eq!(sums.code, 0, "{}{}", sums.stdout, sums.stderr);
    assert!(sums.stdout.contains("MANIFEST.json: OK"));
    assert!(sums.stdout.contains("globals.sql.zst: OK"));

    // The table of contents lists through the stock zstd.
    let list = run(Command::new("bash")
        .arg("-o")
        .arg("pipefail")
        .arg("-c")
        .arg(format!(
            "zstd -dc db.dump.zst | {}/pg_restore --list",
            c.bindir().display()
        ))
        .current_dir(&set));
    assert_eq!(list.code, 0, "{}", list.stderr);
    assert!(
        list.stdout.contains("TABLE DATA public MixedCase Table"),
        "{}",
        list.stdout
    );
    assert!(
        list.stdout.contains("BLOB"),
        "large object missing from TOC"
    );

    // Row counts were taken in the dump's snapshot.
    let manifest: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(set.join("MANIFEST.json")).unwrap()).unwrap();
    let counts = &manifest["database"]["row_counts"];
    assert_eq!(counts["public.MixedCase Table"], 2);
    assert_eq!(counts["public.events_2025"], 213);
    assert_eq!(counts["public.events_2026"], 187);
    assert!(
        counts.get("public.events").is_none(),
        "partitioned parent counted"
    );

    // Restore with the manifest's command into a new database.
    let target = c.create_db();
    let restore = c.restore_with_manifest(&set, &manifest, &target.name);
    assert_eq!(restore.code, 0, "restore failed: {}", restore.stderr);
    assert_eq!(plain_dump(c, &db.name), plain_dump(c, &target.name));
    assert_eq!(
        c.query(
            &target.name,
            "SELECT convert_from(lo_get(oid), 'UTF8') FROM pg_largeobject_metadata"
        ),
        vec!["large object payload"]
    );
}

#[test]
fn uncompressed_and_plain_sets_restore_too() {
    let c = cluster();
    let db = c.create_db();
    c.query(&db.name, AWKWARD);
    for (extra, file) in [
        (vec!["--compress", "0"], "db.dump"),
        (vec!["--compress", "gzip"], "db.dump.gz"),
        (vec!["--format", "plain"], "db.sql.zst"),
        (
            vec!["--format", "plain", "--compress", "gzip:1"],
            "db.sql.gz",
        ),
    ] {
        let dest = tempfile::tempdir().unwrap();
        let out = run(pgbackup(c, &db, dest.path()).args(&extra));
        assert_eq!(out.code, 0, "{extra:?}: {}", out.stderr);
        let set = sets(dest.path()).pop().unwrap();
        assert!(set.join(file).exists(), "{extra:?}: {:?}", names(&set));
        let manifest: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(set.join("MANIFEST.json")).unwrap()).unwrap();
        let target = c.create_db();
        let restore = c.restore_with_manifest(&set, &manifest, &target.name);
        assert_eq!(restore.code, 0, "{extra:?}: {}", restore.stderr);
        assert_eq!(
            plain_dump(c, &db.name),
            plain_dump(c, &target.name),
            "{extra:?}"
        );
    }
}
