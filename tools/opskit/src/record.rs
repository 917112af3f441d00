//! The record stream: one JSON object per line on stdout, flushed per line.
//!
//! Every record starts with `event`, `tool` and `ts` (RFC 3339, UTC, `Z`);
//! the tool's fields follow. A closed pipe on stdout (`tool | head -1`) ends
//! the process quietly with status 0, as it does for other Unix tools.

use std::io::{self, Write};

use serde_json::{Map, Value};

/// Keys every record carries, owned by the emitter.
pub const RESERVED: [&str; 3] = ["event", "tool", "ts"];

/// A JSON object, the shape of every record.
pub type Fields = Map<String, Value>;

/// Writes records for one tool.
pub struct Emitter {
    tool: &'static str,
    out: Box<dyn Write + Send>,
    to_stdout: bool,
    clock: fn() -> String,
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

impl Emitter {
    /// Records on stdout.
    pub fn stdout(tool: &'static str) -> Self {
        Emitter {
            tool,
            out: Box::new(io::stdout()),
            to_stdout: true,
            clock: now_ts,
        }
    }

    /// Records into any writer (tests, or a file).
    pub fn to_writer(tool: &'static str, out: Box<dyn Write + Send>) -> Self {
        Emitter {
            tool,
            out,
            to_stdout: false,
            clock: now_ts,
        }
    }

    /// Use a fixed clock (tests).
    pub fn with_clock(mut self, clock: fn() -> String) -> Self {
        self.clock = clock;
        self
    }

    /// Build the JSON line for a record without writing it.
    pub fn render(&self, event: &str, fields: &Fields) -> String {
        let mut line = String::with_capacity(256);
        line.push_str("{\"event\":");
        line.push_str(&Value::from(event).to_string());
        line.push_str(",\"tool\":");
        line.push_str(&Value::from(self.tool).to_string());
        line.push_str(",\"ts\":\"");
        line.push_str(&(self.clock)());
        line.push('"');
        for (k, v) in fields {
            if RESERVED.contains(&k.as_str()) {
                continue;
            }
            line.push(',');
            line.push_str(&Value::from(k.as_str()).to_string());
            line.push(':');
            line.push_str(&v.to_string());
        }
        line.push('}');
        line
    }

    /// Write one record and flush it.
    ///
    /// A broken pipe ends the process with status 0; any other failure to
    /// write the record stream ends it with status 2, because a tool whose
    /// records are lost cannot tell its caller what it did.
    pub fn emit(&mut self, event: &str, fields: &Fields) {
        let mut line = self.render(event, fields);
        line.push('\n');
        let res = self
            .out
            .write_all(line.as_bytes())
            .and_then(|()| self.out.flush());
        if let Err(e) = res {
            if e.kind() == io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
            let dest = if self.to_stdout { "stdout" } else { "output" };
            eprintln!("{}: cannot write records to {dest}: {e}", self.tool);
            std::process::exit(2);
        }
    }
}

/// Merge a tool's own fields over an incoming record's, so a pipeline keeps
/// the context it carried: the incoming fields come first, the tool's own
/// win on conflict, and the reserved keys are left to the emitter.
pub fn pass_through(incoming: &Fields, own: Fields) -> Fields {
    let mut out = Fields::new();
    for (k, v) in incoming {
        if !RESERVED.contains(&k.as_str()) && !own.contains_key(k) {
            out.insert(k.clone(), v.clone());
        }
    }
    out.extend(own);
    out
}

/// `fields!{"a" => 1, "b" => "x"}` builds a [`Fields`] map.
#[macro_export]
macro_rules! fields {
    ($($k:expr => $v:expr),* $(,)?) => {{
        #[allow(unused_mut)]
        let mut m = $crate::record::Fields::new();
        $( m.insert(String::from($k), ::serde_json::json!($v)); )*
        m
    }};
}

#[cfg(test)]
mod tests {
    use super::*;
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

    fn fixed() -> String {
        "2026-11-23T08:00:00.000Z".into()
    }

    #[test]
    fn header_first_then_fields_one_line_each() {
        let buf = Buf::default();
        let mut em = Emitter::to_writer("pgbackup", Box::new(buf.clone())).with_clock(fixed);
        em.emit("backup", &fields! {"ok" => true, "bytes" => 12});
        em.emit("summary", &fields! {"sets" => 1});
        let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0],
            r#"{"event":"backup","tool":"pgbackup","ts":"2026-11-23T08:00:00.000Z","ok":true,"bytes":12}"#
        );
        assert_eq!(lines.len(), 2);
        assert!(out.ends_with('\n'));
    }

    #[test]
    fn fields_cannot_overwrite_header() {
        let em = Emitter::to_writer("prune", Box::new(io::sink())).with_clock(fixed);
        let line = em.render(
            "prune",
            &fields! {"event" => "backup", "tool" => "x", "path" => "/b"},
        );
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["event"], "prune");
        assert_eq!(v["tool"], "prune");
        assert_eq!(v["path"], "/b");
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
        let line = em.render("error", &fields! {"message" => "a\nb\"c"});
        assert!(!line.contains('\n'));
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["message"], "a\nb\"c");
    }

    #[test]
    fn pass_through_keeps_unknown_fields_and_own_win() {
        let incoming = fields! {"event" => "backup", "ts" => "old", "set" => "a", "ok" => true, "job" => "nightly"};
        let own = fields! {"ok" => false, "depth" => "quick"};
        let merged = pass_through(&incoming, own);
        assert_eq!(merged["job"], "nightly");
        assert_eq!(merged["set"], "a");
        assert_eq!(merged["ok"], false);
        assert!(!merged.contains_key("event"));
        assert!(!merged.contains_key("ts"));
    }
}
