//! Lines → events or rejections: CSV with a header row (RFC 4180 through the `csv`
//! crate: quotes, separators and newlines inside quotes, a UTF-8 BOM) and NDJSON. Pure
//! and synchronous: the pipeline runs it on a blocking thread over a `Read`, so a file is
//! streamed, never held whole in memory. A bad line is a rejection with its line number
//! and reason, never the end of the file; only an unreadable file (I/O, a header that
//! cannot name columns, a record beyond any sane size) ends it.
//!
//! About 620 lines, 165 of them the unit tests of both formats' edge cases.

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::io::{self, BufRead, BufReader, Read};
use std::rc::Rc;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;

use crate::model::{DestinationId, EventId, EventType, TenantId};

/// How much of a rejected line is kept with its rejection.
pub const REJECTED_TEXT_BYTES: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Csv,
    Ndjson,
}

impl Format {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "csv" => Some(Self::Csv),
            "ndjson" => Some(Self::Ndjson),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Csv => "csv",
            Self::Ndjson => "ndjson",
        }
    }
}

/// How a file's lines become events.
#[derive(Debug, Clone)]
pub struct Settings {
    pub format: Format,
    pub tenant: TenantId,
    /// The type of every line's event, unless a column (CSV) or the line (NDJSON) says.
    pub event_type: Option<EventType>,
    /// CSV: the column holding each row's event type.
    pub type_column: Option<String>,
    /// A line whose event `data` is larger is rejected (the API's body limit).
    pub max_line_bytes: usize,
    /// Lines up to this number are read but not emitted: a resumed file's checkpoint.
    pub skip_through: u64,
}

/// One line's event, before it gets its id and envelope.
#[derive(Debug)]
pub struct LineEvent {
    pub event_type: EventType,
    pub data: Box<RawValue>,
    pub source: Option<String>,
    pub occurred_at: Option<DateTime<Utc>>,
    pub destination_id: Option<DestinationId>,
}

#[derive(Debug)]
pub enum Parsed {
    Event(LineEvent),
    Rejected { reason: String, text: String },
}

/// A line and what it became. NDJSON: the physical line. CSV: the record's number, the
/// header being line 1, so that a newline inside quotes or a CRLF never shifts or
/// repeats a number (the event id is made of it); blank lines are not counted.
#[derive(Debug)]
pub struct Item {
    pub line: u64,
    pub parsed: Parsed,
}

#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("reading the file: {0}")]
    Io(#[from] io::Error),
    #[error("the header row is unusable: {0}")]
    Header(String),
}

/// Reads every line of `reader`, handing each item to `emit` (which returns false to
/// stop early, e.g. when the pipeline lost its lease).
pub fn parse(
    reader: impl Read,
    settings: &Settings,
    emit: impl FnMut(Item) -> bool,
) -> Result<(), FormatError> {
    match settings.format {
        Format::Csv => parse_csv(reader, settings, emit),
        Format::Ndjson => parse_ndjson(reader, settings, emit),
    }
}

fn truncated(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(REJECTED_TEXT_BYTES)]);
    text.into_owned()
}

fn rejected(line: u64, reason: impl Into<String>, text: &[u8]) -> Item {
    Item {
        line,
        parsed: Parsed::Rejected {
            reason: reason.into(),
            text: truncated(text),
        },
    }
}

/// Counts the bytes the CSV reader pulls in and fails once one record has taken more
/// than `cap`: the reader would otherwise buffer a record of any size (a file with no
/// line ends) in memory.
struct Capped<R> {
    inner: R,
    read: u64,
    record_start: Rc<Cell<u64>>,
    cap: u64,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.read.saturating_sub(self.record_start.get()) > self.cap {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a record runs past {} bytes", self.cap),
            ));
        }
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

