//! The record stream: one JSON object per line on stdout, flushed per line.
//!
//! Every record starts with `event`, `tool` and `ts` (RFC 3339, UTC, `Z`);
//! the fields of its type follow (the types are in [`crate::records`]). A
//! closed pipe on stdout (`tool | head -1`) is returned as an error that
//! ends the run quietly with status 0, as it does for other Unix tools; the
//! caller's cleanup guards still run on the way out.

use std::io::{self, Write};
use std::time::Instant;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::{Error, Exit, Result};

/// Keys every record carries, owned by the emitter.
pub const RESERVED: [&str; 3] = ["event", "tool", "ts"];

/// A JSON object: the fields a record passes through, and the dynamic
/// parts of a record (a check's `values`).
pub type Fields = Map<String, Value>;

/// A record type: its `event` name and its fields (serde).
///
/// A type that passes fields through declares its flattened `extra` map
/// *first*, so that its own fields, serialized after it, win on conflict.
pub trait Record: Serialize {
    const EVENT: &'static str;
}

/// What a completed run hands back to `main`: its exit status and the
/// tool's own counts, which `main` writes as the closing `summary`.
#[derive(Debug)]
pub struct Done<C> {
    pub exit: Exit,
    pub counts: C,
}

impl<C> Done<C> {
    pub fn new(exit: Exit, counts: C) -> Self {
        Done { exit, counts }
    }
}

/// Writes records for one tool.
pub struct Emitter {
    tool: &'static str,
    out: Box<dyn Write + Send>,
    to_stdout: bool,
    clock: fn() -> String,
    started: Instant,
    muted: bool,
}

/// Seconds as records carry them (`duration_s`, `*_s`): rounded to the
/// millisecond.
pub fn round_ms(secs: f64) -> f64 {
    (secs * 1000.0).round() / 1000.0
}

/// A duration as records carry it: float seconds to the millisecond.
pub fn secs(d: std::time::Duration) -> f64 {
    round_ms(d.as_secs_f64())
}

/// The current time as records carry it: RFC 3339, UTC, millisecond precision, `Z`.
pub fn now_ts() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A record as a JSON object (for passing its fields on in another record).
pub fn to_fields<T: Serialize>(value: &T) -> Fields {
    match serde_json::to_value(value) {
        Ok(Value::Object(m)) => m,
        _ => Fields::new(),
    }
}

/// Read a record type from a JSON object, naming the field that does not
/// fit: "field `checks[0].ok`: invalid type: string \"yes\", expected a boolean".
pub fn from_fields<T: DeserializeOwned>(fields: Fields) -> std::result::Result<T, String> {
    serde_path_to_error::deserialize(Value::Object(fields)).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            inner.to_string()
        } else {
            format!("field `{path}`: {inner}")
        }
    })
}

impl Emitter {
    /// Records on stdout.
    pub fn stdout(tool: &'static str) -> Self {
        Self::new(tool, Box::new(io::stdout()), true)
    }

    /// Records into any writer (tests, or a file).
    pub fn to_writer(tool: &'static str, out: Box<dyn Write + Send>) -> Self {
        Self::new(tool, out, false)
    }

    fn new(tool: &'static str, out: Box<dyn Write + Send>, to_stdout: bool) -> Self {
        Emitter {
            tool,
            out,
            to_stdout,
            clock: now_ts,
            started: Instant::now(),
            muted: false,
        }
    }

    /// Use a fixed clock (tests).
    pub fn with_clock(mut self, clock: fn() -> String) -> Self {
        self.clock = clock;
        self
    }

    /// Write no more records (healthcheck `--nagios` prints its own line).
    pub fn mute(&mut self) {
        self.muted = true;
    }

