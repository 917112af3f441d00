//! Encrypted sets (`pgbackup --encrypt-to`): what stays readable without
//! the identity and what does not, verification with and without it, the
//! stock `age` tool on both sides, damage, the wrong key, bad key input.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use opskit_testkit::age::Key;
use opskit_testkit::tools::run;
use opskit_testkit::{Cluster, TestDb, bin, cluster};

mod common;
use common::*;

fn manifest(set: &Path) -> serde_json::Value {
    serde_json::from_str(&fs::read_to_string(set.join("MANIFEST.json")).unwrap()).unwrap()
}

/// A seeded database and an encrypted set of it, to `key` (and with
/// `--encrypt-to-file`, to `team` as well).
struct Fixture {
    tmp: tempfile::TempDir,
    db: TestDb,
    key: Key,
    team: Key,
    set: PathBuf,
}

fn encrypted_set(c: &'static Cluster) -> Fixture {
    let db = c.create_db();
    seed(c, &db, 20_000);
    let tmp = tempfile::tempdir().unwrap();
    let key = Key::new(tmp.path(), "recovery.key");
    let team = Key::new(tmp.path(), "team.key");
    let rfile = tmp.path().join("recipients.txt");
    fs::write(&rfile, format!("# on-call team\n{}\n", team.public)).unwrap();
    let set = make_set_with(
        c,
        &db,
        tmp.path(),
        &[
            "--encrypt-to",
            &key.public,
            "--encrypt-to-file",
            rfile.to_str().unwrap(),
        ],
    );
    Fixture {
        tmp,
        db,
        key,
        team,
        set,
    }
}

fn verify_with(set: &Path, c: &'static Cluster, extra: &[&str]) -> opskit_testkit::Output {
    run(verify()
        .arg(set)
        .arg("--pg-bindir")
        .arg(c.bindir())
        .args(extra))
}

