//! The clock at the edge, and the one date format the wire uses. The core never reads a clock; the server
//! passes `now_ms()` in.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|elapsed| elapsed.as_millis() as i64).unwrap_or(0)
}

/// Formats Unix milliseconds as RFC 3339 in UTC with milliseconds, e.g. `2026-11-22T21:49:30.123Z`.
pub fn rfc3339(unix_ms: i64) -> String {
    let days = unix_ms.div_euclid(86_400_000);
    let in_day = unix_ms.rem_euclid(86_400_000);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000
    )
}

/// Formats Unix milliseconds as an RFC 7231 HTTP date, e.g. `Wed, 20 Aug 2014 14:55:38 GMT`.
pub fn http_date(unix_ms: i64) -> String {
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let days = unix_ms.div_euclid(86_400_000);
    let in_day = unix_ms.rem_euclid(86_400_000) / 1000;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{}, {day:02} {} {year:04} {:02}:{:02}:{:02} GMT",
        WEEKDAYS[days.rem_euclid(7) as usize],
        MONTHS[(month - 1) as usize],
        in_day / 3600,
        in_day / 60 % 60,
        in_day % 60
    )
}

/// Parses an ISO 8601 / RFC 3339 date-time into Unix milliseconds: `2026-11-22T21:49:30Z`, with optional
/// fractional seconds and a `Z` or `±HH:MM` offset; without an offset the time is taken as UTC (as Python's
/// `datetime.utcnow().isoformat()` writes it).
pub fn parse_iso8601(text: &str) -> Option<i64> {
    let text = text.trim();
    let (date, rest) = text.split_once(['T', 't', ' '])?;
    let mut date_parts = date.split('-');
    let year: i64 = date_parts.next()?.parse().ok()?;
    let month: u32 = date_parts.next()?.parse().ok()?;
    let day: u32 = date_parts.next()?.parse().ok()?;
    if date_parts.next().is_some() || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let (time, offset_ms) = if let Some(time) = rest.strip_suffix(['Z', 'z']) {
        (time, 0)
    } else if let Some(position) = rest.rfind(['+', '-']).filter(|position| *position >= 5) {
        let (time, offset) = rest.split_at(position);
        let sign = if offset.starts_with('-') { -1 } else { 1 };
        let (hours, minutes) =
            offset[1..].split_once(':').unwrap_or((&offset[1..3.min(offset.len())], &offset[3.min(offset.len())..]));
        let hours: i64 = hours.parse().ok()?;
        let minutes: i64 = if minutes.is_empty() { 0 } else { minutes.parse().ok()? };
        (time, sign * (hours * 3_600_000 + minutes * 60_000))
    } else {
        (rest, 0)
    };
    let mut time_parts = time.split(':');
    let hour: i64 = time_parts.next()?.parse().ok()?;
    let minute: i64 = time_parts.next()?.parse().ok()?;
    let seconds = time_parts.next().unwrap_or("0");
    if time_parts.next().is_some() || hour > 23 || minute > 59 {
        return None;
    }
    let (whole, fraction) = seconds.split_once('.').unwrap_or((seconds, ""));
    let second: i64 = whole.parse().ok()?;
    if second > 60 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let millis: i64 = format!("{fraction:0<3}")[..3].parse().ok()?;
    let days = days_from_civil(year, month, day);
    Some(days * 86_400_000 + hour * 3_600_000 + minute * 60_000 + second * 1000 + millis - offset_ms)
}

/// Days since 1970-01-01 of a proleptic Gregorian date, after Howard Hinnant's `days_from_civil`.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let day_of_year = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day), after Howard Hinnant's `civil_from_days`.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
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
        assert_eq!(http_date(1_408_546_538_000), "Wed, 20 Aug 2014 14:55:38 GMT");
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
    }

    #[test]
    fn parses_iso_8601_forms() {
        assert_eq!(parse_iso8601("2021-10-15T15:29:51Z"), Some(1_634_311_791_000));
        assert_eq!(parse_iso8601("2021-10-15T15:29:51.250Z"), Some(1_634_311_791_250));
        assert_eq!(parse_iso8601("2021-10-15T15:29:51.250123"), Some(1_634_311_791_250), "no offset: UTC");
        assert_eq!(parse_iso8601("2021-10-15T17:29:51+02:00"), Some(1_634_311_791_000));
        assert_eq!(parse_iso8601("2021-10-15T10:29:51-05:00"), Some(1_634_311_791_000));
        assert_eq!(parse_iso8601("2000-02-29T00:00:00.123Z"), Some(951_782_400_123));
        for bad in
            ["", "yesterday", "2021-13-01T00:00:00Z", "2021-10-15", "2021-10-15T25:00:00Z", "2021-10-15T10:00:00.5x"]
        {
            assert_eq!(parse_iso8601(bad), None, "{bad}");
        }
        assert_eq!(parse_iso8601(&rfc3339(1_795_384_813_106)), Some(1_795_384_813_106));
    }
}
