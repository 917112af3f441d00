//! Where each table's data starts in a custom-format dump read from a
//! pipe, so that the restore copy can say it as pg_dump does when it
//! writes to a file.
//!
//! `pg_dump -Fc` writes its table of contents first. Written to a file,
//! it goes back at the end and fills in each entry's data offset; written
//! to a pipe (as pgbackup runs it) it cannot, and the entries say "offset
//! not set". `pg_restore --jobs` then has every worker scan the archive
//! block by block (row by row in an uncompressed dump) for the data it
//! was given, which costs about a second per GB. The copy a parallel
//! restore reads is written by this run, so the offsets are learned on
//! the way past ([`scan`]) and written into the copy's table of contents
//! ([`apply`]), in the fields pg_dump itself would have filled, of the
//! same size.
//!
//! The format is PostgreSQL's (`pg_backup_archiver.c`: `WriteHead`,
//! `WriteToc`; `pg_backup_custom.c`: `_WriteExtraToc`, `_StartData`,
//! `_StartLOs`, `_readBlockHeader`), archive versions 1.12 to 1.16
//! (pg_dump 9.0 to 18; 1.14 is 12 to 15, 1.15 is 16, 1.16 is 17 and 18).
//! Anything else, or anything that does not add up (an entry whose
//! "has data" disagrees with its offset flag, a with-oids field that is
//! not `true` or `false`, an unknown block, a block for an entry that has
//! no data, an entry whose data never comes, bytes after the last block
//! that are not one), leaves the copy as it was: pg_restore reads it as
//! before, only slower. The scan reads what passes and keeps one small
//! record per table, whatever the dump's size.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufRead};
use std::os::unix::fs::FileExt;

/// The data offset flags of a table of contents entry.
const OFFSET_NOT_SET: u8 = 1;
const OFFSET_SET: u8 = 2;
const NO_DATA: u8 = 3;
/// Data block types.
const BLK_DATA: u8 = 1;
const BLK_BLOBS: u8 = 3;
/// Archive format byte of a custom-format dump.
const FORMAT_CUSTOM: u8 = 1;
/// Tables whose offsets are kept at most (one small record each).
const MAX_ENTRIES: usize = 500_000;
/// The size of an offset field's value (pgoff_t on every 64-bit build).
const OFF_SIZE: u8 = 8;

/// One table of contents entry that has data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub dump_id: i32,
    /// Where its offset field (flag byte, then the offset) is in the file.
    pub field: u64,
    /// The flag found there, and the offset (0 when not set).
    pub flag: u8,
    pub recorded: u64,
    /// Where its data block was found.
    pub block: Option<u64>,
}

/// A dump's data entries, in table of contents order.
#[derive(Debug, Default)]
pub struct Index {
    pub version: (u8, u8),
    pub entries: Vec<Entry>,
}

/// Why a dump was not indexed: the stream failed, or it is not a dump
/// this module reads (the copy is still good).
#[derive(Debug)]
pub enum Unindexed {
    Io(io::Error),
    Format(String),
}

impl From<io::Error> for Unindexed {
    fn from(e: io::Error) -> Self {
        Unindexed::Io(e)
    }
}

impl std::fmt::Display for Unindexed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unindexed::Io(e) => write!(f, "{e}"),
            Unindexed::Format(m) => f.write_str(m),
        }
    }
}

type Scan<T> = std::result::Result<T, Unindexed>;

fn bad<T>(msg: impl Into<String>) -> Scan<T> {
    Err(Unindexed::Format(msg.into()))
}

/// A reader that counts what it consumed.
struct Cursor<R> {
    r: R,
    pos: u64,
}

impl<R: BufRead> Cursor<R> {
    /// One byte, or None at the end.
    fn try_byte(&mut self) -> Scan<Option<u8>> {
        let b = match self.r.fill_buf()? {
            [] => return Ok(None),
            b => b[0],
        };
        self.r.consume(1);
        self.pos += 1;
        Ok(Some(b))
    }

    fn byte(&mut self) -> Scan<u8> {
        match self.try_byte()? {
            Some(b) => Ok(b),
            None => bad(format!("the dump ends early, at byte {}", self.pos)),
        }
    }

