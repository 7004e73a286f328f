//! `statementTimeout` values: PostgreSQL's time units, read the way the server reads them.

/// PostgreSQL's largest `statement_timeout`: `INT_MAX` milliseconds, about 24.8 days.
pub(crate) const MAX_TIMEOUT_MS: u64 = i32::MAX as u64;

/// The units PostgreSQL accepts for time settings in milliseconds, with their size. Case matters
/// to the server (`30S` is rejected), so it does here.
pub(crate) const UNITS: [(&str, u64); 5] = [
    ("ms", 1),
    ("s", 1_000),
    ("min", 60_000),
    ("h", 3_600_000),
    ("d", 86_400_000),
];

/// Spellings people use for the units that PostgreSQL does not accept.
const UNIT_ALIASES: [(&str, &str); 16] = [
    ("msec", "ms"),
    ("msecs", "ms"),
    ("millisecond", "ms"),
    ("milliseconds", "ms"),
    ("sec", "s"),
    ("secs", "s"),
    ("second", "s"),
    ("seconds", "s"),
    ("m", "min"),
    ("mins", "min"),
    ("minute", "min"),
    ("minutes", "min"),
    ("hour", "h"),
    ("hours", "h"),
    ("day", "d"),
    ("days", "d"),
];

/// Why a duration was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DurationError {
    /// No number at the start (`soon`, ``).
    NotADuration,
    /// `-5s`.
    Negative,
    /// `1.5min`; `exact_ms` is the same duration in whole milliseconds when there is one.
    Fraction { exact_ms: Option<u64> },
    /// `30sec`; `meant` is the PostgreSQL unit it probably stands for.
    UnknownUnit {
        unit: String,
        meant: Option<&'static str>,
    },
    /// More than [`MAX_TIMEOUT_MS`] (or the limit given to [`parse_duration_ms_up_to`]).
    TooLarge,
}

/// Milliseconds of `text`: a whole number followed by one of [`UNITS`] (spaces allowed in
/// between, as PostgreSQL allows them), or a bare whole number of milliseconds.
pub(crate) fn parse_duration_ms(text: &str) -> Result<u64, DurationError> {
    parse_duration_ms_up_to(text, MAX_TIMEOUT_MS)
}

/// [`parse_duration_ms`] with another limit than PostgreSQL's statement timeout, for durations
/// that are not timeouts (retention periods, intervals of the platform config).
pub fn parse_duration_ms_up_to(text: &str, max_ms: u64) -> Result<u64, DurationError> {
    let text = text.trim();
    if text.starts_with('-') {
        return Err(DurationError::Negative);
    }
    let text = text.strip_prefix('+').unwrap_or(text);
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, rest) = text.split_at(digits_end);
    let (fraction, rest) = match rest.strip_prefix('.') {
        Some(after_point) => {
            let end = after_point
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(after_point.len());
            (Some(&after_point[..end]), &after_point[end..])
        }
        None => (None, rest),
    };
    if digits.is_empty() && fraction.is_none_or(str::is_empty) {
        return Err(DurationError::NotADuration);
    }
    let unit_text = rest.trim_start();
    let factor = match UNITS.iter().find(|(unit, _)| *unit == unit_text) {
        Some(&(_, factor)) => factor,
        None if unit_text.is_empty() => 1,
        None => {
            return Err(DurationError::UnknownUnit {
                unit: unit_text.to_owned(),
                meant: meant_unit(unit_text),
            })
        }
    };
    if let Some(fraction) = fraction {
        return Err(DurationError::Fraction {
            exact_ms: exact_ms(digits, fraction, factor, max_ms),
        });
    }
    let number: u64 = digits.parse().map_err(|_| DurationError::TooLarge)?;
    let ms = number.checked_mul(factor).ok_or(DurationError::TooLarge)?;
    if ms > max_ms {
        return Err(DurationError::TooLarge);
    }
    Ok(ms)
}

/// `digits.fraction` units of `factor` ms, when that is a whole number of milliseconds.
fn exact_ms(digits: &str, fraction: &str, factor: u64, max_ms: u64) -> Option<u64> {
    let fraction = fraction.trim_end_matches('0');
    let scale = 10u64.checked_pow(u32::try_from(fraction.len()).ok()?)?;
    let whole: u64 = if digits.is_empty() {
        0
    } else {
        digits.parse().ok()?
    };
    let part: u64 = if fraction.is_empty() {
        0
    } else {
        fraction.parse().ok()?
    };
    let scaled = part.checked_mul(factor)?;
    if scaled % scale != 0 {
        return None;
    }
    let ms = whole.checked_mul(factor)?.checked_add(scaled / scale)?;
    (ms <= max_ms).then_some(ms)
}

