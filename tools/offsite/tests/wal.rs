//! offsite and the WAL archive: `push-wal` copies what walarchive stored
//! (each file's checksum file last, a rerun uploads nothing, an unencrypted
//! archive is refused), and `offsite prune` deletes the remote WAL no kept
//! remote base set needs, never a segment from its start on nor a history
//! file.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{Local, offsite, ok, server};
use opskit_testkit::tools::run;
use opskit_testkit::{bin, cluster};

/// A base set of the test cluster in `local`'s root, encrypted and verified
/// (one at a time: [`opskit_testkit::pg::base_backup_lock`]).
fn base_set(local: &Local) -> (PathBuf, String) {
    let _one = opskit_testkit::pg::base_backup_lock();
    let out = run(opskit_testkit::signing::command(bin("pgbackup"))
        .args(["--physical", "--dest"])
        .arg(&local.root)
        .args(["--db", &local.db.url, "--encrypt-to", &local.key.public])
        .env_remove("OPSKIT_AGE_RECIPIENTS"));
    ok(&out);
    let set = PathBuf::from(out.events("backup")[0]["path"].as_str().unwrap());
    let m: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(set.join("MANIFEST.json")).unwrap()).unwrap();
    ok(&run(opskit_testkit::signing::command(bin("verify-backup"))
        .arg("--record")
        .arg(&set)
        .env_remove("OPSKIT_AGE_IDENTITY")));
    (
        set,
        m["physical"]["start_wal"].as_str().unwrap().to_string(),
    )
}

/// The segment `delta` after `name` (16 MiB segments).
fn seg(name: &str, delta: i64) -> String {
    let log = u64::from_str_radix(&name[8..16], 16).unwrap();
    let s = u64::from_str_radix(&name[16..24], 16).unwrap();
    let n = (log * 256 + s) as i64 + delta;
    format!("{}{:08X}{:08X}", &name[..8], n / 256, n % 256)
}

/// Archive a small file as WAL file `name` with walarchive.
fn archive(root: &Path, name: &str, recipient: Option<&str>) {
    let src = root.parent().unwrap().join(format!("src-{name}"));
    fs::write(&src, format!("wal file {name}\n").repeat(1000)).unwrap();
    let mut cmd = opskit_testkit::signing::command(bin("walarchive"));
    cmd.arg("push")
        .arg(&src)
        .arg(name)
        .arg("--root")
        .arg(root)
        .env_remove("OPSKIT_AGE_RECIPIENTS");
    if let Some(r) = recipient {
        cmd.args(["--encrypt-to", r]);
    }
    ok(&run(&mut cmd));
}

fn remote_wal(url: &str) -> Vec<String> {
    let bucket = url.trim_start_matches("s3://").split('/').next().unwrap();
    let out = common::rclone(&["lsf", "-R", &format!("s3:{bucket}/app/wal")]);
    out.stdout
        .lines()
        .filter(|l| !l.ends_with('/'))
        .map(|l| l.rsplit('/').next().unwrap().to_string())
        .collect()
}

/// Each checksum file is in the bucket byte for byte as walarchive wrote
/// it, its signature included.
fn sidecars_went_up_as_they_are(root: &Path, url: &str) {
    let bucket = url.trim_start_matches("s3://").split('/').next().unwrap();
    for tli in fs::read_dir(root.join("wal")).unwrap().flatten() {
        for f in fs::read_dir(tli.path()).unwrap().flatten() {
            let file = f.file_name().to_string_lossy().into_owned();
            if !file.ends_with(".sha256") {
                continue;
            }
            let here = fs::read_to_string(f.path()).unwrap();
            assert!(here.contains("opskit-wal"), "not signed: {here}");
            let tli = tli.file_name().to_string_lossy().into_owned();
            let there = common::rclone(&["cat", &format!("s3:{bucket}/app/wal/{tli}/{file}")]);
            assert_eq!(there.stdout, here, "{file}");
        }
    }
}

