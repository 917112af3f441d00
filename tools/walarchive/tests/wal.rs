//! walarchive as PostgreSQL's archive_command and restore_command: a real
//! cluster with archive_mode=on archiving through it, and the rules of an
//! archive command tested one by one (identical re-archive, other content,
//! a full disk, SIGKILL at random points, damage, encryption).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use opskit_testkit::age::Key;
use opskit_testkit::tools::{Output, Rng, run};
use opskit_testkit::wal::archiving_cluster;

fn walarchive() -> Command {
    let mut c = opskit_testkit::signing::command(env!("CARGO_BIN_EXE_walarchive"));
    c.env_remove("OPSKIT_LOG")
        .env_remove("OPSKIT_BACKUP_ROOT")
        .env_remove("OPSKIT_AGE_RECIPIENTS")
        .env_remove("OPSKIT_AGE_IDENTITY");
    c
}

fn sha256(bytes: &[u8]) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    let mut out = out;
    out.stdin.take().unwrap().write_all(bytes).unwrap();
    String::from_utf8(out.wait_with_output().unwrap().stdout).unwrap()[..64].to_string()
}

/// 16 MiB of bytes that do not compress, like a segment full of new rows.
fn segment(seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed | 1);
    (0..16 << 20).map(|_| rng.next_u64() as u8).collect()
}

const SEG: &str = "000000010000000000000042";

fn push(root: &Path, file: &Path, name: &str) -> Output {
    run(walarchive()
        .arg("push")
        .arg(file)
        .arg(name)
        .arg("--root")
        .arg(root))
}

fn fetch(root: &Path, name: &str, dest: &Path) -> Output {
    run(walarchive()
        .arg("fetch")
        .arg(name)
        .arg(dest)
        .arg("--root")
        .arg(root))
}

/// The archiving cluster, its archive_command pointed at walarchive (a
/// copy in the cluster's own directory, which its server user can run).
fn archiving() -> (&'static opskit_testkit::Cluster, PathBuf) {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    let c = archiving_cluster();
    let root = ROOT.get_or_init(|| {
        let bin = c.root().join("walarchive");
        fs::copy(env!("CARGO_BIN_EXE_walarchive"), &bin).unwrap();
        let root = c.root().join("archive");
        let key = opskit_testkit::signing::keys().copy_for(c, c.root());
        let cmd = format!(
            "{} -q push %p %f --root {} --signing-key {}",
            bin.display(),
            root.display(),
            key.display()
        );
        c.query(
            "postgres",
            &format!("ALTER SYSTEM SET archive_command = '{cmd}'"),
        );
        c.query("postgres", "SELECT pg_reload_conf()");
        root
    });
    (c, root.clone())
}

