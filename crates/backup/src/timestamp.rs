//! Points in time as users write them (`2025-06-01 14:30:00+02`) and as PostgreSQL and pgBackRest
//! read and report them.

use std::fmt;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

/// An instant, microsecond precision (what PostgreSQL records for commits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(OffsetDateTime);

impl Timestamp {
    pub fn now() -> Self {
        Timestamp(OffsetDateTime::from(SystemTime::now()).replace_nanosecond_micros())
    }

    pub fn from_unix(seconds: i64) -> Self {
        Timestamp(
            OffsetDateTime::from_unix_timestamp(seconds).unwrap_or(OffsetDateTime::UNIX_EPOCH),
        )
    }

    pub fn from_system(time: SystemTime) -> Self {
        Timestamp(OffsetDateTime::from(time).replace_nanosecond_micros())
    }

    pub fn unix(self) -> i64 {
        self.0.unix_timestamp()
    }

    pub fn plus_seconds(self, seconds: i64) -> Self {
        Timestamp(self.0 + time::Duration::seconds(seconds))
    }

    /// Seconds from `earlier` to `self`.
    pub fn seconds_since(self, earlier: Timestamp) -> f64 {
        (self.0 - earlier.0).as_seconds_f64()
    }

    /// `YYYYMMDD-HHMMSS` in UTC, for identifiers.
    pub fn compact(self) -> String {
        let t = self.0.to_offset(UtcOffset::UTC);
        format!(
            "{:04}{:02}{:02}-{:02}{:02}{:02}",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        )
    }

    /// Parses what `--time` accepts: `YYYY-MM-DD HH:MM:SS[.ffffff]` (or with `T`) followed by a
    /// zone: `Z`, `UTC`, `+HH`, `+HHMM` or `+HH:MM` (or `-`). The zone is required: a restore to
    /// the wrong hour is not a mistake to make silently.
    pub fn parse(text: &str) -> Result<Self, String> {
        let original = text;
        let bad = |why: &str| {
            format!(
                "`{original}` is not a time like '2025-06-01 14:30:00+02' ({why}); give \
                 YYYY-MM-DD HH:MM:SS with a zone: Z, UTC or an offset such as +00, +0200, -05:00"
            )
        };
        let text = text.trim();
        if text.len() < 19 {
            return Err(bad("too short"));
        }
        let (date, rest) = text.split_at(10);
        let date = parse_date(date).ok_or_else(|| bad("the date"))?;
        let rest = rest
            .strip_prefix(' ')
            .or_else(|| rest.strip_prefix('T'))
            .ok_or_else(|| bad("date and time are separated by a space or T"))?;
        let (clock, zone) = rest.split_at(8);
        let mut parts = clock.split(':');
        let mut next = || {
            parts
                .next()
                .and_then(|p| (p.len() == 2).then(|| p.parse::<u8>().ok()).flatten())
        };
        let (h, m, s) = match (next(), next(), next()) {
            (Some(h), Some(m), Some(s)) => (h, m, s),
            _ => return Err(bad("the time of day")),
        };
        let (micros, zone) = match zone.strip_prefix('.') {
            Some(fraction) => {
                let digits: String = fraction
                    .chars()
                    .take_while(|c| c.is_ascii_digit())
                    .collect();
                if digits.is_empty() || digits.len() > 6 {
                    return Err(bad("the fraction of a second: 1 to 6 digits"));
                }
                let micros = format!("{digits:0<6}")
                    .parse::<u32>()
                    .map_err(|_| bad("fraction"))?;
                (micros, &fraction[digits.len()..])
            }
            None => (0, zone),
        };
        let offset = parse_zone(zone.trim_start()).ok_or_else(|| bad("the zone"))?;
        let clock = Time::from_hms_micro(h, m, s, micros).map_err(|_| bad("the time of day"))?;
        Ok(Timestamp(
            PrimitiveDateTime::new(date, clock).assume_offset(offset),
        ))
    }

    /// For PostgreSQL's `recovery_target_time`: UTC with microseconds, unambiguous.
    pub fn to_postgres(self) -> String {
        let t = self.0.to_offset(UtcOffset::UTC);
        format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:06}+00",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.microsecond()
        )
    }
}

trait MicrosOnly {
    fn replace_nanosecond_micros(self) -> Self;
}

impl MicrosOnly for OffsetDateTime {
    fn replace_nanosecond_micros(self) -> Self {
        let micros = self.nanosecond() / 1000;
        self.replace_nanosecond(micros * 1000).unwrap_or(self)
    }
}

fn parse_date(text: &str) -> Option<Date> {
    let mut parts = text.split('-');
    let year: i32 = parts.next().filter(|p| p.len() == 4)?.parse().ok()?;
    let month: u8 = parts.next().filter(|p| p.len() == 2)?.parse().ok()?;
    let day: u8 = parts.next().filter(|p| p.len() == 2)?.parse().ok()?;
    if parts.next().is_some() {
        return None;
    }
    Date::from_calendar_date(year, Month::try_from(month).ok()?, day).ok()
}

