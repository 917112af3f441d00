//! Reading the records a tool consumes: NDJSON from stdin or a file.
//!
//! Each line yields either the record (every field kept, so unknown fields
//! can be passed through; [`Line::parse`] reads it as its type from
//! [`crate::records`]) or an error naming the line number. Blank lines are
//! skipped. A line longer than [`MAX_LINE`] is refused without being held in
//! memory, so hostile input cannot exhaust it; stdin, whose records a
//! consumer holds until the stream ends, is read to at most [`MAX_LINES`]
//! lines and [`MAX_BYTES`], and a file only when it is a regular one.
//! [`BadLines`] tells stderr about the lines that are not records without
//! repeating itself for each of them.

use std::io::{self, BufRead, BufReader};
use std::path::Path;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::Error;
use crate::record::{Fields, from_fields};

/// One record of the input: its line number and its fields (the
/// envelope's `event`, `tool` and `ts` included).
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    /// 1-based line number.
    pub number: usize,
    pub fields: Fields,
}

impl Line {
    /// The record's `event` ("" when it has none).
    pub fn event(&self) -> &str {
        self.fields
            .get("event")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    /// When the record was written (its `ts`), if it says.
    pub fn ts(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        self.fields.get("ts")?.as_str()?.parse().ok()
    }

    /// The record read as the type its consumer expects; one that does not
    /// fit is a [`LineError`] naming the line and the field.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, LineError> {
        from_fields(self.fields.clone()).map_err(|msg| LineError {
            line: self.number,
            msg: format!("{} record: {msg}", self.event_or("untyped")),
        })
    }

    fn event_or<'a>(&'a self, default: &'a str) -> &'a str {
        match self.event() {
            "" => default,
            e => e,
        }
    }
}

/// The longest record line accepted.
pub const MAX_LINE: usize = 1 << 20;

/// The most lines read from stdin: a consumer holds what it read until the
/// stream ends, and a pipeline's records are a few per set.
pub const MAX_LINES: usize = 100_000;

/// The most bytes read from stdin.
pub const MAX_BYTES: u64 = 16 << 20;

/// Bad lines described one by one on stderr; the rest are counted.
pub const SHOWN_BAD_LINES: usize = 5;

/// A line that is not a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    /// 1-based line number.
    pub line: usize,
    pub msg: String,
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.msg)
    }
}

/// An iterator over the records of a stream.
pub struct RecordReader<R> {
    inner: R,
    /// What the stream is, for messages (`stdin`, a path).
    source: String,
    line: usize,
    bytes: u64,
    max_lines: usize,
    max_bytes: u64,
    buf: Vec<u8>,
    failed: Option<Error>,
    /// A read error or a bound ended the stream: no more lines.
    ended: bool,
}

/// Open the records named by an operand: `None` or `-` is stdin (read to
/// at most [`MAX_LINES`] and [`MAX_BYTES`]); a file must be a regular one.
pub fn open(operand: Option<&str>) -> crate::Result<RecordReader<Box<dyn BufRead>>> {
    Ok(match operand {
        None | Some("-") => {
            let stdin: Box<dyn BufRead> = Box::new(BufReader::new(io::stdin()));
            RecordReader::new(stdin)
                .named("stdin")
                .bounded(MAX_LINES, MAX_BYTES)
        }
        Some(p) => {
            let file = crate::safefs::open_regular(Path::new(p))?;
            let file: Box<dyn BufRead> = Box::new(BufReader::new(file));
            RecordReader::new(file).named(p)
        }
    })
}

impl<R: BufRead> RecordReader<R> {
    /// A reader of `inner` with no bound but the line length.
    pub fn new(inner: R) -> Self {
        RecordReader {
            inner,
            source: "input".into(),
            line: 0,
            bytes: 0,
            max_lines: usize::MAX,
            max_bytes: u64::MAX,
            buf: Vec::new(),
            failed: None,
            ended: false,
        }
    }

    /// Name the stream in messages (`stdin`, a path).
    pub fn named(mut self, source: impl Into<String>) -> Self {
        self.source = source.into();
        self
    }

    /// Stop after `lines` lines or `bytes` bytes: the stream is then
    /// refused ([`Self::take_io_error`] says so, naming the bound).
    pub fn bounded(mut self, lines: usize, bytes: u64) -> Self {
        self.max_lines = lines;
        self.max_bytes = bytes;
        self
    }

    /// What ended the stream early, if anything did: a read error, or a
    /// bound of [`Self::bounded`] (a failure, exit 2).
    pub fn take_io_error(&mut self) -> Option<Error> {
        self.failed.take()
    }

    fn too_much(&self, what: String) -> Error {
        Error::failure(format!(
            "{}: more than {what}: refused (a record stream is read to at most {} lines and {})",
            self.source,
            self.max_lines,
            crate::units::format_size(self.max_bytes)
        ))
    }

