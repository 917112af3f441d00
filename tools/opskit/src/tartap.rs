//! Watching a tar stream go by and copying one member out of it, without
//! holding the stream: pgbackup keeps the `backup_manifest` that
//! pg_basebackup writes at the end of its tar, in plain beside the
//! (compressed, encrypted) tar, for the next incremental set.

use std::io::{self, Write};

const BLOCK: usize = 512;

/// Feeds on the bytes of a tar stream, in any pieces; the member named
/// `want` (a regular file) goes to the writer.
pub struct TarTap<W: Write> {
    want: &'static str,
    out: W,
    header: Vec<u8>,
    /// Bytes of the current member's data still to come, then its padding.
    data_left: u64,
    pad_left: u64,
    capturing: bool,
    found: bool,
    ended: bool,
}

impl<W: Write> TarTap<W> {
    pub fn new(want: &'static str, out: W) -> TarTap<W> {
        TarTap {
            want,
            out,
            header: Vec::with_capacity(BLOCK),
            data_left: 0,
            pad_left: 0,
            capturing: false,
            found: false,
            ended: false,
        }
    }

    /// The next bytes of the stream.
    pub fn feed(&mut self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() && !self.ended {
            if self.data_left > 0 {
                let n = buf.len().min(self.data_left as usize);
                if self.capturing {
                    self.out.write_all(&buf[..n])?;
                }
                self.data_left -= n as u64;
                buf = &buf[n..];
            } else if self.pad_left > 0 {
                let n = buf.len().min(self.pad_left as usize);
                self.pad_left -= n as u64;
                buf = &buf[n..];
            } else {
                let n = buf.len().min(BLOCK - self.header.len());
                self.header.extend_from_slice(&buf[..n]);
                buf = &buf[n..];
                if self.header.len() == BLOCK {
                    self.start_member()?;
                }
            }
        }
        Ok(())
    }

    fn start_member(&mut self) -> io::Result<()> {
        let block = std::mem::take(&mut self.header);
        if block.iter().all(|b| *b == 0) {
            self.ended = true; // the end-of-archive blocks
            return Ok(());
        }
        let h = tar::Header::from_byte_slice(&block);
        let size = h.entry_size()?;
        self.capturing =
            h.entry_type().is_file() && h.path_bytes().as_ref() == self.want.as_bytes();
        if self.capturing {
            if self.found {
                return Err(io::Error::other(format!(
                    "the tar holds {} twice",
                    self.want
                )));
            }
            self.found = true;
        }
        self.data_left = size;
        self.pad_left = (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64;
        self.header = block;
        self.header.clear();
        Ok(())
    }

    /// The writer, if the member went by whole.
    pub fn finish(self) -> Option<W> {
        (self.found && !(self.capturing && self.data_left > 0)).then_some(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in members {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o600);
            h.set_cksum();
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn copies_the_member_whatever_the_pieces() {
        let manifest = b"{\"PostgreSQL-Backup-Manifest-Version\": 2}\n".repeat(40);
        let t = tar_of(&[
            ("PG_VERSION", b"18\n"),
            ("base/1/1259", &[7u8; 9000]),
            ("backup_manifest", &manifest),
        ]);
        for piece in [1, 7, 512, 513, 4096, t.len()] {
            let mut tap = TarTap::new("backup_manifest", Vec::new());
            for c in t.chunks(piece) {
                tap.feed(c).unwrap();
            }
            assert_eq!(tap.finish().unwrap(), manifest, "pieces of {piece}");
        }
    }

    #[test]
    fn missing_cut_or_doubled_is_not_a_copy() {
        let t = tar_of(&[("PG_VERSION", b"18\n")]);
        let mut tap = TarTap::new("backup_manifest", Vec::new());
        tap.feed(&t).unwrap();
        assert!(tap.finish().is_none());
        let t = tar_of(&[("backup_manifest", &[1u8; 2000])]);
        let mut tap = TarTap::new("backup_manifest", Vec::new());
        tap.feed(&t[..1200]).unwrap();
        assert!(tap.finish().is_none(), "cut in its data");
        let t = tar_of(&[("backup_manifest", b"a"), ("backup_manifest", b"b")]);
        let mut tap = TarTap::new("backup_manifest", Vec::new());
        assert!(tap.feed(&t).is_err());
    }
}