#[test]
fn the_server_archives_through_it_and_fetch_gives_every_segment_back() {
    let (c, root) = archiving();
    let db = c.create_db();
    let archived = |c: &opskit_testkit::Cluster| -> (u64, u64) {
        let r = c.query(
            "postgres",
            "SELECT archived_count || ' ' || failed_count FROM pg_stat_archiver",
        );
        let mut w = r[0].split(' ').map(|n| n.parse::<u64>().unwrap());
        (w.next().unwrap(), w.next().unwrap())
    };
    let (before, _) = archived(c);
    for i in 0..3 {
        c.query(
            &db.name,
            &format!(
                "CREATE TABLE t{i} AS SELECT g, md5(g::text) FROM generate_series(1, 20000) g"
            ),
        );
        c.query("postgres", "SELECT pg_switch_wal()");
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while archived(c).0 < before + 3 {
        assert!(
            Instant::now() < deadline,
            "the server did not archive: {:?}",
            archived(c)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(archived(c).1, 0, "failed archive attempts");
    let last = c.query("postgres", "SELECT last_archived_wal FROM pg_stat_archiver")[0].clone();
    let dir = root.join("wal").join(&last[..8]);
    let side = fs::read_to_string(dir.join(format!("{last}.sha256"))).unwrap();
    let first = side.lines().next().unwrap();
    assert_eq!(
        first.split(' ').nth(2),
        Some(format!("{last}.zst").as_str()),
        "{side}"
    );
    // The segment's last transaction, read with the server's pg_waldump.
    assert!(first.contains(" xact=20"), "{side}");
    // Signed for this segment by the archiver's key, checked by the stock
    // minisign too.
    assert!(
        side.contains(&format!("trusted comment: opskit-wal {last}\n")),
        "{side}"
    );
    // What fetch hands back is what was archived, and the stock zstd
    // reads the stored file too.
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("RECOVERYXLOG");
    let out = fetch(&root, &last, &dest);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let got = fs::read(&dest).unwrap();
    assert_eq!(got.len(), 16 << 20);
    assert!(side.starts_with(&sha256(&got)), "{side}");
    let z = Command::new("zstd")
        .arg("-dc")
        .arg(dir.join(format!("{last}.zst")))
        .output()
        .unwrap();
    assert_eq!(z.stdout, got);
    // A segment that is not there: exit 1, as recovery expects, nothing written.
    let missing = tmp.path().join("missing");
    let out = fetch(&root, "0000000100000000000000FF", &missing);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(!missing.exists());

    // healthcheck's postgres: check reads pg_stat_archiver.
    let health = || {
        run(Command::new(opskit_testkit::bin("healthcheck"))
            .arg(c.url("postgres"))
            .env_remove("OPSKIT_LOG"))
    };
    let out = health();
    assert_eq!(out.code, 0, "{}", out.stdout);
    let v = &out.events("check")[0]["values"];
    assert_eq!(v["archive_mode"], "on");
    assert_eq!(v["archive_failing"], false);
    assert!(v["archived_count"].as_u64().unwrap() >= 3, "{v}");
    assert!(v["last_archived_age_s"].as_f64().unwrap() < 120.0, "{v}");
    // Archiving that fails is CRITICAL until it works again.
    let set_command = |cmd: &str| {
        c.query(
            "postgres",
            &format!("ALTER SYSTEM SET archive_command = '{cmd}'"),
        );
        c.query("postgres", "SELECT pg_reload_conf()");
    };
    let good = c.query("postgres", "SHOW archive_command")[0].clone();
    set_command("/bin/false");
    let failed_before = archived(c).1;
    c.query(
        &db.name,
        "CREATE TABLE more AS SELECT g FROM generate_series(1, 1000) g",
    );
    c.query("postgres", "SELECT pg_switch_wal()");
    let deadline = Instant::now() + Duration::from_secs(60);
    while archived(c).1 == failed_before {
        assert!(Instant::now() < deadline, "no failed attempt seen");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = health();
    assert_eq!(out.code, 2, "{}", out.stdout);
    assert_eq!(out.events("check")[0]["values"]["archive_failing"], true);
    set_command(&good);
    let deadline = Instant::now() + Duration::from_secs(60);
    while health().code != 0 {
        assert!(Instant::now() < deadline, "archiving never recovered");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_same_file_again_is_success_and_other_content_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let file = tmp.path().join("seg");
    fs::write(&file, segment(1)).unwrap();
    let out = push(&root, &file, SEG);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.events("wal")[0]["already"], false);
    let stored = root.join("wal/00000001").join(format!("{SEG}.zst"));
    let before = fs::read(&stored).unwrap();
    // After a crash the server archives the same segment again.
    let out = push(&root, &file, SEG);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.events("wal")[0]["already"], true);
    // Another file under the same name: refused, named, nothing overwritten.
    let other = tmp.path().join("other");
    fs::write(&other, segment(2)).unwrap();
    let out = push(&root, &other, SEG);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr
            .contains(&format!("{SEG} is already archived with other content")),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(&sha256(&segment(1))) && out.stderr.contains(&sha256(&segment(2))),
        "{}",
        out.stderr
    );
    assert_eq!(fs::read(&stored).unwrap(), before);
    // History files and backup labels are kept too.
    fs::write(&other, "1\t0/3000000\tno recovery target specified\n").unwrap();
    assert_eq!(push(&root, &other, "00000002.history").code, 0);
    let out = push(&root, &other, "not-a-wal-file");
    assert_eq!(out.code, 64);
}

#[test]
fn a_full_disk_is_a_failure_and_leaves_nothing_half_written() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let file = tmp.path().join("seg");
    fs::write(&file, segment(3)).unwrap();
    let out = run(Command::new("bash")
        .arg("-c")
        .arg("ulimit -f 1024; exec \"$@\"")
        .arg("bash")
        .arg(env!("CARGO_BIN_EXE_walarchive"))
        .arg("push")
        .arg(&file)
        .arg(SEG)
        .arg("--root")
        .arg(&root));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("file size limit exceeded"),
        "{}",
        out.stderr
    );
    let dir = root.join("wal/00000001");
    let left: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n != ".push.lock")
        .collect();
    // Only the timeline's push lock (never deleted: see opskit::lock).
    assert!(left.is_empty(), "left behind: {left:?}");
    // The server retries once there is room: then it is stored.
    assert_eq!(push(&root, &file, SEG).code, 0);
}

