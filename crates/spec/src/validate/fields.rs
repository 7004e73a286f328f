//! The v1 fields with rules of their own: schemas, extensions and role settings.

use std::collections::BTreeMap;

use super::names::unexpected_characters;
use crate::diagnostic::{shown, Diagnostic};
use crate::model::{Preset, RoleSettings, MAX_IDENTIFIER_BYTES};
use crate::parse::{listed, Field, Located, RawEntry, EXTENSIONS, SCHEMAS};
use crate::suggest::closest;

/// The schemas of the entry: the preset's own first, then the declared ones that are valid,
/// each once. Declaring a schema the preset implies is fine; declaring one twice is not.
pub(super) fn schemas(
    entry: &RawEntry,
    preset: Option<Preset>,
    diagnostics: &mut Vec<Diagnostic>,
) -> Vec<String> {
    let implied = preset.map_or(&[][..], |preset| preset.implied_schemas());
    let mut schemas: Vec<String> = implied.iter().map(|&schema| schema.to_owned()).collect();
    let Field::Given(listed) = &entry.schemas else {
        return schemas;
    };
    let mut seen: Vec<&Located<String>> = Vec::new();
    for (index, schema) in &listed.value {
        let field = format!("{}.{SCHEMAS}[{index}]", entry.path);
        let name = &schema.value;
        if let Some((message, hint)) = schema_problem(name) {
            diagnostics
                .push(Diagnostic::error(schema.location.clone(), field, message).with_hint(hint));
        } else if let Some(first) = seen.iter().find(|first| first.value == *name) {
            diagnostics.push(duplicate("schema", schema, first, field, SCHEMAS));
        } else {
            seen.push(schema);
            if !schemas.contains(name) {
                schemas.push(name.clone());
            }
        }
    }
    schemas
}

pub(super) fn extensions(entry: &RawEntry, diagnostics: &mut Vec<Diagnostic>) -> Vec<String> {
    let Field::Given(listed) = &entry.extensions else {
        return Vec::new();
    };
    let mut seen: Vec<&Located<String>> = Vec::new();
    for (index, extension) in &listed.value {
        let field = format!("{}.{EXTENSIONS}[{index}]", entry.path);
        if let Some((message, hint)) = extension_problem(&extension.value) {
            diagnostics.push(
                Diagnostic::error(extension.location.clone(), field, message).with_hint(hint),
            );
        } else if let Some(first) = seen.iter().find(|first| first.value == extension.value) {
            diagnostics.push(duplicate("extension", extension, first, field, EXTENSIONS));
        } else {
            seen.push(extension);
        }
    }
    seen.into_iter()
        .map(|extension| extension.value.clone())
        .collect()
}

fn duplicate(
    what: &str,
    again: &Located<String>,
    first: &Located<String>,
    field: String,
    key: &str,
) -> Diagnostic {
    Diagnostic::error(
        again.location.clone(),
        field,
        format!(
            "{what} `{}` is listed twice, also at {}:{}",
            shown(&again.value),
            first.location.line,
            first.location.column
        ),
    )
    .with_hint(format!("remove one of them from `{key}`"))
}

/// Why `name` cannot be a tenant schema, as a message and a fix.
fn schema_problem(name: &str) -> Option<(String, String)> {
    const RULE: &str = "use lowercase letters a-z, digits 0-9 and `_`, not starting with a digit";
    if name.is_empty() {
        return Some((
            "schema name is empty".to_owned(),
            format!("{RULE}, e.g. `app`"),
        ));
    }
    let problems = identifier_problems(
        name,
        |c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_',
        |c| c.is_ascii_lowercase() || c == '_',
    );
    if !problems.is_empty() {
        let example: String = name
            .chars()
            .map(|c| match c.to_ascii_lowercase() {
                c @ ('a'..='z' | '0'..='9' | '_') => c,
                _ => '_',
            })
            .collect();
        let example = match example.chars().next() {
            Some('0'..='9') => format!("s_{example}"),
            _ => example,
        };
        return Some((
            format!(
                "schema name `{}` is not a lowercase identifier: {}",
                shown(name),
                problems.join("; ")
            ),
            format!("{RULE}, e.g. `{}`", shown(&example)),
        ));
    }
    if name.len() > MAX_IDENTIFIER_BYTES {
        return Some((
            format!(
                "schema name `{}` is {} bytes, more than PostgreSQL's {MAX_IDENTIFIER_BYTES}-byte \
                 identifier limit",
                shown(name),
                name.len()
            ),
            format!("shorten it to at most {MAX_IDENTIFIER_BYTES} characters"),
        ));
    }
    if name == "public" {
        return Some((
            "schema `public` is always there and pgtenant manages it already".to_owned(),
            format!("remove `public` from `{SCHEMAS}`"),
        ));
    }
    if name == "information_schema" {
        return Some((
            "`information_schema` is PostgreSQL's own schema".to_owned(),
            "choose another name".to_owned(),
        ));
    }
    if let Some(rest) = name.strip_prefix("pg_") {
        let hint = if rest.is_empty() || rest.starts_with(|c: char| c.is_ascii_digit()) {
            "choose a name that does not start with `pg_`".to_owned()
        } else {
            format!("choose a name that does not start with `pg_`, e.g. `{rest}`")
        };
        return Some((
            format!(
                "schema name `{}` starts with `pg_`, which PostgreSQL reserves for its own schemas",
                shown(name)
            ),
            hint,
        ));
    }
    None
}

