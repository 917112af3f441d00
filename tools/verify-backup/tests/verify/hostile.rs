//! verify-backup against sets an attacker or a broken disk wrote: paths
//! outside the set, keys it does not trust, a broken newest manifest, a
//! planted link at the result log, a key of the wrong kind.

use super::*;

#[test]
fn a_manifest_naming_paths_outside_the_set_is_refused_unopened() {
    let c = cluster();
    let db = c.create_db();
    seed(c, &db, 10);
    let tmp = tempfile::tempdir().unwrap();
    let good = make_set(c, &db, tmp.path());
    // A file outside whose size and hash would pass if it were opened.
    let outside = good.parent().unwrap().join("outside.txt");
    fs::write(&outside, "secret").unwrap();
    let sha = opskit::gz::sha256_hex(b"secret");
    // Signed again, as a stolen signing key would let an attacker: the
    // names are refused all the same, database.file included.
    for (bad, field) in [
        ("../outside.txt", "files"),
        (outside.to_str().unwrap(), "files"),
        ("../outside.txt", "database"),
    ] {
        let set = copy_set(&good, tmp.path());
        let mp = set.join("MANIFEST.json");
        let mut m: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&mp).unwrap()).unwrap();
        if field == "database" {
            m["database"]["file"] = bad.into();
        } else {
            m["files"]
                .as_array_mut()
                .unwrap()
                .push(serde_json::json!({"name": bad, "kind": "files", "bytes": 6, "sha256": sha}));
        }
        fs::write(&mp, m.to_string()).unwrap();
        opskit_testkit::signing::resign(&set);
        let out = run(verify().arg(&set));
        assert_eq!(out.code, 1);
        let failed = failed_checks(&out);
        assert!(
            failed.iter().any(|f| f.contains("unsafe file name")),
            "{bad}: {failed:?}"
        );
        fs::remove_dir_all(&set).unwrap();
    }
}

/// Who signed a set decides whether anything in it is read: a set signed
/// by a key the reader does not trust is refused in one line naming the
/// set, a renamed set (its signature is for another name) too, and a
/// reader with no public key at all stops with a usage error instead of
/// passing silently.
#[test]
fn only_a_trusted_key_signing_this_set_makes_it_readable() {
    let c = cluster();
    let db = c.create_db();
    seed(c, &db, 10);
    let tmp = tempfile::tempdir().unwrap();
    let good = make_set(c, &db, tmp.path());
    let name = good.file_name().unwrap().to_str().unwrap().to_string();
    let other = opskit_testkit::signing::Keys::new(tmp.path(), "other.key");

    let out = run(verify()
        .env("OPSKIT_SIGNING_PUBKEYS", &other.public)
        .arg(&good));
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert_eq!(failed_checks(&out).len(), 1, "nothing else is read");
    assert!(
        failed_checks(&out)[0].contains("not a trusted key"),
        "{:?}",
        failed_checks(&out)
    );
    let errors: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(errors.len(), 1, "{}", out.stderr);
    assert!(errors[0].contains(&name), "{}", out.stderr);

    // Both keys trusted: the set's own signature is found among them.
    let both = format!(
        "{},{}",
        other.public,
        opskit_testkit::signing::keys().public
    );
    let out = run(verify().env("OPSKIT_SIGNING_PUBKEYS", both).arg(&good));
    assert_eq!(out.code, 0, "{}", out.stdout);

    // Renamed to look like a newer set: the signature is for the old name.
    let moved = tmp.path().join("moved");
    fs::create_dir(&moved).unwrap();
    let newer = moved.join(format!(
        "{}-20991231T000000Z",
        name.rsplit_once('-').unwrap().0
    ));
    fs::rename(&good, &newer).unwrap();
    let out = run(verify().arg(&newer));
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(
        failed_checks(&out)[0].contains("moved from elsewhere"),
        "{:?}",
        failed_checks(&out)
    );

    let out = run(verify().env_remove("OPSKIT_SIGNING_PUBKEYS").arg(&newer));
    assert_eq!(out.code, 64, "{}", out.stderr);
    assert!(
        out.stderr.contains("OPSKIT_SIGNING_PUBKEYS") && out.stderr.contains("--allow-unsigned"),
        "{}",
        out.stderr
    );
    let out = run(verify()
        .env_remove("OPSKIT_SIGNING_PUBKEYS")
        .arg("--allow-unsigned")
        .arg(&newer));
    assert_eq!(
        out.code, 1,
        "a signature that is there is still not a pass: {}",
        out.stdout
    );
}

