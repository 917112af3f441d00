//! Incremental base sets (#30) on PostgreSQL 18 with `summarize_wal = on`:
//! `pgbackup --physical --incremental` takes a full set when nothing can
//! be built on and says why, then sets holding only what changed; verify
//! checks each chain and replays it through `pg_combinebackup`; a
//! recovery to a point in time starts from the chain; prune keeps every
//! ancestor a kept set needs; a missing or damaged link is named.

use std::fs;
use std::path::{Path, PathBuf};

use opskit_testkit::Output;
use opskit_testkit::drill::Drill;
use opskit_testkit::pg::{base_backup_lock, summarizing_cluster};
use opskit_testkit::tools::run;

#[path = "incremental/fallbacks.rs"]
mod fallbacks;

fn ok(out: &Output, what: &str) {
    assert_eq!(out.code, 0, "{what}:\n{}\n{}", out.stdout, out.stderr);
}

fn backup(d: &Drill, extra: &[&str]) -> Output {
    let _one = base_backup_lock();
    run(d
        .tool("pgbackup")
        .args(["--physical", "--dest"])
        .arg(d.root())
        .arg("--db")
        .arg(d.c.url(&d.db))
        .args(extra))
}

fn verify(d: &Drill, set: &Path, extra: &[&str]) -> Output {
    run(d.tool("verify-backup").arg("--record").args(extra).arg(set))
}

fn set_of(out: &Output) -> PathBuf {
    PathBuf::from(out.events("backup")[0]["path"].as_str().unwrap())
}

fn name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

fn base_bytes(set: &Path) -> u64 {
    let m: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(set.join("MANIFEST.json")).unwrap()).unwrap();
    m["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == "base")
        .unwrap()["bytes"]
        .as_u64()
        .unwrap()
}

#[test]
fn a_chain_is_taken_verified_recovered_and_kept_whole() {
    let d = Drill::on(summarizing_cluster());
    let c = d.c;
    c.query(
        &d.db,
        "CREATE TABLE orders (id bigserial PRIMARY KEY, note text, pad text); \
         INSERT INTO orders (note, pad) SELECT 'before', repeat('x', 300) FROM generate_series(1, 40000)",
    );
    let day = |n: u32| {
        c.query(
            &d.db,
            &format!(
                "INSERT INTO orders (note, pad) SELECT 'day {n}', repeat('y', 300) FROM generate_series(1, 400); \
                 UPDATE orders SET note = note || '!' WHERE id > (SELECT max(id) - 200 FROM orders)"
            ),
        );
    };

    // Nothing verified to build on: a full set, and the record says why.
    let out = backup(&d, &["--incremental"]);
    ok(&out, "first --incremental");
    let rec = &out.events("backup")[0];
    assert!(rec["parent"].is_null(), "{rec}");
    let why = rec["fallback"].as_str().unwrap_or_else(|| panic!("{rec}"));
    assert!(why.contains("passed verification"), "{why}");
    assert_eq!(rec["fallback_kind"], "no_parent", "{rec}");
    let full = set_of(&out);
    ok(&verify(&d, &full, &[]), "verify the full set");

    // A day of changes: the incremental holds only them.
    day(1);
    let out = backup(&d, &["--incremental"]);
    ok(&out, "incremental 1");
    let inc1 = set_of(&out);
    assert_eq!(out.events("backup")[0]["parent"], name(&full).as_str());
    assert!(
        base_bytes(&inc1) * 5 < base_bytes(&full),
        "incremental {} bytes, full {}",
        base_bytes(&inc1),
        base_bytes(&full)
    );
    let out = verify(&d, &inc1, &[]);
    ok(&out, "verify incremental 1");
    let chain = out.check("chain");
    assert!(
        chain["detail"].as_str().unwrap().contains(&name(&full)),
        "{chain}"
    );

    day(2);
    let out = backup(&d, &["--incremental"]);
    ok(&out, "incremental 2");
    let inc2 = set_of(&out);
    assert_eq!(out.events("backup")[0]["parent"], name(&inc1).as_str());
    let m: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(inc2.join("MANIFEST.json")).unwrap()).unwrap();
    let links: Vec<&str> = m["physical"]["incremental"]["chain"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["set"].as_str().unwrap())
        .collect();
    assert_eq!(links, [name(&full), name(&inc1)]);
    // The replay combines the chain (pg_combinebackup), pg_verifybackup
    // passes the result, the scratch cluster reads every row.
    let out = verify(
        &d,
        &inc2,
        &[
            "--replay",
            "--scratch",
            d.dir.join("scratch").to_str().unwrap(),
        ],
    );
    ok(&out, "replay incremental 2");
    assert_eq!(out.check("replay")["ok"], true);

    // Recovery to a time after the chain: its rows, none deleted after.
    day(3);
    let expected = c.query(&d.db, "SELECT count(*) FROM orders")[0]
        .parse::<i64>()
        .unwrap();
    let t = d.time_then_delete();
    let side = d.dir.join("side");
    let (out, port) = d.recover_to(&t, &side);
    ok(&out, "restore-system.sh --to from the chain");
    assert!(out.stderr.contains(&name(&inc2)), "{}", out.stderr);
    let (count, _) = d.side_orders(&side, port);
    assert_eq!(count, expected);
    d.stop_side(&side);
    fs::remove_dir_all(&side).unwrap();
    assert!(
        !d.dir.join(".side.chain").exists(),
        "the unpacked chain is removed"
    );

    retention_keeps_the_chain(&d, &[&full, &inc1, &inc2]);
    the_bucket_holds_chains_whole(&[&full, &inc1, &inc2]);
    broken_links_are_named(&d, &full, &inc1, &inc2);

    // A chain whose full set is older than --full-every ends: a full set.
    let out = backup(&d, &["--incremental", "--full-every", "1s"]);
    ok(&out, "--full-every");
    let rec = &out.events("backup")[0];
    assert!(
        rec["fallback"].to_string().contains("--full-every 1s"),
        "{rec}"
    );
    assert_eq!(rec["fallback_kind"], "scheduled", "{rec}");
    // healthcheck says the server summarizes its WAL.
    let mut h = std::process::Command::new(opskit_testkit::bin("healthcheck"));
    h.env_remove("OPSKIT_LOG").arg(c.url("postgres"));
    let out = run(&mut h);
    assert_eq!(out.events("check")[0]["values"]["summarize_wal"], true);

    killed_mid_incremental(&d);
    fallbacks::a_gap_in_the_summaries(&d);
    fallbacks::summaries_gone_then_a_promotion(&d);
    fallbacks::the_nightly_counts_fallbacks(&d);
}

