//! Splitting SQL into statements the way PostgreSQL's lexer sees them, for
//! `transaction:false` sections, where each statement must run on its own
//! (`CREATE INDEX CONCURRENTLY` refuses to run inside a multi-statement
//! query). Handles single quotes (with `''`), `E''` strings (with
//! backslash escapes), double-quoted identifiers, dollar quotes with tags,
//! line comments and nested block comments.

/// A piece of the input: its exact text (the `;` included) and the 0-based
/// line it starts on. Joining every piece's text gives the input back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece<'a> {
    pub text: &'a str,
    pub line: usize,
}

impl Piece<'_> {
    /// Whether the piece holds SQL, not only whitespace and comments.
    pub fn is_statement(&self) -> bool {
        !strip_comments(self.text)
            .trim()
            .trim_end_matches(';')
            .trim()
            .is_empty()
    }

    /// The line the statement itself starts on (after leading blank lines
    /// and comments).
    pub fn first_code_line(&self) -> usize {
        let code = strip_comments(self.text);
        let lead = code.len() - code.trim_start().len();
        self.line + self.text[..lead.min(self.text.len())].matches('\n').count()
    }
}

/// Replace comments with spaces (keeping newlines and byte offsets).
fn strip_comments(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let end = skip_token(b, i);
        let tok = &s[i..end];
        if tok.starts_with("--") || tok.starts_with("/*") {
            out.extend(tok.chars().map(|c| if c == '\n' { '\n' } else { ' ' }));
        } else {
            out.push_str(tok);
        }
        i = end;
    }
    out
}

/// The end of the token starting at `i`: a quoted string, identifier,
/// dollar-quoted body or comment as a whole; any other character alone.
fn skip_token(b: &[u8], i: usize) -> usize {
    let n = b.len();
    match b[i] {
        b'-' if b.get(i + 1) == Some(&b'-') => {
            let mut j = i + 2;
            while j < n && b[j] != b'\n' {
                j += 1;
            }
            j
        }
        b'/' if b.get(i + 1) == Some(&b'*') => {
            let mut depth = 1;
            let mut j = i + 2;
            while j < n && depth > 0 {
                if b[j] == b'/' && b.get(j + 1) == Some(&b'*') {
                    depth += 1;
                    j += 2;
                } else if b[j] == b'*' && b.get(j + 1) == Some(&b'/') {
                    depth -= 1;
                    j += 2;
                } else {
                    j += 1;
                }
            }
            j
        }
        b'\'' => {
            // E'...' allows backslash escapes; the E is the previous byte.
            let escapes =
                i > 0 && matches!(b[i - 1], b'e' | b'E') && (i < 2 || !is_ident(b[i - 2]));
            let mut j = i + 1;
            while j < n {
                if escapes && b[j] == b'\\' {
                    j += 2;
                    continue;
                }
                if b[j] == b'\'' {
                    if b.get(j + 1) == Some(&b'\'') {
                        j += 2;
                        continue;
                    }
                    return j + 1;
                }
                j += 1;
            }
            n
        }
        b'"' => {
            let mut j = i + 1;
            while j < n {
                if b[j] == b'"' {
                    if b.get(j + 1) == Some(&b'"') {
                        j += 2;
                        continue;
                    }
                    return j + 1;
                }
                j += 1;
            }
            n
        }
        b'$' if i == 0 || !is_ident(b[i - 1]) => match dollar_tag(b, i) {
            Some(tag_end) => {
                let tag = &b[i..tag_end];
                let mut j = tag_end;
                while j + tag.len() <= n {
                    if &b[j..j + tag.len()] == tag {
                        return j + tag.len();
                    }
                    j += 1;
                }
                n
            }
            None => i + 1,
        },
        _ => {
            // Keep multi-byte UTF-8 characters whole.
            let mut j = i + 1;
            while j < n && (b[j] & 0xC0) == 0x80 {
                j += 1;
            }
            j
        }
    }
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80
}

/// `$tag$` or `$$` starting at `i`: the index after the closing `$`.
fn dollar_tag(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    if j < b.len() && b[j].is_ascii_digit() {
        return None; // $1 is a parameter
    }
    while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_' || b[j] >= 0x80) {
        j += 1;
    }
    (j < b.len() && b[j] == b'$').then_some(j + 1)
}

