//! offsite against a real S3 server (SeaweedFS) with real sets: push,
//! list, pull, verify, prune, Object Lock, healthcheck; reruns, conflicts,
//! refusals, rclone on the other side. Faults are in faults.rs.

use std::fs;
use std::process::Command;

use opskit_testkit::tools::{run, run_with_stdin};
use opskit_testkit::{bin, cluster};

mod common;
use common::*;

#[test]
fn push_list_pull_round_trip_and_a_rerun_uploads_nothing() {
    let local = Local::new(20);
    let set = local.set(false);
    let url = format!("s3://{}/app", server().bucket("roundtrip"));
    let out = run(&mut offsite(&["push", &url, set.to_str().unwrap()]));
    ok(&out);
    let p = &out.events("push")[0];
    let files = fs::read_dir(&set).unwrap().count() as u64;
    assert_eq!(p["uploaded"], files, "{p}");
    assert_eq!(p["encrypted"], true);
    assert_eq!(p["url"], format!("{url}/{}/", name_of(&set)));
    // A rerun finds everything there.
    let again = run(&mut offsite(&["push", &url, set.to_str().unwrap()]));
    ok(&again);
    assert_eq!(again.events("push")[0]["uploaded"], 0);
    assert_eq!(again.events("push")[0]["skipped"], files);

    let list = run(offsite(&["list", "--url", &url, "--root"]).arg(&local.root));
    ok(&list);
    let rows = list.events("remote_set");
    assert_eq!(rows.len(), 1, "{}", list.stdout);
    assert_eq!(rows[0]["location"], "both");
    assert_eq!(rows[0]["complete"], true);
    assert_eq!(rows[0]["verified"], true);
    assert_eq!(rows[0]["encrypted"], true);
    let table = run(offsite(&["list", "--table", "--url", &url, "--root"]).arg(&local.root));
    assert!(
        table.stdout.contains(&name_of(&set)) && table.stdout.contains("both"),
        "{}",
        table.stdout
    );

    // Pulled into an empty root: the same files, an ordinary set.
    let elsewhere = local.tmp.path().join("new-machine");
    let pulled = run(offsite(&["pull", "latest", "--url", &url, "--dest"]).arg(&elsewhere));
    ok(&pulled);
    let dir = elsewhere.join(name_of(&set));
    assert_eq!(pulled.events("pull")[0]["path"], dir.to_str().unwrap());
    assert_eq!(files_of(&dir), files_of(&set), "pulled set differs");
    let v = run(opskit_testkit::signing::command(bin("verify-backup"))
        .arg(&dir)
        .arg("--identity")
        .arg(&local.key.identity)
        .arg("--pg-bindir")
        .arg(cluster().bindir()));
    assert_eq!(v.code, 0, "{}", v.stdout);
    assert_eq!(v.events("verify")[0]["depth"], "structural");
    // Pulling it again is refused: the set is there.
    let twice = run(offsite(&["pull", &name_of(&set), "--url", &url, "--dest"]).arg(&elsewhere));
    assert_eq!(twice.code, 2);
    assert!(twice.stderr.contains("already exists"), "{}", twice.stderr);
}

