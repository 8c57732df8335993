//! The envelope's timestamps, written as chrono writes them (RFC 3339, UTC as `Z`, the
//! fraction in 0, 3, 6 or 9 digits as the value needs) but into one stack buffer and one
//! `serialize_str`: chrono's `collect_str` goes through `fmt` a piece at a time, half of
//! the envelope's serialisation on the ingest path (docs/PERFORMANCE.md).

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::Serializer;

/// `serialize_with` for a `DateTime<Utc>` field.
pub fn serialize<S: Serializer>(at: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    let mut buf = [0u8; 30];
    match write(at, &mut buf) {
        Some(text) => s.serialize_str(text),
        // Years before 0 or after 9999 carry a sign; chrono writes those.
        None => s.collect_str(&at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
    }
}

/// `serialize_with` for an `Option<DateTime<Utc>>` field.
pub fn serialize_option<S: Serializer>(
    at: &Option<DateTime<Utc>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => serialize(at, s),
        None => s.serialize_none(),
    }
}

/// `at` as text in `buf`, or `None` for a year outside 0..=9999.
fn write<'b>(at: &DateTime<Utc>, buf: &'b mut [u8; 30]) -> Option<&'b str> {
    let year = at.year();
    if !(0..=9999).contains(&year) {
        return None;
    }
    let mut nano = at.nanosecond();
    let mut second = at.second();
    // chrono keeps a leap second as nanoseconds past 1e9 and writes it as second 60.
    if nano >= 1_000_000_000 {
        second += 1;
        nano -= 1_000_000_000;
    }
    let mut out = Out { buf, len: 0 };
    out.digits(4, year as u32);
    out.byte(b'-');
    out.digits(2, at.month());
    out.byte(b'-');
    out.digits(2, at.day());
    out.byte(b'T');
    out.digits(2, at.hour());
    out.byte(b':');
    out.digits(2, at.minute());
    out.byte(b':');
    out.digits(2, second);
    if nano != 0 {
        out.byte(b'.');
        if nano.is_multiple_of(1_000_000) {
            out.digits(3, nano / 1_000_000);
        } else if nano.is_multiple_of(1_000) {
            out.digits(6, nano / 1_000);
        } else {
            out.digits(9, nano);
        }
    }
    out.byte(b'Z');
    let Out { buf, len } = out;
    let written: &'b [u8] = &buf[..len];
    std::str::from_utf8(written).ok()
}

/// A cursor over the buffer.
struct Out<'b> {
    buf: &'b mut [u8; 30],
    len: usize,
}

impl Out<'_> {
    fn byte(&mut self, b: u8) {
        self.buf[self.len] = b;
        self.len += 1;
    }

    /// `value` in exactly `n` digits, zero-padded.
    fn digits(&mut self, n: usize, mut value: u32) {
        for i in (0..n).rev() {
            self.buf[self.len + i] = b'0' + (value % 10) as u8;
            value /= 10;
        }
        self.len += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{NaiveDate, TimeZone};

    fn ours(at: DateTime<Utc>) -> String {
        let mut out = Vec::new();
        serialize(&at, &mut serde_json::Serializer::new(&mut out)).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn writes_what_chrono_writes() {
        let day = NaiveDate::from_ymd_opt(2026, 12, 2).unwrap();
        let mut cases: Vec<DateTime<Utc>> = [0, 7_000_000, 7_000, 7, 123_456_789, 999_999_999]
            .into_iter()
            .map(|nano| Utc.from_utc_datetime(&day.and_hms_nano_opt(3, 4, 5, nano).unwrap()))
            .collect();
        // A leap second, the edges of four-digit years, and years chrono signs.
        cases
            .push(Utc.from_utc_datetime(&day.and_hms_nano_opt(23, 59, 59, 1_500_000_000).unwrap()));
        for year in [0, 1, 999, 9999, -1, 10_000] {
            let date = NaiveDate::from_ymd_opt(year, 1, 31).unwrap();
            cases.push(Utc.from_utc_datetime(&date.and_hms_opt(0, 0, 0).unwrap()));
        }
        cases.push(Utc::now());
        for at in cases {
            assert_eq!(ours(at), serde_json::to_string(&at).unwrap(), "{at:?}");
        }
    }
}
