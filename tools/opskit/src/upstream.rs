//! The records a tool reads on stdin from the step before it
//! (`pgbackup | verify-backup | offsite push`), read one way: each line is
//! classified by the tool; an upstream failure is passed on down the pipe
//! and fails this run too; a line that is not a record is named (a few on
//! stderr, each as an `error` record) and fails the run, never skipped
//! silently.

use crate::reader::{self, Line, LineError};
use crate::records::ErrorRecord;
use crate::{Emitter, Result};

/// What one upstream record means to the tool reading it.
pub enum Upstream<T> {
    /// Work for this tool (a set to verify or push).
    Work(T),
    /// The step before failed: the record to pass on.
    Failed(ErrorRecord),
    /// Nothing for this tool (a summary, another kind of record).
    Nothing,
}

/// What stdin held: the work, and how many failures (upstream ones and
/// lines that are not records) the run must answer for.
pub struct Read<T> {
    pub work: Vec<T>,
    pub failures: usize,
}

/// Read stdin to its end, bounded as every record stream is.
pub fn read<T>(
    em: &mut Emitter,
    mut classify: impl FnMut(&Line) -> std::result::Result<Upstream<T>, LineError>,
) -> Result<Read<T>> {
    let mut rd = reader::open(None)?;
    let mut bad = reader::BadLines::new("stdin");
    let mut out = Read {
        work: Vec::new(),
        failures: 0,
    };
    for item in rd.by_ref() {
        match item.and_then(|line| classify(&line)) {
            Ok(Upstream::Work(w)) => out.work.push(w),
            Ok(Upstream::Nothing) => {}
            Ok(Upstream::Failed(rec)) => {
                out.failures += 1;
                em.emit(&rec)?;
            }
            Err(e) => {
                out.failures += 1;
                bad.note(&e);
                em.emit(&ErrorRecord::new(e.to_string()).line(e.line, None))?;
            }
        }
    }
    bad.finish();
    match rd.take_io_error() {
        Some(e) => Err(e),
        None => Ok(out),
    }
}
