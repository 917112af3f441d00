//! What `push-wal` has confirmed in the bucket, kept in its state directory
//! (`--state-dir`, systemd's `$STATE_DIRECTORY`): for each bucket URL and
//! timeline, the newest archived file it uploaded or found there byte for
//! byte. A checksum file already in the bucket for a newer file is not
//! taken for the upload: it is compared with the local one. Whoever holds
//! the bucket's keys could otherwise plant one under the name of a segment
//! not archived yet, and that segment would never go up.
//!
//! One line per mark: `URL<TAB>TIMELINE<TAB>NAME`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use opskit::{Error, Result};

/// The file in the state directory.
const FILE: &str = "push-wal.confirmed";

/// The most the file is read: one line per bucket and timeline.
const MAX: u64 = 1 << 20;

pub struct Marks {
    path: Option<PathBuf>,
    /// (URL, timeline) → newest name confirmed, as the run found them:
    /// what it checks against (a file confirmed during the run does not
    /// make the next one unchecked).
    loaded: BTreeMap<(String, String), String>,
    /// The same, as the run confirms files.
    marks: BTreeMap<(String, String), String>,
}

/// What is known of an archived file already in the bucket.
pub enum Known {
    /// At or before the newest confirmed: it was checked.
    Confirmed,
    /// Newer: compare it before it counts.
    Unchecked,
    /// No mark yet for this bucket (the first run with a state directory,
    /// or none): taken as it is, as before. A new timeline of a bucket
    /// with marks is compared: its history file's name is known ahead.
    NoMark,
}

impl Marks {
    /// The marks kept in `dir` (none yet, or no directory: nothing known).
    pub fn load(dir: Option<&Path>) -> Result<Marks> {
        let Some(dir) = dir else {
            return Ok(Marks {
                path: None,
                loaded: BTreeMap::new(),
                marks: BTreeMap::new(),
            });
        };
        let path = dir.join(FILE);
        let mut marks = BTreeMap::new();
        let absent = matches!(path.symlink_metadata(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound);
        if !absent {
            let bytes = opskit::safefs::read_regular(&path, MAX)?;
            for line in String::from_utf8_lossy(&bytes).lines() {
                let mut it = line.split('\t');
                if let (Some(url), Some(tli), Some(name), None) =
                    (it.next(), it.next(), it.next(), it.next())
                {
                    marks.insert((url.to_string(), tli.to_string()), name.to_string());
                }
            }
        }
        Ok(Marks {
            path: Some(path),
            loaded: marks.clone(),
            marks,
        })
    }

    pub fn known(&self, url: &str, tli: &str, name: &str) -> Known {
        // Only a segment is archived in the order of its name: a history
        // file or a backup label (`X.OFFSET.backup`, archived after the
        // segments past X) is always compared, one small file each.
        let segment = name.len() == 24 && name.bytes().all(|b| b.is_ascii_hexdigit());
        match self.loaded.get(&(url.to_string(), tli.to_string())) {
            Some(m) if segment && name <= m.as_str() => Known::Confirmed,
            Some(_) => Known::Unchecked,
            None if self.loaded.keys().any(|(u, _)| u == url) => Known::Unchecked,
            None => Known::NoMark,
        }
    }

    /// `name` of `tli` confirmed in the bucket at `url` (every earlier one
    /// too: call it in order).
    pub fn confirm(&mut self, url: &str, tli: &str, name: &str) {
        let slot = self
            .marks
            .entry((url.to_string(), tli.to_string()))
            .or_default();
        if name > slot.as_str() {
            *slot = name.to_string();
        }
    }

    /// Write the marks back (nothing without a state directory).
    pub fn save(&self) -> Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let text: String = self
            .marks
            .iter()
            .map(|((url, tli), name)| format!("{url}\t{tli}\t{name}\n"))
            .collect();
        opskit::durable::write_file(path, 0o600, text.as_bytes())
            .map_err(|e| Error::failure(format!("{}: {}", path.display(), e.msg)))
    }
}
