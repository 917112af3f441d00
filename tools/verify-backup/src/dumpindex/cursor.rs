//! Reading pg_dump's archive primitives: bytes, its integers (a sign
//! byte and four bytes, lowest first), its strings (a length, then the
//! bytes; a negative length for NULL) and a data block's chunks, counting
//! the position in the archive.

use std::io::BufRead;

use super::{Scan, bad};

/// A reader that counts what it consumed.
pub(super) struct Cursor<R> {
    pub(super) r: R,
    pub(super) pos: u64,
}

impl<R: BufRead> Cursor<R> {
    /// One byte, or None at the end.
    pub(super) fn try_byte(&mut self) -> Scan<Option<u8>> {
        let b = match self.r.fill_buf()? {
            [] => return Ok(None),
            b => b[0],
        };
        self.r.consume(1);
        self.pos += 1;
        Ok(Some(b))
    }

    pub(super) fn byte(&mut self) -> Scan<u8> {
        match self.try_byte()? {
            Some(b) => Ok(b),
            None => bad(format!("the dump ends early, at byte {}", self.pos)),
        }
    }

    pub(super) fn bytes<const N: usize>(&mut self) -> Scan<[u8; N]> {
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
    pub(super) fn int(&mut self) -> Scan<i64> {
        let [sign, b @ ..] = self.bytes::<5>()?;
        let v = u32::from_le_bytes(b);
        if v > i32::MAX as u32 {
            return bad(format!("an integer out of range at byte {}", self.pos - 5));
        }
        let v = i64::from(v);
        Ok(if sign != 0 { -v } else { v })
    }

    /// Pass over `n` bytes.
    pub(super) fn skip(&mut self, mut n: u64) -> Scan<()> {
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
    pub(super) fn string(&mut self) -> Scan<bool> {
        let len = self.int()?;
        if len < 0 {
            return Ok(false);
        }
        self.skip(len as u64)?;
        Ok(true)
    }

    /// Read a short string that must be one of `allowed`.
    pub(super) fn string_of(&mut self, allowed: &[&str]) -> Scan<()> {
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
    pub(super) fn chunks(&mut self) -> Scan<()> {
        loop {
            match self.int()? {
                0 => return Ok(()),
                n if n < 0 => return bad(format!("a negative chunk length at byte {}", self.pos)),
                n => self.skip(n as u64)?,
            }
        }
    }
}
