//! How set files are compressed, one type for every writer and reader:
//! `--compress` values (`zstd[:LEVEL]`, `gzip[:LEVEL]`, `none`, or a bare
//! gzip level as before), a writer on every core for each codec, and a
//! reader that decompresses to the end of the stream (every gzip member,
//! every zstd frame, each one's checksum checked).

use std::io::{self, BufReader, Read, Write};

use crate::backupset::Codec;
use crate::gz::{GzOptions, ParGzWriter};

/// What `--compress` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Compression {
    /// `None`: files are stored as they are.
    pub codec: Option<Codec>,
    /// gzip 1-9, zstd 1-19.
    pub level: i32,
    /// Compression threads.
    pub threads: usize,
}

/// zstd's level when none is given. Measured on the benchmark database
/// (`make bench`): level 1 is the fastest, needs the least memory (about
/// 16 MiB with two workers against 53 MiB at level 3) and is also the
/// smallest (0.85 x `pg_dump -Fc` against 0.95 at level 3; levels up to 12
/// stay above 0.96).
pub const ZSTD_DEFAULT_LEVEL: i32 = 1;
/// gzip's level when none is given.
pub const GZIP_DEFAULT_LEVEL: i32 = 6;

impl Compression {
    /// Parse a `--compress` value; the error says what is accepted.
    pub fn parse(s: &str) -> Result<Compression, String> {
        let bad_level = |codec: &str, range: &str| format!("'{s}': {codec} levels are {range}");
        let level = |l: Option<&str>, default: i32, max: i32, codec: &str| -> Result<i32, String> {
            match l {
                None => Ok(default),
                Some(l) => l
                    .parse::<i32>()
                    .ok()
                    .filter(|n| (1..=max).contains(n))
                    .ok_or_else(|| bad_level(codec, &format!("1-{max}"))),
            }
        };
        let (name, lvl) = match s.split_once(':') {
            Some((n, l)) => (n, Some(l)),
            None => (s, None),
        };
        let (codec, level) = match name {
            "zstd" => (
                Some(Codec::Zstd),
                level(lvl, ZSTD_DEFAULT_LEVEL, 19, "zstd")?,
            ),
            "gzip" => (
                Some(Codec::Gzip),
                level(lvl, GZIP_DEFAULT_LEVEL, 9, "gzip")?,
            ),
            "none" if lvl.is_none() => (None, 0),
            "0" if lvl.is_none() => (None, 0),
            n if lvl.is_none() && n.parse::<i32>().is_ok() => (
                Some(Codec::Gzip),
                level(Some(n), GZIP_DEFAULT_LEVEL, 9, "gzip")?,
            ),
            _ => {
                return Err(format!(
                    "'{s}' is not a compression: use zstd[:1-19], gzip[:1-9], none, or a gzip level 0-9"
                ));
            }
        };
        Ok(Compression {
            codec,
            level,
            threads: crate::pool::cores(),
        })
    }

    /// The extension files get (`.gz`, `.zst`, or none).
    pub fn ext(&self) -> &'static str {
        self.codec.map_or("", Codec::ext)
    }

    /// Start compressing into `out`.
    pub fn writer<W: Write + Send + 'static>(&self, out: W) -> io::Result<Compressor<W>> {
        Ok(match self.codec {
            None => Compressor::Stored(out),
            Some(Codec::Gzip) => Compressor::Gzip(ParGzWriter::new(
                out,
                GzOptions {
                    level: self.level.clamp(0, 9) as u32,
                    threads: self.threads,
                    ..GzOptions::default()
                },
            )),
            Some(Codec::Zstd) => {
                let mut enc = zstd::stream::write::Encoder::new(out, self.level)?;
                // Every frame carries its checksum, so a structural read
                // proves the content and not only the framing.
                enc.include_checksum(true)?;
                if self.threads > 1 {
                    enc.multithread(self.threads as u32)?;
                }
                Compressor::Zstd(enc)
            }
        })
    }
}

/// A compressing writer; [`Compressor::finish`] must be called (the
/// encoders' `Drop` swallows errors).
pub enum Compressor<W: Write + Send + 'static> {
    Stored(W),
    Gzip(ParGzWriter<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write + Send + 'static> Compressor<W> {
    /// Write the end of the stream and give the inner writer back.
    pub fn finish(self) -> io::Result<W> {
        match self {
            Compressor::Stored(w) => Ok(w),
            Compressor::Gzip(g) => g.finish(),
            Compressor::Zstd(z) => z.finish(),
        }
    }
}

impl<W: Write + Send + 'static> Write for Compressor<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Compressor::Stored(w) => w.write(buf),
            Compressor::Gzip(g) => g.write(buf),
            Compressor::Zstd(z) => z.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Compressor::Stored(w) => w.flush(),
            Compressor::Gzip(g) => g.flush(),
            Compressor::Zstd(z) => z.flush(),
        }
    }
}

