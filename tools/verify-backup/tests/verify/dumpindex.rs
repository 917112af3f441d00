//! The data offsets a parallel restore's copy is given (`dumpindex`):
//! learned from a dump read from a pipe, they are where pg_dump itself
//! puts them when it writes to a file, for the cluster's pg_dump (15's
//! archive 1.14 by default) and 18's (1.16), large objects and empty
//! tables included; written into the piped dump, they make it pg_dump's
//! own file but for the time in its header.

use std::fs::File;
use std::io::BufReader;

use opskit_testkit::pg::matrix_bindir;
use verify_backup::dumpindex::{self, Index};

use super::*;

fn dump(bindir: &Path, c: &Cluster, db: &str, file: Option<&Path>) -> Vec<u8> {
    let mut cmd = Command::new(bindir.join("pg_dump"));
    cmd.envs(c.child_env(db)).args(["-Fc", "-Z0", "-d", db]);
    if let Some(f) = file {
        cmd.arg("-f").arg(f);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The archive version (1.minor, revision) a pg_dump writes.
fn archive_version(bindir: &Path) -> (u8, u8) {
    let out = Command::new(bindir.join("pg_dump"))
        .arg("--version")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let major: u32 = text
        .split_whitespace()
        .find_map(|w| w.split('.').next()?.parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    match major {
        12..=15 => (14, 0),
        16 => (15, 0),
        17.. => (16, 0),
        _ => panic!("pg_dump {major}"),
    }
}

fn scan(bytes: &[u8]) -> Index {
    dumpindex::scan(bytes).unwrap_or_else(|e| panic!("{e:?}"))
}

#[test]
fn a_piped_dump_gets_the_offsets_pg_dump_writes_to_a_file() {
    let c = cluster();
    let db = c.create_db();
    seed(c, &db, 30_000);
    c.query(
        &db.name,
        "CREATE TABLE empty (x int); \
         CREATE TABLE orders (id bigserial PRIMARY KEY, who text); \
         INSERT INTO orders (who) SELECT md5(g::text) FROM generate_series(1, 5000) g; \
         CREATE VIEW v AS SELECT * FROM orders; \
         SELECT lo_from_bytea(0, '\\xdeadbeef'::bytea), lo_from_bytea(0, repeat('x', 70000)::bytea)",
    );
    let tmp = tempfile::tempdir().unwrap();
    let pg18 = matrix_bindir(18).expect("PostgreSQL 18 (scripts/ensure-deps.sh)");
    for bindir in [c.bindir().to_path_buf(), pg18] {
        let version = archive_version(&bindir);
        let file = tmp.path().join("seekable.dump");
        dump(&bindir, c, &db.name, Some(&file));
        let own = std::fs::read(&file).unwrap();
        let theirs = dumpindex::scan(BufReader::new(File::open(&file).unwrap())).unwrap();
        assert_eq!(theirs.version, version, "{}", bindir.display());
        // items, "Odd Name", empty, orders, the large objects (one or two
        // entries), the sequence's value has no data block
        assert!(theirs.entries.len() >= 5, "{theirs:?}");
        for e in &theirs.entries {
            assert_eq!(e.flag, 2, "pg_dump set the offset of {e:?}");
            assert_eq!(e.block, Some(e.recorded), "{e:?}");
        }

        let piped = dump(&bindir, c, &db.name, None);
        let index = scan(&piped);
        assert_eq!(index.entries.len(), theirs.entries.len());
        for (p, t) in index.entries.iter().zip(&theirs.entries) {
            assert_eq!((p.flag, p.recorded), (1, 0), "not set in a pipe: {p:?}");
            assert_eq!((p.dump_id, p.block), (t.dump_id, t.block), "{p:?} vs {t:?}");
        }
        let copy = tmp.path().join("piped.dump");
        std::fs::write(&copy, &piped).unwrap();
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&copy)
            .unwrap();
        assert_eq!(dumpindex::apply(&f, &index).unwrap(), index.entries.len());
        let ours = std::fs::read(&copy).unwrap();
        assert_eq!(ours.len(), own.len());
        // The seven integers of the time it was made, after the magic, the
        // six bytes of version and sizes, and the compression (a byte
        // from 1.15, an integer before).
        let time = if version.0 >= 15 { 12 } else { 16 };
        let differ: Vec<usize> = (0..own.len()).filter(|&i| ours[i] != own[i]).collect();
        assert!(
            differ.iter().all(|&i| (time..time + 7 * 5).contains(&i)),
            "bytes differ beyond the time: {:?}",
            &differ[..differ.len().min(20)]
        );
        // Applied once, a second time finds the fields set and leaves them.
        assert_eq!(dumpindex::apply(&f, &scan(&ours)).unwrap(), 0);
    }
}