/// --latest never skips a newer set whose manifest is broken (a FIFO, a
/// directory) to pass an older one: the newest set is the one verified, and
/// it fails, without hanging on the FIFO.
#[test]
fn latest_never_skips_a_newest_set_with_a_broken_manifest() {
    let c = cluster();
    let db = c.create_db();
    seed(c, &db, 10);
    let tmp = tempfile::tempdir().unwrap();
    let old = make_set(c, &db, tmp.path());
    std::thread::sleep(Duration::from_millis(1100));
    let new = make_set(c, &db, tmp.path());
    assert_ne!(old, new);
    for (what, mk) in [("a FIFO", "fifo"), ("a directory", "dir")] {
        let m = new.join("MANIFEST.json");
        let _ = fs::remove_file(&m);
        let _ = fs::remove_dir(&m);
        if mk == "fifo" {
            assert!(Command::new("mkfifo").arg(&m).status().unwrap().success());
        } else {
            fs::create_dir(&m).unwrap();
        }
        let mut child = verify()
            .arg("--latest")
            .arg(new.parent().unwrap())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while child.try_wait().unwrap().is_none() {
            if std::time::Instant::now() > deadline {
                child.kill().unwrap();
                panic!("{what}: verify-backup --latest hung");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{what}: {stdout}");
        let rec: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
        assert_eq!(rec["path"], new.display().to_string(), "{what}: {stdout}");
        assert!(stdout.contains(what), "{what}: {stdout}");
    }
}

/// The result log in a root another user can write (a postgres-owned
/// root), planted as a symlink to a root-owned file: the append refuses
/// instead of writing through it.
#[test]
fn the_result_log_is_never_appended_through_a_planted_symlink() {
    let c = cluster();
    let db = c.create_db();
    seed(c, &db, 10);
    let tmp = tempfile::tempdir().unwrap();
    let set = make_set(c, &db, tmp.path());
    let victim = tmp.path().join("victim");
    fs::write(&victim, "root only\n").unwrap();
    std::os::unix::fs::symlink(&victim, set.parent().unwrap().join("verified.ndjson")).unwrap();
    let out = run(verify().arg("--record").arg(&set));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("symbolic link"), "{}", out.stderr);
    assert_eq!(fs::read_to_string(&victim).unwrap(), "root only\n");
}

/// Each kind has its keys: the database server user's key (trusted for
/// base sets and WAL) cannot make a dump set that root restores, whether it
/// signs it as a dump or claims it is a base set.
#[test]
fn the_key_for_base_sets_and_wal_cannot_sign_a_dump() {
    let c = cluster();
    let db = c.create_db();
    seed(c, &db, 10);
    let tmp = tempfile::tempdir().unwrap();
    let set = make_set(c, &db, tmp.path());
    let name = set.file_name().unwrap().to_str().unwrap().to_string();
    let pitr = opskit_testkit::signing::Keys::new(tmp.path(), "postgres.key");
    let sign_as = |comment: &str| {
        let st = Command::new("minisign")
            .args(["-S", "-s"])
            .arg(&pitr.key)
            .arg("-m")
            .arg(set.join("MANIFEST.json"))
            .args(["-t", comment])
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(st.success());
        let sig = set.join("MANIFEST.json.minisig");
        fs::set_permissions(sig, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    };
    let verify_scoped = || {
        run(verify()
            .env("OPSKIT_PITR_SIGNING_PUBKEYS", &pitr.public)
            .arg(&set))
    };
    sign_as(&format!("opskit-set {name}"));
    let out = verify_scoped();
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(
        failed_checks(&out)[0].contains("not a trusted key"),
        "{:?}",
        failed_checks(&out)
    );
    sign_as(&format!("opskit-base {name}"));
    let out = verify_scoped();
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(
        failed_checks(&out)[0].contains("signed as a base set, but it holds no base backup"),
        "{:?}",
        failed_checks(&out)
    );
    // Signed again by the dump key: the set is good.
    opskit_testkit::signing::resign(&set);
    assert_eq!(verify_scoped().code, 0);
}