#[test]
fn sigkill_at_random_points_never_leaves_a_half_archived_segment() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let file = tmp.path().join("seg");
    let data = segment(4);
    fs::write(&file, &data).unwrap();
    let want = sha256(&data);
    let mut rng = Rng(7);
    for i in 0..12 {
        let name = format!("0000000100000000000000{:02X}", 0x10 + i);
        let mut child = walarchive()
            .arg("push")
            .arg(&file)
            .arg(&name)
            .arg("--root")
            .arg(&root)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.below(120)));
        let _ = child.kill();
        let _ = child.wait();
        // Archived or not, never half: a fetch gives the whole segment or
        // says it is not there.
        let dest = tmp.path().join(format!("got-{i}"));
        let out = fetch(&root, &name, &dest);
        match out.code {
            0 => assert_eq!(sha256(&fs::read(&dest).unwrap()), want),
            1 => assert!(!dest.exists()),
            c => panic!("fetch after a kill exited {c}: {}", out.stderr),
        }
        // The server retries: the retry stores it.
        assert_eq!(push(&root, &file, &name).code, 0);
        let out = fetch(&root, &name, &tmp.path().join(format!("again-{i}")));
        assert_eq!(out.code, 0, "{}", out.stderr);
    }
    // The temporary files of the killed pushes are gone.
    let temps: Vec<_> = fs::read_dir(root.join("wal/00000001"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp."))
        .collect();
    assert!(temps.is_empty(), "{temps:?}");
}

#[test]
fn damage_is_refused_and_an_encrypted_archive_needs_its_identity() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let file = tmp.path().join("seg");
    fs::write(&file, segment(5)).unwrap();
    assert_eq!(push(&root, &file, SEG).code, 0);
    let stored = root.join("wal/00000001").join(format!("{SEG}.zst"));
    let mut bytes = fs::read(&stored).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    fs::write(&stored, bytes).unwrap();
    let dest = tmp.path().join("RECOVERYXLOG");
    let out = fetch(&root, SEG, &dest);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains(&stored.display().to_string()),
        "{}",
        out.stderr
    );
    assert!(!dest.exists(), "a damaged segment is never handed back");

    let key = Key::new(tmp.path(), "k");
    let sealed = tmp.path().join("sealed");
    let name = "000000010000000000000043";
    let out = run(walarchive()
        .arg("push")
        .arg(&file)
        .arg(name)
        .arg("--root")
        .arg(&sealed)
        .env("OPSKIT_AGE_RECIPIENTS", &key.public));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let stored = sealed.join("wal/00000001").join(format!("{name}.zst.age"));
    assert!(key.decrypt(&stored).is_some(), "the age tool reads it");
    let out = fetch(&sealed, name, &dest);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("is encrypted: give the identity"),
        "{}",
        out.stderr
    );
    let out = run(walarchive()
        .arg("fetch")
        .arg(name)
        .arg(&dest)
        .arg("--root")
        .arg(&sealed)
        .env("OPSKIT_AGE_IDENTITY", &key.identity));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(fs::read(&dest).unwrap(), segment(5));
}

#[test]
fn healthcheck_sees_the_archives_age_and_its_gaps() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let file = tmp.path().join("seg");
    fs::write(&file, segment(6)).unwrap();
    let health = || {
        run(Command::new(opskit_testkit::bin("healthcheck"))
            .arg(format!("wal:{}", root.display()))
            .env_remove("OPSKIT_LOG"))
    };
    // Nothing archived yet: CRITICAL (expect segments > 0).
    assert_eq!(health().code, 2);
    // FF then the next log file's 00 is no gap; 02 without 01 is one.
    for name in [
        "0000000100000000000000FE",
        "0000000100000000000000FF",
        "000000010000000100000000",
        "000000010000000100000002",
    ] {
        assert_eq!(push(&root, &file, name).code, 0);
    }
    let out = health();
    assert_eq!(out.code, 2, "{}", out.stdout);
    let v = &out.events("check")[0]["values"];
    assert_eq!(v["segments"], 4);
    assert_eq!(v["gaps"], 1);
    assert_eq!(v["first_gap"], "000000010000000100000001");
    assert_eq!(v["newest"], "000000010000000100000002");
    assert!(v["age_s"].as_f64().unwrap() < 60.0, "{v}");
    assert_eq!(push(&root, &file, "000000010000000100000001").code, 0);
    let out = health();
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert_eq!(out.events("check")[0]["values"]["gaps"], 0);
}