/// SIGKILL while an incremental waits for its (spread) checkpoint: no set,
/// a hidden leftover with the parent's manifest copy; the next run
/// removes it and takes a correct incremental.
fn killed_mid_incremental(d: &Drill) {
    let last = newest_verified_full(d);
    let mut child = d
        .tool("pgbackup")
        .args([
            "--physical",
            "--incremental",
            "--checkpoint",
            "spread",
            "--dest",
        ])
        .arg(d.root())
        .arg("--db")
        .arg(d.c.url(&d.db))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let hidden = || -> Vec<PathBuf> {
        fs::read_dir(d.root())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with('.'))
            .filter(|p| p.join(".parent.backup_manifest").exists())
            .collect()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while hidden().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the incremental never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // Once pg_basebackup runs: SIGKILL pgbackup (no cleanup can run),
    // then the pg_basebackup it leaves (it would wait out the checkpoint).
    let kids = || -> Vec<String> {
        let out = std::process::Command::new("pgrep")
            .args(["-P", &child.id().to_string()])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    let mut basebackup = kids();
    while basebackup.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "pg_basebackup never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
        basebackup = kids();
    }
    child.kill().unwrap();
    child.wait().unwrap();
    for pid in basebackup {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &pid])
            .status();
    }
    assert_eq!(hidden().len(), 1, "one leftover");
    let out = backup(d, &["--incremental"]);
    ok(&out, "the run after the kill");
    assert!(
        out.stderr.contains("left by an interrupted run"),
        "{}",
        out.stderr
    );
    assert!(hidden().is_empty());
    assert_eq!(out.events("backup")[0]["parent"], name(&last).as_str());
    ok(
        &verify(d, &set_of(&out), &[]),
        "verify the incremental after the kill",
    );
}

/// The newest base set whose verification passed: verify the newest
/// full set first if none is newer.
fn newest_verified_full(d: &Drill) -> PathBuf {
    let out = backup(d, &[]);
    ok(&out, "a full set");
    let set = set_of(&out);
    ok(&verify(d, &set, &[]), "verify it");
    set
}

