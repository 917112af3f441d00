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

mod cursor;
use cursor::Cursor;

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
mod tests;