fn parse_csv(
    reader: impl Read,
    settings: &Settings,
    mut emit: impl FnMut(Item) -> bool,
) -> Result<(), FormatError> {
    let record_start = Rc::new(Cell::new(0));
    let capped = Capped {
        inner: reader,
        read: 0,
        record_start: record_start.clone(),
        // Room for a rejected over-size record to be read and reported, not unbounded.
        cap: (settings.max_line_bytes as u64)
            .saturating_mul(4)
            .max(1 << 20),
    };
    // Flexible: a row with the wrong number of fields is our rejection, not a reader error.
    let mut csv = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(capped);
    let mut record = csv::ByteRecord::new();
    if !read_record(&mut csv, &mut record)? {
        return Ok(());
    }
    let headers = header_names(&record)?;
    let type_index = match &settings.type_column {
        Some(column) => Some(
            headers
                .iter()
                .position(|h| h == column)
                .ok_or_else(|| FormatError::Header(format!("no column named {column:?}")))?,
        ),
        None => None,
    };
    // Each key written once, already escaped: only the values change from row to row.
    let keys: Vec<String> = headers
        .iter()
        .map(|h| serde_json::to_string(h).expect("a string serialises"))
        .collect();
    let mut data = Vec::with_capacity(1024);
    let mut line = 1u64;
    loop {
        record_start.set(csv.position().byte());
        let more = match csv.read_byte_record(&mut record) {
            Ok(more) => more,
            Err(e) => match e.into_kind() {
                csv::ErrorKind::Io(io) => return Err(FormatError::Io(io)),
                other => {
                    // Not expected with a flexible byte reader; reported on its line.
                    line += 1;
                    if !emit(rejected(line, format!("{other:?}"), b"")) {
                        return Ok(());
                    }
                    continue;
                }
            },
        };
        if !more {
            return Ok(());
        }
        line += 1;
        if line <= settings.skip_through {
            continue;
        }
        let item = csv_row(line, &record, &keys, type_index, settings, &mut data);
        if !emit(item) {
            return Ok(());
        }
    }
}

fn read_record<R: Read>(
    csv: &mut csv::Reader<R>,
    record: &mut csv::ByteRecord,
) -> Result<bool, FormatError> {
    csv.read_byte_record(record)
        .map_err(|e| match e.into_kind() {
            csv::ErrorKind::Io(io) => FormatError::Io(io),
            other => FormatError::Header(format!("{other:?}")),
        })
}

fn header_names(record: &csv::ByteRecord) -> Result<Vec<String>, FormatError> {
    let mut seen = HashSet::new();
    let mut names = Vec::with_capacity(record.len());
    for (i, field) in record.iter().enumerate() {
        let mut name = std::str::from_utf8(field)
            .map_err(|_| FormatError::Header(format!("column {} is not UTF-8", i + 1)))?;
        if i == 0 {
            name = name.trim_start_matches('\u{feff}');
        }
        if name.is_empty() {
            return Err(FormatError::Header(format!("column {} has no name", i + 1)));
        }
        if !seen.insert(name.to_string()) {
            return Err(FormatError::Header(format!(
                "column {name:?} appears twice"
            )));
        }
        names.push(name.to_string());
    }
    Ok(names)
}

fn joined(record: &csv::ByteRecord) -> Vec<u8> {
    record.iter().collect::<Vec<_>>().join(&b","[..])
}

fn csv_row(
    line: u64,
    record: &csv::ByteRecord,
    keys: &[String],
    type_index: Option<usize>,
    settings: &Settings,
    data: &mut Vec<u8>,
) -> Item {
    if record.len() != keys.len() {
        let reason = format!("expected {} columns, found {}", keys.len(), record.len());
        return rejected(line, reason, &joined(record));
    }
    data.clear();
    data.push(b'{');
    for (i, (key, field)) in keys.iter().zip(record.iter()).enumerate() {
        let Ok(value) = std::str::from_utf8(field) else {
            return rejected(
                line,
                format!("column {} is not UTF-8", i + 1),
                &joined(record),
            );
        };
        if i > 0 {
            data.push(b',');
        }
        data.extend_from_slice(key.as_bytes());
        data.push(b':');
        serde_json::to_writer(&mut *data, value).expect("writing to a Vec cannot fail");
    }
    data.push(b'}');
    if data.len() > settings.max_line_bytes {
        let reason = format!("over the size limit of {} bytes", settings.max_line_bytes);
        return rejected(line, reason, &joined(record));
    }
    let event_type = match type_index {
        Some(i) => {
            let raw = String::from_utf8_lossy(&record[i]).into_owned();
            match EventType::parse(raw) {
                Ok(t) => t,
                Err(e) => return rejected(line, format!("invalid type: {e}"), &joined(record)),
            }
        }
        None => match &settings.event_type {
            Some(t) => t.clone(),
            None => return rejected(line, "no event type", &joined(record)),
        },
    };
    let text = String::from_utf8(data.clone()).expect("built from UTF-8 strings");
    let data = RawValue::from_string(text).expect("built as a JSON object");
    Item {
        line,
        parsed: Parsed::Event(LineEvent {
            event_type,
            data,
            source: None,
            occurred_at: None,
            destination_id: None,
        }),
    }
}