fn meant_unit(unit: &str) -> Option<&'static str> {
    let lower = unit.to_lowercase();
    UNITS
        .iter()
        .map(|(unit, _)| *unit)
        .find(|known| *known == lower)
        .or_else(|| {
            UNIT_ALIASES
                .iter()
                .find(|(alias, _)| *alias == lower)
                .map(|(_, known)| *known)
        })
}

/// The largest whole number of `unit` that still fits [`MAX_TIMEOUT_MS`], for hints.
pub(crate) fn max_in_unit(unit: &str) -> Option<u64> {
    UNITS
        .iter()
        .find(|(known, _)| *known == unit)
        .map(|(_, factor)| MAX_TIMEOUT_MS / factor)
}

/// The unit at the end of `text`, if it is one of [`UNITS`].
pub(crate) fn unit_of(text: &str) -> Option<&'static str> {
    let trimmed = text.trim_end();
    UNITS
        .iter()
        .map(|(unit, _)| *unit)
        // `ms` before `s`: the longest matching suffix.
        .filter(|unit| trimmed.ends_with(unit))
        .max_by_key(|unit| unit.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_postgresql_units() {
        let cases = [
            ("250ms", 250),
            ("30s", 30_000),
            ("5min", 300_000),
            ("1h", 3_600_000),
            ("2d", 172_800_000),
            ("30 s", 30_000),
            (" 45s ", 45_000),
            ("1500", 1_500),
            ("0", 0),
            ("0s", 0),
            ("+10s", 10_000),
            ("24d", 2_073_600_000),
            ("2147483647ms", MAX_TIMEOUT_MS),
            ("2147483647", MAX_TIMEOUT_MS),
        ];
        for (text, ms) in cases {
            assert_eq!(parse_duration_ms(text), Ok(ms), "{text:?}");
        }
    }

    #[test]
    fn refuses_what_postgresql_would_refuse_or_misread() {
        use DurationError::*;
        let cases = [
            ("", NotADuration),
            ("soon", NotADuration),
            ("s", NotADuration),
            ("-5s", Negative),
            ("-0", Negative),
            (
                "1.5min",
                Fraction {
                    exact_ms: Some(90_000),
                },
            ),
            ("0.5ms", Fraction { exact_ms: None }),
            (
                "2.0s",
                Fraction {
                    exact_ms: Some(2_000),
                },
            ),
            (
                ".5s",
                Fraction {
                    exact_ms: Some(500),
                },
            ),
            ("25d", TooLarge),
            ("2147483648", TooLarge),
            ("99999999999999999999999s", TooLarge),
            ("18446744073709551615d", TooLarge),
        ];
        for (text, error) in cases {
            assert_eq!(parse_duration_ms(text), Err(error), "{text:?}");
        }
    }

    #[test]
    fn unknown_units_suggest_the_postgresql_one() {
        let cases = [
            ("30sec", "sec", Some("s")),
            ("30S", "S", Some("s")),
            ("5m", "m", Some("min")),
            ("5 minutes", "minutes", Some("min")),
            ("1Hour", "Hour", Some("h")),
            ("10MS", "MS", Some("ms")),
            ("3 days", "days", Some("d")),
            ("1w", "w", None),
            ("1 s x", "s x", None),
        ];
        for (text, unit, meant) in cases {
            assert_eq!(
                parse_duration_ms(text),
                Err(DurationError::UnknownUnit {
                    unit: unit.to_owned(),
                    meant
                }),
                "{text:?}"
            );
        }
    }

    #[test]
    fn limits_per_unit() {
        assert_eq!(max_in_unit("d"), Some(24));
        assert_eq!(max_in_unit("h"), Some(596));
        assert_eq!(max_in_unit("ms"), Some(MAX_TIMEOUT_MS));
        assert_eq!(max_in_unit("w"), None);
        assert_eq!(unit_of("30ms"), Some("ms"));
        assert_eq!(unit_of("30 s"), Some("s"));
        assert_eq!(unit_of("30"), None);
    }
}
