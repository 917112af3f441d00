//! The offsite step of the nightly job against a real S3 server
//! (SeaweedFS), and disaster recovery on a machine whose backup root is
//! gone: restore-system.sh --from-offsite brings the database back from
//! the bucket.

use opskit_testkit::age::Key;
use opskit_testkit::procs::{Procs, dump, example_app as app_db};
use opskit_testkit::s3::s3;
use opskit_testkit::tools::run;
use opskit_testkit::{Cluster, TestDb, cluster};

/// Procedures with an env file that names a fresh bucket and its keys.
fn with_bucket(c: &'static Cluster, hint: &str) -> (TestDb, Procs, String) {
    let db = app_db(c);
    let mut p = Procs::new(c, &db.name);
    let url = format!("s3://{}/app", s3().bucket(hint));
    p.set("OPSKIT_OFFSITE_URL", &url);
    for (k, v) in s3().env() {
        p.set(k, &v);
    }
    (db, p, url)
}

#[test]
fn the_server_is_gone_and_the_database_comes_back_from_the_bucket() {
    let c = cluster();
    let (db, mut p, _url) = with_bucket(c, "drill");
    let key = Key::new(&p.path(""), "recovery.key");
    p.set("OPSKIT_AGE_RECIPIENTS", &key.public);
    p.add_uploads();
    run(&mut p.script("backup-system.sh")).ok();
    assert_eq!(
        p.metric("opskit_backup.prom", "opskit_offsite_push_success"),
        1.0
    );
    assert!(
        p.metric(
            "opskit_backup.prom",
            "opskit_offsite_last_push_timestamp_seconds"
        ) > 1.7e9
    );

    // The disk with the backups is lost, and the database with it.
    let original = dump(c, &db.name, &[]);
    std::fs::remove_dir_all(p.root()).unwrap();
    // The new machine's backup root, as install.sh makes it: another
    // user's (the opskit user's; here the server's), which root does not
    // pull into (it would write where a link that user planted points):
    // the script pulls as the root's owner.
    std::fs::create_dir(p.root()).unwrap();
    c.give(&p.root());
    let traverse = std::os::unix::fs::PermissionsExt::from_mode(0o711);
    std::fs::set_permissions(p.path(""), traverse).unwrap();
    c.client("postgres")
        .batch_execute(&format!("DROP DATABASE \"{}\" WITH (FORCE)", db.name))
        .unwrap();
    p.set("OPSKIT_AGE_IDENTITY", key.identity.to_str().unwrap());
    let into = p.path("restored-files");
    let out = run(p
        .script("restore-system.sh")
        .args(["--yes", "--from-offsite", "--files-into"])
        .arg(&into));
    out.ok();
    assert!(
        out.stderr.contains("pulling the newest dump set of "),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("error:"),
        "an empty root is no error on the way to the pull: {}",
        out.stderr
    );
    assert_eq!(dump(c, &db.name, &[]), original, "restored data differs");
    assert_eq!(
        std::fs::read_to_string(into.join("uploads/a.txt")).unwrap(),
        "an upload"
    );
    // The pulled set is an ordinary, verified set of the new root, the
    // owner's.
    let log = std::fs::read_to_string(p.root().join("verified.ndjson")).unwrap();
    assert!(log.contains("\"depth\":\"structural\""), "{log}");
    let owner =
        |path: &std::path::Path| std::os::unix::fs::MetadataExt::uid(&path.metadata().unwrap());
    let pulled = std::fs::read_dir(p.root())
        .unwrap()
        .flatten()
        .find(|e| e.path().join("MANIFEST.json").exists())
        .unwrap()
        .path();
    assert_eq!(owner(&pulled), owner(&p.root()), "{}", pulled.display());
}

#[test]
fn a_failed_push_deletes_nothing_and_fails_the_night() {
    let c = cluster();
    let (_db, p, url) = with_bucket(c, "failpush");
    // Not encrypted: the push refuses, so the night fails and prunes nothing.
    let out = run(&mut p.script("backup-system.sh"));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("is not encrypted"), "{}", out.stderr);
    assert_eq!(
        p.metric("opskit_backup.prom", "opskit_offsite_push_success"),
        0.0
    );
    assert_eq!(
        p.metric("opskit_backup.prom", "opskit_backup_prune_ran"),
        0.0
    );
    assert_eq!(
        p.metric("opskit_backup.prom", "opskit_backup_run_success"),
        0.0
    );
    assert_eq!(p.sets().len(), 1, "the local set stays");
    let _ = url;
}
