//! Streaming compression and hashing shared by the tools that write or read
//! backup and log files.
//!
//! [`ParGzWriter`] compresses on several threads: the stream is cut into
//! blocks, each block becomes an independent gzip member, and the members
//! are written in order. The result is one standard multi-member gzip file
//! that `gunzip`, `gzip -t` and `MultiGzDecoder` read to the end (RFC 1952
//! allows several members; `gunzip` concatenates them). Memory stays bounded:
//! at most a few blocks per worker are in flight.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use flate2::write::GzEncoder;
use flate2::{Compress, Compression, Crc, FlushCompress, Status};
use sha2::{Digest, Sha256};

/// A writer that counts and sha256-hashes everything written through it.
pub struct HashWriter<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> HashWriter<W> {
    pub fn new(inner: W) -> Self {
        HashWriter {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// The writer, the byte count and the lowercase hex sha256.
    pub fn finish(self) -> (W, u64, String) {
        (self.inner, self.bytes, hex(&self.hasher.finalize()))
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The lowercase hex sha256 of a byte string.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Lowercase hex of a byte string.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The default block size: large enough that per-member overhead (about 20
/// bytes) and the dictionary reset cost well under 0.1 % of the output.
pub const DEFAULT_BLOCK: usize = 1 << 20;

/// Tuning for [`ParGzWriter`].
#[derive(Debug, Clone, Copy)]
pub struct GzOptions {
    pub level: u32,
    pub threads: usize,
    pub block: usize,
}

impl Default for GzOptions {
    fn default() -> Self {
        GzOptions {
            level: 6,
            threads: crate::pool::cores(),
            block: DEFAULT_BLOCK,
        }
    }
}

/// A compressed member (or the error making it), by sequence number.
type Block = (u64, io::Result<Vec<u8>>);
/// The workers' shared queue of uncompressed blocks.
type WorkQueue = Arc<Mutex<Receiver<(u64, Vec<u8>)>>>;

/// A `Write` that gzips what it is given on `threads` worker threads and
/// writes the members, in order, to the inner writer on a thread of its own.
pub struct ParGzWriter<W: Write + Send + 'static> {
    buf: Vec<u8>,
    block: usize,
    seq: u64,
    to_workers: Option<SyncSender<(u64, Vec<u8>)>>,
    workers: Vec<JoinHandle<()>>,
    writer: Option<JoinHandle<io::Result<W>>>,
}

impl<W: Write + Send + 'static> ParGzWriter<W> {
    pub fn new(inner: W, opts: GzOptions) -> Self {
        let threads = opts.threads.max(1);
        let (to_workers, work_rx) = sync_channel::<(u64, Vec<u8>)>(threads);
        let work_rx = Arc::new(Mutex::new(work_rx));
        let (done_tx, done_rx) = sync_channel::<Block>(threads * 2);
        let level = Compression::new(opts.level.min(9));
        let workers = (0..threads)
            .map(|_| {
                let rx = Arc::clone(&work_rx);
                let tx = done_tx.clone();
                std::thread::spawn(move || worker(rx, tx, level))
            })
            .collect();
        drop(done_tx);
        let writer = std::thread::spawn(move || write_in_order(inner, done_rx));
        ParGzWriter {
            buf: Vec::with_capacity(opts.block),
            block: opts.block.max(4096),
            seq: 0,
            to_workers: Some(to_workers),
            workers,
            writer: Some(writer),
        }
    }

    fn send_block(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let block = std::mem::replace(&mut self.buf, Vec::with_capacity(self.block));
        let tx = self.to_workers.as_ref().expect("write after finish");
        if tx.send((self.seq, block)).is_err() {
            // The writer thread failed and the workers stopped: its error is
            // the one that matters.
            return Err(self
                .shutdown()
                .err()
                .unwrap_or_else(|| io::Error::other("compression pipeline stopped unexpectedly")));
        }
        self.seq += 1;
        Ok(())
    }

    fn shutdown(&mut self) -> io::Result<W> {
        self.to_workers = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        match self.writer.take() {
            Some(h) => h
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("compression writer thread panicked"))),
            None => Err(io::Error::other("compression pipeline already finished")),
        }
    }

    /// Compress what is left, wait for every member to be written, and
    /// return the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.send_block()?;
        self.shutdown()
    }
}

impl<W: Write + Send + 'static> Write for ParGzWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = self.block - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= self.block {
            self.send_block()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write + Send + 'static> Drop for ParGzWriter<W> {
    fn drop(&mut self) {
        if self.writer.is_some() {
            let _ = self.shutdown();
        }
    }
}

