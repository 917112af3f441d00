//! The point-in-time recovery drill, against a real cluster with
//! archive_mode=on archiving through walarchive: a base set (pgbackup
//! --physical) verified by replaying it; rows written steadily; a time T;
//! `DELETE FROM orders`; restore-system.sh --to T brings back exactly the
//! rows committed up to T on a side socket, then swaps the recovered cluster
//! in. The RPO with archive_timeout is measured from a copy of the archive
//! taken at the moment of a simulated disaster.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use opskit_testkit::Cluster;
use opskit_testkit::drill::Drill;
use opskit_testkit::tools::{Output, run};
use opskit_testkit::wal::archiving_cluster;

/// Inserts a row into orders every few milliseconds until stopped, each in
/// its own transaction; can be held, so a time T falls between two commits.
struct Writer {
    stop: Arc<AtomicBool>,
    hold: Arc<AtomicBool>,
    held: Arc<AtomicBool>,
    last_id: Arc<AtomicU64>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(c: &'static Cluster, db: &str, every: Duration) -> Writer {
        let (stop, hold, held) = Default::default();
        let last_id = Arc::new(AtomicU64::new(0));
        let mut w = Writer {
            stop,
            hold,
            held,
            last_id,
            handle: None,
        };
        let (stop, hold, held, last) = (
            w.stop.clone(),
            w.hold.clone(),
            w.held.clone(),
            w.last_id.clone(),
        );
        let mut client = c.client(db);
        w.handle = Some(std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                if hold.load(Ordering::SeqCst) {
                    held.store(true, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
                held.store(false, Ordering::SeqCst);
                let id: i64 = client
                    .query_one(
                        "INSERT INTO orders (note) VALUES ('steady') RETURNING id",
                        &[],
                    )
                    .unwrap()
                    .get(0);
                last.store(id as u64, Ordering::SeqCst);
                std::thread::sleep(every);
            }
        }));
        w
    }

    /// Hold the writer between two commits; the last id committed.
    fn pause(&self) -> u64 {
        self.hold.store(true, Ordering::SeqCst);
        while !self.held.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
        }
        self.last_id.load(Ordering::SeqCst)
    }

    fn resume(&self) {
        self.hold.store(false, Ordering::SeqCst);
    }

    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.take().unwrap().join().unwrap();
        self.last_id.load(Ordering::SeqCst)
    }
}

fn pitr_line(out: &Output) -> serde_json::Value {
    let line = out
        .stdout
        .lines()
        .find(|l| l.contains("\"event\":\"pitr\""))
        .unwrap_or_else(|| panic!("no pitr line:\n{}\n{}", out.stdout, out.stderr));
    serde_json::from_str(line).unwrap()
}

