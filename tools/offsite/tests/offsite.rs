//! offsite against a real S3 server (SeaweedFS) with real sets: push,
//! list, pull, verify, prune; reruns, conflicts, damage, bad credentials,
//! a silent server, rclone on the other side.

use std::fs;
use std::process::Command;
use std::time::{Duration, Instant};

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
    let v = run(Command::new(bin("verify-backup"))
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
    let unverified = run(Command::new(bin("pgbackup"))
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
fn wrong_credentials_a_missing_bucket_and_a_silent_server_are_exit_2() {
    let url = format!("s3://{}/app", server().bucket("creds"));
    let out =
        run(offsite(&["list", "--url", &url]).env("AWS_SECRET_ACCESS_KEY", "wrong-secret-value"));
    assert_eq!(out.code, 2);
    let msg = out.events("error")[0]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        msg.contains(&server().endpoint) && msg.contains("bucket creds-"),
        "{msg}"
    );
    assert!(msg.contains("credentials are wrong"), "{msg}");
    assert!(!(out.stdout.clone() + &out.stderr).contains("wrong-secret-value"));
    assert!(!(out.stdout.clone() + &out.stderr).contains(opskit_testkit::s3::SECRET));

    let out = run(&mut offsite(&[
        "list",
        "--url",
        "s3://no-such-bucket-here/app",
    ]));
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("the bucket does not exist"),
        "{}",
        out.stderr
    );

    // A server that accepts connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", silent.local_addr().unwrap());
    let held = std::thread::spawn(move || {
        let conns: Vec<_> = silent.incoming().take(1).collect();
        std::thread::sleep(Duration::from_secs(5));
        drop(conns);
    });
    let start = Instant::now();
    let out = run(&mut offsite(&[
        "list",
        "--url",
        &url,
        "--timeout",
        "2s",
        "--endpoint",
        &endpoint,
    ]));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "{:?}",
        start.elapsed()
    );
    assert!(
        out.stderr.to_lowercase().contains("timeout") || out.stderr.contains("timed out"),
        "{}",
        out.stderr
    );
    held.join().unwrap();

    let out = run(offsite(&["list", "--url", &url])
        .env_remove("AWS_ACCESS_KEY_ID")
        .env("HOME", "/nonexistent"));
    assert_eq!(out.code, 64);
    assert!(out.stderr.contains("no S3 credentials"), "{}", out.stderr);
}