    /// Read one line into `buf`, at most `MAX_LINE` bytes kept; returns
    /// (bytes seen, too long).
    fn read_line(&mut self) -> crate::Result<(usize, bool)> {
        self.buf.clear();
        let mut seen = 0;
        let mut too_long = false;
        loop {
            let chunk = match self.inner.fill_buf() {
                Ok(c) => c,
                Err(e) => {
                    let msg = format!("reading records from {}: {e}", self.source);
                    return Err(Error::failure(msg));
                }
            };
            if chunk.is_empty() {
                return Ok((seen, too_long));
            }
            let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (chunk.len(), false),
            };
            if !too_long {
                if self.buf.len() + take > MAX_LINE + 1 {
                    too_long = true;
                    self.buf.clear();
                } else {
                    self.buf.extend_from_slice(&chunk[..take]);
                }
            }
            seen += take;
            self.inner.consume(take);
            self.bytes += take as u64;
            if self.bytes > self.max_bytes {
                return Err(self.too_much(crate::units::format_size(self.max_bytes)));
            }
            if done {
                return Ok((seen, too_long));
            }
        }
    }
}

impl<R: BufRead> Iterator for RecordReader<R> {
    type Item = Result<Line, LineError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.ended {
                return None;
            }
            let (seen, too_long) = match self.read_line() {
                Ok(x) => x,
                Err(e) => {
                    (self.failed, self.ended) = (Some(e), true);
                    return None;
                }
            };
            if seen == 0 {
                return None;
            }
            self.line += 1;
            if self.line > self.max_lines {
                let e = self.too_much(format!("{} lines", self.max_lines));
                (self.failed, self.ended) = (Some(e), true);
                return None;
            }
            let err = |msg: String| {
                Some(Err(LineError {
                    line: self.line,
                    msg,
                }))
            };
            if too_long {
                return err(format!("line longer than {MAX_LINE} bytes"));
            }
            let text = match std::str::from_utf8(&self.buf) {
                Ok(t) => t.trim(),
                Err(_) => return err("not valid UTF-8".into()),
            };
            if text.is_empty() {
                continue;
            }
            return match serde_json::from_str::<Value>(text) {
                Ok(Value::Object(fields)) => Some(Ok(Line {
                    number: self.line,
                    fields,
                })),
                Ok(_) => err("not a JSON object".into()),
                Err(e) => err(format!("not JSON: {e}")),
            };
        }
    }
}

/// The lines of a stream that are not records. Each one is still an
/// `error` record on stdout (the consumer emits it: the record stream's
/// contract); on stderr the first [`SHOWN_BAD_LINES`] are described and
/// [`BadLines::finish`] counts the rest in one line.
#[derive(Debug)]
pub struct BadLines {
    source: String,
    count: usize,
}

impl BadLines {
    /// For the lines of `source` (`stdin`, a path).
    pub fn new(source: impl Into<String>) -> Self {
        BadLines {
            source: source.into(),
            count: 0,
        }
    }

    /// Count a line that is not a record (or not one the consumer can
    /// use); describe it on stderr while few have been.
    pub fn note(&mut self, e: &LineError) {
        if let Some(msg) = self.describe(e) {
            log::error!("{msg}");
        }
    }

    /// How many lines were noted.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Say on stderr how many bad lines were not described, if any.
    pub fn finish(&self) {
        if let Some(msg) = self.rest() {
            log::error!("{msg}");
        }
    }

    fn describe(&mut self, e: &LineError) -> Option<String> {
        self.count += 1;
        (self.count <= SHOWN_BAD_LINES).then(|| format!("{} {e}", self.source))
    }