fn parse_zone(zone: &str) -> Option<UtcOffset> {
    if zone == "Z" || zone.eq_ignore_ascii_case("UTC") {
        return Some(UtcOffset::UTC);
    }
    let (sign, digits) = match zone.as_bytes().first()? {
        b'+' => (1i8, &zone[1..]),
        b'-' => (-1i8, &zone[1..]),
        _ => return None,
    };
    let digits = digits.replace(':', "");
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (hours, minutes) = match digits.len() {
        2 => (digits.parse::<i8>().ok()?, 0),
        4 => (
            digits[..2].parse::<i8>().ok()?,
            digits[2..].parse::<i8>().ok()?,
        ),
        _ => return None,
    };
    UtcOffset::from_hms(sign * hours, sign * minutes, 0).ok()
}

impl Timestamp {
    /// UTC, whole seconds unless there is a fraction, with `separator` between date and time and
    /// `zone` after.
    fn write(&self, f: &mut impl fmt::Write, separator: char, zone: &str) -> fmt::Result {
        let t = self.0.to_offset(UtcOffset::UTC);
        write!(
            f,
            "{:04}-{:02}-{:02}{separator}{:02}:{:02}:{:02}",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        )?;
        if t.microsecond() != 0 {
            write!(f, ".{:06}", t.microsecond())?;
        }
        f.write_str(zone)
    }

    /// RFC 3339 in UTC, `2025-06-01T12:30:00Z`: what JSON output and the catalog hold.
    pub fn to_rfc3339(self) -> String {
        let mut text = String::new();
        let _ = self.write(&mut text, 'T', "Z");
        text
    }

    /// `text` as [`Timestamp::parse`] reads it (RFC 3339 included), shown as users see times;
    /// `text` itself if it is not a time.
    pub fn humanize(text: &str) -> String {
        Timestamp::parse(text).map_or_else(|_| text.to_string(), |t| t.to_string())
    }
}

/// `2025-06-01 12:30:00 UTC` (whole seconds unless there is a fraction): what users see, the one
/// format of times in text output. [`Timestamp::parse`] reads it back.
impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write(f, ' ', " UTC")
    }
}

/// RFC 3339 ([`Timestamp::to_rfc3339`]).
impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Timestamp::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zones_and_fractions() {
        let utc = Timestamp::parse("2025-06-01 12:30:00+00").unwrap();
        for same in [
            "2025-06-01 14:30:00+02",
            "2025-06-01 14:30:00+0200",
            "2025-06-01T14:30:00+02:00",
            "2025-06-01 12:30:00Z",
            "2025-06-01 12:30:00 UTC",
            "2025-06-01 07:30:00-05",
        ] {
            assert_eq!(Timestamp::parse(same).unwrap(), utc, "{same}");
        }
        assert_eq!(utc.to_string(), "2025-06-01 12:30:00 UTC");
        assert_eq!(utc.to_rfc3339(), "2025-06-01T12:30:00Z");
        assert_eq!(Timestamp::parse(&utc.to_rfc3339()).unwrap(), utc);
        assert_eq!(Timestamp::parse(&utc.to_string()).unwrap(), utc);
        assert_eq!(
            serde_json::to_string(&utc).unwrap(),
            "\"2025-06-01T12:30:00Z\""
        );
        // Catalogs written before keep reading.
        let old: Timestamp = serde_json::from_str("\"2025-06-01 12:30:00+00\"").unwrap();
        assert_eq!(old, utc);
        assert_eq!(
            Timestamp::humanize("2025-06-01T12:30:00Z"),
            "2025-06-01 12:30:00 UTC"
        );
        assert_eq!(Timestamp::humanize("20250601-123000F"), "20250601-123000F");
        assert_eq!(utc.to_postgres(), "2025-06-01 12:30:00.000000+00");
        assert_eq!(utc.compact(), "20250601-123000");
        let fine = Timestamp::parse("2025-06-01 12:30:00.25+00").unwrap();
        assert_eq!(fine.to_postgres(), "2025-06-01 12:30:00.250000+00");
        assert_eq!(fine.to_string(), "2025-06-01 12:30:00.250000 UTC");
        assert_eq!(fine.to_rfc3339(), "2025-06-01T12:30:00.250000Z");
        assert_eq!(Timestamp::parse(&fine.to_string()).unwrap(), fine);
        assert_eq!(Timestamp::from_unix(utc.unix()), utc);
    }

    #[test]
    fn a_zone_is_required_and_nonsense_is_refused() {
        for bad in [
            "2025-06-01 12:30:00",
            "2025-06-01",
            "2025-13-01 12:30:00+00",
            "2025-06-01 25:30:00+00",
            "yesterday at noon",
            "2025-06-01 12:30:00+2",
            "2025-06-01 12:30:00.1234567+00",
        ] {
            let err = Timestamp::parse(bad).unwrap_err();
            assert!(err.contains("YYYY-MM-DD HH:MM:SS"), "{bad}: {err}");
        }
    }
}