#[test]
fn push_wal_copies_the_archive_and_prune_keeps_what_base_sets_need() {
    let _ = cluster();
    let local = Local::new(0);
    let url = format!("s3://{}/app", server().bucket("wal"));
    let (first, _) = base_set(&local);
    let (second, start) = base_set(&local);
    let names = [
        seg(&start, -2),
        seg(&start, -1),
        start.clone(),
        seg(&start, 1),
    ];
    for n in &names {
        archive(&local.root, n, Some(&local.key.public));
    }
    archive(&local.root, "00000002.history", Some(&local.key.public));

    let push = |url: &str| run(offsite(&["push-wal", url, "--root"]).arg(&local.root));
    let out = push(&url);
    ok(&out);
    let rec = &out.events("push")[0];
    assert_eq!(rec["uploaded"], 10, "{rec}");
    let remote = remote_wal(&url);
    for n in names.iter().map(String::as_str).chain(["00000002.history"]) {
        assert!(remote.contains(&format!("{n}.sha256")), "{n}: {remote:?}");
        assert!(remote.contains(&format!("{n}.zst.age")), "{n}: {remote:?}");
    }
    sidecars_went_up_as_they_are(&local.root, &url);
    let again = push(&url);
    ok(&again);
    assert_eq!(again.events("push")[0]["uploaded"], 0);
    assert_eq!(again.events("push")[0]["skipped"], 5);

    for s in [&first, &second] {
        ok(&run(&mut offsite(&["push", &url, s.to_str().unwrap()])));
    }
    a_forged_start_costs_no_wal(&url, &local, &second, &start, &names);
    let out =
        run(offsite(&["prune", "--url", &url, "--keep-last", "1", "--root"]).arg(&local.root));
    ok(&out);
    let wal = out
        .events("prune")
        .into_iter()
        .find(|r| r["name"] == "wal")
        .unwrap_or_else(|| panic!("no wal record: {}", out.stdout));
    assert_eq!(wal["deleted"], true, "{wal}");
    let remote = remote_wal(&url);
    for gone in &names[..2] {
        assert!(
            !remote.iter().any(|r| r.starts_with(gone.as_str())),
            "{gone}: {remote:?}"
        );
    }
    for kept in names[2..]
        .iter()
        .map(String::as_str)
        .chain(["00000002.history"])
    {
        assert!(
            remote.contains(&format!("{kept}.sha256")),
            "{kept}: {remote:?}"
        );
    }

    // An archive that is not encrypted is not pushed without saying so.
    let plain = tempfile::tempdir().unwrap();
    let root = plain.path().join("backups");
    archive(&root, &names[0], None);
    let out = run(offsite(&["push-wal", &url, "--root"]).arg(&root));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("not encrypted"), "{}", out.stderr);
}

/// The kept set's manifest, forged in the bucket to start later: the WAL
/// it needs is not deleted for it (it was), and the forgery is named: the
/// set is corrupt (exit 1), no restore point.
fn a_forged_start_costs_no_wal(
    url: &str,
    local: &Local,
    set: &std::path::Path,
    start: &str,
    names: &[String],
) {
    let name = set.file_name().unwrap().to_str().unwrap();
    let bucket = url["s3://".len()..].split('/').next().unwrap();
    let key = format!("app/{name}/MANIFEST.json");
    let real = server().get(bucket, &key);
    let forged = String::from_utf8_lossy(&real).replace(start, &seg(start, 1));
    assert_ne!(forged.as_bytes(), &real[..]);
    server().put(bucket, &key, forged.as_bytes());
    let out = run(offsite(&["prune", "--url", url, "--keep-last", "1", "--root"]).arg(&local.root));
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    let rec = out
        .events("prune")
        .into_iter()
        .find(|r| r["name"] == name)
        .unwrap();
    assert_eq!(rec["action"], "corrupt", "{rec}");
    let remote = remote_wal(url);
    for n in names {
        assert!(remote.contains(&format!("{n}.sha256")), "{n}: {remote:?}");
    }
    assert!(
        out.stderr.contains(name) && out.stderr.contains("the remote WAL is left whole"),
        "{}",
        out.stderr
    );
    server().put(bucket, &key, &real);
}

/// A dump set, then a newer base set in the bucket: `pull latest --kind
/// dump` (what restore-system.sh --from-offsite asks for on a new machine)
/// takes the dump, not the newest set of any kind.
#[test]
fn pull_latest_of_a_kind_passes_over_newer_sets_of_the_other_kind() {
    let local = Local::new(1);
    let dump = local.set(false);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (base, _) = base_set(&local);
    let url = format!("s3://{}/app", server().bucket("kinds"));
    for set in [&dump, &base] {
        ok(&run(&mut offsite(&["push", &url, set.to_str().unwrap()])));
    }
    let name = |p: &Path| p.file_name().unwrap().to_str().unwrap().to_string();
    let pull = |args: &[&str], dest: &str| {
        let dest = local.tmp.path().join(dest);
        let out = run(offsite(&["pull", "--url", &url, "--dest"])
            .arg(&dest)
            .args(args));
        (out, dest)
    };
    let (out, _) = pull(&["latest"], "any");
    ok(&out);
    assert_eq!(
        out.events("pull")[0]["set"],
        name(&base),
        "newest of any kind"
    );
    let (out, dest) = pull(&["latest", "--kind", "dump"], "dump");
    ok(&out);
    assert_eq!(out.events("pull")[0]["set"], name(&dump), "{}", out.stdout);
    assert!(dest.join(name(&dump)).join("MANIFEST.json").is_file());
    let (out, _) = pull(&["latest", "--kind", "base"], "base");
    ok(&out);
    assert_eq!(out.events("pull")[0]["set"], name(&base));
    let (out, _) = pull(&[&name(&dump), "--kind", "dump"], "named");
    assert_eq!(out.code, 64, "{}", out.stderr);
    assert!(
        out.stderr.contains("--kind goes with `latest`"),
        "{}",
        out.stderr
    );
    // A prefix holding several series: `latest` of one series is never
    // another's newer set (restore-system.sh restored it as this one).
    let series = |p: &Path| name(p).rsplit_once('-').unwrap().0.to_string();
    assert_ne!(series(&dump), series(&base), "two series");
    let (out, _) = pull(&["latest", "--series", &series(&dump)], "series");
    ok(&out);
    assert_eq!(out.events("pull")[0]["set"], name(&dump), "{}", out.stdout);
    let (out, _) = pull(&["latest", "--kind", "dump", "--series", "billing"], "none");
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("no complete dump set of billing"),
        "{}",
        out.stderr
    );
}