#[test]
fn drill_delete_undone_by_recovering_to_a_time_then_swapped_in() {
    let d = Drill::on(archiving_cluster());
    let c = d.c;
    c.query(
        &d.db,
        "CREATE TABLE orders (id bigserial PRIMARY KEY, note text, at timestamptz NOT NULL DEFAULT clock_timestamp()); \
         INSERT INTO orders (note) SELECT 'before the base backup' FROM generate_series(1, 500)",
    );

    // The base set, and its verification by replay.
    let set = d.take_base(c).display().to_string();
    assert!(set.contains("-base-"), "{set}");
    let out = run(d
        .tool("verify-backup")
        .args(["--replay", "--record", "--scratch"])
        .arg(d.dir.join("scratch"))
        .arg(&set));
    assert!(out.code == 0, "{}\n{}", out.stdout, out.stderr);
    let v = &out.events("verify")[0];
    assert_eq!(v["depth"], "restore", "{v}");
    let replay = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "replay")
        .unwrap();
    assert_eq!(replay["ok"], true, "{replay}");

    // Steady writes; T between two commits; a DELETE after T; more writes.
    let w = Writer::start(c, &d.db, Duration::from_millis(5));
    std::thread::sleep(Duration::from_millis(1500));
    let upto = w.pause();
    std::thread::sleep(Duration::from_millis(20));
    let t = opskit_testkit::drill::utc_now(c);
    std::thread::sleep(Duration::from_millis(20));
    w.resume();
    std::thread::sleep(Duration::from_millis(300));
    c.query(&d.db, "DELETE FROM orders");
    std::thread::sleep(Duration::from_millis(300));
    let last = w.finish();
    assert!(
        last > upto + 10,
        "rows were written after T ({upto}..{last})"
    );
    d.archive_now();

    // Inspection: a side cluster recovered to T.
    let side = d.dir.join("side");
    let out = run(d
        .script("restore-system.sh")
        .args(["--to", &t, "--port", "5439", "--into"])
        .arg(&side));
    assert!(out.code == 0, "{}\n{}", out.stdout, out.stderr);
    let p = pitr_line(&out);
    eprintln!("recovered to {t}: {p}");
    let (count, max) = d.side_orders(&side, 5439);
    assert_eq!(
        max as u64, upto,
        "the last row committed before T is there, none after"
    );
    assert_eq!(count as u64, upto, "every row committed up to T is there");
    assert_ne!(p["last_transaction_replayed"], "none");
    let before_t = format!("SELECT count(*) FROM orders WHERE id <= {upto}");
    assert_eq!(c.query(&d.db, &before_t)[0], "0", "production untouched");
    d.stop_side(&side);
    fs::remove_dir_all(&side).unwrap();

    // A target before the base set ended: refused, nothing written.
    let out = run(d
        .script("restore-system.sh")
        .args(["--to", "2001-01-01T00:00:00Z", "--into"])
        .arg(d.dir.join("never")));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("no base set ended before"),
        "{}",
        out.stderr
    );
    assert!(!d.dir.join("never").exists());

    // A time no archived transaction reaches yet: refused, named, nothing left.
    let later = (chrono::Utc::now() + chrono::Duration::hours(1))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let out = run(d
        .script("restore-system.sh")
        .args(["--to", &later, "--port", "5439", "--into"])
        .arg(d.dir.join("too-late")));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr
            .contains(&format!("the archive ends before {later}")),
        "{}",
        out.stderr
    );
    assert!(!d.dir.join("too-late").exists());

    rpo(&d);

    // The swap: production's data directory aside, the recovered one in.
    let out = run(d
        .script("restore-system.sh")
        .args(["--to", &t, "--swap", "--yes", "--port", "5439"]));
    assert!(out.code == 0, "{}\n{}", out.stdout, out.stderr);
    let r = c.query(&d.db, "SELECT count(*) || ' ' || max(id) FROM orders");
    assert_eq!(r[0], format!("{upto} {upto}"));
    let aside: Vec<String> = fs::read_dir(c.root())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("data.before-"))
        .collect();
    assert_eq!(aside.len(), 1, "the old data directory is kept");
    // The new timeline's history is archived, and archiving goes on there.
    let tli = c.query(
        "postgres",
        "SELECT lpad(to_hex(timeline_id), 8, '0') FROM pg_control_checkpoint()",
    )[0]
    .to_uppercase();
    assert_ne!(tli, "00000001");
    assert!(
        d.root()
            .join(format!("wal/{tli}/{tli}.history.sha256"))
            .exists(),
        "history file of timeline {tli} archived"
    );
    c.query(
        &d.db,
        "INSERT INTO orders (note) VALUES ('after the recovery')",
    );
    d.archive_now();
    retention(&d, &set, &tli);
    // The restore test's faults, on the same drill (drills on one server
    // run one at a time: each points its archive_command at its own root).
    a_killed_restore_test_leaves_no_cluster_and_the_next_run_removes_its_directory(&d);
    a_set_asking_for_huge_pages_and_more_memory_than_there_is_still_replays(&d);
    a_set_asking_for_a_locale_still_recovers_and_is_understood(&d);
}