/// Reads one line into `buf`, keeping at most `cap` bytes of it; the rest of a longer
/// line is skipped. Returns the line's full length (0 at the end of the input) and
/// whether it was cut.
fn read_line_capped(
    reader: &mut impl BufRead,
    buf: &mut Vec<u8>,
    cap: usize,
) -> io::Result<(usize, bool)> {
    let mut total = 0;
    loop {
        let available = reader.fill_buf()?;
        if available.is_empty() {
            return Ok((total, total > cap));
        }
        let (chunk, done) = match memchr(available) {
            Some(i) => (&available[..=i], true),
            None => (available, false),
        };
        let room = cap.saturating_sub(buf.len());
        buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let n = chunk.len();
        total += n;
        reader.consume(n);
        if done {
            return Ok((total, total > cap));
        }
    }
}

fn memchr(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == b'\n')
}

/// An NDJSON line that is a whole event: an object with `type` and `data`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventLine {
    #[serde(rename = "type")]
    event_type: EventType,
    data: Box<RawValue>,
    source: Option<String>,
    occurred_at: Option<DateTime<Utc>>,
    destination_id: Option<DestinationId>,
    tenant: Option<TenantId>,
    id: Option<EventId>,
}

fn parse_ndjson(
    reader: impl Read,
    settings: &Settings,
    mut emit: impl FnMut(Item) -> bool,
) -> Result<(), FormatError> {
    let mut reader = BufReader::with_capacity(64 * 1024, reader);
    let mut buf = Vec::with_capacity(4096);
    let mut line = 0u64;
    loop {
        buf.clear();
        let (n, cut) = read_line_capped(&mut reader, &mut buf, settings.max_line_bytes)?;
        if n == 0 {
            return Ok(());
        }
        line += 1;
        if line <= settings.skip_through {
            continue;
        }
        let item = if cut {
            let reason = format!("over the size limit of {} bytes", settings.max_line_bytes);
            Some(rejected(line, reason, &buf))
        } else {
            let mut bytes = buf.as_slice();
            if line == 1 {
                bytes = bytes.strip_prefix("\u{feff}".as_bytes()).unwrap_or(bytes);
            }
            ndjson_line(line, bytes.trim_ascii(), settings)
        };
        if let Some(item) = item
            && !emit(item)
        {
            return Ok(());
        }
    }
}