/// The decompressed content of `src`, read to the end of the stream: every
/// gzip member (CRC and size checked) or every zstd frame (checksum
/// checked); a truncated stream is an error, not a short read.
pub fn reader<'a>(codec: Option<Codec>, src: impl Read + 'a) -> io::Result<Box<dyn Read + 'a>> {
    const BUF: usize = 256 * 1024;
    Ok(match codec {
        None => Box::new(src),
        Some(Codec::Gzip) => Box::new(flate2::bufread::MultiGzDecoder::new(
            BufReader::with_capacity(BUF, src),
        )),
        Some(Codec::Zstd) => Box::new(zstd::stream::read::Decoder::with_buffer(
            BufReader::with_capacity(BUF, src),
        )?),
    })
}

/// The decompressed content of a set file `f` ([`reader`]), refused past
/// the size its manifest gives (`content_bytes`): a file replaced by a
/// small bomb is stopped there, not after it has filled the disk it is
/// unpacked to (its sha256 is known only at its end).
pub fn content_reader<'a>(
    f: &crate::backupset::FileEntry,
    src: impl Read + 'a,
) -> io::Result<Box<dyn Read + 'a>> {
    let content = reader(f.compression, src)?;
    Ok(match (f.compression, f.content_bytes) {
        (Some(_), Some(max)) => Box::new(AtMost::new(content, max, "its content")),
        _ => content,
    })
}

/// A reader that fails once `inner` gives more than `max` bytes (it reads
/// one byte past them to know). `what` names the stream in the error.
pub struct AtMost<R> {
    inner: R,
    left: u64,
    max: u64,
    what: &'static str,
}

impl<R: Read> AtMost<R> {
    pub fn new(inner: R, max: u64, what: &'static str) -> Self {
        AtMost {
            inner,
            left: max,
            max,
            what,
        }
    }

    pub fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: Read> Read for AtMost<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(io::Error::other(format!(
                    "{} holds more than the {} bytes the manifest gives: damaged or replaced",
                    self.what, self.max
                ))),
            };
        }
        let n = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let got = self.inner.read(&mut buf[..n])?;
        self.left -= got as u64;
        Ok(got)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_reads_what_is_given_and_fails_past_it() {
        let mut out = Vec::new();
        AtMost::new(&b"12345"[..], 5, "it")
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, b"12345");
        let e = AtMost::new(&b"123456"[..], 5, "it")
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert!(e.to_string().contains("more than the 5 bytes"), "{e}");
    }

    #[test]
    fn compress_values() {
        let c = |s| Compression::parse(s).map(|c| (c.codec, c.level));
        assert_eq!(c("zstd"), Ok((Some(Codec::Zstd), 1)));
        assert_eq!(c("zstd:19"), Ok((Some(Codec::Zstd), 19)));
        assert_eq!(c("gzip"), Ok((Some(Codec::Gzip), 6)));
        assert_eq!(c("gzip:1"), Ok((Some(Codec::Gzip), 1)));
        assert_eq!(c("9"), Ok((Some(Codec::Gzip), 9)));
        assert_eq!(c("0"), Ok((None, 0)));
        assert_eq!(c("none"), Ok((None, 0)));
        for bad in [
            "zstd:20", "zstd:0", "gzip:10", "10", "lz4", "zstd:", "none:3", "-1",
        ] {
            let e = Compression::parse(bad).unwrap_err();
            assert!(e.contains(bad), "{bad}: {e}");
        }
    }

    fn roundtrip(spec: &str, data: &[u8]) -> Vec<u8> {
        let mut w = Compression::parse(spec)
            .unwrap()
            .writer(Vec::new())
            .unwrap();
        w.write_all(data).unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn every_codec_round_trips_and_truncation_is_an_error() {
        let data: Vec<u8> = (0..3_000_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        for spec in ["zstd:1", "gzip:1", "none"] {
            let c = Compression::parse(spec).unwrap().codec;
            let packed = roundtrip(spec, &data);
            let mut back = Vec::new();
            reader(c, &packed[..])
                .unwrap()
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, data, "{spec}");
            if c.is_some() {
                let cut = &packed[..packed.len() * 9 / 10];
                let mut sink = Vec::new();
                assert!(
                    reader(c, cut).unwrap().read_to_end(&mut sink).is_err(),
                    "{spec}: truncation not noticed"
                );
                let mut flipped = packed.clone();
                let i = flipped.len() / 2;
                flipped[i] ^= 0x40;
                let r = reader(c, &flipped[..]).unwrap().read_to_end(&mut sink);
                assert!(r.is_err(), "{spec}: flipped byte not noticed");
            }
        }
    }

    #[test]
    fn zstd_output_is_standard_frames() {
        // Concatenated frames decode as one stream, as `zstd -dc` reads them.
        let mut two = roundtrip("zstd:1", b"first ");
        two.extend(roundtrip("zstd:1", b"second"));
        let mut back = String::new();
        reader(Some(Codec::Zstd), &two[..])
            .unwrap()
            .read_to_string(&mut back)
            .unwrap();
        assert_eq!(back, "first second");
    }
}