/// Split into pieces ending after each top-level `;` (the last piece may
/// have no `;`).
pub fn split(sql: &str) -> Vec<Piece<'_>> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let (mut start, mut line, mut start_line) = (0, 0, 0);
    let mut i = 0;
    while i < b.len() {
        let end = skip_token(b, i);
        line += sql[i..end].matches('\n').count();
        if b[i] == b';' {
            out.push(Piece {
                text: &sql[start..end],
                line: start_line,
            });
            start = end;
            start_line = line;
        }
        i = end;
    }
    if start < sql.len() {
        out.push(Piece {
            text: &sql[start..],
            line: start_line,
        });
    }
    out
}

/// Only the pieces that hold SQL.
pub fn statements(sql: &str) -> Vec<Piece<'_>> {
    split(sql).into_iter().filter(Piece::is_statement).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use opskit_testkit::tools::Rng;

    fn texts(sql: &str) -> Vec<String> {
        statements(sql)
            .iter()
            .map(|p| p.text.trim().to_string())
            .collect()
    }

    #[test]
    fn every_quoting_form() {
        let cases: Vec<(&str, Vec<&str>)> = vec![
            ("select 1; select 2;", vec!["select 1;", "select 2;"]),
            ("select 'a;b'; select 2", vec!["select 'a;b';", "select 2"]),
            ("select 'it''s;'; x;", vec!["select 'it''s;';", "x;"]),
            (r"select E'a\';b'; x;", vec![r"select E'a\';b';", "x;"]),
            (r"select 'a\'; x;", vec![r"select 'a\';", "x;"]),
            (
                "select \"we;ird\"\"id\" from t; x;",
                vec!["select \"we;ird\"\"id\" from t;", "x;"],
            ),
            (
                "create function f() returns int as $$ select 1; $$ language sql; x;",
                vec![
                    "create function f() returns int as $$ select 1; $$ language sql;",
                    "x;",
                ],
            ),
            (
                "do $body$ begin perform 1; end $body$; x;",
                vec!["do $body$ begin perform 1; end $body$;", "x;"],
            ),
            ("select $1; x;", vec!["select $1;", "x;"]),
            ("select a$b; x;", vec!["select a$b;", "x;"]),
            (
                "-- c;\nselect 1; -- trailing; comment\nx;",
                vec!["-- c;\nselect 1;", "-- trailing; comment\nx;"],
            ),
            (
                "/* a /* nested; */ still; */ select 1; x;",
                vec!["/* a /* nested; */ still; */ select 1;", "x;"],
            ),
            (
                "select 'ü;'; select 'é';",
                vec!["select 'ü;';", "select 'é';"],
            ),
            ("  \n-- only a comment\n", vec![]),
            (";;", vec![]),
        ];
        for (sql, want) in cases {
            assert_eq!(texts(sql), want, "{sql}");
        }
    }

    #[test]
    fn lines_are_tracked() {
        let sql =
            "create table a (x int);\n\n-- the index\ncreate index concurrently i on a (x);\n";
        let st = statements(sql);
        assert_eq!(st.len(), 2);
        assert_eq!(st[0].first_code_line(), 0);
        assert_eq!(st[1].first_code_line(), 3);
    }

    /// xorshift, so the property test is repeatable without a crate.

    #[test]
    fn splitting_then_joining_round_trips() {
        let atoms = [
            "select 1",
            ";",
            " ",
            "\n",
            "'a;b'",
            "''",
            "E'\\''",
            "\"q;\"",
            "$$x;$$",
            "$t$ $$ ; $t$",
            "-- c;\n",
            "/* x; /* y */ */",
            "'unterminated",
            "$",
            "e'",
            "ü",
            "\"",
            "/*",
            "--",
            "$q$",
            ";\n",
        ];
        let mut rng = Rng(0xdead_beef_cafe_f00d);
        for _ in 0..5000 {
            let n = (rng.next_u64() % 12) as usize;
            let s: String = (0..n)
                .map(|_| atoms[(rng.next_u64() % atoms.len() as u64) as usize])
                .collect();
            let joined: String = split(&s).iter().map(|p| p.text).collect();
            assert_eq!(joined, s);
            for p in split(&s) {
                let ends_with_semicolon = p.text.ends_with(';');
                let is_last = std::ptr::eq(
                    p.text.as_ptr().wrapping_add(p.text.len()),
                    s.as_ptr().wrapping_add(s.len()),
                );
                assert!(ends_with_semicolon || is_last, "{s:?} -> {p:?}");
            }
        }
    }
}
