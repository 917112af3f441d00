//! The scanner on archives made by hand: every version, reads of any
//! size, and each way an archive can fail to add up.

use super::*;

fn int(v: &mut Vec<u8>, i: i64) {
    v.push(u8::from(i < 0));
    v.extend_from_slice(&(i.unsigned_abs() as u32).to_le_bytes());
}

fn string(v: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => int(v, -1),
        Some(s) => {
            int(v, s.len() as i64);
            v.extend_from_slice(s.as_bytes());
        }
    }
}

type Block<'a> = (u8, i64, &'a [&'a [u8]]);

/// An archive 1.16 with `entries` (dump id, offset flag) and then
/// `blocks` (type, dump id, chunks).
fn archive(entries: &[(i64, u8)], blocks: &[Block]) -> Vec<u8> {
    archive_of(16, entries, blocks)
}

/// The same, of archive version 1.`minor`.
fn archive_of(minor: u8, entries: &[(i64, u8)], blocks: &[Block]) -> Vec<u8> {
    let mut v = b"PGDMP".to_vec();
    v.extend_from_slice(&[1, minor, 0, 4, 8, 1]);
    if minor >= 15 {
        v.push(0);
    } else {
        int(&mut v, 0);
    }
    for t in [1, 2, 3, 4, 5, 126, 0] {
        int(&mut v, t);
    }
    for s in ["app", "18.1", "18.1"] {
        string(&mut v, Some(s));
    }
    int(&mut v, entries.len() as i64);
    for &(id, flag) in entries {
        int(&mut v, id);
        int(&mut v, i64::from(flag != NO_DATA));
        for s in ["1259", "16384", "t", "TABLE DATA"] {
            string(&mut v, Some(s));
        }
        int(&mut v, 2);
        let copy = "COPY t FROM stdin;\n";
        for s in [Some(""), Some(""), Some(copy), Some("public"), None] {
            string(&mut v, s);
        }
        if minor >= 14 {
            string(&mut v, Some("heap"));
        }
        if minor >= 16 {
            int(&mut v, i64::from(b'r'));
        }
        for s in [Some("app"), Some("false"), Some("3"), None] {
            string(&mut v, s);
        }
        v.push(flag);
        v.extend_from_slice(&[0; 8]);
    }
    for &(kind, id, chunks) in blocks {
        v.push(kind);
        int(&mut v, id);
        for c in chunks {
            int(&mut v, c.len() as i64);
            v.extend_from_slice(c);
        }
        int(&mut v, 0);
    }
    v
}

fn format_error(bytes: &[u8]) -> String {
    match scan(bytes) {
        Err(Unindexed::Format(m)) => m,
        other => panic!("expected a format error, got {other:?}"),
    }
}

#[test]
fn blocks_are_found_where_they_start() {
    let rows: &[&[u8]] = &[b"1\tx\n", b"2\ty\n"];
    let a = archive(
        &[(3, NO_DATA), (7, OFFSET_NOT_SET), (8, OFFSET_NOT_SET)],
        &[(BLK_DATA, 8, &[]), (BLK_DATA, 7, rows)],
    );
    let index = scan(&a[..]).unwrap();
    assert_eq!(index.version, (16, 0));
    let ids: Vec<i32> = index.entries.iter().map(|e| e.dump_id).collect();
    assert_eq!(ids, [7, 8]);
    let second = index.entries[0].block.unwrap() as usize;
    let first = index.entries[1].block.unwrap() as usize;
    assert_eq!(a[first], BLK_DATA);
    assert_eq!(a[first + 1..first + 6], [0, 8, 0, 0, 0]);
    assert_eq!(a[second + 1..second + 6], [0, 7, 0, 0, 0]);
    assert_eq!(a[index.entries[0].field as usize], OFFSET_NOT_SET);
}

#[test]
fn every_version_and_any_read_size_give_the_same_blocks() {
    let rows: &[&[u8]] = &[b"1\tx\n", b"2\ty\n"];
    for minor in 12..=16 {
        let a = archive_of(
            minor,
            &[(2, NO_DATA), (5, OFFSET_NOT_SET), (6, OFFSET_NOT_SET)],
            &[(BLK_DATA, 5, rows), (BLK_DATA, 6, &[])],
        );
        let whole = scan(&a[..]).unwrap();
        assert_eq!(whole.version, (minor, 0));
        assert!(whole.entries.iter().all(|e| e.block.is_some()));
        for cap in [1, 3, 7] {
            let bit = scan(io::BufReader::with_capacity(cap, &a[..])).unwrap();
            assert_eq!(bit.entries, whole.entries, "1.{minor}, reads of {cap}");
        }
    }
    // Large objects: an oid, its chunks, ..., an oid of 0.
    let mut a = archive(&[(4, OFFSET_NOT_SET)], &[]);
    let start = a.len();
    a.push(BLK_BLOBS);
    int(&mut a, 4);
    for oid in [16400, 16401] {
        int(&mut a, oid);
        for c in [&b"\x00\x00\x40\x00"[..], b"\xde\xad"] {
            int(&mut a, c.len() as i64);
            a.extend_from_slice(c);
        }
        int(&mut a, 0);
    }
    int(&mut a, 0);
    let index = scan(&a[..]).unwrap();
    assert_eq!(index.entries[0].block, Some(start as u64));
}

#[test]
fn a_dump_that_does_not_add_up_is_not_indexed() {
    let one: &[&[u8]] = &[b"row\n"];
    let cases = [
        (
            archive(&[(7, NO_DATA)], &[(BLK_DATA, 7, one)]),
            "has no data",
        ),
        (
            archive(&[(7, OFFSET_NOT_SET)], &[]),
            "no data block for entry 7",
        ),
        (
            archive(
                &[(7, OFFSET_NOT_SET)],
                &[(BLK_DATA, 7, one), (BLK_DATA, 7, one)],
            ),
            "a second block",
        ),
        (
            archive(&[(7, OFFSET_NOT_SET)], &[(9, 7, one)]),
            "a block of type 9",
        ),
        (archive(&[(7, 4)], &[]), "data offset flag 4"),
        (archive(&[(0, NO_DATA)], &[]), "a bad dump id"),
    ];
    for (bytes, why) in cases {
        let m = format_error(&bytes);
        assert!(m.contains(why), "{m} / {why}");
    }
    let mut cut = archive(&[(7, OFFSET_NOT_SET)], &[(BLK_DATA, 7, one)]);
    cut.truncate(cut.len() - 6);
    assert!(format_error(&cut).contains("ends early"));
    // An entry whose "has data" disagrees with its flag, as when a
    // field of another version is read in the wrong place.
    let a = archive(&[(7, OFFSET_NOT_SET)], &[(BLK_DATA, 7, one)]);
    let has_data = 5 + 7 + 7 * 5 + (5 + 3) + (5 + 4) * 2 + 5 + 5;
    assert_eq!(a[has_data..has_data + 5], [0, 1, 0, 0, 0]);
    let mut b = a.clone();
    b[has_data + 1] = 0;
    assert!(format_error(&b).contains("has data: false"));
    // A with-oids field that is neither true nor false.
    let at = a.windows(5).position(|w| w == b"false").unwrap();
    let mut b = a.clone();
    b[at] = b'F';
    assert!(format_error(&b).contains("an unexpected field"));
    // A length pg_restore would read as negative.
    let mut b = a.clone();
    b[at - 4..at].copy_from_slice(&[0xff, 0xff, 0xff, 0xff]);
    assert!(format_error(&b).contains("out of range"));
    let mut newer = archive(&[], &[]);
    newer[6] = 17;
    assert!(format_error(&newer).contains("archive version 1.17.0"));
    assert!(format_error(b"PK\x03\x04\x14\x00\x00\x00").contains("not a pg_dump archive"));
    // A table of contents claiming 2^31 - 1 entries costs what it holds.
    let mut huge = archive(&[], &[]);
    let at = huge.len() - 5;
    huge[at..].copy_from_slice(&[0, 0xff, 0xff, 0xff, 0x7f]);
    assert!(format_error(&huge).contains("ends early"));
}

#[test]
fn offsets_go_only_where_the_scan_saw_them() {
    let a = archive(&[(7, OFFSET_NOT_SET)], &[(BLK_DATA, 7, &[b"1\n"])]);
    let index = scan(&a[..]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d");
    std::fs::write(&path, &a).unwrap();
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    assert_eq!(apply(&f, &index).unwrap(), 1);
    let field = index.entries[0].field as usize;
    let block = index.entries[0].block.unwrap();
    let now = std::fs::read(&path).unwrap();
    assert_eq!(now[field], OFFSET_SET);
    assert_eq!(now[field + 1..field + 9], block.to_le_bytes());
    assert_eq!(now[..field], a[..field]);
    assert_eq!(now[field + 9..], a[field + 9..]);
    // A copy that is not what was scanned is left as it is.
    std::fs::write(&path, vec![0u8; a.len()]).unwrap();
    assert!(apply(&f, &index).is_err());
    assert!(std::fs::read(&path).unwrap().iter().all(|&b| b == 0));
}
