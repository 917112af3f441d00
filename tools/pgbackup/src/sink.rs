//! Writing one file of a set: compressed on every core (gzip or zstd) or
//! stored as is, counted and sha256-hashed as it streams (no second
//! read), then fsynced.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use opskit::backupset::{FileEntry, FileKind};
use opskit::codec::{Compression, Compressor};
use opskit::durable::WritebackFile;
use opskit::gz::HashWriter;
use opskit::{IoContext, Result, durable, units};

/// A set file being written.
pub struct Sink {
    name: String,
    path: PathBuf,
    kind: FileKind,
    inner: Compressor<HashWriter<WritebackFile>>,
    compression: Compression,
    /// Bytes written to the sink (before compression).
    content: u64,
    progress: Option<Progress>,
}

impl Sink {
    /// Create `dir/name` (0600), compressed as `compression` says.
    pub fn create(
        dir: &Path,
        name: &str,
        kind: FileKind,
        compression: Compression,
    ) -> Result<Self> {
        let path = dir.join(name);
        let file = durable::create_new(&path, 0o600)?;
        let hw = HashWriter::new(WritebackFile::new(file));
        let inner = compression.writer(hw).at("compressing into", &path)?;
        Ok(Sink {
            name: name.to_string(),
            path,
            kind,
            inner,
            compression,
            content: 0,
            progress: None,
        })
    }

    /// Report progress on stderr when it is a terminal.
    pub fn with_progress(mut self) -> Self {
        if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            self.progress = Some(Progress::new(&self.name));
        }
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Flush, fsync and describe the file.
    pub fn finish(self) -> Result<FileEntry> {
        let content = self.content;
        let compression = self.compression.codec;
        let hw = self.inner.finish().at("writing", &self.path)?;
        let (file, bytes, sha256) = hw.finish();
        let file = file.into_inner();
        durable::sync_file(&file, &self.path)?;
        if let Some(p) = self.progress {
            p.done(content);
        }
        Ok(FileEntry {
            content_bytes: compression.as_ref().map(|_| content),
            name: self.name,
            kind: self.kind,
            bytes,
            sha256,
            compression,
            source: None,
            entries: None,
            skipped: Vec::new(),
        })
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.content += n as u64;
        if let Some(p) = &mut self.progress {
            p.tick(self.content);
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One status line on a terminal, redrawn at most once a second.
struct Progress {
    name: String,
    start: Instant,
    last: Instant,
}

impl Progress {
    fn new(name: &str) -> Self {
        let now = Instant::now();
        Progress {
            name: name.to_string(),
            start: now,
            last: now,
        }
    }

    fn tick(&mut self, bytes: u64) {
        if self.last.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.last = Instant::now();
        let secs = self.start.elapsed().as_secs_f64().max(0.001);
        eprint!(
            "\r{}: {} read, {}/s, {:.0}s   ",
            self.name,
            units::format_size(bytes),
            units::format_size((bytes as f64 / secs) as u64),
            secs
        );
    }

    fn done(&self, bytes: u64) {
        if self.start.elapsed() >= Duration::from_secs(1) {
            eprintln!(
                "\r{}: {} in {:.1}s            ",
                self.name,
                units::format_size(bytes),
                self.start.elapsed().as_secs_f64()
            );
        }
    }
}
