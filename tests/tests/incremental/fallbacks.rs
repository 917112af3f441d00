//! Why an incremental becomes a full set, and what the nightly makes of
//! it: a gap in the WAL summaries, summaries gone, a promotion, and the
//! count of such nights that the alert watches.

use std::fs;
use std::path::PathBuf;

use opskit_testkit::pg::free_port;

use super::*;

/// A gap in the server's WAL summaries (the oldest kept, those after it
/// removed): the plan sees summaries reaching back far enough, the server
/// refuses the incremental, and the run takes a full set in its place,
/// saying why.
pub(super) fn a_gap_in_the_summaries(d: &Drill) {
    newest_verified_full(d);
    // Summaries end at checkpoints: three more, and the summarizer past
    // the last one.
    for n in 0..3 {
        d.c.query(
            &d.db,
            &format!("INSERT INTO orders (note) VALUES ('gap {n}')"),
        );
        d.c.query("postgres", "CHECKPOINT");
    }
    let lsn = d.c.query(
        "postgres",
        "SELECT redo_lsn::text FROM pg_control_checkpoint()",
    )[0]
    .clone();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while d.c.query(
        "postgres",
        &format!("SELECT summarized_lsn >= '{lsn}' FROM pg_get_wal_summarizer_state()"),
    )[0] != "t"
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the summarizer never reached {lsn}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // Named by timeline and start LSN in fixed-width hex: in start order.
    let dir = d.c.data().join("pg_wal/summaries");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "summary"))
        .collect();
    files.sort();
    assert!(files.len() >= 3, "{files:?}");
    for f in &files[1..] {
        fs::remove_file(f).unwrap();
    }
    let out = backup(d, &["--incremental"]);
    ok(&out, "incremental across a gap in the summaries");
    let rec = &out.events("backup")[0];
    assert!(rec["parent"].is_null(), "{rec}");
    assert_eq!(rec["fallback_kind"], "summaries_gone", "{rec}");
    assert!(
        rec["fallback"].to_string().contains("WAL summaries"),
        "{rec}"
    );
    assert!(
        out.stderr.contains("instead of an incremental"),
        "{}",
        out.stderr
    );
    ok(
        &verify(d, &set_of(&out), &[]),
        "the full set taken in its place",
    );
}

/// The server's WAL summaries removed: a full set, saying so. Then a
/// promotion (a recovery swapped in, timeline 2): the next incremental
/// does not build on a set of timeline 1.
pub(super) fn summaries_gone_then_a_promotion(d: &Drill) {
    newest_verified_full(d);
    let dir = d.c.data().join("pg_wal/summaries");
    for e in fs::read_dir(&dir).unwrap().flatten() {
        fs::remove_file(e.path()).unwrap();
    }
    let out = backup(d, &["--incremental"]);
    ok(&out, "incremental without summaries");
    let rec = &out.events("backup")[0];
    assert!(
        rec["fallback"].to_string().contains("no longer reach back"),
        "{rec}"
    );
    assert_eq!(rec["fallback_kind"], "summaries_gone", "{rec}");

    let full = newest_verified_full(d);
    d.c.query(
        &d.db,
        "INSERT INTO orders (note) VALUES ('before the promotion')",
    );
    d.archive_now();
    let out = run(d
        .script("restore-system.sh")
        .args(["--to-latest", "--swap", "--yes", "--port"])
        .arg(free_port().to_string()));
    ok(&out, "recovery swapped in");
    let tli = d.c.query(
        "postgres",
        "SELECT timeline_id FROM pg_control_checkpoint()",
    )[0]
    .clone();
    assert_ne!(tli, "1");
    let out = backup(d, &["--incremental"]);
    ok(&out, "incremental after the promotion");
    let rec = &out.events("backup")[0];
    assert!(rec["parent"].is_null(), "{rec}");
    assert_eq!(rec["fallback_kind"], "timeline", "{rec}");
    let why = rec["fallback"].to_string();
    assert!(
        why.contains(&format!(
            "{} is on timeline 1, the server on {tli}",
            name(&full)
        )),
        "{why}"
    );
}

/// backup-system.sh --physical (into a root of its own) counts the nights
/// in a row whose incremental fell back to a full set for a reason that
/// was not planned: no verified set yet, then summarize_wal off, is 2 (the
/// alert's threshold); a scheduled full set ends the count.
pub(super) fn the_nightly_counts_fallbacks(d: &Drill) {
    d.c.query("postgres", "ALTER SYSTEM SET summarize_wal = off");
    d.c.query("postgres", "SELECT pg_reload_conf()");
    let night = |every: &str| -> (String, String) {
        let _one = base_backup_lock();
        let out = run(d
            .script("backup-system.sh")
            .arg("--physical")
            .env("OPSKIT_BASE_FULL_EVERY", every)
            .env("OPSKIT_RETENTION", "--keep-last 3")
            .env("OPSKIT_PITR_STATE_DIR", d.dir.join("nightly-state"))
            .env("OPSKIT_METRICS_DIR", d.dir.join("nightly-metrics")));
        ok(&out, "backup-system.sh --physical");
        let m = fs::read_to_string(d.dir.join("nightly-metrics/opskit_base_backup.prom")).unwrap();
        let streak = m
            .lines()
            .find_map(|l| l.strip_prefix("opskit_base_backup_incremental_fallback_streak "))
            .unwrap_or_else(|| panic!("{m}"))
            .to_string();
        (streak, out.stderr)
    };
    let (streak, log) = night("7d");
    assert_eq!(streak, "1", "{log}");
    assert!(log.contains("(timeline, night 1 in a row)"), "{log}");
    let (streak, log) = night("7d");
    assert_eq!(streak, "2", "{log}");
    assert!(
        log.contains("(summarize_wal_off, night 2 in a row)"),
        "{log}"
    );
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (streak, log) = night("1s");
    assert_eq!(streak, "0", "{log}");
    d.c.query("postgres", "ALTER SYSTEM SET summarize_wal = on");
    d.c.query("postgres", "SELECT pg_reload_conf()");
}
