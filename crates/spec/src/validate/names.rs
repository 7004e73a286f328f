//! Names: DNS-1123 labels (namespaces, database names), the length of the identifiers a
//! tenant becomes, and databases that collide.

use std::collections::BTreeMap;
use std::path::{Component, Path};

use super::Declaration;
use crate::diagnostic::{shown, Diagnostic};
use crate::location::SourceLocation;
use crate::model::{Preset, MAX_IDENTIFIER_BYTES};
use crate::parse::DATABASES_KEY;

/// RFC 1123 label length, which Kubernetes namespace names share.
const MAX_LABEL_BYTES: usize = 63;

pub(super) const LABEL_RULE: &str =
    "use 1 to 63 characters among lowercase letters a-z, digits 0-9 and `-`, \
    starting and ending with a letter or digit";

/// Most distinct bad characters listed in one message.
pub(super) const MAX_LISTED_CHARACTERS: usize = 5;

/// Whether `s` is a DNS-1123 label: 1 to 63 characters among `a-z`, `0-9` and `-`, starting
/// and ending with a letter or digit. Namespaces and database names must be, since they end up
/// in Kubernetes object names and PostgreSQL identifiers, where anything else would need
/// quoting or be rejected.
pub fn is_dns_label(s: &str) -> bool {
    label_problems(s).is_empty()
}

/// Why `s` is not a DNS-1123 label, as phrases for a message; empty when it is one.
pub(super) fn label_problems(s: &str) -> Vec<String> {
    if s.is_empty() {
        return vec!["it is empty".to_owned()];
    }
    let mut problems = Vec::new();
    problems.extend(unexpected_characters(s, |c| {
        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'
    }));
    if s.starts_with('-') {
        problems.push("it starts with `-`".to_owned());
    }
    if s.ends_with('-') {
        problems.push("it ends with `-`".to_owned());
    }
    // Counted in characters to match the rule users are shown; a label with any multi-byte
    // character is already rejected above, so this agrees with the byte limit.
    let length = s.chars().count();
    if length > MAX_LABEL_BYTES {
        problems.push(format!(
            "it is {length} characters long, more than {MAX_LABEL_BYTES}"
        ));
    }
    problems
}

/// "it contains upper-case letters, `_` and …" for the characters of `s` that `allowed` refuses;
/// None when there are none. One phrase for every character rule of names and identifiers.
pub(super) fn unexpected_characters(s: &str, allowed: impl Fn(char) -> bool) -> Option<String> {
    let mut upper_case = false;
    let mut others: Vec<char> = Vec::new();
    for c in s.chars() {
        if allowed(c) {
            continue;
        }
        if c.is_uppercase() {
            upper_case = true;
        } else if !others.contains(&c) {
            others.push(c);
        }
    }
    let mut contained: Vec<String> = Vec::new();
    if upper_case {
        contained.push("upper-case letters".to_owned());
    }
    contained.extend(
        others
            .iter()
            .take(MAX_LISTED_CHARACTERS)
            .map(|&c| describe_char(c)),
    );
    if others.len() > MAX_LISTED_CHARACTERS {
        contained.push("more".to_owned());
    }
    (!contained.is_empty()).then(|| format!("it contains {}", join_and(&contained)))
}

pub(super) fn describe_char(c: char) -> String {
    match c {
        ' ' => "spaces".to_owned(),
        '`' => "backticks".to_owned(),
        c if c.is_control() => format!("`{}`", c.escape_default()),
        c => format!("`{c}`"),
    }
}

