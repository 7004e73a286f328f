//! An entry's `roles:`: settings by role suffix, and each setting's value.

use saphyr::{MarkedYaml, Scalar, YamlData};

use super::{
    describe, listed, string, Field, Located, Parser, RawRole, CONNECTION_LIMIT, LOG_STATEMENTS,
    ROLES, ROLE_FIELDS, STATEMENT_TIMEOUT,
};
use crate::diagnostic::shown;
use crate::duration::{self, parse_duration_ms, DurationError, MAX_TIMEOUT_MS};
use crate::model::{LogStatements, RoleSettings};
use crate::suggest::closest;

impl Parser<'_> {
    fn log_statements(&mut self, field: &str, value: &MarkedYaml) -> Field<LogStatements> {
        let options = LogStatements::ALL.map(|level| (level, level.as_str()));
        self.choice(
            field,
            value,
            LOG_STATEMENTS,
            "logStatements value",
            &options,
        )
    }

    /// `roles`: settings by role suffix. Whether the suffixes are login roles of the preset is
    /// for `validate`, which knows the preset wherever it is written in the entry.
    pub(super) fn roles(&mut self, field: &str, value: &MarkedYaml) -> Field<Vec<RawRole>> {
        let YamlData::Mapping(roles) = &value.data else {
            self.error(
                value,
                field,
                format!("expected settings by role, found {}", describe(value)),
                format!("e.g. `{ROLES}: {{write: {{{STATEMENT_TIMEOUT}: 30s}}}}`"),
            );
            return Field::Invalid;
        };
        let mut parsed = Vec::new();
        for (key, settings) in roles {
            let Some(suffix) = string(key) else {
                self.error(
                    key,
                    field,
                    format!("expected a role name, found {}", describe(key)),
                    format!(
                        "name the role, e.g. `{ROLES}: {{write: {{{STATEMENT_TIMEOUT}: 30s}}}}`"
                    ),
                );
                continue;
            };
            let path = format!("{field}.{}", shown(suffix));
            let settings = self.role_settings(&path, suffix, settings);
            parsed.push(RawRole {
                suffix: Located {
                    value: suffix.to_owned(),
                    location: self.location(key),
                },
                path,
                settings,
            });
        }
        self.given(value, parsed)
    }

    fn role_settings(&mut self, path: &str, suffix: &str, value: &MarkedYaml) -> RoleSettings {
        let mut settings = RoleSettings::default();
        let YamlData::Mapping(fields) = &value.data else {
            self.error(
                value,
                path,
                format!(
                    "expected the settings of role `{}`, found {}",
                    shown(suffix),
                    describe(value)
                ),
                format!(
                    "e.g. `{}: {{{STATEMENT_TIMEOUT}: 30s}}`, or remove the role",
                    shown(suffix)
                ),
            );
            return settings;
        };
        for (key, value) in fields {
            let Some(name) = string(key) else {
                self.error(
                    key,
                    path,
                    format!("unexpected key {}", describe(key)),
                    role_fields(),
                );
                continue;
            };
            let field = format!("{path}.{name}");
            match name {
                CONNECTION_LIMIT => {
                    settings.connection_limit =
                        self.connection_limit(&field, value).given().copied();
                }
                STATEMENT_TIMEOUT => {
                    settings.statement_timeout_ms =
                        self.statement_timeout(&field, value).given().copied();
                }
                LOG_STATEMENTS => {
                    settings.log_statements = self.log_statements(&field, value).given().copied();
                }
                unknown => {
                    let hint = match closest(unknown, &ROLE_FIELDS) {
                        Some(known) => format!("did you mean `{known}`?"),
                        None => role_fields(),
                    };
                    let unknown = shown(unknown);
                    self.error(
                        key,
                        &format!("{path}.{unknown}"),
                        format!("unknown field `{unknown}`"),
                        hint,
                    );
                }
            }
        }
        settings
    }

    /// `statementTimeout`: a PostgreSQL duration (`30s`) or a number of milliseconds.
    fn statement_timeout(&mut self, field: &str, value: &MarkedYaml) -> Field<u64> {
        const UNITS: &str = "`ms`, `s`, `min`, `h` or `d`";
        let max = format!(
            "PostgreSQL's maximum statement timeout of {MAX_TIMEOUT_MS}ms (about 24.8 days)"
        );
        let (message, hint) = match &value.data {
            YamlData::Value(Scalar::Integer(ms)) => match u64::try_from(*ms) {
                Ok(ms) if ms <= MAX_TIMEOUT_MS => return self.given(value, ms),
                Ok(_) => (
                    format!("`{ms}` milliseconds is more than {max}"),
                    format!("use at most `{MAX_TIMEOUT_MS}` (or `24d`), or `0` for no timeout"),
                ),
                Err(_) => (
                    format!("`{STATEMENT_TIMEOUT}` cannot be negative, found `{ms}`"),
                    "use a duration such as `30s`, or `0` for no timeout".to_owned(),
                ),
            },
            YamlData::Value(Scalar::String(text)) => match parse_duration_ms(text) {
                Ok(ms) => return self.given(value, ms),
                Err(error) => {
                    let text = shown(text);
                    match error {
                        DurationError::NotADuration => (
                            format!(
                                "expected a duration such as `30s` or a number of milliseconds, \
                                 found the string `{text}`"
                            ),
                            format!(
                                "write a whole number with a unit {UNITS} (e.g. `250ms`, `30s`, \
                                 `5min`), or a number of milliseconds"
                            ),
                        ),
                        DurationError::Negative => (
                            format!("`{STATEMENT_TIMEOUT}` cannot be negative, found `{text}`"),
                            "use a duration such as `30s`, or `0` for no timeout".to_owned(),
                        ),
                        DurationError::Fraction { exact_ms } => (
                            format!("`{text}` is not a whole number of its unit"),
                            match exact_ms {
                                Some(ms) => format!("write `{ms}ms`"),
                                None => "use a whole number of a smaller unit (PostgreSQL \
                                         counts statement timeouts in whole milliseconds)"
                                    .to_owned(),
                            },
                        ),
                        DurationError::UnknownUnit { unit, meant } => {
                            let number = text.trim().trim_end_matches(unit.as_str()).trim_end();
                            (
                                format!(
                                    "unknown unit `{}` in `{text}`: PostgreSQL takes {UNITS}",
                                    shown(&unit)
                                ),
                                match meant {
                                    Some(known) => format!("did you mean `{number}{known}`?"),
                                    None => format!("use one of the units {UNITS}"),
                                },
                            )
                        }
                        DurationError::TooLarge => (
                            format!("`{text}` is more than {max}"),
                            match duration::unit_of(&text).and_then(|unit| {
                                duration::max_in_unit(unit).map(|most| (most, unit))
                            }) {
                                Some((most, unit)) => {
                                    format!("use at most `{most}{unit}`, or `0` for no timeout")
                                }
                                None => format!(
                                    "use at most `{MAX_TIMEOUT_MS}` (or `24d`), or `0` for no \
                                     timeout"
                                ),
                            },
                        ),
                    }
                }
            },
            _ => (
                format!(
                    "expected a duration such as `30s` or a number of milliseconds, found {}",
                    describe(value)
                ),
                format!("e.g. `{STATEMENT_TIMEOUT}: 30s`, `{STATEMENT_TIMEOUT}: 5min` or `{STATEMENT_TIMEOUT}: 250`"),
            ),
        };
        self.error(value, field, message, hint);
        Field::Invalid
    }
}

fn role_fields() -> String {
    format!("the settings of a role are {}", listed(&ROLE_FIELDS, "and"))
}
