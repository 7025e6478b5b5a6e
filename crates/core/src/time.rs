//! Timestamps as the wire carries them: ISO 8601 / RFC 3339 text parsed and formatted with `chrono` (no date
//! arithmetic of our own), and the one range of instants Tessera keeps, whichever dialect or protocol a reading
//! came through. The core reads no clock: `chrono` is built without one.

use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};

/// The earliest timestamp Tessera keeps: the Unix epoch, `1970-01-01T00:00:00Z` (Ubidots documents timestamps as
/// milliseconds since the epoch; a negative one is a firmware bug, not a reading from 1969).
pub const EARLIEST_MS: i64 = 0;

/// The latest timestamp Tessera keeps: `9999-12-31T23:59:59.999Z`, the last instant RFC 3339's four-digit years
/// can write, so every stored timestamp can be given back as text in every dialect.
pub const LATEST_MS: i64 = 253_402_300_799_999;

/// The offsets places on Earth use, from UTC−12:00 to UTC+14:00. RFC 3339 writes any offset below a day, but
/// one outside these is a clock or firmware bug, not a time zone.
const REAL_OFFSETS_SECONDS: std::ops::RangeInclusive<i32> = -12 * 3600..=14 * 3600;

/// The range, as the errors state it.
const RANGE_TEXT: &str = "1970-01-01T00:00:00Z to 9999-12-31T23:59:59.999Z";

/// The longest piece of a refused text an error repeats; the rest is elided, so an error never echoes a megabyte.
const QUOTED_CHARS: usize = 64;

/// Why a timestamp was refused. The message names the text or the number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimestampError {
    #[error("'{0}' is not an ISO 8601 date and time such as 2021-10-15T10:00:00Z or 2021-10-15T12:00:00.250+02:00")]
    NotADateTime(String),
    #[error("{0} is outside the timestamps Tessera keeps ({RANGE_TEXT})")]
    OutOfRange(String),
    #[error("'{0}' has an offset no place uses (they run from -12:00 to +14:00)")]
    OffsetNotReal(String),
}

/// `ms` (milliseconds since the Unix epoch) if it lies in [`EARLIEST_MS`]`..=`[`LATEST_MS`].
pub fn check_range(ms: i64) -> Result<i64, TimestampError> {
    if (EARLIEST_MS..=LATEST_MS).contains(&ms) {
        Ok(ms)
    } else {
        Err(TimestampError::OutOfRange(format!("{ms} ms since the Unix epoch")))
    }
}

/// Parses an ISO 8601 / RFC 3339 date and time into Unix milliseconds: `2021-10-15T10:00:00Z`, with optional
/// fractional seconds (below a millisecond dropped), `T`, `t` or a space between date and time, and `Z` or a
/// `±HH:MM` offset from -12:00 to +14:00. Without an offset the time is UTC, as Python's
/// `datetime.utcnow().isoformat()` writes it. Impossible dates (`2021-02-31`), offsets (`+99:99`, `-23:59`) and
/// instants outside the kept range are refused; a leap second (`23:59:60`) is read as the next second's start,
/// and digits of a fraction below the millisecond are dropped.
pub fn parse_iso8601(text: &str) -> Result<i64, TimestampError> {
    let trimmed = text.trim();
    let instant = match DateTime::parse_from_rfc3339(trimmed) {
        Ok(with_offset) if !REAL_OFFSETS_SECONDS.contains(&with_offset.offset().local_minus_utc()) => {
            return Err(TimestampError::OffsetNotReal(quoted(trimmed)));
        }
        Ok(with_offset) => Ok(with_offset.with_timezone(&Utc)),
        Err(_) => without_offset(trimmed),
    }
    .map_err(|_| TimestampError::NotADateTime(quoted(trimmed)))?;
    check_range(instant.timestamp_millis()).map_err(|_| TimestampError::OutOfRange(quoted(trimmed)))
}