    fn bytes<const N: usize>(&mut self) -> Scan<[u8; N]> {
        let mut b = [0u8; N];
        let buf = self.r.fill_buf()?;
        if buf.len() >= N {
            b.copy_from_slice(&buf[..N]);
            self.r.consume(N);
            self.pos += N as u64;
            return Ok(b);
        }
        for x in &mut b {
            *x = self.byte()?;
        }
        Ok(b)
    }

    /// pg_dump's integer: a sign byte, then 4 bytes (`int` on every build
    /// pg_dump runs on), lowest first.
    /// pg_dump never writes one above `i32::MAX` (pg_restore would read
    /// it as negative): such a dump is not indexed.
    fn int(&mut self) -> Scan<i64> {
        let [sign, b @ ..] = self.bytes::<5>()?;
        let v = u32::from_le_bytes(b);
        if v > i32::MAX as u32 {
            return bad(format!("an integer out of range at byte {}", self.pos - 5));
        }
        let v = i64::from(v);
        Ok(if sign != 0 { -v } else { v })
    }

    /// Pass over `n` bytes.
    fn skip(&mut self, mut n: u64) -> Scan<()> {
        while n > 0 {
            let avail = self.r.fill_buf()?.len();
            if avail == 0 {
                return bad(format!("the dump ends early, at byte {}", self.pos));
            }
            let k = avail.min(usize::try_from(n).unwrap_or(usize::MAX));
            self.r.consume(k);
            self.pos += k as u64;
            n -= k as u64;
        }
        Ok(())
    }

    /// Pass over a string; false if it was NULL (a negative length).
    fn string(&mut self) -> Scan<bool> {
        let len = self.int()?;
        if len < 0 {
            return Ok(false);
        }
        self.skip(len as u64)?;
        Ok(true)
    }

    /// Read a short string that must be one of `allowed`.
    fn string_of(&mut self, allowed: &[&str]) -> Scan<()> {
        let at = self.pos;
        let len = self.int()?;
        let fits = allowed.iter().any(|a| a.len() as i64 == len);
        if fits {
            let mut b = [0u8; 8];
            let b = &mut b[..len as usize];
            for x in b.iter_mut() {
                *x = self.byte()?;
            }
            if allowed.iter().any(|a| a.as_bytes() == b) {
                return Ok(());
            }
        }
        bad(format!("an unexpected field at byte {at}"))
    }

    /// Pass over a block's chunks, up to the zero length that ends them.
    fn chunks(&mut self) -> Scan<()> {
        loop {
            match self.int()? {
                0 => return Ok(()),
                n if n < 0 => return bad(format!("a negative chunk length at byte {}", self.pos)),
                n => self.skip(n as u64)?,
            }
        }
    }
}

/// Read a custom-format dump to its end, learning where each entry's data
/// block starts.
pub fn scan<R: BufRead>(r: R) -> Scan<Index> {
    let mut c = Cursor { r, pos: 0 };
    let version = header(&mut c)?;
    let mut index = Index {
        version,
        entries: Vec::new(),
    };
    let by_id = toc(&mut c, version.0, &mut index.entries)?;
    blocks(&mut c, &by_id, &mut index.entries)?;
    if let Some(e) = index.entries.iter().find(|e| e.block.is_none()) {
        return bad(format!("no data block for entry {}", e.dump_id));
    }
    Ok(index)
}

/// The header; returns the archive version (minor, revision) of 1.x.
fn header<R: BufRead>(c: &mut Cursor<R>) -> Scan<(u8, u8)> {
    if &c.bytes::<5>()? != b"PGDMP" {
        return bad("not a pg_dump archive");
    }
    let [major, minor, rev, int_size, off_size, format] = c.bytes::<6>()?;
    if major != 1 || !(12..=16).contains(&minor) || rev != 0 {
        return bad(format!("archive version {major}.{minor}.{rev}"));
    }
    if int_size != 4 || off_size != OFF_SIZE || format != FORMAT_CUSTOM {
        return bad(format!(
            "integer size {int_size}, offset size {off_size}, format {format}"
        ));
    }
    if minor >= 15 {
        c.byte()?; // the compression algorithm
    } else {
        c.int()?; // the compression level
    }
    for _ in 0..7 {
        c.int()?; // when it was made
    }
    c.string()?; // the database
    c.string()?; // the server's version
    c.string()?; // pg_dump's version
    Ok((minor, rev))
}

