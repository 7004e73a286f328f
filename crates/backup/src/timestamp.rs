//! Points in time as users write them (`2025-06-01 14:30:00+02`) and as PostgreSQL and pgBackRest
//! read and report them. Every format is a `time` format description: no hand-written parsing.

use std::fmt;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use time::error::ParseFromDescription;
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;
use time::parsing::Parsed;
use time::{OffsetDateTime, PrimitiveDateTime, UtcOffset};

/// What `--time` takes before the zone: `YYYY-MM-DD HH:MM:SS` (or `T` between date and time) and
/// an optional fraction of 1 to 6 digits (longest first: seven digits leave one for the zone,
/// which refuses it).
const DATE_TIME: &[BorrowedFormatItem<'_>] = format_description!(
    version = 2,
    "[year]-[month]-[day][first [ ] [T]][hour]:[minute]:[second]\
     [optional [.[first [[subsecond digits:6]] [[subsecond digits:5]] [[subsecond digits:4]] \
     [[subsecond digits:3]] [[subsecond digits:2]] [[subsecond digits:1]]]]]"
);

/// A numeric zone: `+HH:MM`, `+HHMM` or `+HH` (or `-`).
const OFFSET: &[BorrowedFormatItem<'_>] = format_description!(
    version = 2,
    "[first [[offset_hour sign:mandatory]:[offset_minute]] \
     [[offset_hour sign:mandatory][offset_minute]] [[offset_hour sign:mandatory]]]"
);

/// `2025-06-01 12:30:00 UTC`: the one format of times in text.
const HUMAN: &[BorrowedFormatItem<'_>] = format_description!(
    version = 2,
    "[year]-[month]-[day] [hour]:[minute]:[second] UTC"
);
const HUMAN_FRACTION: &[BorrowedFormatItem<'_>] = format_description!(
    version = 2,
    "[year]-[month]-[day] [hour]:[minute]:[second].[subsecond digits:6] UTC"
);

/// RFC 3339 in UTC: the one format of times in JSON.
const RFC3339: &[BorrowedFormatItem<'_>] = format_description!(
    version = 2,
    "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
);
const RFC3339_FRACTION: &[BorrowedFormatItem<'_>] = format_description!(
    version = 2,
    "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
);

/// PostgreSQL's `recovery_target_time`.
const POSTGRES: &[BorrowedFormatItem<'_>] = format_description!(
    version = 2,
    "[year]-[month]-[day] [hour]:[minute]:[second].[subsecond digits:6]+00"
);