#[test]
fn only_verified_encrypted_sets_are_pushed() {
    let local = Local::new(0);
    let url = format!("s3://{}/app", server().bucket("refusals"));
    let plain = local.set(true);
    let out = run(&mut offsite(&["push", &url, plain.to_str().unwrap()]));
    assert_eq!(out.code, 2);
    let e = out.events("push")[0]["error"].as_str().unwrap().to_string();
    assert!(e.contains("is not encrypted"), "{e}");
    let out = run(&mut offsite(&[
        "push",
        "--allow-unencrypted",
        &url,
        plain.to_str().unwrap(),
    ]));
    ok(&out);

    // A set with no verification result, and one that failed.
    let c = cluster();
    let unverified = run(opskit_testkit::signing::command(bin("pgbackup"))
        .arg("--dest")
        .arg(&local.root)
        .args([
            "--db",
            &local.db.url,
            "--encrypt-to",
            &local.key.public,
            "--pg-bindir",
        ])
        .arg(c.bindir()));
    ok(&unverified);
    let path = unverified.events("backup")[0]["path"]
        .as_str()
        .unwrap()
        .to_string();
    let out = run(&mut offsite(&["push", &url, &path]));
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("has no verification result"),
        "{}",
        out.stderr
    );
    let failed = format!(
        "{{\"event\":\"verify\",\"tool\":\"verify-backup\",\"ok\":false,\"set\":\"x\",\"path\":\"{path}\",\"depth\":\"quick\",\"failed_checks\":1,\"checks\":[],\"duration_s\":0.1}}\n"
    );
    let out = run_with_stdin(&mut offsite(&["push", &url]), &failed);
    assert_eq!(out.code, 2);
    assert!(
        out.events("push")[0]["error"]
            .as_str()
            .unwrap()
            .contains("failed verification")
    );
    let list = run(&mut offsite(&["list", "--url", &url]));
    assert_eq!(
        list.events("remote_set").len(),
        1,
        "only the allowed set is there"
    );
}

#[test]
fn an_object_with_other_content_is_never_overwritten() {
    let local = Local::new(0);
    let set = local.set(false);
    let bucket = server().bucket("conflict");
    let url = format!("s3://{bucket}/app");
    // Something else already wrote the globals under the set's name.
    let other = local.tmp.path().join("other");
    fs::write(&other, "not the globals").unwrap();
    let key = format!("s3:{bucket}/app/{}/globals.sql.zst.age", name_of(&set));
    ok(&rclone(&["copyto", other.to_str().unwrap(), &key]));
    let out = run(&mut offsite(&["push", &url, set.to_str().unwrap()]));
    assert_eq!(out.code, 2);
    let e = out.events("push")[0]["error"].as_str().unwrap().to_string();
    assert!(
        e.contains(&format!(
            "s3://{bucket}/app/{}/globals.sql.zst.age exists with other content",
            name_of(&set)
        )) && e.contains("not overwritten"),
        "{e}"
    );
    let back = rclone(&["cat", &key]);
    assert_eq!(back.stdout, "not the globals");
    // Without its manifest the remote copy is not a set.
    let list = run(&mut offsite(&["list", "--url", &url]));
    assert_eq!(list.events("remote_set")[0]["complete"], false);
    let pull =
        run(offsite(&["pull", &name_of(&set), "--url", &url, "--dest"])
            .arg(local.tmp.path().join("x")));
    assert_eq!(pull.code, 2);
    assert!(
        pull.stderr.contains("an interrupted push, not a set"),
        "{}",
        pull.stderr
    );
}

#[test]
fn rclone_reads_what_offsite_writes_and_offsite_what_rclone_writes() {
    let local = Local::new(10);
    let set = local.set(false);
    let bucket = server().bucket("rclone");
    let url = format!("s3://{bucket}/app");
    ok(&run(&mut offsite(&["push", &url, set.to_str().unwrap()])));
    let down = local.tmp.path().join("rclone-down");
    ok(&rclone(&[
        "copy",
        &format!("s3:{bucket}/app/{}", name_of(&set)),
        down.to_str().unwrap(),
    ]));
    let st = Command::new("sha256sum")
        .args(["-c", "--quiet", "SHA256SUMS"])
        .current_dir(&down)
        .status()
        .unwrap();
    assert!(st.success(), "sha256sum -c of rclone's copy");

    // A set uploaded by rclone in the same layout.
    ok(&rclone(&[
        "copy",
        set.to_str().unwrap(),
        &format!("s3:{bucket}/other/{}", name_of(&set)),
    ]));
    let other = format!("s3://{bucket}/other");
    let list = run(&mut offsite(&["list", "--url", &other]));
    assert_eq!(list.events("remote_set")[0]["complete"], true);
    let dest = local.tmp.path().join("from-rclone");
    ok(&run(offsite(&[
        "pull", "latest", "--url", &other, "--dest",
    ])
    .arg(&dest)));
    assert_eq!(files_of(&dest.join(name_of(&set))), files_of(&set));
    // Pushing the same set there finds rclone's objects identical.
    let again = run(&mut offsite(&["push", &other, set.to_str().unwrap()]));
    ok(&again);
    assert_eq!(again.events("push")[0]["uploaded"], 0, "{}", again.stdout);
}

