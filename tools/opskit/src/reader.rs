//! Reading the records a tool consumes: NDJSON from stdin or a file.
//!
//! Each line yields either the record (every field kept, so unknown fields
//! can be passed through; [`Line::parse`] reads it as its type from
//! [`crate::records`]) or an error naming the line number. Blank lines are
//! skipped. A line longer than [`MAX_LINE`] is refused without being held in
//! memory, so hostile input cannot exhaust it.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::Path;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::record::{Fields, from_fields};
use crate::{Error, IoContext};

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
    line: usize,
    buf: Vec<u8>,
    failed: Option<io::Error>,
}

/// Open the records named by an operand: `None` or `-` is stdin.
pub fn open(operand: Option<&str>) -> crate::Result<RecordReader<Box<dyn BufRead>>> {
    let inner: Box<dyn BufRead> = match operand {
        None | Some("-") => Box::new(BufReader::new(io::stdin())),
        Some(p) => {
            let path = Path::new(p);
            Box::new(BufReader::new(File::open(path).at("opening", path)?))
        }
    };
    Ok(RecordReader::new(inner))
}

impl<R: BufRead> RecordReader<R> {
    pub fn new(inner: R) -> Self {
        RecordReader {
            inner,
            line: 0,
            buf: Vec::new(),
            failed: None,
        }
    }

    /// A read error that ended the stream early, if any.
    pub fn take_io_error(&mut self) -> Option<Error> {
        self.failed
            .take()
            .map(|e| Error::failure(format!("reading records: {e}")))
    }

    /// Read one line into `buf`, at most `MAX_LINE` bytes kept; returns
    /// (bytes seen, too long).
    fn read_line(&mut self) -> io::Result<(usize, bool)> {
        self.buf.clear();
        let mut seen = 0;
        let mut too_long = false;
        loop {
            let chunk = self.inner.fill_buf()?;
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
            let (seen, too_long) = match self.read_line() {
                Ok(x) => x,
                Err(e) => {
                    self.failed = Some(e);
                    return None;
                }
            };
            if seen == 0 {
                return None;
            }
            self.line += 1;
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
    fn truncated_last_line_is_an_error() {
        let out = read(b"{\"a\":1}\n{\"b\":");
        assert!(out[1].is_err());
        assert_eq!(out[1].as_ref().unwrap_err().line, 2);
    }
}