#[test]
fn an_encrypted_set_keeps_the_database_unreadable_and_verifies_with_the_identity() {
    let c = cluster();
    let f = encrypted_set(c);
    let m = manifest(&f.set);
    let names: Vec<&str> = m["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "db.dump.zst.age",
            "globals.sql.zst.age",
            "files-appfiles.tar.zst.age",
            "contents.json.age"
        ]
    );
    assert_eq!(m["encryption"]["scheme"], "age");
    assert_eq!(
        m["encryption"]["recipients"],
        serde_json::json!([f.key.public, f.team.public])
    );
    // Nothing from inside the database in what stays readable.
    let readable = fs::read_to_string(f.set.join("MANIFEST.json")).unwrap()
        + &fs::read_to_string(f.set.join("SHA256SUMS")).unwrap();
    for inside in ["items", "Odd Name", "row_counts"] {
        assert!(!readable.contains(inside), "{inside} readable:\n{readable}");
    }
    // sha256sum -c checks the files as they are on disk.
    let st = Command::new("sha256sum")
        .args(["-c", "--quiet", "SHA256SUMS"])
        .current_dir(&f.set)
        .status()
        .unwrap();
    assert!(st.success());
    // Debian's age decrypts every file, with either key, to the plaintext
    // the manifest records; the contents hold the row counts.
    for file in m["files"].as_array().unwrap() {
        let path = f.set.join(file["name"].as_str().unwrap());
        for k in [&f.key, &f.team] {
            let plain = k.decrypt(&path).expect("age -d");
            assert_eq!(
                plain.len() as u64,
                file["plaintext_bytes"].as_u64().unwrap()
            );
            let sha = opskit_sha(&plain);
            assert_eq!(sha, file["plaintext_sha256"].as_str().unwrap(), "{path:?}");
        }
    }
    let contents: serde_json::Value =
        serde_json::from_slice(&f.key.decrypt(&f.set.join("contents.json.age")).unwrap()).unwrap();
    assert_eq!(contents["row_counts"]["public.items"], 20_000);

    // Without the identity: the keyless checks, and the record says quick.
    let out = verify_with(&f.set, c, &[]);
    assert_eq!(out.code, 0, "{:?}", check_lines(&out, false));
    let rec = &out.events("verify")[0];
    assert_eq!(rec["depth"], "quick", "{rec}");
    assert_eq!(out.summary()["depth"], "quick");
    let ok = check_lines(&out, true);
    assert!(
        ok.iter()
            .any(|l| l.starts_with("age_header db.dump.zst.age 2 X25519")),
        "{ok:?}"
    );
    assert!(!ok.iter().any(|l| l.starts_with("toc ")), "{ok:?}");
    assert!(
        out.stderr.contains("checksums, sizes and age headers only"),
        "{}",
        out.stderr
    );

    // With either identity: every file decrypted, its structure read.
    for k in [&f.key, &f.team] {
        let out = verify_with(&f.set, c, &["--identity", k.identity.to_str().unwrap()]);
        assert_eq!(out.code, 0, "{:?}", check_lines(&out, false));
        assert_eq!(out.events("verify")[0]["depth"], "structural");
        let ok = check_lines(&out, true);
        for n in &names {
            assert!(
                ok.iter()
                    .any(|l| l.starts_with(&format!("decrypt {n} every chunk"))),
                "{n}: {ok:?}"
            );
        }
        assert!(
            ok.iter().any(|l| l.starts_with("toc db.dump.zst.age")),
            "{ok:?}"
        );
        assert!(
            ok.iter()
                .any(|l| l.starts_with("tar files-appfiles.tar.zst.age")),
            "{ok:?}"
        );
        assert!(
            ok.iter()
                .any(|l| l.starts_with("contents contents.json.age row counts of 2 tables")),
            "{ok:?}"
        );
    }

    // The restore depth decrypts as it streams; the row counts come from
    // the encrypted contents (OPSKIT_AGE_IDENTITY names the file).
    let out = run(verify()
        .args(["--restore-into", &c.url("postgres")])
        .arg(&f.set)
        .arg("--pg-bindir")
        .arg(c.bindir())
        .env("OPSKIT_AGE_IDENTITY", &f.team.identity));
    assert_eq!(
        out.code,
        0,
        "{}\n{:?}",
        out.stderr,
        check_lines(&out, false)
    );
    let rec = &out.events("verify")[0];
    assert_eq!(rec["depth"], "restore");
    assert!(
        rec["checks"]
            .to_string()
            .contains("2 tables match the manifest"),
        "{rec}"
    );

    // The manifest's restore command, with the stock tools.
    let target = c.create_db();
    let r = c.restore_with_manifest_env(
        &f.set,
        &m,
        &target.url,
        &[("AGE_IDENTITY", &f.key.identity)],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        c.query(&target.name, "SELECT count(*) FROM items"),
        vec!["20000"]
    );
    drop(f.tmp);
    drop(f.db);
}

fn opskit_sha(bytes: &[u8]) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

#[test]
fn the_wrong_identity_is_exit_2_and_restores_nothing() {
    let c = cluster();
    let f = encrypted_set(c);
    let stranger = Key::new(f.tmp.path(), "stranger.key");
    let before = c.query("postgres", "SELECT count(*) FROM pg_database");
    let out = run(verify()
        .args(["--restore-into", &c.url("postgres")])
        .arg(&f.set)
        .arg("--pg-bindir")
        .arg(c.bindir())
        .arg("--identity")
        .arg(&stranger.identity));
    assert_eq!(out.code, 2, "{}", out.stderr);
    let want = format!(
        "no identity in {} matches the set's recipients ({}, {})",
        stranger.identity.display(),
        f.key.public,
        f.team.public
    );
    assert!(out.stderr.contains(&want), "{}", out.stderr);
    assert!(
        out.events("error")[0]["message"]
            .as_str()
            .unwrap()
            .contains(&want)
    );
    assert!(out.events("verify").is_empty());
    assert!(scratch_names(&out.stderr).is_empty(), "{}", out.stderr);
    assert_eq!(
        c.query("postgres", "SELECT count(*) FROM pg_database"),
        before
    );
    // The restore test without any identity: exit 2, nothing restored.
    let out = verify_with(&f.set, c, &["--restore-into", &c.url("postgres")]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("the restore test needs its identity"),
        "{}",
        out.stderr
    );
    assert_eq!(
        c.query("postgres", "SELECT count(*) FROM pg_database"),
        before
    );
}