/// `offsite SUBCOMMAND s3://…`: the bucket URL first, in every
/// subcommand, as push always took it (list, verify, pull and prune
/// refused it as an unexpected argument).
#[test]
fn the_bucket_url_comes_first_in_every_subcommand() {
    let local = Local::new(0);
    let set = local.set(false);
    let name = name_of(&set);
    let url = format!("s3://{}/app", server().bucket("operand"));
    ok(&run(&mut offsite(&["push", &url, set.to_str().unwrap()])));
    let rows = run(&mut offsite(&["list", &url])).events("remote_set");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["set"], name.as_str());
    let out = run(&mut offsite(&["verify", &url, &name]));
    ok(&out);
    assert_eq!(out.events("remote_verify").len(), 1, "{}", out.stdout);
    let dest = local.tmp.path().join("pulled");
    ok(&run(offsite(&["pull", &url, &name, "--dest"]).arg(&dest)));
    assert_eq!(files_of(&dest.join(&name)), files_of(&set));
    let out = run(offsite(&["prune", &url, "--keep-last", "1", "-n", "--root"]).arg(&local.root));
    ok(&out);
    assert_eq!(out.events("prune").len(), 1, "{}", out.stdout);
    // The operand wins over --url (and OPSKIT_OFFSITE_URL).
    let out = run(offsite(&["list", &url]).env("OPSKIT_OFFSITE_URL", "s3://elsewhere/x"));
    assert_eq!(out.events("remote_set").len(), 1, "{}", out.stderr);
    // Two URLs: a usage error, not a set named s3://….
    let out = run(&mut offsite(&["verify", &url, "s3://other/app"]));
    assert_eq!(out.code, 64, "{}", out.stderr);
    assert!(
        out.stderr.contains("one bucket URL, first"),
        "{}",
        out.stderr
    );
    // A URL and no set for pull: a usage error naming what is missing.
    let out = run(offsite(&["pull", &url, "--dest"]).arg(&dest));
    assert_eq!(out.code, 64, "{}", out.stderr);
    assert!(
        out.stderr.contains("one set name or 'latest'"),
        "{}",
        out.stderr
    );
}

#[test]
fn prune_applies_prunes_policy_to_the_bucket() {
    let local = Local::new(0);
    let url = format!("s3://{}/app", server().bucket("prune"));
    let sets: Vec<_> = (0..3).map(|_| local.set(false)).collect();
    for s in &sets {
        ok(&run(&mut offsite(&["push", &url, s.to_str().unwrap()])));
    }
    let out = run(offsite(&[
        "prune",
        "--url",
        &url,
        "--keep-last",
        "1",
        "--dry-run",
        "--root",
    ])
    .arg(&local.root));
    ok(&out);
    assert_eq!(
        run(&mut offsite(&["list", "--url", &url]))
            .events("remote_set")
            .len(),
        3
    );
    let out =
        run(offsite(&["prune", "--url", &url, "--keep-last", "1", "--root"]).arg(&local.root));
    ok(&out);
    let recs = out.events("prune");
    let newest = name_of(&sets[2]);
    let kept: Vec<_> = recs.iter().filter(|r| r["action"] == "keep").collect();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0]["name"], newest.as_str());
    assert!(kept[0]["reasons"].to_string().contains("newest"));
    let rows = run(&mut offsite(&["list", "--url", &url])).events("remote_set");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["set"], newest.as_str());
    // No rule: refused, nothing deleted.
    let out = run(&mut offsite(&["prune", "--url", &url]));
    assert_eq!(out.code, 64);
}