    fn rest(&self) -> Option<String> {
        let more = self.count.checked_sub(SHOWN_BAD_LINES).filter(|&n| n > 0)?;
        Some(format!(
            "{}: … and {more} more lines that are not records ({} in all)",
            self.source, self.count
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(input: &[u8]) -> Vec<Result<Fields, LineError>> {
        RecordReader::new(input)
            .map(|r| r.map(|l| l.fields))
            .collect()
    }

    #[test]
    fn lines_know_their_number_and_parse_as_their_type() {
        let input = b"\n{\"event\":\"error\",\"ok\":false,\"message\":\"m\"}\n{\"event\":\"error\",\"ok\":1}\n";
        let lines: Vec<Line> = RecordReader::new(&input[..]).map(Result::unwrap).collect();
        assert_eq!(lines[0].number, 2);
        assert_eq!(lines[0].event(), "error");
        let e: crate::records::ErrorRecord = lines[0].parse().unwrap();
        assert_eq!(e.message, "m");
        let err = lines[1].parse::<crate::records::ErrorRecord>().unwrap_err();
        assert_eq!(err.line, 3);
        assert!(
            err.msg
                .starts_with("error record: field `ok`: invalid type"),
            "{}",
            err.msg
        );
    }

    #[test]
    fn records_and_errors_with_line_numbers() {
        let input = b"{\"event\":\"backup\",\"path\":\"/b/1\",\"x_extra\":[1]}\n\
                      not json\n\
                      \n\
                      [1,2]\n\
                      {\"event\":\"backup\",\"path\":\"/b/2\"}";
        let out = read(input);
        assert_eq!(out.len(), 4);
        let first = out[0].as_ref().unwrap();
        assert_eq!(first["x_extra"], serde_json::json!([1]));
        let e = out[1].as_ref().unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.msg.starts_with("not JSON"), "{}", e.msg);
        let e = out[2].as_ref().unwrap_err();
        assert_eq!((e.line, e.msg.as_str()), (4, "not a JSON object"));
        assert_eq!(out[3].as_ref().unwrap()["path"], "/b/2");
    }

    #[test]
    fn crlf_and_whitespace_are_fine() {
        let out = read(b"  {\"a\":1}\r\n");
        assert_eq!(out[0].as_ref().unwrap()["a"], 1);
    }

    #[test]
    fn invalid_utf8_is_a_line_error() {
        let out = read(b"{\"a\":\"\xff\"}\n{\"b\":2}\n");
        assert_eq!(out[0].as_ref().unwrap_err().msg, "not valid UTF-8");
        assert_eq!(out[1].as_ref().unwrap()["b"], 2);
    }

    #[test]
    fn overlong_line_is_refused_and_next_line_still_read() {
        let mut input = vec![b'x'; MAX_LINE * 2];
        input.extend_from_slice(b"\n{\"ok\":true}\n");
        let out = read(&input);
        assert_eq!(out.len(), 2);
        let e = out[0].as_ref().unwrap_err();
        assert_eq!(e.line, 1);
        assert!(e.msg.contains("longer than"));
        assert_eq!(out[1].as_ref().unwrap()["ok"], true);
    }

    #[test]
    fn a_bounded_stream_is_refused_past_its_bound_naming_it() {
        let garbage = b"garbage\n".repeat(20);
        let mut rd = RecordReader::new(&garbage[..])
            .named("stdin")
            .bounded(10, 1 << 20);
        assert_eq!(rd.by_ref().count(), 10);
        assert_eq!(rd.next(), None, "the stream stays ended");
        let e = rd.take_io_error().expect("refused");
        assert_eq!(e.exit, crate::Exit::Failure);
        assert!(
            e.msg.starts_with("stdin: more than 10 lines: refused"),
            "{}",
            e.msg
        );
        // The byte bound holds within a line too: an endless line ends.
        let long = vec![b'x'; 4096];
        let mut rd = RecordReader::new(&long[..])
            .named("stdin")
            .bounded(10, 1000);
        assert_eq!(rd.by_ref().count(), 0);
        let e = rd.take_io_error().expect("refused");
        assert!(e.msg.starts_with("stdin: more than 1000 B"), "{}", e.msg);
        // Within the bounds nothing is refused.
        let mut rd = RecordReader::new(&garbage[..]).bounded(20, 160);
        assert_eq!(rd.by_ref().count(), 20);
        assert!(rd.take_io_error().is_none());
    }

    #[test]
    fn bad_lines_are_described_a_few_times_then_counted() {
        let mut bad = BadLines::new("stdin");
        let e = |line| LineError {
            line,
            msg: "not JSON".into(),
        };
        let said: Vec<String> = (1..=389).filter_map(|n| bad.describe(&e(n))).collect();
        assert_eq!(said.len(), SHOWN_BAD_LINES);
        assert_eq!(said[0], "stdin line 1: not JSON");
        assert_eq!(bad.count(), 389);
        assert_eq!(
            bad.rest().unwrap(),
            "stdin: … and 384 more lines that are not records (389 in all)"
        );
        let mut few = BadLines::new("stdin");
        few.note(&e(1));
        assert_eq!(few.rest(), None);
    }

    #[test]
    fn a_fifo_operand_is_refused_without_blocking() {
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("verified.ndjson");
        let st = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(st.success());
        let e = open(Some(fifo.to_str().unwrap())).err().expect("refused");
        assert!(e.msg.contains("a FIFO, not a regular file"), "{}", e.msg);
    }

    #[test]
    fn truncated_last_line_is_an_error() {
        let out = read(b"{\"a\":1}\n{\"b\":");
        assert!(out[1].is_err());
        assert_eq!(out[1].as_ref().unwrap_err().line, 2);
    }
}