/// The table of contents: keeps the entries with data; returns them by
/// dump id.
fn toc<R: BufRead>(
    c: &mut Cursor<R>,
    minor: u8,
    out: &mut Vec<Entry>,
) -> Scan<HashMap<i32, usize>> {
    let count = c.int()?;
    let mut by_id = HashMap::new();
    for _ in 0..count.max(0) {
        let dump_id = i32::try_from(c.int()?)
            .ok()
            .filter(|&id| id > 0)
            .ok_or_else(|| Unindexed::Format(format!("a bad dump id at byte {}", c.pos)))?;
        let has_data = c.int()? != 0;
        c.string()?; // table oid
        c.string()?; // oid
        c.string()?; // tag
        c.string()?; // desc
        c.int()?; // section
        c.string()?; // definition
        c.string()?; // drop statement
        c.string()?; // copy statement
        c.string()?; // namespace
        c.string()?; // tablespace
        if minor >= 14 {
            c.string()?; // table access method
        }
        if minor >= 16 {
            c.int()?; // relkind
        }
        c.string()?; // owner
        c.string_of(&["false", "true"])?; // with oids
        while c.string()? {} // dependencies, up to a NULL
        let field = c.pos;
        let flag = c.byte()?;
        let recorded = u64::from_le_bytes(c.bytes::<8>()?);
        match (flag, has_data) {
            (NO_DATA, false) => continue,
            (OFFSET_NOT_SET | OFFSET_SET, true) => {}
            (f, _) => {
                return bad(format!(
                    "data offset flag {f} at byte {field} (entry {dump_id}, has data: {has_data})"
                ));
            }
        }
        if out.len() == MAX_ENTRIES {
            return bad(format!("more than {MAX_ENTRIES} entries with data"));
        }
        if by_id.insert(dump_id, out.len()).is_some() {
            return bad(format!("entry {dump_id} twice"));
        }
        out.push(Entry {
            dump_id,
            field,
            flag,
            recorded,
            block: None,
        });
    }
    Ok(by_id)
}

/// The data blocks, to the end: each must belong to an entry with data,
/// once.
fn blocks<R: BufRead>(
    c: &mut Cursor<R>,
    by_id: &HashMap<i32, usize>,
    entries: &mut [Entry],
) -> Scan<()> {
    loop {
        let at = c.pos;
        let Some(kind) = c.try_byte()? else {
            return Ok(());
        };
        let id = c.int()?;
        let Some(e) = i32::try_from(id)
            .ok()
            .and_then(|id| by_id.get(&id))
            .map(|&i| &mut entries[i])
        else {
            return bad(format!(
                "a block for entry {id}, which has no data, at byte {at}"
            ));
        };
        if e.block.replace(at).is_some() {
            return bad(format!("a second block for entry {id} at byte {at}"));
        }
        match kind {
            BLK_DATA => c.chunks()?,
            BLK_BLOBS => loop {
                // large objects: an oid, its chunks; an oid of 0 ends them
                if c.int()? == 0 {
                    break;
                }
                c.chunks()?;
            },
            k => return bad(format!("a block of type {k} at byte {at}")),
        }
    }
}

/// Write each entry's data offset into `file`, the copy of the dump that
/// was scanned, where pg_dump writes it to a file; returns how many were
/// written. Every field is read back first: if one does not hold what
/// the scan read there (the copy changed), nothing is written. The
/// offsets go in before their flags, so that a write that fails part
/// way leaves entries either set right or still "not set".
pub fn apply(file: &File, index: &Index) -> io::Result<usize> {
    let mut todo = Vec::new();
    for e in &index.entries {
        let (Some(block), OFFSET_NOT_SET) = (e.block, e.flag) else {
            continue;
        };
        let mut was = [0u8; 1 + OFF_SIZE as usize];
        file.read_exact_at(&mut was, e.field)?;
        if was[0] != e.flag || was[1..] != e.recorded.to_le_bytes() {
            return Err(io::Error::other(format!(
                "the copy's entry {} is not what was read",
                e.dump_id
            )));
        }
        let mut now = was;
        now[0] = OFFSET_SET;
        now[1..].copy_from_slice(&block.to_le_bytes());
        todo.push((e.field, now));
    }
    for (at, bytes) in &todo {
        file.write_all_at(&bytes[1..], at + 1)?;
    }
    for (at, bytes) in &todo {
        file.write_all_at(&bytes[..1], *at)?;
    }
    Ok(todo.len())
}

#[cfg(test)]
mod tests {
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
}