#[test]
fn object_lock_keeps_the_copies_from_deletion_for_the_days_asked() {
    let local = Local::new(10);
    let bucket = server().locked_bucket("retain");
    let url = format!("s3://{bucket}/app");
    let locked = local.set(false);
    ok(&run(&mut offsite(&[
        "push",
        "--retain-days",
        "1",
        &url,
        locked.to_str().unwrap(),
    ])));
    // Credentials stolen from the server cannot delete any version, of a
    // one-PUT object or of a multipart one. (MANIFEST.json goes up as
    // SHA256SUMS and the signature do; the helper lists versions by
    // prefix, and "MANIFEST.json" is a prefix of the signature's name.)
    for file in [
        "SHA256SUMS",
        "MANIFEST.json.minisig",
        "files-uploads.tar.zst.age",
    ] {
        let key = format!("app/{}/{file}", name_of(&locked));
        let statuses = server().delete_versions(&bucket, &key);
        assert!(statuses.iter().all(|s| *s == 403), "{file}: {statuses:?}");
    }
    ok(&run(&mut offsite(&["verify", "--url", &url])));
    // The same bucket without --retain-days: the versions can be deleted.
    let open = local.set(false);
    ok(&run(&mut offsite(&["push", &url, open.to_str().unwrap()])));
    let key = format!("app/{}/MANIFEST.json", name_of(&open));
    let statuses = server().delete_versions(&bucket, &key);
    assert!(
        statuses.iter().all(|s| (200..300).contains(s)),
        "{statuses:?}"
    );
    // A set pushed without --retain-days, then again with it (or a push
    // killed between its upload and its lock): the rerun uploads nothing
    // and locks what it finds.
    let later = local.set(false);
    ok(&run(&mut offsite(&["push", &url, later.to_str().unwrap()])));
    let again = run(&mut offsite(&[
        "push",
        "--retain-days",
        "1",
        &url,
        later.to_str().unwrap(),
    ]));
    ok(&again);
    assert_eq!(again.events("push")[0]["uploaded"], 0, "{}", again.stdout);
    for file in ["SHA256SUMS", "files-uploads.tar.zst.age"] {
        let key = format!("app/{}/{file}", name_of(&later));
        let statuses = server().delete_versions(&bucket, &key);
        assert!(statuses.iter().all(|s| *s == 403), "{file}: {statuses:?}");
    }
}

#[test]
fn healthcheck_reports_the_bucket_freshness() {
    let local = Local::new(0);
    let set = local.set(false);
    let bucket = server().bucket("health");
    let url = format!("s3://{bucket}/app");
    let health = |target: &str| {
        let mut c = Command::new(bin("healthcheck"));
        server().configure(&mut c);
        c.arg(target).env("OPSKIT_BACKUP_ROOT", &local.root);
        run(&mut c)
    };
    // Nothing there yet: CRITICAL (expect sets > 0).
    let out = health(&format!("offsite:{url}"));
    assert_eq!(out.code, 2, "{}", out.stdout);
    ok(&run(&mut offsite(&["push", &url, set.to_str().unwrap()])));
    ok(&run(offsite(&[
        "verify", "--url", &url, "--record", "--root",
    ])
    .arg(&local.root)));
    let out = health(&format!("offsite:{url}"));
    assert_eq!(out.code, 0, "{}", out.stdout);
    let v = &out.events("check")[0]["values"];
    assert_eq!(v["sets"], 1);
    assert_eq!(v["newest"], name_of(&set).as_str());
    assert_eq!(v["verified"], name_of(&set).as_str());
    assert!(v["age_s"].as_f64().unwrap() < 3600.0, "{v}");
    if !server().checks_signatures() {
        return;
    }
    // Wrong credentials: CRITICAL with the reason, not a crash.
    let mut c = Command::new(bin("healthcheck"));
    server().configure(&mut c);
    let out = run(c
        .arg(format!("offsite:{url}"))
        .env("AWS_SECRET_ACCESS_KEY", "nope"));
    assert_eq!(out.code, 2, "{}", out.stdout);
    assert!(
        out.stdout.contains("credentials are wrong"),
        "{}",
        out.stdout
    );
}