fn worker(rx: WorkQueue, tx: SyncSender<Block>, level: Compression) {
    loop {
        let job = rx.lock().map(|r| r.recv());
        let Ok(Ok((seq, data))) = job else { return };
        let mut enc = GzEncoder::new(Vec::with_capacity(data.len() / 3 + 64), level);
        let out = enc.write_all(&data).and_then(|()| enc.finish());
        if tx.send((seq, out)).is_err() {
            return;
        }
    }
}

fn write_in_order<W: Write>(mut out: W, rx: Receiver<Block>) -> io::Result<W> {
    let mut next = 0u64;
    let mut waiting: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    for (seq, res) in rx {
        waiting.insert(seq, res?);
        while let Some(data) = waiting.remove(&next) {
            out.write_all(&data)?;
            next += 1;
        }
    }
    if !waiting.is_empty() {
        return Err(io::Error::other("compression pipeline lost a block"));
    }
    out.flush()?;
    Ok(out)
}

/// The reading end of a bounded channel of byte chunks that a thread of
/// its own fills: what [`HashedReader`] and `crypt::Decrypting` hand to
/// whatever consumes the stream. An error the thread sends is returned
/// once; then the stream ends.
pub struct ChunkReader {
    rx: Receiver<io::Result<Vec<u8>>>,
    cur: Vec<u8>,
    pos: usize,
    done: bool,
}

impl ChunkReader {
    pub fn new(rx: Receiver<io::Result<Vec<u8>>>) -> Self {
        ChunkReader {
            rx,
            cur: Vec::new(),
            pos: 0,
            done: false,
        }
    }

    /// Take what is left unread, up to the end or the first error.
    pub fn drain(&mut self) -> io::Result<()> {
        while !self.done {
            match self.rx.recv() {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                Err(_) => self.done = true,
            }
        }
        Ok(())
    }
}

impl io::Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.cur.len() {
            if self.done {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Ok(buf)) => {
                    self.cur = buf;
                    self.pos = 0;
                }
                Ok(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                Err(_) => {
                    self.done = true;
                    return Ok(0);
                }
            }
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Reads a file on a thread of its own, hashing every byte, and hands the
/// bytes on through a bounded channel. Hashing and whatever consumes the
/// stream (inflate, tar, pg_restore) run on two cores, and the file is read
/// once.
pub struct HashedReader {
    chunks: ChunkReader,
    handle: Option<JoinHandle<(u64, String)>>,
}

impl HashedReader {
    pub fn new(mut src: impl io::Read + Send + 'static) -> Self {
        let (tx, rx) = sync_channel::<io::Result<Vec<u8>>>(8);
        let handle = std::thread::spawn(move || {
            let mut hasher = Sha256::new();
            let mut total = 0u64;
            loop {
                let mut buf = vec![0u8; 256 * 1024];
                match src.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        buf.truncate(n);
                        hasher.update(&buf);
                        total += n as u64;
                        if tx.send(Ok(buf)).is_err() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        break;
                    }
                }
            }
            (total, hex(&hasher.finalize()))
        });
        HashedReader {
            chunks: ChunkReader::new(rx),
            handle: Some(handle),
        }
    }

    /// Read whatever the consumer left unread (so the hash covers the whole
    /// file) and return the byte count and sha256.
    pub fn finish(mut self) -> io::Result<(u64, String)> {
        self.chunks.drain()?;
        self.handle
            .take()
            .expect("finish called once")
            .join()
            .map_err(|_| io::Error::other("hashing thread panicked"))
    }
}

impl io::Read for HashedReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        self.chunks.read(out)
    }
}

thread_local! {
    /// One deflate state per thread, reset between files: a fresh state
    /// per file (760 KiB from an aligned allocation) fragmented glibc's
    /// thread arenas to gigabytes over 10,000 logs.
    static DEFLATE: std::cell::RefCell<Option<(u32, Compress)>> = const { std::cell::RefCell::new(None) };
}