#[test]
fn a_flipped_byte_or_a_cut_is_caught_by_the_checksum_and_by_decryption() {
    let c = cluster();
    let f = encrypted_set(c);
    let id = f.key.identity.to_str().unwrap().to_string();

    let flipped = copy_set(&f.set, &f.tmp.path().join("flipped").tap_mkdir());
    let file = flipped.join("db.dump.zst.age");
    let mut bytes = fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    fs::write(&file, &bytes).unwrap();
    let quick = verify_with(&flipped, c, &[]);
    assert_eq!(quick.code, 1);
    let bad = check_lines(&quick, false);
    assert!(
        bad.iter()
            .any(|l| l.starts_with("sha256 db.dump.zst.age expected")),
        "{bad:?}"
    );
    let full = verify_with(&flipped, c, &["--identity", &id]);
    assert_eq!(full.code, 1);
    let bad = check_lines(&full, false);
    assert!(
        bad.iter().any(|l| l.starts_with("sha256 db.dump.zst.age")),
        "{bad:?}"
    );
    assert!(
        bad.iter()
            .any(|l| l.starts_with("decrypt db.dump.zst.age age: a chunk failed authentication")),
        "{bad:?}"
    );

    let cut = copy_set(&f.set, &f.tmp.path().join("cut").tap_mkdir());
    let file = cut.join("files-appfiles.tar.zst.age");
    let len = fs::metadata(&file).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(len - 100)
        .unwrap();
    let full = verify_with(&cut, c, &["--identity", &id]);
    assert_eq!(full.code, 1);
    let bad = check_lines(&full, false);
    for want in [
        "size files-appfiles.tar.zst.age expected",
        "sha256 files-appfiles.tar.zst.age",
        "decrypt files-appfiles.tar.zst.age age: a chunk failed authentication: the file was changed or cut short",
    ] {
        assert!(bad.iter().any(|l| l.starts_with(want)), "{want}: {bad:?}");
    }
}

trait Mkdir {
    fn tap_mkdir(self) -> Self;
}
impl Mkdir for PathBuf {
    fn tap_mkdir(self) -> Self {
        fs::create_dir_all(&self).unwrap();
        self
    }
}

#[test]
fn a_file_encrypted_by_the_age_tool_is_read_by_verify_backup() {
    let c = cluster();
    let f = encrypted_set(c);
    // Replace the dump with the same plaintext encrypted by Debian's age,
    // and fix the on-disk size and sha256 (the plaintext's stay).
    let file = f.set.join("db.dump.zst.age");
    let plain = f.tmp.path().join("db.dump.zst");
    fs::write(&plain, f.key.decrypt(&file).unwrap()).unwrap();
    fs::remove_file(&file).unwrap();
    f.key.encrypt_with_age(&plain, &file);
    fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let bytes = fs::read(&file).unwrap();
    let mut m = manifest(&f.set);
    // age wraps the file key to one recipient: the manifest lists one.
    m["encryption"]["recipients"] = serde_json::json!([f.key.public]);
    for e in m["files"].as_array_mut().unwrap() {
        if e["name"] == "db.dump.zst.age" {
            e["bytes"] = bytes.len().into();
            e["sha256"] = opskit_sha(&bytes).into();
        }
    }
    rewrite_manifest(&f.set, &m);
    let out = verify_with(&f.set, c, &["--identity", f.key.identity.to_str().unwrap()]);
    let bad = check_lines(&out, false);
    // The other files still carry two stanzas; only they differ.
    assert!(
        bad.iter()
            .all(|l| l.starts_with("age_header ") && !l.contains("db.dump")),
        "{bad:?}"
    );
    let ok = check_lines(&out, true);
    assert!(
        ok.iter()
            .any(|l| l.starts_with("decrypt db.dump.zst.age every chunk")),
        "{ok:?}"
    );
    assert!(
        ok.iter()
            .any(|l| l.starts_with("age_header db.dump.zst.age 1 X25519")),
        "{ok:?}"
    );
    assert!(
        ok.iter().any(|l| l.starts_with("toc db.dump.zst.age")),
        "{ok:?}"
    );
}