    /// The tool this emitter writes for.
    pub fn tool(&self) -> &'static str {
        self.tool
    }

    /// Seconds since the emitter was made (the start of the run).
    pub fn elapsed_s(&self) -> f64 {
        secs(self.started.elapsed())
    }

    /// Build the JSON line for a record without writing it.
    pub fn render<R: Record>(&self, record: &R) -> String {
        let mut line = String::with_capacity(256);
        line.push_str("{\"event\":");
        line.push_str(&Value::from(R::EVENT).to_string());
        line.push_str(",\"tool\":");
        line.push_str(&Value::from(self.tool).to_string());
        line.push_str(",\"ts\":\"");
        line.push_str(&(self.clock)());
        line.push('"');
        for (k, v) in to_fields(record) {
            if RESERVED.contains(&k.as_str()) {
                continue;
            }
            line.push(',');
            line.push_str(&Value::from(k).to_string());
            line.push(':');
            line.push_str(&v.to_string());
        }
        line.push('}');
        line
    }

    /// Write one record and flush it.
    ///
    /// A closed pipe is [`Error::stdout_closed`] (the run ends quietly with
    /// status 0); any other failure to write the record stream is a failure
    /// (status 2): a tool whose records are lost cannot tell its caller
    /// what it did.
    pub fn emit<R: Record>(&mut self, record: &R) -> Result<()> {
        if self.muted {
            return Ok(());
        }
        let mut line = self.render(record);
        line.push('\n');
        let res = self
            .out
            .write_all(line.as_bytes())
            .and_then(|()| self.out.flush());
        res.map_err(|e| {
            if e.kind() == io::ErrorKind::BrokenPipe {
                Error::stdout_closed()
            } else {
                let dest = if self.to_stdout { "stdout" } else { "output" };
                Error::failure(format!("cannot write records to {dest}: {e}"))
            }
        })
    }

    /// The closing `summary` of a run: `ok`, the tool's counts, `duration_s`.
    pub fn summary<C: Serialize>(&mut self, ok: bool, counts: C) -> Result<()> {
        let duration_s = self.elapsed_s();
        self.emit(&crate::records::Summary {
            ok,
            counts,
            duration_s,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{ErrorRecord, Summary};
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    struct Closed;
    impl Write for Closed {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn fixed() -> String {
        "2026-11-23T08:00:00.000Z".into()
    }

    #[derive(Serialize)]
    struct Counts {
        sets: u64,
    }

    #[test]
    fn header_first_then_fields_one_line_each() {
        let buf = Buf::default();
        let mut em = Emitter::to_writer("pgbackup", Box::new(buf.clone())).with_clock(fixed);
        em.emit(&ErrorRecord::new("boom").exit(2)).unwrap();
        em.emit(&Summary {
            ok: true,
            counts: Counts { sets: 1 },
            duration_s: 0.5,
        })
        .unwrap();
        let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0],
            r#"{"event":"error","tool":"pgbackup","ts":"2026-11-23T08:00:00.000Z","ok":false,"exit":2,"message":"boom"}"#
        );
        assert_eq!(
            lines[1],
            r#"{"event":"summary","tool":"pgbackup","ts":"2026-11-23T08:00:00.000Z","ok":true,"sets":1,"duration_s":0.5}"#
        );
        assert!(out.ends_with('\n'));
    }

    #[test]
    fn pass_through_fields_cannot_overwrite_header_or_own_fields() {
        let em = Emitter::to_writer("prune", Box::new(io::sink())).with_clock(fixed);
        let mut rec = ErrorRecord::new("mine");
        rec.extra = serde_json::from_str(
            r#"{"event":"backup","tool":"x","ts":"old","message":"theirs","job":"nightly"}"#,
        )
        .unwrap();
        let v: Value = serde_json::from_str(&em.render(&rec)).unwrap();
        assert_eq!(v["event"], "error");
        assert_eq!(v["tool"], "prune");
        assert_eq!(v["ts"], "2026-11-23T08:00:00.000Z");
        assert_eq!(v["message"], "mine");
        assert_eq!(v["job"], "nightly");
    }

    #[test]
    fn a_closed_pipe_is_an_error_for_main_not_an_exit() {
        let mut em = Emitter::to_writer("t", Box::new(Closed));
        let e = em.emit(&ErrorRecord::new("x")).unwrap_err();
        assert!(e.is_stdout_closed(), "{e:?}");
        assert_eq!(e.exit, Exit::Ok);
    }

    #[test]
    fn ts_is_rfc3339_utc() {
        let ts = now_ts();
        assert!(ts.ends_with('Z'), "{ts}");
        chrono::DateTime::parse_from_rfc3339(&ts).unwrap();
    }

    #[test]
    fn strings_are_escaped() {
        let em = Emitter::to_writer("t", Box::new(io::sink())).with_clock(fixed);
        let line = em.render(&ErrorRecord::new("a\nb\"c"));
        assert!(!line.contains('\n'));
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["message"], "a\nb\"c");
    }

    #[test]
    fn from_fields_names_the_field() {
        let f: Fields = serde_json::from_str(r#"{"ok":"yes","message":"m"}"#).unwrap();
        let e = from_fields::<ErrorRecord>(f).unwrap_err();
        assert!(e.starts_with("field `ok`: invalid type"), "{e}");
        let f: Fields = serde_json::from_str(r#"{"ok":false}"#).unwrap();
        let e = from_fields::<ErrorRecord>(f).unwrap_err();
        assert!(e.contains("missing field `message`"), "{e}");
    }
}
