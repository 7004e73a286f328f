//! An entry's `pooling:`: `none`, or the pool `mode` and `size` of the database in the cluster's
//! pooler.

use saphyr::{MarkedYaml, Scalar, YamlData};

use super::{
    describe, listed, string, Field, Parser, POOLING, POOLING_FIELDS, POOL_MODE, POOL_SIZE,
};
use crate::diagnostic::shown;
use crate::model::{PoolMode, Pooling};
use crate::suggest::{closest, closest_word};

impl Parser<'_> {
    /// `pooling: none` or `pooling: {mode: transaction|session, size: N}`.
    pub(super) fn pooling(&mut self, field: &str, value: &MarkedYaml) -> Field<Pooling> {
        let example = format!("e.g. `{POOLING}: {{{POOL_MODE}: transaction, {POOL_SIZE}: 10}}`");
        let fields = match &value.data {
            YamlData::Mapping(fields) => fields,
            _ => {
                let (message, hint) = match string(value) {
                    Some(Pooling::NONE) => return self.given(value, Pooling::Off),
                    Some(text) => (
                        format!(
                            "unknown pooling `{}`: expected `{}` or the pool's settings",
                            shown(text),
                            Pooling::NONE
                        ),
                        match closest_word(text, &[Pooling::NONE]) {
                            Some(known) => format!("did you mean `{known}`?"),
                            None if PoolMode::ALL.iter().any(|mode| mode.as_str() == text) => {
                                format!("write `{POOLING}: {{{POOL_MODE}: {text}}}`")
                            }
                            None => format!(
                                "write `{POOLING}: {}` to opt out of the pooler, or {example}",
                                Pooling::NONE
                            ),
                        },
                    ),
                    None => (
                        format!(
                            "expected `{}` or the pool's settings, found {}",
                            Pooling::NONE,
                            describe(value)
                        ),
                        match value.data {
                            YamlData::Value(Scalar::Boolean(false) | Scalar::Null) => format!(
                                "write `{POOLING}: {}` to opt out of the pooler",
                                Pooling::NONE
                            ),
                            _ => example,
                        },
                    ),
                };
                self.error(value, field, message, hint);
                return Field::Invalid;
            }
        };
        let (mut mode, mut size, mut usable) = (None, None, true);
        for (key, setting) in fields {
            let Some(name) = string(key) else {
                self.error(
                    key,
                    field,
                    format!("unexpected key {}", describe(key)),
                    pooling_fields(),
                );
                usable = false;
                continue;
            };
            let path = format!("{field}.{name}");
            match name {
                POOL_MODE => {
                    let options = PoolMode::ALL.map(|mode| (mode, mode.as_str()));
                    match self.choice(&path, setting, POOL_MODE, "pool mode", &options) {
                        Field::Given(located) => mode = Some(located.value),
                        _ => usable = false,
                    }
                }
                POOL_SIZE => match self.pool_size(&path, setting) {
                    Some(given) => size = Some(given),
                    None => usable = false,
                },
                unknown => {
                    let hint = match closest(unknown, &POOLING_FIELDS) {
                        Some(known) => format!("did you mean `{known}`?"),
                        None => pooling_fields(),
                    };
                    let unknown = shown(unknown);
                    self.error(
                        key,
                        &format!("{field}.{unknown}"),
                        format!("unknown field `{unknown}`"),
                        hint,
                    );
                    usable = false;
                }
            }
        }
        if !usable {
            return Field::Invalid;
        }
        self.given(value, Pooling::Pooled { mode, size })
    }

    /// `pooling.size`: pgbouncer's `pool_size`, 1 to [`Pooling::MAX_SIZE`].
    fn pool_size(&mut self, field: &str, value: &MarkedYaml) -> Option<u32> {
        let max = Pooling::MAX_SIZE;
        let (message, hint) = match &value.data {
            YamlData::Value(Scalar::Integer(number)) => match u32::try_from(*number) {
                Ok(size) if (1..=max).contains(&size) => return Some(size),
                Ok(0) => (
                    "a pool size of `0` lets no connection through".to_owned(),
                    format!(
                        "use 1 to {max} server connections, or `{POOLING}: {}` to opt out",
                        Pooling::NONE
                    ),
                ),
                _ if *number < 0 => (
                    format!("pool size `{number}` is negative"),
                    format!("use 1 to {max} server connections"),
                ),
                _ => (
                    format!("pool size `{number}` is more than {max}"),
                    format!("use at most {max}: the server's max_connections bounds it anyway"),
                ),
            },
            YamlData::Value(Scalar::String(text)) if text.trim().parse::<i64>().is_ok() => (
                format!(
                    "expected a number of connections, found {}",
                    describe(value)
                ),
                format!("write it without quotes: `{POOL_SIZE}: {}`", text.trim()),
            ),
            _ => (
                format!(
                    "expected a number of connections, found {}",
                    describe(value)
                ),
                format!("e.g. `{POOL_SIZE}: 10`"),
            ),
        };
        self.error(value, field, message, hint);
        None
    }
}

fn pooling_fields() -> String {
    format!(
        "the settings of `{POOLING}` are {}",
        listed(&POOLING_FIELDS, "and")
    )
}
