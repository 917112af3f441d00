//! Writing one file of a set: compressed on every core (gzip or zstd) or
//! stored as is, then encrypted to age recipients when asked, counted and
//! sha256-hashed as it streams (no second read), then fsynced.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use opskit::backupset::{FileEntry, FileKind};
use opskit::codec::{Compression, Compressor};
use opskit::crypt::{Recipients, Sealer};
use opskit::durable::WritebackFile;
use opskit::gz::HashWriter;
use opskit::progress::Progress;
use opskit::{IoContext, Result, durable};

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
    progress: Progress,
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
            progress: Progress::default(),
        })
    }

    /// Show how much has been written on stderr (see [`Progress`]).
    pub fn with_progress(mut self) -> Self {
        self.progress = Progress::start(format!("writing {}", self.name), None);
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
        self.progress.finish();
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
        self.progress.add(n as u64);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
