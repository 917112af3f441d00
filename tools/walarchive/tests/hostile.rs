//! walarchive against what an attacker or a failover gone wrong does to
//! the archive: two servers pushing different content under one name at the
//! same moment, a segment forged in the archive (or the bucket it is
//! copied to), plaintext archiving beside encrypted sets.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

use opskit_testkit::tools::{Output, Rng, run};

const SEG: &str = "000000010000000000000042";

fn walarchive() -> Command {
    tool(env!("CARGO_BIN_EXE_walarchive"))
}

/// `program` with walarchive's test environment (signing keys, no defaults).
fn tool(program: &str) -> Command {
    let mut c = opskit_testkit::signing::command(program);
    c.env_remove("OPSKIT_LOG")
        .env_remove("OPSKIT_BACKUP_ROOT")
        .env_remove("OPSKIT_AGE_RECIPIENTS")
        .env_remove("OPSKIT_AGE_RECIPIENTS_FILE")
        .env_remove("OPSKIT_AGE_IDENTITY");
    c
}

fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = Rng(seed | 1);
    (0..len).map(|_| rng.next_u64() as u8).collect()
}

fn fetch(root: &Path, dest: &Path) -> Output {
    run(walarchive()
        .args(["fetch", SEG])
        .arg(dest)
        .arg("--root")
        .arg(root))
}

/// One segment pushed into a new root under `dir`, and what its checksum
/// file says.
struct Archived {
    root: std::path::PathBuf,
    dir: std::path::PathBuf,
    side: std::path::PathBuf,
    signature: String,
    stored: String,
}

fn archived_one(dir: &Path, seed: u64) -> Archived {
    let root = dir.join("root");
    let seg = dir.join("seg");
    fs::write(&seg, bytes(seed, 1 << 20)).unwrap();
    let out = run(walarchive()
        .arg("push")
        .arg(&seg)
        .arg(SEG)
        .arg("--root")
        .arg(&root));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let dir = root.join("wal/00000001");
    let side = dir.join(format!("{SEG}.sha256"));
    let text = fs::read_to_string(&side).unwrap();
    let (line, signature) = text.split_once('\n').unwrap();
    Archived {
        stored: line.split(' ').nth(2).unwrap().to_string(),
        signature: signature.to_string(),
        root,
        dir,
        side,
    }
}

/// Two pushes of different content under one name at the same moment
/// (two servers archiving into one root after a failover gone wrong): one
/// wins, the other sees it and is refused, and what fetch hands back is
/// the winner's, never a mix and never the loser's over the winner's.
#[test]
fn concurrent_pushes_of_different_content_never_both_succeed() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    fs::write(&a, bytes(1, 4 << 20)).unwrap();
    fs::write(&b, bytes(2, 4 << 20)).unwrap();
    for round in 0..20 {
        let root = tmp.path().join(format!("root{round}"));
        let spawn = |file: &Path| {
            walarchive()
                .arg("push")
                .arg(file)
                .arg(SEG)
                .arg("--root")
                .arg(&root)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        let (pa, pb) = (spawn(&a), spawn(&b));
        let (oa, ob) = (
            pa.wait_with_output().unwrap(),
            pb.wait_with_output().unwrap(),
        );
        let codes = (oa.status.code(), ob.status.code());
        let (winner, loser) = match codes {
            (Some(0), Some(2)) => (&a, &ob),
            (Some(2), Some(0)) => (&b, &oa),
            _ => panic!(
                "round {round}: exits {codes:?}: {} / {}",
                String::from_utf8_lossy(&oa.stderr),
                String::from_utf8_lossy(&ob.stderr)
            ),
        };
        let msg = String::from_utf8_lossy(&loser.stderr);
        assert!(
            msg.contains("already archived with other content"),
            "round {round}: {msg}"
        );
        let dest = tmp.path().join("back");
        let out = fetch(&root, &dest);
        assert_eq!(out.code, 0, "round {round}: {}", out.stderr);
        assert!(
            fs::read(&dest).unwrap() == fs::read(winner).unwrap(),
            "round {round}: not the winner's content"
        );
    }
}

/// A segment replaced in the archive with its checksum file made to agree
/// (as anyone who can write the archive or the bucket can): the checksum
/// line's signature no longer matches, and fetch refuses it during
/// recovery. Unsigned checksum files are refused unless allowed.
#[test]
fn a_forged_segment_is_refused_by_fetch() {
    let tmp = tempfile::tempdir().unwrap();
    let Archived {
        root,
        dir,
        side,
        signature,
        stored,
    } = archived_one(tmp.path(), 3);

    // The forgery: other WAL, compressed as the archive stores it, and a
    // checksum line that matches it, the old signature kept.
    let evil = bytes(4, 1 << 20);
    let packed = opskit_testkit::forge::compress("zstd", &evil);
    fs::write(dir.join(&stored), packed).unwrap();
    let forged_line = format!(
        "{} {} {stored}",
        opskit_testkit::forge::sha256(&evil),
        evil.len()
    );
    fs::write(&side, format!("{forged_line}\n{signature}")).unwrap();
    let dest = tmp.path().join("RECOVERYXLOG");
    let out = fetch(&root, &dest);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("bad signature"), "{}", out.stderr);
    assert!(!dest.exists(), "a forged segment was handed to the server");

    // Without the signature: "not signed", refused unless allowed.
    fs::write(&side, format!("{forged_line}\n")).unwrap();
    let out = fetch(&root, &dest);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("not signed"), "{}", out.stderr);
    let out = run(walarchive()
        .args(["fetch", SEG])
        .arg(&dest)
        .arg("--root")
        .arg(&root)
        .arg("--allow-unsigned")
        .env_remove("OPSKIT_SIGNING_PUBKEYS"));
    assert_eq!(out.code, 0, "{}", out.stderr);

    // No public key and no --allow-unsigned: a usage error, not a pass.
    let out = run(walarchive()
        .args(["fetch", SEG])
        .arg(tmp.path().join("x"))
        .arg("--root")
        .arg(&root)
        .env_remove("OPSKIT_SIGNING_PUBKEYS"));
    assert_eq!(out.code, 64, "{}", out.stderr);
}

