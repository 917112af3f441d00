use std::collections::BTreeMap;

use serde_json::json;

use super::*;

/// An archive in memory: name → its checksum file's last transaction.
struct Mem(BTreeMap<String, LastXact>);

impl WalSource for Mem {
    fn names(&self) -> Result<Vec<String>> {
        Ok(self.0.keys().cloned().collect())
    }
    fn sidecar(&self, name: &str) -> Result<Option<Sidecar>> {
        Ok(self.0.get(name).map(|x| Sidecar {
            sha256: "a".repeat(64),
            bytes: 16 << 20,
            stored: format!("{name}.zst"),
            xact: *x,
            signature: None,
        }))
    }
}

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn manifest(name: &str, finished: &str, base: Option<(&str, u32)>) -> Manifest {
    let mut m = json!({
        "format": "opskit-backup/1", "set": name, "name": "app", "tool": "pgbackup",
        "tool_version": "0", "started_at": finished, "finished_at": finished,
        "duration_s": 1.0, "files": []
    });
    match base {
        Some((start, tli)) => {
            m["physical"] = json!({
                "server": "", "server_version": "18.1", "server_version_num": 180001,
                "pg_basebackup_version": "18.1", "system_identifier": "1", "timeline": tli,
                "start_lsn": "0/0", "end_lsn": "0/0", "start_wal": start,
                "wal_segment_size": 16 << 20, "file": "base.tar.zst"
            })
        }
        None => {
            m["database"] = json!({
                "name": "app", "server": "", "server_version": "18.1",
                "server_version_num": 180001, "pg_dump_version": "18.1",
                "format": "custom", "file": "db.dump.zst", "restore_command": ""
            })
        }
    }
    serde_json::from_value(m).unwrap()
}

fn set(m: Manifest, verified: Option<bool>) -> SetView {
    SetView {
        name: m.set.clone(),
        manifest: m,
        verified,
    }
}

#[test]
fn ranges_end_at_the_last_archived_transaction_and_a_gap_splits_them() {
    let at = |s, lsn| LastXact::At(t(s), lsn);
    let wal = Mem(BTreeMap::from([
        (
            "000000010000000000000002".into(),
            at("2026-12-01T02:00:05Z", 0x2000100),
        ),
        (
            "000000010000000000000003".into(),
            at("2026-12-01T09:00:00Z", 0x3000100),
        ),
        // The newest segment ends no transaction: the one before ends the range.
        ("000000010000000000000004".into(), LastXact::NoneIn),
        // A gap (5 is missing), then a second base set's WAL.
        (
            "000000010000000000000006".into(),
            at("2026-12-02T02:00:05Z", 0x6000100),
        ),
        (
            "000000010000000000000007".into(),
            at("2026-12-02T10:30:00.25Z", 0x7000200),
        ),
    ]));
    let sets = [
        set(
            manifest(
                "b1",
                "2026-12-01T02:00:10Z",
                Some(("000000010000000000000002", 1)),
            ),
            Some(true),
        ),
        set(
            manifest(
                "b2",
                "2026-12-02T02:00:10Z",
                Some(("000000010000000000000006", 1)),
            ),
            Some(true),
        ),
        set(
            manifest(
                "b0",
                "2026-11-30T02:00:10Z",
                Some(("000000010000000000000001", 1)),
            ),
            None,
        ),
        set(manifest("d1", "2026-12-01T03:00:00Z", None), Some(true)),
        set(manifest("d2", "2026-12-02T03:00:00Z", None), None),
    ];
    let w = compute(&sets, &wal).unwrap();
    assert_eq!(w.pitr.len(), 2, "{w:?}");
    assert_eq!(w.pitr[0].from, t("2026-12-01T02:00:10Z"));
    assert_eq!(w.pitr[0].to, Some(t("2026-12-01T09:00:00Z")));
    assert_eq!(w.pitr[0].to_lsn.as_deref(), Some("0/3000100"));
    assert_eq!(
        w.pitr[0].newest_segment.as_deref(),
        Some("000000010000000000000004")
    );
    assert_eq!(w.pitr[1].to, Some(t("2026-12-02T10:30:00.25Z")));
    assert_eq!(
        (w.base_sets, w.bases_unusable),
        (2, 1),
        "the unverified one is left out"
    );
    assert_eq!((w.dump_sets, w.dumps_verified), (2, 1));
    assert_eq!(w.oldest, Some(t("2026-12-01T02:00:10Z")));
    assert_eq!(w.newest, Some(t("2026-12-02T10:30:00.25Z")));
    let table = table(&w);
    assert!(
        table.contains("any time from 2026-12-02T02:00:10Z to 2026-12-02T10:30:00.250000Z"),
        "{table}"
    );
    assert!(table.contains("dumps: 2 sets (1 verified)"), "{table}");

    // With the gap filled, both base sets start inside one range.
    let mut wal = wal;
    wal.0
        .insert("000000010000000000000005".into(), LastXact::NoneIn);
    let w = compute(&sets, &wal).unwrap();
    assert_eq!(w.pitr.len(), 1, "{w:?}");
    assert_eq!(
        (w.pitr[0].base_sets, w.pitr[0].first_base.as_str()),
        (2, "b1")
    );
    assert_eq!(w.pitr[0].to, Some(t("2026-12-02T10:30:00.25Z")));
}

#[test]
fn an_unread_segment_is_an_unknown_end_and_no_archive_is_the_sets_own_end() {
    let wal = Mem(BTreeMap::from([
        (
            "000000010000000000000002".into(),
            LastXact::At(t("2026-12-01T05:00:00Z"), 1),
        ),
        ("000000010000000000000003".into(), LastXact::Unread),
    ]));
    let b = [set(
        manifest(
            "b1",
            "2026-12-01T02:00:10Z",
            Some(("000000010000000000000002", 1)),
        ),
        Some(true),
    )];
    let w = compute(&b, &wal).unwrap();
    assert_eq!(w.pitr[0].to, None, "not guessed from an older segment");
    assert!(table(&w).contains("was not recorded"), "{}", table(&w));

    let empty = Mem(BTreeMap::new());
    let w = compute(&b, &empty).unwrap();
    assert_eq!(w.pitr[0].to, Some(w.pitr[0].from));
    // A later timeline carries the range on; an older one does not count.
    let wal = Mem(BTreeMap::from([
        (
            "000000010000000000000002".into(),
            LastXact::At(t("2026-12-01T03:00:00Z"), 1),
        ),
        (
            "000000020000000000000003".into(),
            LastXact::At(t("2026-12-01T04:00:00Z"), 2),
        ),
    ]));
    let w = compute(&b, &wal).unwrap();
    assert_eq!(
        (w.pitr[0].timeline, w.pitr[0].to),
        (2, Some(t("2026-12-01T04:00:00Z")))
    );
}