/// Whoever holds the bucket's keys plants a checksum file under the name
/// of a segment the server has not archived yet: push-wal took its
/// presence for the upload, and that segment (the next one any recovery
/// from the bucket needs) never went up, every run saying ok. With a
/// state directory (the unit's), a checksum file found in the bucket for
/// a file newer than those it confirmed is compared with the local one
/// first: a forged one fails the push, named.
#[test]
fn a_planted_checksum_file_never_stands_for_a_segment() {
    let local = Local::new(0);
    let bucket = server().bucket("planted");
    let url = format!("s3://{bucket}/app");
    let state = local.tmp.path().join("state");
    fs::create_dir(&state).unwrap();
    let push = || {
        run(offsite(&["push-wal", &url, "--state-dir"])
            .arg(&state)
            .arg("--root")
            .arg(&local.root))
    };
    let first = "000000010000000000000020";
    archive(&local.root, first, Some(&local.key.public));
    ok(&push());
    let next = seg(first, 1);
    let key = format!("app/wal/00000001/{next}.sha256");
    server().put(&bucket, &key, b"forged\n");
    archive(&local.root, &next, Some(&local.key.public));
    let out = push();
    assert_eq!(out.code, 2, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "s3://{bucket}/{key} is not the checksum file this server archived"
        )),
        "{}",
        out.stderr
    );
    assert!(
        !remote_wal(&url).contains(&format!("{next}.zst.age")),
        "nothing of it went up"
    );
    // The forged object removed, the segment goes up and the run is ok.
    common::rclone(&["deletefile", &format!("s3:{bucket}/{key}")]);
    let out = push();
    ok(&out);
    assert_eq!(out.events("push")[0]["uploaded"], 2, "{}", out.stdout);
    sidecars_went_up_as_they_are(&local.root, &url);
    // A new timeline (a promotion): its history file's name is known
    // ahead, and a checksum file planted for it is compared too.
    archive(&local.root, "00000002.history", Some(&local.key.public));
    let tli = fs::read_dir(local.root.join("wal"))
        .unwrap()
        .flatten()
        .find(|d| d.path().join("00000002.history.sha256").exists())
        .unwrap()
        .file_name();
    let key = format!("app/wal/{}/00000002.history.sha256", tli.to_string_lossy());
    server().put(&bucket, &key, b"forged\n");
    let out = push();
    assert_eq!(out.code, 2, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stderr.contains(&key), "{}", out.stderr);
}

/// The first run with a state directory onto a bucket that already holds
/// the archive (an upgrade): what is there is taken as it is, in one run
/// with no download per file (thousands would outlast the unit's 50 s,
/// and each killed run would start again), and the runs after it push
/// what is new.
#[test]
fn the_first_run_with_a_state_directory_takes_the_bucket_as_it_is() {
    let local = Local::new(0);
    let bucket = server().bucket("upgrade");
    let url = format!("s3://{bucket}/app");
    let first = "000000010000000000000030";
    let names: Vec<String> = (0..5).map(|i| seg(first, i)).collect();
    for n in &names {
        archive(&local.root, n, Some(&local.key.public));
    }
    ok(&run(offsite(&["push-wal", &url, "--root"]).arg(&local.root)));
    // Taken as it is means not read: even a checksum file that differs
    // (the first run trusts the bucket, as every run did before).
    server().put(
        &bucket,
        &format!("app/wal/00000001/{}.sha256", names[2]),
        b"not read\n",
    );
    let state = local.tmp.path().join("state");
    fs::create_dir(&state).unwrap();
    let push = || {
        run(offsite(&["push-wal", &url, "-v", "--state-dir"])
            .arg(&state)
            .arg("--root")
            .arg(&local.root))
    };
    let out = push();
    ok(&out);
    assert_eq!(out.events("push")[0]["skipped"], 5, "{}", out.stdout);
    let marks = fs::read_to_string(state.join("push-wal.confirmed")).unwrap();
    assert!(marks.contains(&names[4]), "{marks}");
    let next = seg(first, 5);
    archive(&local.root, &next, Some(&local.key.public));
    let out = push();
    ok(&out);
    assert_eq!(out.events("push")[0]["uploaded"], 2, "{}", out.stdout);
}