/// Write `input` as one gzip member (RFC 1952) to `out`, on this thread
/// (logrotate-lite compresses many logs at once, one per thread; a single
/// large stream goes through [`ParGzWriter`] instead).
pub fn gzip_member(input: &mut impl Read, out: &mut impl Write, level: u32) -> io::Result<()> {
    DEFLATE.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_none_or(|(l, _)| *l != level) {
            *slot = Some((level, Compress::new(Compression::new(level), false)));
        }
        let (_, c) = slot.as_mut().expect("just set");
        c.reset();
        // Header: magic, deflate, no flags, no mtime, unknown OS.
        out.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255])?;
        let mut crc = Crc::new();
        let mut inbuf = vec![0u8; 256 << 10];
        let mut outbuf = Vec::with_capacity(256 << 10);
        loop {
            let n = input.read(&mut inbuf)?;
            let flush = if n == 0 {
                FlushCompress::Finish
            } else {
                FlushCompress::None
            };
            crc.update(&inbuf[..n]);
            let mut data = &inbuf[..n];
            loop {
                outbuf.clear();
                let before = c.total_in();
                let status = c
                    .compress_vec(data, &mut outbuf, flush)
                    .map_err(io::Error::other)?;
                data = &data[(c.total_in() - before) as usize..];
                out.write_all(&outbuf)?;
                let finished = status == Status::StreamEnd;
                if finished
                    || (data.is_empty()
                        && flush == FlushCompress::None
                        && outbuf.len() < outbuf.capacity())
                {
                    break;
                }
            }
            if n == 0 {
                break;
            }
        }
        out.write_all(&crc.sum().to_le_bytes())?;
        out.write_all(&crc.amount().to_le_bytes())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::bufread::MultiGzDecoder;

    fn sample(n: usize) -> Vec<u8> {
        (0..n)
            .map(|i| (i as u32).wrapping_mul(2654435761).to_le_bytes()[i % 4] % 61 + 32)
            .collect()
    }

    fn gunzip(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        MultiGzDecoder::new(data).read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn round_trip_many_blocks_in_order() {
        let data = sample(300_000);
        let opts = GzOptions {
            level: 6,
            threads: 3,
            block: 4096,
        };
        let mut w = ParGzWriter::new(Vec::new(), opts);
        for chunk in data.chunks(777) {
            w.write_all(chunk).unwrap();
        }
        let gz = w.finish().unwrap();
        assert_eq!(gunzip(&gz), data);
    }

    #[test]
    fn gunzip_reads_the_members() {
        let data = sample(50_000);
        let mut w = ParGzWriter::new(
            Vec::new(),
            GzOptions {
                block: 8192,
                ..Default::default()
            },
        );
        w.write_all(&data).unwrap();
        let gz = w.finish().unwrap();
        let mut child = std::process::Command::new("gzip")
            .arg("-dc")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let t = std::thread::spawn(move || stdin.write_all(&gz).unwrap());
        let out = child.wait_with_output().unwrap();
        t.join().unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout, data);
    }

    #[test]
    fn empty_input_is_empty_output() {
        let w = ParGzWriter::new(Vec::new(), GzOptions::default());
        assert!(w.finish().unwrap().is_empty());
    }

    struct FailAfter(usize);
    impl Write for FailAfter {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            if self.0 < b.len() {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
            self.0 -= b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn inner_write_error_surfaces() {
        let data = sample(2_000_000);
        let mut w = ParGzWriter::new(
            FailAfter(10_000),
            GzOptions {
                block: 4096,
                threads: 2,
                level: 1,
            },
        );
        let res = w.write_all(&data).and_then(|()| w.finish().map(|_| ()));
        let err = res.unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    }

    #[test]
    fn hashed_reader_hashes_everything_even_unread() {
        let data = sample(1_000_000);
        let mut r = HashedReader::new(std::io::Cursor::new(data.clone()));
        let mut first = vec![0u8; 1000];
        r.read_exact(&mut first).unwrap();
        assert_eq!(first, data[..1000]);
        let (n, digest) = r.finish().unwrap();
        assert_eq!(n, data.len() as u64);
        assert_eq!(digest, sha256_hex(&data));
        let mut all = Vec::new();
        HashedReader::new(std::io::Cursor::new(data.clone()))
            .read_to_end(&mut all)
            .unwrap();
        assert_eq!(all, data);
    }

    #[test]
    fn hash_writer_matches_known_digest() {
        let mut h = HashWriter::new(Vec::new());
        h.write_all(b"abc").unwrap();
        let (inner, n, digest) = h.finish();
        assert_eq!(inner, b"abc");
        assert_eq!(n, 3);
        assert_eq!(
            digest,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn gzip_members_read_back_with_the_reused_state() {
        for (len, level) in [(0usize, 6u32), (10, 6), (3 << 20, 6), (700_000, 1), (5, 9)] {
            let data: Vec<u8> = (0..len)
                .map(|i| (i * 7 % 251) as u8 ^ (i / 1000) as u8)
                .collect();
            let mut out = vec![];
            gzip_member(&mut &data[..], &mut out, level).unwrap();
            let mut back = vec![];
            flate2::read::MultiGzDecoder::new(&out[..])
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, data, "len {len} level {level}");
        }
    }
}