/// Identifiers: `YYYYMMDD-HHMMSS`.
const COMPACT: &[BorrowedFormatItem<'_>] =
    format_description!(version = 2, "[year][month][day]-[hour][minute][second]");

/// An instant, microsecond precision (what PostgreSQL records for commits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(OffsetDateTime);

impl Timestamp {
    pub fn now() -> Self {
        Timestamp::from_system(SystemTime::now())
    }

    pub fn from_unix(seconds: i64) -> Self {
        Timestamp(
            OffsetDateTime::from_unix_timestamp(seconds).unwrap_or(OffsetDateTime::UNIX_EPOCH),
        )
    }

    pub fn from_system(time: SystemTime) -> Self {
        let time = OffsetDateTime::from(time);
        Timestamp(time.replace_microsecond(time.microsecond()).unwrap_or(time))
    }

    pub fn unix(self) -> i64 {
        self.0.unix_timestamp()
    }

    /// The same instant without its fraction of a second (what whole-second records hold).
    pub fn whole_seconds(self) -> Self {
        Timestamp(self.0.replace_nanosecond(0).unwrap_or(self.0))
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
        self.format(COMPACT)
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
        // `[year]` would also take a sign: dates are four digits here.
        if !text.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(bad("the date"));
        }
        let mut parsed = Parsed::new();
        let zone = parsed
            .parse_items(text.as_bytes(), DATE_TIME)
            .map_err(|e| bad(why(&e)))?;
        // Only ASCII was consumed, so the rest is still UTF-8.
        let zone = std::str::from_utf8(zone).unwrap_or_default().trim_start();
        if zone.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(bad("the fraction of a second: 1 to 6 digits"));
        }
        let offset = if zone == "Z" || zone.eq_ignore_ascii_case("UTC") {
            UtcOffset::UTC
        } else {
            UtcOffset::parse(zone, OFFSET).map_err(|_| bad("the zone"))?
        };
        let local = PrimitiveDateTime::try_from(parsed).map_err(|_| bad("the date"))?;
        Ok(Timestamp(local.assume_offset(offset)))
    }

    /// For PostgreSQL's `recovery_target_time`: UTC with microseconds, unambiguous.
    pub fn to_postgres(self) -> String {
        self.format(POSTGRES)
    }

    /// RFC 3339 in UTC, `2025-06-01T12:30:00Z` (whole seconds unless there is a fraction): what
    /// JSON output and the catalog hold.
    pub fn to_rfc3339(self) -> String {
        self.format(if self.0.microsecond() == 0 {
            RFC3339
        } else {
            RFC3339_FRACTION
        })
    }

    /// `text` as [`Timestamp::parse`] reads it (RFC 3339 included), shown as users see times;
    /// `text` itself if it is not a time.
    pub fn humanize(text: &str) -> String {
        Timestamp::parse(text).map_or_else(|_| text.to_string(), |t| t.to_string())
    }

    fn format(self, description: &[BorrowedFormatItem<'_>]) -> String {
        self.0
            .to_offset(UtcOffset::UTC)
            .format(description)
            .expect("a time of years 0..=9999 formats")
    }
}

/// Which part of `--time` the parser stopped at, in the words of the error message.
fn why(error: &ParseFromDescription) -> &'static str {
    match error {
        ParseFromDescription::InvalidComponent("year" | "month" | "day") => "the date",
        ParseFromDescription::InvalidComponent("subsecond") => {
            "the fraction of a second: 1 to 6 digits"
        }
        ParseFromDescription::InvalidComponent(_) => "the time of day",
        _ => "date and time are YYYY-MM-DD, a space or T, and HH:MM:SS",
    }
}

/// `2025-06-01 12:30:00 UTC` (whole seconds unless there is a fraction): what users see, the one
/// format of times in text output. [`Timestamp::parse`] reads it back.
impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.format(if self.0.microsecond() == 0 {
            HUMAN
        } else {
            HUMAN_FRACTION
        }))
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
            "2025-06-01 07:30:00-05:00",
            "2025-06-01 07:30:00 -0500",
            "2025-06-01 12:30:00 Z",
            "2025-06-01 12:30:00utc",
            "  2025-06-01 12:30:00.000000+00  ",
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
        let micro = Timestamp::parse("2025-06-01T12:30:00.000001Z").unwrap();
        assert_eq!(micro.to_rfc3339(), "2025-06-01T12:30:00.000001Z");
        assert_eq!(micro.whole_seconds(), utc);
        assert_eq!(micro.seconds_since(utc), 0.000001);
        assert_eq!(
            utc.plus_seconds(86_400).to_string(),
            "2025-06-02 12:30:00 UTC"
        );
        // Nanoseconds of the system clock are cut to PostgreSQL's microseconds.
        let system = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(1_500_000_999);
        assert_eq!(
            Timestamp::from_system(system).to_rfc3339(),
            "1970-01-01T00:00:01.500000Z"
        );
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
            "2025-06-01 12:30:00.+00",
            "2025-06-01 12:30:00+02:0",
            "2025-06-01 12:30:00+020",
            "2025-06-01 12:30:00 CET",
            "+2025-06-01 12:30:00+00",
            "2025-06-31 12:30:00+00",
            "2025-06-01 12:30+00",
            "2025-06-01_12:30:00+00",
            "",
        ] {
            let err = Timestamp::parse(bad).unwrap_err();
            assert!(err.contains("YYYY-MM-DD HH:MM:SS"), "{bad}: {err}");
        }
    }
}