/// prune --keep-last 1 keeps the newest set and every set it needs.
fn retention_keeps_the_chain(d: &Drill, chain: &[&Path]) {
    let out = run(d
        .tool("prune")
        .arg(d.root())
        .args(["--keep-last", "1", "--min-keep", "1"]));
    ok(&out, "prune");
    for set in chain {
        assert!(
            set.exists(),
            "{} was pruned:\n{}",
            set.display(),
            out.stdout
        );
    }
    let recs = out.events("prune");
    let full = recs
        .iter()
        .find(|r| r["name"] == name(chain[0]).as_str())
        .unwrap();
    let reasons = full["reasons"].to_string();
    assert!(reasons.contains("needed by"), "{full}");
}

/// A missing middle set: the next incremental starts a new chain instead
/// of building on the set that needs it, and the chain's check names it;
/// a damaged one fails the chain of every set after it, named.
fn broken_links_are_named(d: &Drill, full: &Path, inc1: &Path, inc2: &Path) {
    let aside = d.dir.join("aside");
    fs::rename(inc1, &aside).unwrap();
    let out = backup(d, &["--incremental"]);
    ok(&out, "incremental after a lost link");
    let rec = &out.events("backup")[0];
    assert!(rec["parent"].is_null(), "{rec}");
    let why = rec["fallback"].to_string();
    assert!(why.contains(&format!("{} is gone", name(inc1))), "{why}");
    let out = verify(d, inc2, &[]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    let detail = out.check("chain")["detail"].as_str().unwrap().to_string();
    assert!(
        detail.contains(&format!("its parent {} is missing", name(inc1))),
        "{detail}"
    );
    fs::rename(&aside, inc1).unwrap();
    a_restore_needs_its_room(d, inc2);

    let tar = fs::read_dir(inc1)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("base.tar")
        })
        .unwrap();
    let mut bytes = fs::read(&tar).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    fs::write(&tar, &bytes).unwrap();
    let out = verify(d, inc1, &[]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    let out = verify(d, inc2, &[]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    let chain = out.check("chain");
    assert!(
        chain["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("{} failed verification", name(inc1))),
        "{chain}"
    );
    // Named explicitly, the chain with a damaged middle set is unpacked
    // no further than the damage: named, nothing left.
    let pgdata = d.dir.join("never");
    let out = restore(d, inc2, &pgdata);
    assert!(
        out.code == 1 || out.code == 2,
        "{}\n{}",
        out.stdout,
        out.stderr
    );
    assert!(out.stderr.contains(tar.to_str().unwrap()), "{}", out.stderr);
    assert!(!pgdata.exists() && !d.dir.join(".never.chain").exists());
    bytes[mid] ^= 0x40;
    fs::write(&tar, &bytes).unwrap();
    assert!(full.exists());
    // Mended and verified again: whole sets for what follows (prune
    // counts a set whose last verdict failed as corrupt).
    ok(&verify(d, inc1, &[]), "the mended middle set");
    ok(&verify(d, inc2, &[]), "the set after it");
}

/// `walarchive restore` of `set` (to its consistent point) into `pgdata`.
fn restore(d: &Drill, set: &Path, pgdata: &Path) -> Output {
    run(d
        .tool("walarchive")
        .args(["restore", "--immediate", "--root"])
        .arg(d.root())
        .arg("--set")
        .arg(set)
        .arg("--pgdata")
        .arg(pgdata))
}

/// On a file system too small for the chain, the restore is refused
/// before anything is written, saying how much it needs.
fn a_restore_needs_its_room(d: &Drill, set: &Path) {
    if !opskit_testkit::sh::is_root() {
        eprintln!("not root: no small file system to try a restore on");
        return;
    }
    let small = d.dir.join("small");
    fs::create_dir_all(&small).unwrap();
    let st = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=16m,mode=0777", "opskit-small"])
        .arg(&small)
        .status()
        .unwrap();
    assert!(st.success(), "mounting a 16 MiB tmpfs");
    let out = restore(d, set, &small.join("data"));
    let _ = std::process::Command::new("umount").arg(&small).status();
    assert_eq!(out.code, 2, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("needs") && out.stderr.contains("nothing was written"),
        "{}",
        out.stderr
    );
}

fn offsite(args: &[&str]) -> Output {
    offsite_every(args, "30s")
}

/// `offsite` logging its progress every `every` (off a terminal).
fn offsite_every(args: &[&str], every: &str) -> Output {
    let mut cmd = opskit_testkit::signing::command(opskit_testkit::bin("offsite"));
    cmd.env_remove("OPSKIT_LOG")
        .env("OPSKIT_PROGRESS_EVERY", every)
        .env_remove("OPSKIT_BACKUP_ROOT")
        .env_remove("OPSKIT_OFFSITE_URL")
        .envs(opskit_testkit::s3::s3().env())
        .args(args);
    run(&mut cmd)
}

/// Pushed link by link, a chain comes back whole: `offsite pull` of the
/// newest set brings its ancestors first; a bucket missing a link refuses
/// the pull, naming it, with nothing written; offsite prune keeps the
/// chain of a kept set.
fn the_bucket_holds_chains_whole(chain: &[&Path]) {
    let s3 = opskit_testkit::s3::s3();
    let whole = format!("s3://{}/app", s3.bucket("chain"));
    let gapped = format!("s3://{}/app", s3.bucket("gapped"));
    for set in chain {
        let p = set.to_str().unwrap();
        ok(
            &offsite(&["push", &whole, p, "--allow-unencrypted"]),
            "push",
        );
        if *set != chain[1] {
            ok(
                &offsite(&["push", &gapped, p, "--allow-unencrypted"]),
                "push",
            );
        }
    }
    let newest = name(chain[2]);
    // `offsite list` shows the gapped chain's newest set as not
    // restorable from the bucket, naming the link it lacks.
    let out = offsite(&["list", &gapped]);
    ok(&out, "offsite list");
    let row = out
        .events("remote_set")
        .into_iter()
        .find(|r| r["set"] == newest.as_str())
        .unwrap();
    assert_eq!(row["complete"], false, "{row}");
    assert_eq!(row["missing_links"], serde_json::json!([name(chain[1])]));
    let out = offsite(&["list", &whole, "--table"]);
    ok(&out, "offsite list --table");
    assert!(!out.stdout.contains("NO CHAIN"), "{}", out.stdout);
    let out = offsite(&["list", &gapped, "--table"]);
    let line = out.stdout.lines().find(|l| l.starts_with(&newest)).unwrap();
    assert!(line.contains("NO CHAIN"), "{}", out.stdout);
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("root");
    let out = offsite(&["pull", &gapped, &newest, "--dest", dest.to_str().unwrap()]);
    assert_eq!(out.code, 2, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "its chain's set {} is not complete",
            name(chain[1])
        )),
        "{}",
        out.stderr
    );
    assert!(!dest.join(name(chain[0])).exists(), "nothing written");
    let pull = ["pull", &whole, &newest, "--dest", dest.to_str().unwrap()];
    let out = offsite_every(&pull, "1ms");
    ok(&out, "pull the chain");
    // The full set's pull (megabytes) says how far along it is, from its
    // manifest's total.
    let at = format!("offsite: pulling {}: ", name(chain[0]));
    assert!(
        out.stderr
            .lines()
            .any(|l| l.starts_with(&at) && l.contains("%), ")),
        "no progress of {at}: {}",
        out.stderr
    );
    let pulled: Vec<String> = out
        .events("pull")
        .iter()
        .map(|r| r["set"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(pulled, chain.iter().map(|p| name(p)).collect::<Vec<_>>());
    a_broken_signature_keeps_the_chain(&whole, chain);
    let out = offsite(&["prune", &whole, "--keep-last", "1", "--min-keep", "1"]);
    ok(&out, "offsite prune");
    for r in out.events("prune") {
        if chain.iter().any(|p| r["name"] == name(p).as_str()) {
            assert_eq!(r["action"], "keep", "{r}");
        }
    }
}

/// The newest set's signature broken in the bucket (a key rotated out
/// does the same): offsite prune still keeps the ancestors its manifest
/// names (it deleted them), and names it: corrupt, no restore point
/// (exit 1).
fn a_broken_signature_keeps_the_chain(whole: &str, chain: &[&Path]) {
    let s3 = opskit_testkit::s3::s3();
    let newest = name(chain[2]);
    let bucket = whole["s3://".len()..].split('/').next().unwrap();
    let key = format!("app/{newest}/MANIFEST.json.minisig");
    let signature = s3.get(bucket, &key);
    s3.put(bucket, &key, b"untrusted comment: not a signature\n");
    let out = offsite(&["prune", whole, "--keep-last", "1", "--min-keep", "1", "-n"]);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    for r in out.events("prune") {
        if r["name"] == newest.as_str() {
            assert_eq!(r["action"], "corrupt", "{r}\n{}", out.stderr);
        } else if chain.iter().any(|p| r["name"] == name(p).as_str()) {
            assert_eq!(r["action"], "keep", "{r}\n{}", out.stderr);
        }
    }
    assert!(
        out.stderr.contains(&newest) && out.stderr.contains("the remote WAL is left whole"),
        "{}",
        out.stderr
    );
    s3.put(bucket, &key, &signature);
}