/// One NDJSON line's item; `None` for an empty line, which is skipped.
fn ndjson_line(line: u64, bytes: &[u8], settings: &Settings) -> Option<Item> {
    if bytes.is_empty() {
        return None;
    }
    let Ok(text) = std::str::from_utf8(bytes) else {
        return Some(rejected(line, "not UTF-8", bytes));
    };
    let raw: &RawValue = match serde_json::from_str(text) {
        Ok(raw) => raw,
        Err(e) => return Some(rejected(line, format!("invalid JSON: {e}"), bytes)),
    };
    let whole = text.starts_with('{')
        && serde_json::from_str::<HashMap<String, IgnoredAny>>(text)
            .is_ok_and(|keys| keys.contains_key("type") && keys.contains_key("data"));
    if whole {
        let event: EventLine = match serde_json::from_str(text) {
            Ok(e) => e,
            Err(e) => return Some(rejected(line, format!("invalid event: {e}"), bytes)),
        };
        if event.id.is_some() {
            let reason = "id: the event of a file's line takes its id from the file and line";
            return Some(rejected(line, reason, bytes));
        }
        if let Some(tenant) = event.tenant.filter(|t| *t != settings.tenant) {
            let reason = format!("tenant {tenant} is not the file's tenant");
            return Some(rejected(line, reason, bytes));
        }
        if event.source.as_ref().is_some_and(|s| s.len() > 1024) {
            return Some(rejected(line, "source is at most 1024 bytes", bytes));
        }
        return Some(Item {
            line,
            parsed: Parsed::Event(LineEvent {
                event_type: event.event_type,
                data: event.data,
                source: event.source,
                occurred_at: event.occurred_at,
                destination_id: event.destination_id,
            }),
        });
    }
    let Some(event_type) = settings.event_type.clone() else {
        let reason = "no event type: the line is not an object with type and data, and the file names no type";
        return Some(rejected(line, reason, bytes));
    };
    Some(Item {
        line,
        parsed: Parsed::Event(LineEvent {
            event_type,
            data: raw.to_owned(),
            source: None,
            occurred_at: None,
            destination_id: None,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(format: Format) -> Settings {
        Settings {
            format,
            tenant: TenantId::parse("acme").unwrap(),
            event_type: Some(EventType::parse("user.imported").unwrap()),
            type_column: None,
            max_line_bytes: 1024,
            skip_through: 0,
        }
    }

    fn run(input: &str, settings: &Settings) -> Vec<(u64, Result<String, String>)> {
        let mut out = Vec::new();
        parse(input.as_bytes(), settings, |item| {
            out.push((
                item.line,
                match item.parsed {
                    Parsed::Event(e) => Ok(format!("{} {}", e.event_type, e.data.get())),
                    Parsed::Rejected { reason, .. } => Err(reason),
                },
            ));
            true
        })
        .unwrap();
        out
    }

    #[test]
    fn csv_rows_become_objects_of_strings_in_header_order() {
        let input =
            "\u{feff}name,email,n\nAda,ada@x.io,1\r\n\"Lovelace, A\",\"a \"\"q\"\"\nnext\",2\n";
        let out = run(input, &settings(Format::Csv));
        assert_eq!(
            out,
            vec![
                (
                    2,
                    Ok(r#"user.imported {"name":"Ada","email":"ada@x.io","n":"1"}"#.into())
                ),
                (
                    3,
                    Ok(
                        r#"user.imported {"name":"Lovelace, A","email":"a \"q\"\nnext","n":"2"}"#
                            .into()
                    )
                ),
            ]
        );
    }

    #[test]
    fn csv_bad_rows_are_rejected_on_their_line_and_the_rest_goes_on() {
        let mut s = settings(Format::Csv);
        s.type_column = Some("kind".into());
        s.event_type = None;
        let input = "kind,v\na.b,1\nonly-one\n\nbad type!,2\nc.d,3,extra\ne.f,4\n";
        let out = run(input, &s);
        assert_eq!(out[0], (2, Ok(r#"a.b {"kind":"a.b","v":"1"}"#.into())));
        assert_eq!(out[1], (3, Err("expected 2 columns, found 1".into())));
        assert_eq!(out[2].0, 4, "the blank line is not counted");
        assert!(out[2].1.as_ref().unwrap_err().starts_with("invalid type"));
        assert_eq!(out[3], (5, Err("expected 2 columns, found 3".into())));
        assert_eq!(out[4], (6, Ok(r#"e.f {"kind":"e.f","v":"4"}"#.into())));
        assert_eq!(out.len(), 5);
    }

    #[test]
    fn csv_header_problems_end_the_file() {
        let s = settings(Format::Csv);
        for (input, why) in [("a,a\n1,2\n", "twice"), ("a,,b\n", "no name")] {
            let err = parse(input.as_bytes(), &s, |_| true).unwrap_err();
            assert!(err.to_string().contains(why), "{err}");
        }
        let mut s = settings(Format::Csv);
        s.type_column = Some("kind".into());
        let err = parse("a,b\n".as_bytes(), &s, |_| true).unwrap_err();
        assert!(err.to_string().contains("kind"), "{err}");
        assert!(run("", &settings(Format::Csv)).is_empty());
    }

    #[test]
    fn csv_row_over_the_size_limit_is_rejected() {
        let mut s = settings(Format::Csv);
        s.max_line_bytes = 64;
        let input = format!("v\n{}\nok\n", "x".repeat(100));
        let out = run(&input, &s);
        assert_eq!(out[0], (2, Err("over the size limit of 64 bytes".into())));
        assert_eq!(out[1], (3, Ok(r#"user.imported {"v":"ok"}"#.into())));
    }

    #[test]
    fn csv_record_without_end_fails_the_file_instead_of_filling_memory() {
        let mut s = settings(Format::Csv);
        s.max_line_bytes = 16;
        let input = format!("v\n\"{}", "x".repeat(3 << 20));
        let err = parse(input.as_bytes(), &s, |_| true).unwrap_err();
        assert!(err.to_string().contains("runs past"), "{err}");
    }

    #[test]
    fn resumed_files_skip_the_lines_already_done() {
        let mut s = settings(Format::Csv);
        s.skip_through = 3;
        let out = run("v\n1\n2\n3\n4\n", &s);
        assert_eq!(
            out,
            vec![
                (4, Ok(r#"user.imported {"v":"3"}"#.into())),
                (5, Ok(r#"user.imported {"v":"4"}"#.into()))
            ]
        );
        let mut s = settings(Format::Ndjson);
        s.skip_through = 2;
        let out = run("1\n2\n3\n", &s);
        assert_eq!(out, vec![(3, Ok("user.imported 3".into()))]);
    }

    #[test]
    fn ndjson_lines_are_data_or_whole_events() {
        let input = concat!(
            "\u{feff}{\"a\":1}\n",
            "{\"type\":\"order.created\",\"data\":{\"id\":7},\"source\":\"erp\"}\r\n",
            "\n",
            "   \n",
            "[1, 2]\n",
            "{\"broken\": \n",
            "{\"type\":\"x\",\"data\":1,\"extra\":true}\n",
            "{\"type\":\"bad type\",\"data\":1}\n",
            "{\"type\":\"x\",\"data\":1,\"id\":\"mine\"}\n",
            "{\"type\":\"x\",\"data\":1,\"tenant\":\"other\"}\n",
            "{\"type\":\"x\",\"data\":1,\"tenant\":\"acme\"}",
        );
        let out = run(input, &settings(Format::Ndjson));
        assert_eq!(out[0], (1, Ok(r#"user.imported {"a":1}"#.into())));
        assert_eq!(out[1], (2, Ok(r#"order.created {"id":7}"#.into())));
        assert_eq!(out[2], (5, Ok("user.imported [1, 2]".into())));
        let reason = |i: usize| out[i].1.clone().unwrap_err();
        assert_eq!(out[3].0, 6);
        assert!(reason(3).starts_with("invalid JSON"), "{}", reason(3));
        assert!(reason(4).contains("extra"), "{}", reason(4));
        assert!(reason(5).contains("event type"), "{}", reason(5));
        assert!(reason(6).starts_with("id:"), "{}", reason(6));
        assert!(reason(7).contains("tenant other"), "{}", reason(7));
        assert_eq!(out[8], (11, Ok("x 1".into())));
        assert_eq!(out.len(), 9);
    }

    #[test]
    fn ndjson_without_a_type_rejects_plain_lines_and_long_lines() {
        let mut s = settings(Format::Ndjson);
        s.event_type = None;
        s.max_line_bytes = 32;
        let input = format!(
            "{{\"a\":1}}\n\"{}\"\n{{\"type\":\"t\",\"data\":null}}\n",
            "y".repeat(100)
        );
        let out = run(&input, &s);
        assert!(out[0].1.as_ref().unwrap_err().starts_with("no event type"));
        assert_eq!(out[1], (2, Err("over the size limit of 32 bytes".into())));
        assert_eq!(out[2], (3, Ok("t null".into())));
    }
}
