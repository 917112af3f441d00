//! Writing one file of a set: compressed on every core (gzip or zstd) or
//! stored as is, then encrypted to age recipients when asked, counted and
//! sha256-hashed as it streams (no second read), then fsynced.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use opskit::backupset::{FileEntry, FileKind};
use opskit::codec::{Compression, Compressor};
use opskit::crypt::{Recipients, Sealer};
use opskit::durable::WritebackFile;
use opskit::gz::HashWriter;
use opskit::{IoContext, Result, durable, units};

/// How every file of a set is written: compressed, then (with recipients)
/// encrypted.
#[derive(Clone)]
pub struct Encoding {
    pub compression: Compression,
    pub seal: Option<Recipients>,
}

impl Encoding {
    /// The extension files get: `.zst`, `.gz` or none, then `.age`.
    pub fn ext(&self) -> String {
        let age = if self.seal.is_some() {
            opskit::crypt::EXT
        } else {
            ""
        };
        format!("{}{age}", self.compression.ext())
    }

    /// The same encoding with another compression.
    pub fn with_compression(&self, compression: Compression) -> Encoding {
        Encoding {
            compression,
            seal: self.seal.clone(),
        }
    }
}

/// A set file being written.
pub struct Sink {
    name: String,
    path: PathBuf,
    kind: FileKind,
    inner: Compressor<Sealer<HashWriter<WritebackFile>>>,
    compression: Compression,
    /// Bytes written to the sink (before compression).
    content: u64,
    progress: Option<Progress>,
}

impl Sink {
    /// Create `dir/name` (0600), compressed and encrypted as `enc` says.
    pub fn create(dir: &Path, name: &str, kind: FileKind, enc: &Encoding) -> Result<Self> {
        let path = dir.join(name);
        let file = durable::create_new(&path, 0o600)?;
        let hw = HashWriter::new(WritebackFile::new(file));
        let sealed = match &enc.seal {
            Some(r) => r.seal(hw).at("encrypting into", &path)?,
            None => Sealer::Open(hw),
        };
        let compression = enc.compression;
        let inner = compression.writer(sealed).at("compressing into", &path)?;
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
        let sealed = self.inner.finish().at("writing", &self.path)?;
        let (hw, plaintext) = sealed.finish().at("encrypting", &self.path)?;
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
            plaintext_bytes: plaintext.as_ref().map(|p| p.bytes),
            plaintext_sha256: plaintext.map(|p| p.sha256),
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