/// Why `name` cannot be an extension name, as a message and a fix.
fn extension_problem(name: &str) -> Option<(String, String)> {
    const RULE: &str = "extension names use lowercase letters a-z, digits 0-9, `_` and `-`, not \
         starting with `-`, e.g. `pgcrypto` or `uuid-ossp`";
    if name.is_empty() {
        return Some(("extension name is empty".to_owned(), RULE.to_owned()));
    }
    let problems = identifier_problems(
        name,
        |c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-',
        |c| c != '-',
    );
    if !problems.is_empty() {
        return Some((
            format!(
                "extension name `{}` is not valid: {}",
                shown(name),
                problems.join("; ")
            ),
            RULE.to_owned(),
        ));
    }
    if name.len() > MAX_IDENTIFIER_BYTES {
        return Some((
            format!(
                "extension name `{}` is {} bytes, more than PostgreSQL's \
                 {MAX_IDENTIFIER_BYTES}-byte identifier limit",
                shown(name),
                name.len()
            ),
            "check the extension's name in `pg_available_extensions`".to_owned(),
        ));
    }
    None
}

/// Why `s` breaks a character rule, as phrases for a message; empty when it does not.
fn identifier_problems(
    s: &str,
    allowed: impl Fn(char) -> bool,
    first_allowed: impl Fn(char) -> bool,
) -> Vec<String> {
    let mut problems = Vec::new();
    problems.extend(unexpected_characters(s, &allowed));
    if let Some(first) = s.chars().next() {
        if allowed(first) && !first_allowed(first) {
            problems.push(format!("it starts with `{first}`"));
        }
    }
    problems
}

/// Settings by role suffix; each suffix must be a login role of the preset.
pub(super) fn roles(
    entry: &RawEntry,
    preset: Option<Preset>,
    diagnostics: &mut Vec<Diagnostic>,
) -> BTreeMap<String, RoleSettings> {
    let mut settings = BTreeMap::new();
    let Field::Given(roles) = &entry.roles else {
        return settings;
    };
    let Some(preset) = preset else {
        return settings;
    };
    let named = match entry.preset {
        Field::Absent => format!("preset `{}` (the default)", preset.as_str()),
        _ => format!("preset `{}`", preset.as_str()),
    };
    let logins = listed(preset.login_roles(), "and");
    for role in &roles.value {
        let suffix = role.suffix.value.as_str();
        if preset.login_roles().contains(&suffix) {
            settings.insert(suffix.to_owned(), role.settings.clone());
            continue;
        }
        let (message, hint) = if preset.role_suffixes().contains(&suffix) {
            (
                format!("role `{suffix}` of {named} does not log in, so it takes no settings"),
                format!("settings apply to its login roles {logins}"),
            )
        } else {
            let hint = match closest(suffix, preset.login_roles()) {
                Some(known) => format!("did you mean `{known}`?"),
                None => match Preset::ALL
                    .iter()
                    .find(|other| other.login_roles().contains(&suffix))
                {
                    Some(other) => format!(
                        "`{suffix}` is a role of preset `{}`; the login roles of {named} are {logins}",
                        other.as_str()
                    ),
                    None => format!("the login roles of {named} are {logins}"),
                },
            };
            (format!("{named} has no role `{}`", shown(suffix)), hint)
        };
        diagnostics.push(
            Diagnostic::error(role.suffix.location.clone(), role.path.clone(), message)
                .with_hint(hint),
        );
    }
    settings
}
