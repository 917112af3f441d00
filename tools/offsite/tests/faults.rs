//! offsite when things go wrong, against a real S3 server (SeaweedFS):
//! bad credentials, a missing bucket, a silent server, damage in the
//! bucket, a full disk, a push killed or its server killed mid-upload, two
//! pushes at once.

use std::fs;
use std::process::Command;
use std::time::{Duration, Instant};

use opskit_testkit::tools::run;

mod common;
use common::*;

/// A wrong secret: exit 2, the endpoint, the bucket and the reason named,
/// no secret shown.
fn wrong_secret_is_named(url: &str) {
    let out =
        run(offsite(&["list", "--url", url]).env("AWS_SECRET_ACCESS_KEY", "wrong-secret-value"));
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
}

#[test]
fn wrong_credentials_a_missing_bucket_and_a_silent_server_are_exit_2() {
    let url = format!("s3://{}/app", server().bucket("creds"));
    if server().checks_signatures() {
        wrong_secret_is_named(&url);
    } else {
        eprintln!(
            "{:?} does not check signatures: no wrong-secret case",
            server().flavor
        );
    }

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
    assert_empty(&dest);

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
    assert_empty(&dest);

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
        .envs(server().env())
        .envs(opskit_testkit::signing::keys().env()));
    assert_eq!(pull.code, 2, "{}", pull.stderr);
    assert!(
        pull.stderr.contains("file size limit exceeded"),
        "{}",
        pull.stderr
    );
    assert_empty(&dest);
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