/// Write a changed manifest and the SHA256SUMS that goes with it, signed
/// again (as the set's owner would: these tests are about what else is
/// checked).
fn rewrite_manifest(set: &Path, m: &serde_json::Value) {
    opskit_testkit::forge::write_manifest(set, m);
    opskit_testkit::signing::resign(set);
}

#[test]
fn bad_keys_are_usage_errors_that_leave_nothing() {
    let c = cluster();
    let db = c.create_db();
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("sets");
    let pgbackup = |extra: &[&str]| {
        run(opskit_testkit::signing::command(bin("pgbackup"))
            .arg("--dest")
            .arg(&dest)
            .args(["--db", &db.url, "--pg-bindir"])
            .arg(c.bindir())
            .args(extra)
            .env_remove("OPSKIT_AGE_RECIPIENTS"))
    };
    let out = pgbackup(&["--encrypt-to", "age1notakey"]);
    assert_eq!(out.code, 64);
    assert!(
        out.stderr
            .contains("--encrypt-to 'age1notakey': not an age X25519 public key"),
        "{}",
        out.stderr
    );
    let key = Key::new(tmp.path(), "k");
    let rfile = tmp.path().join("recipients.txt");
    fs::write(
        &rfile,
        format!("{}\n# comment\nssh-ed25519 AAAA me@host\n", key.public),
    )
    .unwrap();
    let out = pgbackup(&["--encrypt-to-file", rfile.to_str().unwrap()]);
    assert_eq!(out.code, 64);
    assert!(
        out.stderr.contains(&format!(
            "{}:3: SSH keys are not supported",
            rfile.display()
        )),
        "{}",
        out.stderr
    );
    // Several keys in the env file's variable, one of them bad.
    let out = run(opskit_testkit::signing::command(bin("pgbackup"))
        .arg("--dest")
        .arg(&dest)
        .args(["--db", &db.url])
        .env("OPSKIT_AGE_RECIPIENTS", format!("{} age1bad", key.public)));
    assert_eq!(out.code, 64, "{}", out.stderr);
    assert!(out.stderr.contains("'age1bad'"), "{}", out.stderr);
    // Nothing was written: no set, no staging directory.
    assert!(
        fs::read_dir(&dest)
            .map(|d| d.flatten().all(|e| e.file_name() == ".opskit.lock"))
            .unwrap_or(true)
    );

    // An identity file others can read is refused, naming file and mode.
    fs::set_permissions(
        &key.identity,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let out = run(verify()
        .arg(tmp.path())
        .arg("--identity")
        .arg(&key.identity));
    assert_eq!(out.code, 64);
    assert!(
        out.stderr.contains(&format!(
            "identity file {} is mode 0644",
            key.identity.display()
        )),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains(&key.secret()));
}

#[test]
fn no_key_material_reaches_a_child_a_record_a_log_or_the_set() {
    let c = cluster();
    let db = c.create_db();
    seed(c, &db, 1_000);
    let tmp = tempfile::tempdir().unwrap();
    let key = Key::new(tmp.path(), "recovery.key");
    // Every PostgreSQL tool the runs start goes through a wrapper that
    // records its /proc/PID/cmdline and environment, then runs the real one.
    let wrap = tmp.path().join("bin");
    let seen = tmp.path().join("children.log");
    fs::create_dir(&wrap).unwrap();
    for tool in ["pg_dump", "pg_dumpall", "pg_restore", "psql"] {
        let script = format!(
            "#!/bin/sh\n{{ tr '\\0' ' ' </proc/$$/cmdline; echo; tr '\\0' '\\n' </proc/$$/environ; }} >>{log}\nexec {real}/{tool} \"$@\"\n",
            log = seen.display(),
            real = c.bindir().display()
        );
        let p = wrap.join(tool);
        fs::write(&p, script).unwrap();
        fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    let backup = run(opskit_testkit::signing::command(bin("pgbackup"))
        .arg("--dest")
        .arg(tmp.path().join("sets"))
        .args(["--db", &db.url, "--row-counts", "--globals", "--pg-bindir"])
        .arg(&wrap)
        .env("OPSKIT_AGE_RECIPIENTS", &key.public));
    assert_eq!(backup.code, 0, "{}", backup.stderr);
    let set = PathBuf::from(backup.events("backup")[0]["path"].as_str().unwrap());
    let verified = run(verify()
        .args(["--restore-into", &c.url("postgres"), "--record", "-v"])
        .arg(&set)
        .arg("--pg-bindir")
        .arg(&wrap)
        .env("OPSKIT_AGE_IDENTITY", &key.identity));
    assert_eq!(verified.code, 0, "{}", verified.stderr);
    let children = fs::read_to_string(&seen).unwrap();
    for tool in ["pg_dump ", "pg_dumpall ", "pg_restore "] {
        assert!(children.contains(tool), "{tool} never ran:\n{children}");
    }
    let secret = key.secret();
    let body = &secret["AGE-SECRET-KEY-1".len()..];
    let mut places = vec![
        ("children's argv and environment", children),
        ("pgbackup's output", backup.stdout + &backup.stderr),
        ("verify-backup's output", verified.stdout + &verified.stderr),
    ];
    for f in fs::read_dir(&set).unwrap().flatten() {
        places.push((
            "a set file",
            String::from_utf8_lossy(&fs::read(f.path()).unwrap()).into_owned(),
        ));
    }
    places.push((
        "the result log",
        fs::read_to_string(tmp.path().join("sets/verified.ndjson")).unwrap(),
    ));
    for (what, text) in &places {
        assert!(!text.is_empty(), "{what} is empty");
        assert!(!text.contains("AGE-SECRET-KEY"), "key material in {what}");
        assert!(
            !text.to_uppercase().contains(body),
            "key material in {what}"
        );
    }
}

/// The readable manifest gives the plaintext sha256 of every encrypted
/// file. For a small, guessable one it was an oracle: hashing guessed table
/// names and counts (or role names) and comparing confirmed them without
/// the key. The sealed contents and globals now carry 256 random bits, so
/// the guess that was exactly right no longer matches.
#[test]
fn small_sealed_files_are_no_oracle_for_their_contents() {
    let c = cluster();
    let f = encrypted_set(c);
    let m = manifest(&f.set);
    let entry = |name: &str| {
        m["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("no {name}"))
            .clone()
    };
    let contents = f.key.decrypt(&f.set.join("contents.json.age")).unwrap();
    let sealed: serde_json::Value = serde_json::from_slice(&contents).unwrap();
    let nonce = sealed["nonce"].as_str().unwrap();
    assert_eq!(nonce.len(), 64, "{sealed}");
    // The attacker's exact guess: the right counts, as pgbackup writes them.
    let guess = serde_json::to_vec_pretty(&serde_json::json!({"row_counts": sealed["row_counts"]}))
        .unwrap();
    let recorded = entry("contents.json.age")["plaintext_sha256"].clone();
    assert_eq!(
        recorded,
        opskit_sha(&contents),
        "the record is still a checksum"
    );
    assert_ne!(
        recorded,
        opskit_sha(&guess),
        "the exact guess confirms the counts"
    );

    // The globals (role names: guessable) start with a random comment.
    let name = m["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "globals")
        .unwrap()["name"]
        .as_str()
        .unwrap()
        .to_string();
    let tool = if name.contains(".zst") {
        "zstd"
    } else {
        "gzip"
    };
    let text = f.key.decrypt(&f.set.join(&name)).unwrap();
    let text = opskit_testkit::forge::decompress(tool, &text);
    let first = String::from_utf8_lossy(&text)
        .lines()
        .next()
        .unwrap()
        .to_string();
    assert!(
        first.starts_with("-- opskit nonce ") && first.len() == 16 + 64,
        "{first}"
    );
}