pub(super) fn join_and(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [only] => only.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// A valid label close to `s`, to show the user what is meant; `None` when nothing usable is
/// left (e.g. `$$`).
fn label_example(s: &str) -> Option<String> {
    let mut example = String::new();
    for c in s.chars().map(|c| c.to_ascii_lowercase()) {
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() {
            c
        } else {
            '-'
        };
        if !(c == '-' && (example.is_empty() || example.ends_with('-'))) {
            example.push(c);
        }
    }
    example.truncate(MAX_LABEL_BYTES);
    let example = example.trim_end_matches('-');
    (!example.is_empty()).then(|| example.to_owned())
}

pub(super) fn label_hint(prefix: &str, s: &str) -> String {
    match label_example(s) {
        Some(example) => format!("{prefix}{LABEL_RULE}, e.g. `{example}`"),
        None => format!("{prefix}{LABEL_RULE}"),
    }
}

/// The message for a value that is not a DNS-1123 label; `what` says which value it is.
pub(super) fn label_message(what: &str, value: &str, problems: &[String]) -> String {
    if value.is_empty() {
        format!("{what} is empty")
    } else {
        format!(
            "{what} `{}` is not a valid DNS-1123 label: {}",
            shown(value),
            problems.join("; ")
        )
    }
}

/// The file's namespace if it is usable; problems with it are reported once per file.
pub(super) fn namespace(
    file: &Path,
    declared_at: SourceLocation,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<String> {
    let mut components = file.components();
    let first = components.next();
    let (Some(Component::Normal(folder)), Some(_)) = (first, components.next()) else {
        diagnostics.push(
            Diagnostic::error(
                declared_at,
                DATABASES_KEY,
                "databases declared outside a namespace folder",
            )
            .with_hint(
                "move this file to `<namespace>/<app>/values.yaml`: the first folder is the namespace",
            ),
        );
        return None;
    };
    let namespace = folder.to_string_lossy();
    let problems = label_problems(&namespace);
    if problems.is_empty() {
        return Some(namespace.into_owned());
    }
    diagnostics.push(
        Diagnostic::error(
            SourceLocation::file_start(file),
            "namespace",
            label_message("namespace folder", &namespace, &problems),
        )
        .with_hint(label_hint("rename the folder: ", &namespace)),
    );
    None
}

pub(super) fn identifier_too_long(
    namespace: &str,
    name: &str,
    preset: Preset,
    location: &SourceLocation,
    field: &str,
) -> Option<Diagnostic> {
    let suffix = preset.longest_role_suffix();
    let identifier = crate::TenantId::new(namespace, name).longest_role(preset);
    if identifier.len() <= MAX_IDENTIFIER_BYTES {
        return None;
    }
    let over = identifier.len() - MAX_IDENTIFIER_BYTES;
    let room = MAX_IDENTIFIER_BYTES.saturating_sub(namespace.len() + suffix.len() + 2);
    let hint = if room == 0 {
        format!("the namespace `{namespace}` leaves no room for a database name: use a shorter namespace")
    } else {
        format!("shorten the database name to at most {room} characters")
    };
    Some(
        Diagnostic::error(
            location.clone(),
            field,
            format!(
                "the role name `{identifier}` is {} bytes, {over} {} over PostgreSQL's \
                 {MAX_IDENTIFIER_BYTES}-byte identifier limit: PostgreSQL would silently \
                 truncate it and two tenants could end up sharing a role",
                identifier.len(),
                if over == 1 { "byte" } else { "bytes" },
            ),
        )
        .with_hint(hint),
    )
}

/// An error at each declaration that maps to the same PostgreSQL database as another one:
/// the same tenant declared twice, or two tenants whose `<namespace>-<name>` coincide
/// (`a-b/c` and `a/b-c`).
pub(crate) fn collisions(declarations: &[Declaration]) -> Vec<Diagnostic> {
    let mut by_database: BTreeMap<String, Vec<&Declaration>> = BTreeMap::new();
    for declaration in declarations {
        by_database
            .entry(declaration.spec.database_name())
            .or_default()
            .push(declaration);
    }
    let mut diagnostics = Vec::new();
    for (database, group) in by_database.into_iter().filter(|(_, group)| group.len() > 1) {
        for (index, declaration) in group.iter().enumerate() {
            let others: Vec<&&Declaration> = group
                .iter()
                .enumerate()
                .filter(|&(other, _)| other != index)
                .map(|(_, other)| other)
                .collect();
            diagnostics.push(collision(declaration, &others, &database));
        }
    }
    diagnostics
}

fn collision(declaration: &Declaration, others: &[&&Declaration], database: &str) -> Diagnostic {
    let tenant = declaration.spec.tenant_id();
    let same_tenant = others.iter().all(|other| other.spec.tenant_id() == tenant);
    let (message, hint) = if same_tenant {
        let places: Vec<String> = others
            .iter()
            .map(|other| other.spec.location.to_string())
            .collect();
        (
            format!(
                "database `{tenant}` is declared more than once, also at {}",
                join_and(&places)
            ),
            "keep one declaration and remove the others; until then none of the files \
             involved is applied",
        )
    } else {
        let places: Vec<String> = others
            .iter()
            .map(|other| format!("`{}` at {}", other.spec.tenant_id(), other.spec.location))
            .collect();
        (
            format!(
                "database `{tenant}` collides with {}: all become the PostgreSQL database \
                 `{database}`",
                join_and(&places)
            ),
            "rename one of them; until then none of the files involved is applied",
        )
    };
    Diagnostic::error(
        declaration.spec.location.clone(),
        &declaration.field,
        message,
    )
    .with_hint(hint)
}