/// A date and time without an offset, taken as UTC.
fn without_offset(text: &str) -> Result<DateTime<Utc>, chrono::ParseError> {
    let normalised: String = text.chars().map(|c| if c == 't' || c == ' ' { 'T' } else { c }).collect();
    NaiveDateTime::parse_from_str(&normalised, "%Y-%m-%dT%H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(&normalised, "%Y-%m-%dT%H:%M"))
        .map(|naive| naive.and_utc())
}

/// Formats Unix milliseconds as RFC 3339 in UTC with milliseconds, e.g. `2026-11-22T21:49:30.123Z`. Every
/// timestamp Tessera keeps can be formatted; one outside `chrono`'s range (only ever a caller's bug) is written
/// as the epoch's offset in milliseconds instead of panicking.
pub fn rfc3339(unix_ms: i64) -> String {
    match DateTime::from_timestamp_millis(unix_ms) {
        Some(instant) => instant.to_rfc3339_opts(SecondsFormat::Millis, true),
        None => format!("{unix_ms} ms since 1970-01-01T00:00:00Z"),
    }
}

/// Formats Unix milliseconds for people, to the second in UTC: `2026-12-03 16:50:01 UTC`.
pub fn readable_utc(unix_ms: i64) -> String {
    match DateTime::from_timestamp_millis(unix_ms) {
        Some(instant) => instant.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        None => rfc3339(unix_ms),
    }
}

/// Formats Unix milliseconds as an RFC 9110 HTTP date, e.g. `Wed, 20 Aug 2014 14:55:38 GMT`.
pub fn http_date(unix_ms: i64) -> String {
    match DateTime::from_timestamp_millis(unix_ms) {
        Some(instant) => instant.format("%a, %d %b %Y %H:%M:%S GMT").to_string(),
        None => rfc3339(unix_ms),
    }
}

fn quoted(text: &str) -> String {
    match text.char_indices().nth(QUOTED_CHARS) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_634_311_791_000), "2021-10-15T15:29:51.000Z");
        assert_eq!(rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(rfc3339(LATEST_MS), "9999-12-31T23:59:59.999Z");
        assert_eq!(http_date(1_408_546_538_000), "Wed, 20 Aug 2014 14:55:38 GMT");
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        // Never a panic, whatever the number.
        for extreme in [i64::MIN, i64::MAX] {
            assert!(!rfc3339(extreme).is_empty());
            assert!(!http_date(extreme).is_empty());
        }
    }

    #[test]
    fn parses_iso_8601_forms() {
        let cases = [
            ("2021-10-15T15:29:51Z", 1_634_311_791_000),
            ("2021-10-15T15:29:51.250Z", 1_634_311_791_250),
            ("2021-10-15t15:29:51.250z", 1_634_311_791_250),
            ("2021-10-15 15:29:51Z", 1_634_311_791_000),
            ("2021-10-15T15:29:51.250123", 1_634_311_791_250),
            ("2021-10-15T15:29:51", 1_634_311_791_000),
            ("2021-10-15T15:29", 1_634_311_740_000),
            ("2021-10-15T17:29:51+02:00", 1_634_311_791_000),
            ("2021-10-15T10:29:51-05:00", 1_634_311_791_000),
            ("2000-02-29T00:00:00.123Z", 951_782_400_123),
            ("  2021-10-15T15:29:51Z  ", 1_634_311_791_000),
            ("1970-01-01T00:00:00Z", EARLIEST_MS),
            ("9999-12-31T23:59:59.999Z", LATEST_MS),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_iso8601(text), Ok(expected), "{text}");
        }
        assert_eq!(parse_iso8601(&rfc3339(1_795_384_813_106)), Ok(1_795_384_813_106));
    }

    #[test]
    fn refuses_what_is_not_a_real_instant() {
        for bad in [
            "",
            "yesterday",
            "2021-13-01T00:00:00Z",
            "2021-10-15",
            "2021-10-15T25:00:00Z",
            "2021-10-15T10:00:00.5x",
            // Issue 13: these were a panic, a wrapped number, an offset of 99 hours and March 3rd.
            "2021-10-15T10:00:00+0é",
            "2021-10-15T10:00:00+99:99",
            "2021-02-31T00:00:00Z",
            "2021-02-29T00:00:00Z",
            "2021-10-15T10:00:00+",
            "é",
            "2021-10-15Té",
        ] {
            assert!(matches!(parse_iso8601(bad), Err(TimestampError::NotADateTime(_))), "{bad}");
        }
    }

    #[test]
    fn refuses_instants_outside_the_kept_range() {
        for outside in ["999999999-01-01T00:00:00Z", "1969-12-31T23:59:59.999Z", "0001-01-01T00:00:00Z"] {
            let error = parse_iso8601(outside).unwrap_err();
            assert!(
                matches!(error, TimestampError::OutOfRange(_) | TimestampError::NotADateTime(_)),
                "{outside}: {error}"
            );
        }
        assert!(matches!(parse_iso8601("1969-12-31T23:59:59Z"), Err(TimestampError::OutOfRange(_))));
        for unreal in ["2024-01-01T00:00:00-23:59", "2024-01-01T00:00:00+14:01", "2024-01-01T00:00:00-12:01"] {
            assert!(matches!(parse_iso8601(unreal), Err(TimestampError::OffsetNotReal(_))), "{unreal}");
        }
        assert_eq!(parse_iso8601("2024-01-01T14:00:00+14:00"), Ok(1_704_067_200_000));
        assert_eq!(parse_iso8601("2023-12-31T12:00:00-12:00"), Ok(1_704_067_200_000));
        assert_eq!(check_range(-1), Err(TimestampError::OutOfRange("-1 ms since the Unix epoch".into())));
        assert!(check_range(LATEST_MS + 1).is_err());
        assert_eq!(check_range(LATEST_MS), Ok(LATEST_MS));
    }

    #[test]
    fn errors_quote_a_bounded_piece_of_the_text() {
        let long = "x".repeat(10_000);
        let message = parse_iso8601(&long).unwrap_err().to_string();
        assert!(message.len() < 300, "{}", message.len());
        let multibyte = "é".repeat(100);
        assert!(parse_iso8601(&multibyte).is_err());
    }
}