/// The store's writes are conditional (`If-None-Match: *`), for a single
/// PUT and for a multipart upload's completion: a second write of a name
/// is told the object exists (HTTP 412) and the first object stays,
/// whichever server this is.
#[test]
fn conditional_writes_never_replace_an_object() {
    use opskit_s3::Put;
    let url = format!("s3://{}/app", server().bucket("ifnonematch"));
    let store = store_of(server(), &url);
    let sha = |b: &[u8]| opskit_testkit::forge::sha256(b);
    let (first, second) = (b"first".as_slice(), b"second!".as_slice());
    let put = |b: &[u8]| {
        store
            .put("app/one", b.len() as u64, &sha(b), None, b)
            .unwrap()
    };
    assert_eq!(put(first), Put::Created);
    assert_eq!(put(second), Put::Exists);
    let (size, mut body) = store.get("app/one").unwrap();
    let mut got = Vec::new();
    std::io::Read::read_to_end(&mut body, &mut got).unwrap();
    assert_eq!((size, got.as_slice()), (5, first));

    // A multipart upload completed over an existing name.
    let part = vec![7u8; 5 << 20];
    let id = store
        .create_multipart("app/one", &sha(&part), None)
        .unwrap();
    let etag = store.upload_part("app/one", &id, 1, &part).unwrap();
    assert_eq!(
        store.complete("app/one", &id, &[etag]).unwrap(),
        Put::Exists
    );
    store.abort("app/one", &id).unwrap();
    assert_eq!(store.head("app/one").unwrap().unwrap().size, 5);
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

/// A store client for the test's own checks (the library the tool uses).
fn store_of(srv: &opskit_testkit::s3::S3Server, url: &str) -> opskit_s3::Store {
    let env: std::collections::HashMap<&str, String> = srv.env().into_iter().collect();
    let settings = opskit_s3::aws::resolve(&|k| env.get(k).cloned()).unwrap();
    opskit_s3::Store::new(
        opskit_s3::Remote::parse(url).unwrap(),
        opskit_s3::Options {
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
    if !srv.persistent() {
        eprintln!(
            "{:?} keeps its objects in memory: nothing survives its restart",
            srv.flavor
        );
        return;
    }
    let local = Local::new(64);
    let set = local.set(false);
    let url = format!("s3://{}/app", srv.bucket("srvkill"));
    let tool = |args: &[&str]| {
        let mut c = opskit_testkit::signing::command(env!("CARGO_BIN_EXE_offsite"));
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
        let sets = opskit_s3::sets::remote_sets(&store).unwrap();
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
    let sets = opskit_s3::sets::remote_sets(&store).unwrap();
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

#[test]
fn a_file_cut_or_changed_after_verification_fails_the_push_at_once() {
    let local = Local::new(12);
    let set = local.set(false);
    let name = name_of(&set);
    let bucket = server().bucket("changed");
    let url = format!("s3://{bucket}/app");
    let push = || run_within(&mut offsite(&["push", &url, set.to_str().unwrap()]), 60);
    let no_manifest = || {
        let files = remote_files(&bucket, &name);
        assert!(!files.contains(&"MANIFEST.json".into()), "{files:?}");
        files
    };

    // Cut short (a one-PUT file): refused before anything is uploaded.
    let globals = set.join("globals.sql.zst.age");
    let whole = fs::read(&globals).unwrap();
    fs::write(&globals, &whole[..whole.len() - 100]).unwrap();
    let start = Instant::now();
    let out = push();
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "{:?}",
        start.elapsed()
    );
    let e = out.events("push")[0]["error"].as_str().unwrap().to_string();
    assert!(
        e.contains("globals.sql.zst.age")
            && e.contains(&format!("{} bytes", whole.len() - 100))
            && e.contains(&format!("{}", whole.len())),
        "{e}"
    );
    assert!(
        no_manifest().is_empty(),
        "uploaded before the sizes were checked"
    );
    // Longer than its manifest entry: refused as well.
    fs::write(&globals, [&whole[..], b"more"].concat()).unwrap();
    let out = push();
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("globals.sql.zst.age"), "{}", out.stderr);
    fs::write(&globals, &whole).unwrap();

    // The same size, other bytes: a one-PUT file and a multipart one.
    for file in ["db.dump.zst.age", "files-uploads.tar.zst.age"] {
        let path = set.join(file);
        let good = fs::read(&path).unwrap();
        let mut bad = good.clone();
        bad[good.len() / 2] ^= 1;
        fs::write(&path, &bad).unwrap();
        let out = push();
        assert_eq!(out.code, 2, "{}", out.stderr);
        let e = out.events("push")[0]["error"].as_str().unwrap().to_string();
        assert!(e.contains(file) && e.contains("sha256"), "{e}");
        assert!(
            !no_manifest().contains(&file.to_string()),
            "{file} left remotely"
        );
        fs::write(&path, &good).unwrap();
    }
    let uploads = rclone(&["backend", "list-multipart-uploads", &format!("s3:{bucket}")]);
    assert!(!uploads.stdout.contains("UploadId"), "{}", uploads.stdout);
    // Put right, the set goes up whole.
    ok(&push());
    ok(&run(&mut offsite(&["verify", "--url", &url])));
}

#[test]
fn a_symlink_planted_at_the_verdict_log_is_not_written_through() {
    let local = Local::new(0);
    let set = local.set(false);
    let url = format!("s3://{}/app", server().bucket("planted"));
    ok(&run(&mut offsite(&["push", &url, set.to_str().unwrap()])));
    let outside = local.tmp.path().join("outside");
    fs::write(&outside, "keep\n").unwrap();
    std::os::unix::fs::symlink(&outside, local.root.join("offsite-verified.ndjson")).unwrap();
    let out = run(offsite(&["verify", "--url", &url, "--record", "--root"]).arg(&local.root));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(out.stderr.contains("symbolic link"), "{}", out.stderr);
    assert_eq!(fs::read_to_string(&outside).unwrap(), "keep\n");
}

/// Root pulling into a root another user owns (`/var/backups/opskit` is
/// the opskit user's; restore-system.sh --from-offsite and the runbook ran
/// the pull as root): that user could rename the staging directory away
/// and put a link in its place, and root would write the set's files
/// wherever it points (/etc/cron.d). Refused before anything is written;
/// pulled as the owner, or into root's own directory, it is fine.
#[test]
fn root_never_pulls_into_a_directory_another_user_owns() {
    if opskit::sys::euid() != 0 {
        eprintln!("needs root: skipped");
        return;
    }
    let local = Local::new(0);
    let set = local.set(false);
    let url = format!("s3://{}/app", server().bucket("owned"));
    ok(&run(&mut offsite(&["push", &url, set.to_str().unwrap()])));
    let dest = local.tmp.path().join("theirs");
    fs::create_dir(&dest).unwrap();
    std::os::unix::fs::chown(&dest, Some(65534), Some(65534)).unwrap();
    let pull = || run(offsite(&["pull", "latest", "--url", &url, "--dest"]).arg(&dest));
    let out = pull();
    assert_eq!(out.code, 64, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr
            .contains(&format!("not pulling into {}", dest.display()))
            && out.stderr.contains("owned by uid 65534"),
        "{}",
        out.stderr
    );
    assert_empty(&dest);
    // Root's own directory, but inside one another user owns: that user
    // can swap it on the way.
    let theirs = local.tmp.path().join("their-parent");
    let inner = theirs.join("mine");
    fs::create_dir_all(&inner).unwrap();
    std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
    let out = run(offsite(&["pull", "latest", "--url", &url, "--dest"]).arg(&inner));
    assert_eq!(out.code, 64, "{}", out.stderr);
    assert!(
        out.stderr.contains("owned by uid 65534")
            && out.stderr.contains("must be root's or this user's"),
        "{}",
        out.stderr
    );
    assert_empty(&inner);
    std::os::unix::fs::chown(&dest, Some(0), Some(0)).unwrap();
    ok(&pull());
    // A root that is a link (to another disk), where only root can
    // repoint it: fine.
    let link = local.tmp.path().join("link");
    std::os::unix::fs::symlink(&dest, &link).unwrap();
    let out = run(offsite(&["pull", "latest", "--url", &url, "--dest"]).arg(&link));
    assert_eq!(out.code, 2, "already pulled: {}", out.stderr);
    assert!(out.stderr.contains("already exists"), "{}", out.stderr);
}

/// Input that is not records: one line on stderr per bad line for the
/// first few (it used to print nothing and exit 2), then a count.
#[test]
fn bad_input_lines_are_named_on_stderr() {
    let url = format!("s3://{}/app", server().bucket("badinput"));
    let out = opskit_testkit::tools::run_with_stdin(
        &mut offsite(&["push", &url]),
        "not json\n{\"event\":\"backup\"\n",
    );
    assert_eq!(out.code, 2, "{}", out.stdout);
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{}", out.stderr);
    assert!(lines[0].contains("stdin line 1"), "{}", out.stderr);
    assert!(lines[1].contains("stdin line 2"), "{}", out.stderr);
    let garbage = "x\n".repeat(1000);
    let out = opskit_testkit::tools::run_with_stdin(&mut offsite(&["push", &url]), &garbage);
    assert_eq!(out.code, 2);
    assert_eq!(out.stderr.lines().count(), 6, "{}", out.stderr);
}
