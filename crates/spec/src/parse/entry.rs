//! One item of `postgresqlDatabases`: the fields its file's format allows, unknown fields, and
//! the value of each field but `roles` (name, the fixed words, `deletionProtection`,
//! `connectionLimit`, the schema and extension lists).

use saphyr::{MarkedYaml, Scalar, YamlData};

use super::{
    describe, listed, mode_of, string, Field, Format, Located, Mapping, Parser, RawEntry,
    ADD_API_VERSION_HINT, API_VERSION_KEY, CLUSTER, CONNECTION_LIMIT, DATABASES_KEY, ENVIRONMENT,
    EXTENSIONS, LEGACY_FIELDS, LEGACY_PROTECTION, MODE, NAME, PLACEMENT, POOLING, PRESET, ROLES,
    SCHEMAS, V1_FIELDS,
};
use crate::diagnostic::shown;
use crate::model::{Environment, Mode, Preset};
use crate::suggest::{closest, closest_word};

impl Parser<'_> {
    pub(super) fn entry(&mut self, index: usize, node: &MarkedYaml) -> Option<RawEntry> {
        let path = format!("{DATABASES_KEY}[{index}]");
        let YamlData::Mapping(fields) = &node.data else {
            self.error(
                node,
                &path,
                format!("expected a database entry, found {}", describe(node)),
                "write each database as a mapping, e.g. `- name: my-db`".to_owned(),
            );
            return None;
        };
        let mut entry = RawEntry {
            location: self.location(node),
            name: Field::Absent,
            mode: Field::Absent,
            deletion_protection: Field::Absent,
            preset: Field::Absent,
            schemas: Field::Absent,
            extensions: Field::Absent,
            connection_limit: Field::Absent,
            environment: Field::Absent,
            roles: Field::Absent,
            pooling: Field::Absent,
            cluster: Field::Absent,
            placement: Field::Absent,
            path,
        };
        for (key, value) in fields {
            let Some(name) = string(key) else {
                self.error(
                    key,
                    &entry.path,
                    format!("unexpected key {}", describe(key)),
                    self.allowed_fields(),
                );
                continue;
            };
            let field = format!("{}.{name}", entry.path);
            if V1_FIELDS.contains(&name)
                && !LEGACY_FIELDS.contains(&name)
                && !self.format.allows_v1_fields()
            {
                self.error(
                    key,
                    &field,
                    format!(
                        "`{name}` needs the v1 format, and this file has no `{API_VERSION_KEY}`"
                    ),
                    ADD_API_VERSION_HINT.to_owned(),
                );
            }
            match name {
                NAME => entry.name = self.name(&field, value),
                MODE => entry.mode = self.mode(&field, value),
                LEGACY_PROTECTION if self.format == Format::V1 => {
                    self.removed_deletion_protection(&field, key, value, fields);
                }
                LEGACY_PROTECTION => {
                    entry.deletion_protection = self.deletion_protection(&field, key, value);
                }
                PRESET => entry.preset = self.preset(&field, value),
                SCHEMAS => entry.schemas = self.names(&field, value, NameList::Schemas),
                EXTENSIONS => entry.extensions = self.names(&field, value, NameList::Extensions),
                CONNECTION_LIMIT => entry.connection_limit = self.connection_limit(&field, value),
                ENVIRONMENT => entry.environment = self.environment(&field, value),
                ROLES => entry.roles = self.roles(&field, value),
                POOLING => entry.pooling = self.pooling(&field, value),
                CLUSTER => entry.cluster = self.cluster(&field, value),
                PLACEMENT => entry.placement = self.placement(&field, value),
                unknown => {
                    let meant = self.unknown_field(&entry.path, key, unknown);
                    // `nmae: x` already says what to fix; "missing `name`" on top would be noise.
                    if meant == Some(NAME) && matches!(entry.name, Field::Absent) {
                        entry.name = Field::Invalid;
                    }
                }
            }
        }
        Some(entry)
    }

    /// The fields an entry may have in this file's format.
    fn fields(&self) -> &'static [&'static str] {
        match self.format {
            Format::Legacy => &LEGACY_FIELDS,
            Format::V1 | Format::Upgrading | Format::Unknown => &V1_FIELDS,
        }
    }

    fn allowed_fields(&self) -> String {
        match self.format {
            Format::Legacy => format!(
                "the fields of a database are `{NAME}`, `{MODE}` and the legacy `{LEGACY_PROTECTION}`"
            ),
            Format::V1 | Format::Upgrading | Format::Unknown => {
                format!("the fields of a database are {}", listed(&V1_FIELDS, "and"))
            }
        }
    }

    /// Reports an unknown field; returns the known field it was probably meant to be.
    fn unknown_field(&mut self, entry: &str, key: &MarkedYaml, name: &str) -> Option<&'static str> {
        // Suggest v1 fields in a legacy file too: the v1 error then says how to get them.
        let mut candidates: Vec<&'static str> = V1_FIELDS.to_vec();
        if self.format != Format::V1 {
            candidates.push(LEGACY_PROTECTION);
        }
        let meant = closest(name, &candidates);
        let hint = match meant {
            _ if name == "<<" => {
                "YAML merge keys are not supported here: write the fields out".to_owned()
            }
            Some(known) => format!("did you mean `{known}`?"),
            None if self.format == Format::V1 && closest(name, &[LEGACY_PROTECTION]).is_some() => {
                format!("`{LEGACY_PROTECTION}` was removed in v1: use `mode: protected`")
            }
            None => self.allowed_fields(),
        };
        let name = shown(name);
        self.error(
            key,
            &format!("{entry}.{name}"),
            format!("unknown field `{name}`"),
            hint,
        );
        meant.filter(|known| self.fields().contains(known))
    }

    fn name(&mut self, field: &str, value: &MarkedYaml) -> Field<String> {
        if let Some(name) = string(value) {
            return self.given(value, name.to_owned());
        }
        let hint = match &value.data {
            YamlData::Value(Scalar::Integer(number)) => {
                format!("quote it so YAML reads it as text: `name: \"{number}\"`")
            }
            YamlData::Value(Scalar::Boolean(_) | Scalar::FloatingPoint(_)) => {
                "quote it so YAML reads it as text, e.g. `name: \"my-db\"`".to_owned()
            }
            _ => "give the database a single name, e.g. `name: my-db`".to_owned(),
        };
        self.error(
            value,
            field,
            format!(
                "expected the database name as a string, found {}",
                describe(value)
            ),
            hint,
        );
        Field::Invalid
    }

    fn mode(&mut self, field: &str, value: &MarkedYaml) -> Field<Mode> {
        let options = Mode::ALL.map(|mode| (mode, mode.as_str()));
        self.choice(field, value, MODE, "mode", &options)
    }

    fn preset(&mut self, field: &str, value: &MarkedYaml) -> Field<Preset> {
        let options = Preset::ALL.map(|preset| (preset, preset.as_str()));
        self.choice(field, value, PRESET, "preset", &options)
    }

    fn environment(&mut self, field: &str, value: &MarkedYaml) -> Field<Environment> {
        let options = Environment::ALL.map(|environment| (environment, environment.as_str()));
        self.choice(field, value, ENVIRONMENT, "environment", &options)
    }

    /// One of a fixed set of words, e.g. `mode: protected`.
    pub(super) fn choice<T: Copy>(
        &mut self,
        field: &str,
        value: &MarkedYaml,
        key: &str,
        noun: &str,
        options: &[(T, &'static str)],
    ) -> Field<T> {
        let names: Vec<&'static str> = options.iter().map(|(_, name)| *name).collect();
        let expected = listed(&names, "or");
        let Some(text) = string(value) else {
            let hint = match names.as_slice() {
                [one, two] => format!("use `{key}: {one}` or `{key}: {two}`"),
                _ => format!("use one of {expected}, e.g. `{key}: {}`", names[0]),
            };
            self.error(
                value,
                field,
                format!("expected {expected}, found {}", describe(value)),
                hint,
            );
            return Field::Invalid;
        };
        if let Some(&(choice, _)) = options.iter().find(|(_, name)| *name == text) {
            return self.given(value, choice);
        }
        let hint = match closest_word(text, &names) {
            Some(known) => format!("did you mean `{known}`?"),
            None => format!("use {expected}"),
        };
        self.error(
            value,
            field,
            format!("unknown {noun} `{}`: expected {expected}", shown(text)),
            hint,
        );
        Field::Invalid
    }

    fn deletion_protection(
        &mut self,
        field: &str,
        key: &MarkedYaml,
        value: &MarkedYaml,
    ) -> Field<bool> {
        if let YamlData::Value(Scalar::Boolean(protected)) = value.data {
            return self.given(key, protected);
        }
        self.error(
            value,
            field,
            format!("expected `true` or `false`, found {}", describe(value)),
            format!("replace `{LEGACY_PROTECTION}` with `mode: protected` or `mode: standard`"),
        );
        Field::Invalid
    }

    fn removed_deletion_protection(
        &mut self,
        field: &str,
        key: &MarkedYaml,
        value: &MarkedYaml,
        fields: &Mapping,
    ) {
        let has_mode = fields.keys().any(|key| string(key) == Some(MODE));
        let hint = match value.data {
            _ if has_mode => format!("remove `{LEGACY_PROTECTION}`: `mode` replaces it"),
            YamlData::Value(Scalar::Boolean(protected)) => format!(
                "replace `{LEGACY_PROTECTION}: {protected}` with `mode: {}`",
                mode_of(protected).as_str()
            ),
            _ => {
                format!("replace `{LEGACY_PROTECTION}` with `mode: protected` or `mode: standard`")
            }
        };
        self.error(
            key,
            field,
            format!("`{LEGACY_PROTECTION}` was removed in v1; use `mode: protected`"),
            hint,
        );
    }

    /// `connectionLimit`: -1 (no limit) or more, as PostgreSQL's `CONNECTION LIMIT` takes it.
    pub(super) fn connection_limit(&mut self, field: &str, value: &MarkedYaml) -> Field<i32> {
        let (message, hint) = match &value.data {
            YamlData::Value(Scalar::Integer(number)) => match i32::try_from(*number) {
                Ok(limit) if limit >= -1 => return self.given(value, limit),
                Ok(_) => (
                    format!("connection limit `{number}` is below -1"),
                    "use `-1` for no limit, or the number of connections allowed (0 or more)"
                        .to_owned(),
                ),
                Err(_) if *number < 0 => (
                    format!("connection limit `{number}` is below -1"),
                    "use `-1` for no limit, or the number of connections allowed (0 or more)"
                        .to_owned(),
                ),
                Err(_) => (
                    format!(
                        "connection limit `{number}` is more than PostgreSQL's maximum of {}",
                        i32::MAX
                    ),
                    "use `-1` for no limit".to_owned(),
                ),
            },
            YamlData::Value(Scalar::String(text)) if text.trim().parse::<i64>().is_ok() => (
                format!(
                    "expected a number of connections, found {}",
                    describe(value)
                ),
                format!(
                    "write it without quotes: `{CONNECTION_LIMIT}: {}`",
                    text.trim()
                ),
            ),
            _ => (
                format!(
                    "expected a number of connections, found {}",
                    describe(value)
                ),
                format!("e.g. `{CONNECTION_LIMIT}: 20`, or `-1` for no limit"),
            ),
        };
        self.error(value, field, message, hint);
        Field::Invalid
    }

    /// `schemas` or `extensions`: a list of names. Items that are not strings are reported and
    /// left out; the names themselves are checked in `validate`.
    fn names(
        &mut self,
        field: &str,
        value: &MarkedYaml,
        list: NameList,
    ) -> Field<Vec<(usize, Located<String>)>> {
        let (what, example) = list.describe();
        let key = list.key();
        let YamlData::Sequence(items) = &value.data else {
            let hint = match string(value) {
                Some(one) => format!("write a list, even of one: `{key}: [{}]`", shown(one)),
                None => format!("list them, e.g. `{key}: [{example}]`, or remove `{key}`"),
            };
            self.error(
                value,
                field,
                format!("expected a list of {what} names, found {}", describe(value)),
                hint,
            );
            return Field::Invalid;
        };
        let mut names = Vec::new();
        for (index, item) in items.iter().enumerate() {
            match string(item) {
                Some(name) => names.push((
                    index,
                    Located {
                        value: name.to_owned(),
                        location: self.location(item),
                    },
                )),
                None => {
                    let hint = match &item.data {
                        YamlData::Value(
                            Scalar::Integer(_) | Scalar::Boolean(_) | Scalar::FloatingPoint(_),
                        ) => "quote it so YAML reads it as text".to_owned(),
                        _ => format!("write one name per item, e.g. `{key}: [{example}]`"),
                    };
                    self.error(
                        item,
                        &format!("{field}[{index}]"),
                        format!("expected a {what} name, found {}", describe(item)),
                        hint,
                    );
                }
            }
        }
        self.given(value, names)
    }
}

/// The two name lists of an entry.
#[derive(Debug, Clone, Copy)]
enum NameList {
    Schemas,
    Extensions,
}

impl NameList {
    fn key(self) -> &'static str {
        match self {
            NameList::Schemas => SCHEMAS,
            NameList::Extensions => EXTENSIONS,
        }
    }

    /// What one item is, and an example list.
    fn describe(self) -> (&'static str, &'static str) {
        match self {
            NameList::Schemas => ("schema", "app, billing"),
            NameList::Extensions => ("extension", "pgcrypto, \"uuid-ossp\""),
        }
    }
}