/// A second base set on the new timeline; prune keeps it alone and deletes
/// the WAL only the first one needed, never a segment from the kept set's
/// start on, nor a history file; the kept set still verifies with its WAL.
fn retention(d: &Drill, first: &str, tli: &str) {
    let segments = |tl: &str| -> Vec<String> {
        fs::read_dir(d.root().join("wal").join(tl))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter_map(|n| n.strip_suffix(".sha256").map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let before = segments("00000001");
    assert!(before.iter().any(|n| n.len() == 24), "{before:?}");

    // The nightly base backup unit's run: backup, verify, prune.
    let out = run(d
        .script("backup-system.sh")
        .arg("--physical")
        .env("OPSKIT_RETENTION", "--keep-last 1")
        .env("OPSKIT_PITR_STATE_DIR", d.dir.join("pitr-state"))
        .env("OPSKIT_METRICS_DIR", d.dir.join("metrics")));
    assert!(out.code == 0, "{}\n{}", out.stdout, out.stderr);
    let metrics = fs::read_to_string(d.dir.join("metrics/opskit_base_backup.prom")).unwrap();
    assert!(
        metrics.contains("\nopskit_base_backup_run_success 1\n"),
        "{metrics}"
    );
    let run_dir = fs::read_dir(d.dir.join("pitr-state/runs"))
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    let second = fs::read_to_string(run_dir.join("backup.ndjson"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|r| r["event"] == "backup")
        .unwrap()["path"]
        .as_str()
        .unwrap()
        .to_string();
    let m: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(format!("{second}/MANIFEST.json")).unwrap())
            .unwrap();
    let start = m["physical"]["start_wal"].as_str().unwrap().to_string();
    assert!(start.starts_with(tli), "{start}");
    let pruned: Vec<serde_json::Value> = fs::read_to_string(run_dir.join("prune.ndjson"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(!Path::new(first).exists(), "the first base set is pruned");
    assert!(Path::new(&second).exists());
    let wal = pruned
        .iter()
        .find(|r| r["name"] == "wal")
        .unwrap_or_else(|| panic!("no wal record: {pruned:?}"));
    assert_eq!(wal["deleted"], true, "{wal}");
    for tl in ["00000001", tli] {
        for n in segments(tl) {
            if n.len() == 24 {
                assert!(n[8..] >= start[8..], "{n} is before {start} and was kept");
            }
        }
    }
    assert!(segments(tli).contains(&format!("{tli}.history")));
    assert!(
        segments(tli).contains(&start),
        "the kept set's start segment stays"
    );
    // The kept set still has every segment it needs.
    let out = run(d.tool("verify-backup").arg("--quick").arg(&second));
    assert!(out.code == 0, "{}", out.stdout);
    let v = &out.events("verify")[0];
    let w = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "wal")
        .unwrap();
    assert_eq!(w["ok"], true, "{w}");
    assert!(
        w["detail"].as_str().unwrap().contains("segments archived"),
        "{w}"
    );
}

/// The RPO: with archive_timeout = 10s and a steady write load, a copy of
/// the archive taken at the moment the server is "lost" recovers to within
/// archive_timeout of the last commit.
fn rpo(d: &Drill) {
    let c = d.c;
    let timeout = 10;
    c.query(
        "postgres",
        &format!("ALTER SYSTEM SET archive_timeout = '{timeout}s'"),
    );
    c.query("postgres", "SELECT pg_reload_conf()");
    d.archive_now();
    let w = Writer::start(c, &d.db, Duration::from_millis(50));
    std::thread::sleep(Duration::from_secs(2 * timeout + 3));
    // The disaster: what is in the archive now is all that survives.
    let lost_at = w.pause();
    let survived = d.dir.join("survived");
    let st = Command::new("cp")
        .arg("-a")
        .arg(d.root())
        .arg(&survived)
        .status()
        .unwrap();
    assert!(st.success());
    w.finish();
    c.query("postgres", "ALTER SYSTEM SET archive_timeout = 0");
    c.query("postgres", "SELECT pg_reload_conf()");
    let last_commit: f64 = c.query(
        &d.db,
        &format!("SELECT extract(epoch FROM at) FROM orders WHERE id = {lost_at}"),
    )[0]
    .parse()
    .unwrap();
    let side = d.dir.join("side-rpo");
    let out = run(d
        .script("restore-pitr.sh")
        .args(["--to-latest", "--port", "5440", "--into"])
        .arg(&side)
        .env("OPSKIT_BACKUP_ROOT", &survived));
    // The env file names the live root: point this run at the copy.
    assert!(out.code == 0, "{}\n{}", out.stdout, out.stderr);
    let mut cl = postgres::Config::new()
        .host_path(&side)
        .port(5440)
        .user(opskit_testkit::pg::SUPERUSER)
        .dbname(&d.db)
        .connect(postgres::NoTls)
        .unwrap();
    let recovered: f64 = cl
        .query_one(
            "SELECT extract(epoch FROM max(at))::float8 FROM orders WHERE note = 'steady'",
            &[],
        )
        .unwrap()
        .get(0);
    let lost = last_commit - recovered;
    eprintln!("RPO with archive_timeout = {timeout}s: {lost:.1}s of committed transactions lost");
    assert!(
        (0.0..=timeout as f64 + 2.0).contains(&lost),
        "lost {lost:.1}s with archive_timeout {timeout}s"
    );
    d.stop_side(&side);
    fs::remove_dir_all(&side).unwrap();
}

/// The weekly restore test killed (SIGKILL, the OOM killer) while its
/// scratch cluster replays: the cluster ends with it (pg_ctl had detached
/// it, and it ran on for ever with the database's size of scratch), and
/// the next run removes the killed run's directory before its own.
fn a_killed_restore_test_leaves_no_cluster_and_the_next_run_removes_its_directory(d: &Drill) {
    let c = d.c;
    let set = d.take_base(c);
    let scratch = d.dir.join("scratch-killed");
    let replay = || d.replay(&set, &scratch);
    let mut child = replay()
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Its cluster up: the postmaster's pid in the scratch data directory.
    let started = std::time::Instant::now();
    let (dir, pid) = loop {
        let found = fs::read_dir(&scratch).ok().and_then(|entries| {
            entries.flatten().find_map(|e| {
                let pid = fs::read_to_string(e.path().join("data/postmaster.pid")).ok()?;
                Some((e.path(), pid.lines().next()?.trim().parse::<u32>().ok()?))
            })
        });
        if let Some(found) = found {
            break found;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "verify-backup ended before its cluster started"
        );
        assert!(started.elapsed() < Duration::from_secs(120), "no cluster");
        std::thread::sleep(Duration::from_millis(20));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    let proc = Path::new("/proc").join(pid.to_string());
    let gone = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        fs::read_link(proc.join("cwd")).map_or(true, |cwd| cwd != dir.join("data"))
    });
    if !gone {
        let _ = Command::new(c.bindir().join("pg_ctl"))
            .arg("-D")
            .arg(dir.join("data"))
            .args(["stop", "-m", "immediate"])
            .status();
    }
    assert!(gone, "the killed run's cluster (pid {pid}) still runs");
    assert!(
        dir.exists(),
        "a SIGKILL leaves the directory: the next run's"
    );
    // A lock is taken for a killed run's once it is a second old (a run
    // creates it, then locks it).
    std::thread::sleep(Duration::from_millis(1100));
    let out = run(&mut replay());
    assert!(out.code == 0, "{}\n{}", out.stdout, out.stderr);
    assert!(!dir.exists(), "the killed run's directory is left");
    assert!(
        out.stderr.contains(&format!(
            "removed {}, the scratch cluster of a run that was killed",
            dir.display()
        )),
        "{}",
        out.stderr
    );
    assert_eq!(
        fs::read_dir(&scratch).unwrap().count(),
        0,
        "the second run removed its own"
    );
}

/// Puts a setting back when dropped: a failed test must not leave the
/// cluster a configuration it cannot restart with.
struct AlterSystem(&'static Cluster, &'static [&'static str]);

impl Drop for AlterSystem {
    fn drop(&mut self) {
        for name in self.1 {
            self.0
                .query("postgres", &format!("ALTER SYSTEM RESET {name}"));
        }
    }
}

/// The weekly restore test runs on the production server: a set whose
/// configuration asks for production's huge pages (`huge_pages = on`, the
/// pages production holds) and its shared memory (here more than the
/// machine has) still replays, with 128 MB and huge pages when there are
/// some. Before, the scratch cluster did not start ("could not map
/// anonymous shared memory").
fn a_set_asking_for_huge_pages_and_more_memory_than_there_is_still_replays(d: &Drill) {
    let c = d.c;
    // Written to postgresql.auto.conf, not applied: the set has them.
    let set = {
        let _back = AlterSystem(c, &["huge_pages", "shared_buffers"]);
        c.query("postgres", "ALTER SYSTEM SET huge_pages = 'on'");
        c.query("postgres", "ALTER SYSTEM SET shared_buffers = '4TB'");
        d.take_base(c)
    };
    let out = run(&mut d.replay(&set, &d.dir.join("scratch-huge")));
    assert!(out.code == 0, "{}\n{}", out.stdout, out.stderr);
}

/// Puts a file's bytes back when dropped.
struct PutBack(std::path::PathBuf, Vec<u8>);

impl Drop for PutBack {
    fn drop(&mut self) {
        fs::write(&self.0, &self.1).unwrap();
    }
}

/// A base set whose configuration names a locale for the server's
/// messages (production's `lc_messages = 'de_DE.UTF-8'`): restored on a
/// machine without that locale, the copy starts (it stopped at its start:
/// "invalid value for parameter lc_messages", whatever the command line
/// said); restored where the locale is (LOCPATH here), the copy still
/// speaks English to restore-pitr.sh, which reads its messages (German
/// ones hid "the archive ends before" behind a bare "recovery failed").
fn a_set_asking_for_a_locale_still_recovers_and_is_understood(d: &Drill) {
    let c = d.c;
    let conf = c.data().join("postgresql.auto.conf");
    let set = {
        // Written, not applied (production has no such locale either).
        let _back = PutBack(conf.clone(), fs::read(&conf).unwrap());
        let mut f = fs::OpenOptions::new().append(true).open(&conf).unwrap();
        std::io::Write::write_all(&mut f, b"lc_messages = 'de_DE.UTF-8'\n").unwrap();
        d.take_base(c)
    };
    // A recovery starts from the newest verified set.
    let out = run(d.tool("verify-backup").arg("--record").arg(&set));
    assert!(out.code == 0, "{}\n{}", out.stdout, out.stderr);
    let later = (chrono::Utc::now() + chrono::Duration::hours(1))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let locales = d.dir.join("locales");
    fs::create_dir_all(&locales).unwrap();
    let made = Command::new("localedef")
        .args(["-i", "de_DE", "-f", "UTF-8"])
        .arg(locales.join("de_DE.UTF-8"))
        .status()
        .is_ok_and(|s| s.success());
    for locpath in [None, made.then_some(&locales)] {
        let mut cmd = d.script("restore-system.sh");
        cmd.args(["--to", &later, "--port", "5439", "--into"])
            .arg(d.dir.join("localed"));
        if let Some(dir) = locpath {
            cmd.env("LOCPATH", dir);
        }
        let out = run(&mut cmd);
        assert_eq!(out.code, 2, "{locpath:?}: {}", out.stderr);
        assert!(
            out.stderr
                .contains(&format!("the archive ends before {later}")),
            "{locpath:?}: {}\n{}",
            out.stderr,
            fs::read_to_string(d.dir.join("localed.log")).unwrap_or_default()
        );
        assert!(!d.dir.join("localed").exists());
    }
    assert!(
        made,
        "localedef could not make de_DE.UTF-8 (package locales)"
    );
}