/// A stored segment replaced by a small zstd file that inflates to far
/// more than its checksum file's size (a decompression bomb), the checksum
/// line made to agree in all but the size and unsigned (allowed): fetch
/// stops one byte past the archived size and fails, naming the stored
/// file, before pg_wal's filesystem fills. The fetch runs with a 32 MiB
/// file-size limit standing for that filesystem: a fetch that copied the
/// whole stream before comparing would be killed by SIGXFSZ.
#[test]
fn a_segment_inflating_past_its_size_is_stopped_before_it_fills_pg_wal() {
    let tmp = tempfile::tempdir().unwrap();
    let Archived {
        root,
        dir,
        side,
        stored,
        ..
    } = archived_one(tmp.path(), 6);

    let bomb = Command::new("sh")
        .args(["-c", "head -c 100M /dev/zero | zstd -q -c"])
        .output()
        .unwrap();
    assert!(bomb.status.success() && bomb.stdout.len() < 1 << 20);
    fs::write(dir.join(&stored), &bomb.stdout).unwrap();
    let zeros = opskit_testkit::forge::sha256(&vec![0u8; 100 << 20]);
    fs::write(&side, format!("{zeros} {} {stored}\n", 1 << 20)).unwrap();

    let pg_wal = tmp.path().join("pg_wal");
    fs::create_dir(&pg_wal).unwrap();
    let dest = pg_wal.join("RECOVERYXLOG");
    let out = run(tool("sh")
        .args(["-c", "ulimit -f 65536 && exec \"$@\"", "sh"])
        .arg(env!("CARGO_BIN_EXE_walarchive"))
        .args(["fetch", SEG])
        .arg(&dest)
        .arg("--root")
        .arg(&root)
        .arg("--allow-unsigned")
        .env_remove("OPSKIT_SIGNING_PUBKEYS"));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains(&stored) && out.stderr.contains("more than the 1048576 bytes"),
        "{}",
        out.stderr
    );
    assert!(
        !dest.exists(),
        "an inflated segment was handed to the server"
    );
    assert_eq!(
        fs::read_dir(&pg_wal).unwrap().count(),
        0,
        "a temp file was left"
    );

    // The stored file is not read through a link planted in the archive.
    let elsewhere = tmp.path().join("elsewhere.zst");
    fs::rename(dir.join(&stored), &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, dir.join(&stored)).unwrap();
    let out = run(walarchive()
        .args(["fetch", SEG])
        .arg(&dest)
        .arg("--root")
        .arg(&root)
        .arg("--allow-unsigned")
        .env_remove("OPSKIT_SIGNING_PUBKEYS"));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("symbolic link"), "{}", out.stderr);
}

/// A root whose newest set is encrypted never receives WAL in plaintext:
/// push without recipients is refused (the archiver's failure is loud:
/// pg_stat_archiver counts it) unless told --allow-unencrypted.
#[test]
fn plaintext_wal_beside_encrypted_sets_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let set = root.join("app-base-20261206T010000Z");
    fs::create_dir_all(&set).unwrap();
    let mut m: serde_json::Value = serde_json::from_str(&opskit_testkit::tools::minimal_manifest(
        "app-base-20261206T010000Z",
    ))
    .unwrap();
    m["encryption"] = serde_json::json!({"scheme": "age", "recipients": ["age1example"]});
    fs::write(set.join("MANIFEST.json"), m.to_string()).unwrap();
    let seg = tmp.path().join("seg");
    fs::write(&seg, bytes(5, 1 << 16)).unwrap();
    let out = run(walarchive()
        .arg("push")
        .arg(&seg)
        .arg(SEG)
        .arg("--root")
        .arg(&root));
    assert_eq!(out.code, 64, "{}", out.stderr);
    assert!(
        out.stderr.contains("encrypted sets") && out.stderr.contains("--encrypt-to-file"),
        "{}",
        out.stderr
    );
    assert!(
        !root
            .join("wal/00000001")
            .join(format!("{SEG}.sha256"))
            .exists()
    );
    let out = run(walarchive()
        .arg("push")
        .arg(&seg)
        .arg(SEG)
        .arg("--root")
        .arg(&root)
        .arg("--allow-unencrypted"));
    assert_eq!(out.code, 0, "{}", out.stderr);
}