#[test]
fn damage_in_the_bucket_is_named_by_verify_and_pull_and_leaves_nothing() {
    let local = Local::new(12);
    let set = local.set(false);
    let bucket = server().bucket("damage");
    let url = format!("s3://{bucket}/app");
    ok(&run(&mut offsite(&["push", &url, set.to_str().unwrap()])));
    let v = run(offsite(&["verify", "--url", &url, "--record", "--root"]).arg(&local.root));
    ok(&v);
    assert_eq!(v.events("remote_verify")[0]["checked"], 4);
    // Replace the archive with bytes of the same size, then cut the dump.
    let archive = fs::read(set.join("files-uploads.tar.zst.age")).unwrap();
    let mut bad = archive.clone();
    bad[archive.len() / 2] ^= 1;
    let badfile = local.tmp.path().join("bad");
    fs::write(&badfile, &bad).unwrap();
    let key = format!(
        "s3:{bucket}/app/{}/files-uploads.tar.zst.age",
        name_of(&set)
    );
    ok(&rclone(&["copyto", badfile.to_str().unwrap(), &key]));
    let v = run(offsite(&["verify", "--url", &url, "--record", "--root"]).arg(&local.root));
    assert_eq!(v.code, 1, "{}", v.stdout);
    let problems = v.events("remote_verify")[0]["problems"].to_string();
    assert!(
        problems.contains("files-uploads.tar.zst.age: read back"),
        "{problems}"
    );
    let list = run(offsite(&["list", "--url", &url, "--root"]).arg(&local.root));
    assert_eq!(list.events("remote_set")[0]["remote_verified"], false);

    let dest = local.tmp.path().join("restore-root");
    let pull = run(offsite(&["pull", "latest", "--url", &url, "--dest"]).arg(&dest));
    assert_eq!(pull.code, 2);
    assert!(
        pull.stderr.contains("files-uploads.tar.zst.age is damaged"),
        "{}",
        pull.stderr
    );
    assert_eq!(
        fs::read_dir(&dest).unwrap().count(),
        0,
        "nothing is left in the root"
    );

    // A truncated object: named by its size, before anything is read.
    fs::write(&badfile, &archive[..archive.len() - 1000]).unwrap();
    ok(&rclone(&["copyto", badfile.to_str().unwrap(), &key]));
    let v = run(&mut offsite(&["verify", "--url", &url]));
    assert_eq!(v.code, 1);
    let problems = v.events("remote_verify")[0]["problems"].to_string();
    assert!(
        problems.contains(&format!(
            "files-uploads.tar.zst.age: {} bytes, the manifest says {}",
            archive.len() - 1000,
            archive.len()
        )),
        "{problems}"
    );
    let pull = run(offsite(&["pull", "latest", "--url", &url, "--dest"]).arg(&dest));
    assert_eq!(pull.code, 2);
    assert!(pull.stderr.contains("is damaged"), "{}", pull.stderr);
    assert_eq!(
        fs::read_dir(&dest).unwrap().count(),
        0,
        "nothing is left in the root"
    );

    // A full disk during a pull: an error, and nothing left either.
    ok(&rclone(&[
        "copyto",
        set.join("files-uploads.tar.zst.age").to_str().unwrap(),
        &key,
    ]));
    let pull = run(Command::new("bash")
        .arg("-c")
        .arg("ulimit -f 4096; exec \"$@\"")
        .arg("bash")
        .arg(env!("CARGO_BIN_EXE_offsite"))
        .args(["pull", "latest", "--url", &url, "--dest"])
        .arg(&dest)
        .envs(server().env()));
    assert_eq!(pull.code, 2, "{}", pull.stderr);
    assert!(
        pull.stderr.contains("file size limit exceeded"),
        "{}",
        pull.stderr
    );
    assert_eq!(
        fs::read_dir(&dest).unwrap().count(),
        0,
        "nothing is left in the root"
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

#[test]
fn a_push_killed_mid_upload_is_finished_by_the_rerun() {
    let local = Local::new(48);
    let set = local.set(false);
    let bucket = server().bucket("killed");
    let url = format!("s3://{bucket}/app");
    let mut child = offsite(&["push", "--jobs", "1", &url, set.to_str().unwrap()])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once part of the big archive is up (or the push ended).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let l = rclone(&["lsf", "-R", &format!("s3:{bucket}/app")]);
        if l.stdout.contains("globals") || Instant::now() > deadline {
            break;
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(150));
    let _ = child.kill();
    let _ = child.wait();
    let list = run(&mut offsite(&["list", "--url", &url]));
    let rows = list.events("remote_set");
    if rows.first().is_some_and(|r| r["complete"] == true) {
        eprintln!("the push finished before it could be killed; the rerun still has to agree");
    } else {
        assert_eq!(rows[0]["complete"], false, "{}", list.stdout);
    }
    let again = run(&mut offsite(&[
        "push",
        "--stale-after",
        "0s",
        &url,
        set.to_str().unwrap(),
    ]));
    ok(&again);
    let v = run(&mut offsite(&["verify", "--url", &url]));
    ok(&v);
    assert_eq!(v.events("remote_verify")[0]["ok"], true);
    let uploads = rclone(&["backend", "list-multipart-uploads", &format!("s3:{bucket}")]);
    assert!(
        !uploads.stdout.contains("UploadId"),
        "stale uploads left: {}",
        uploads.stdout
    );
}

#[test]
fn two_pushes_of_one_set_at_once_leave_one_whole_copy() {
    let local = Local::new(16);
    let set = local.set(false);
    let url = format!("s3://{}/app", server().bucket("twice"));
    let spawn = || {
        offsite(&["push", &url, set.to_str().unwrap()])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (
        opskit_testkit::tools::output_of(a),
        opskit_testkit::tools::output_of(b),
    );
    ok(&a);
    ok(&b);
    let v = run(&mut offsite(&["verify", "--url", &url]));
    ok(&v);
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
    // one-PUT object or of a multipart one.
    for file in ["MANIFEST.json", "files-uploads.tar.zst.age"] {
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

/// A store client for the test's own checks (the library the tool uses).
fn store_of(srv: &opskit_testkit::s3::S3Server, url: &str) -> offsite::s3::Store {
    let env: std::collections::HashMap<&str, String> = srv.env().into_iter().collect();
    let settings = offsite::aws::resolve(&|k| env.get(k).cloned()).unwrap();
    offsite::s3::Store::new(
        offsite::s3::Remote::parse(url).unwrap(),
        offsite::s3::Options {
            settings,
            path_style: true,
            ca: None,
            timeout: Duration::from_secs(10),
        },
    )
    .unwrap()
}

#[test]
fn the_server_killed_mid_upload_then_the_rerun_completes() {
    let srv = opskit_testkit::s3::S3Server::private();
    let local = Local::new(64);
    let set = local.set(false);
    let url = format!("s3://{}/app", srv.bucket("srvkill"));
    let tool = |args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_offsite"));
        srv.configure(&mut c);
        c.args(args).env_remove("OPSKIT_LOG");
        c
    };
    let child = tool(&["push", "--jobs", "1", &url, set.to_str().unwrap()])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Once the dump and the globals are up, the archive's upload is next.
    let store = store_of(&srv, &url);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let sets = offsite::list::remote_sets(&store).unwrap();
        if sets.values().any(|s| s.sizes.len() >= 2) {
            break;
        }
        assert!(Instant::now() < deadline, "the push never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(200));
    srv.kill();
    let out = opskit_testkit::tools::output_of(child);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains(&srv.endpoint), "{}", out.stderr);

    srv.restart();
    let sets = offsite::list::remote_sets(&store).unwrap();
    assert!(
        sets.values().all(|s| !s.complete),
        "shown complete before it is"
    );
    let again = run(&mut tool(&[
        "push",
        "--stale-after",
        "0s",
        &url,
        set.to_str().unwrap(),
    ]));
    ok(&again);
    assert!(
        again.events("push")[0]["skipped"].as_u64().unwrap() >= 2,
        "{}",
        again.stdout
    );
    let v = run(&mut tool(&["verify", "--url", &url]));
    ok(&v);
    let prefix = store.remote.key(&name_of(&set), "");
    assert!(
        store.uploads(&prefix).unwrap().is_empty(),
        "stale multipart uploads are aborted"
    );
}
