//! What the parsed values mean: names, lengths, legacy fields and collisions.

use std::collections::BTreeMap;
use std::path::{Component, Path};

use crate::diagnostic::{shown, Diagnostic};
use crate::location::SourceLocation;
use crate::model::{DatabaseSpec, Mode, Preset, RoleSettings, MAX_IDENTIFIER_BYTES};
use crate::parse::{
    listed, mode_of, Field, Format, Located, RawEntry, RawFile, DATABASES_KEY, EXTENSIONS,
    LEGACY_PROTECTION, NAME, SCHEMAS,
};
use crate::suggest::closest;

/// RFC 1123 label length, which Kubernetes namespace names share.
const MAX_LABEL_BYTES: usize = 63;

const LABEL_RULE: &str = "use 1 to 63 characters among lowercase letters a-z, digits 0-9 and `-`, \
    starting and ending with a letter or digit";

/// Most distinct bad characters listed in one message.
const MAX_LISTED_CHARACTERS: usize = 5;

/// A database as declared, kept with its field path so that collisions found later, possibly
/// across files, can point at it.
#[derive(Debug)]
pub(crate) struct Declaration {
    pub spec: DatabaseSpec,
    /// Path of the entry's `name`, e.g. `postgresqlDatabases[0].name`.
    pub field: String,
}

/// Whether `s` is a DNS-1123 label: 1 to 63 characters among `a-z`, `0-9` and `-`, starting
/// and ending with a letter or digit. Namespaces and database names must be, since they end up
/// in Kubernetes object names and PostgreSQL identifiers, where anything else would need
/// quoting or be rejected.
pub fn is_dns_label(s: &str) -> bool {
    label_problems(s).is_empty()
}

/// Why `s` is not a DNS-1123 label, as phrases for a message; empty when it is one.
fn label_problems(s: &str) -> Vec<String> {
    if s.is_empty() {
        return vec!["it is empty".to_owned()];
    }
    let mut problems = Vec::new();
    let mut upper_case = false;
    let mut others: Vec<char> = Vec::new();
    for c in s.chars() {
        if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' {
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
    if !contained.is_empty() {
        problems.push(format!("it contains {}", join_and(&contained)));
    }
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

fn describe_char(c: char) -> String {
    match c {
        ' ' => "spaces".to_owned(),
        '`' => "backticks".to_owned(),
        c if c.is_control() => format!("`{}`", c.escape_default()),
        c => format!("`{c}`"),
    }
}

fn join_and(items: &[String]) -> String {
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

fn label_hint(prefix: &str, s: &str) -> String {
    match label_example(s) {
        Some(example) => format!("{prefix}{LABEL_RULE}, e.g. `{example}`"),
        None => format!("{prefix}{LABEL_RULE}"),
    }
}

/// The message for a value that is not a DNS-1123 label; `what` says which value it is.
fn label_message(what: &str, value: &str, problems: &[String]) -> String {
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

/// Checks one parsed file and returns its declarations, including those of a file that has
/// errors: whether a file is applied is decided once collisions across files are known too.
pub(crate) fn validate(
    file: &Path,
    raw: RawFile,
    diagnostics: &mut Vec<Diagnostic>,
) -> Vec<Declaration> {
    let Some(declared_at) = raw.declared_at else {
        return Vec::new();
    };
    let namespace = namespace(file, declared_at, diagnostics);
    let mut legacy = Vec::new();
    let declarations = raw
        .entries
        .into_iter()
        .filter_map(|entry| {
            validate_entry(
                entry,
                raw.format,
                namespace.as_deref(),
                &mut legacy,
                diagnostics,
            )
        })
        .collect();
    diagnostics.extend(legacy_protection_warning(&legacy));
    declarations
}

/// One use of chart 0.5.0's `deletionProtection`: the entry's field path, where the key is,
/// what it said and the mode it is read as.
struct LegacyUse {
    field: String,
    location: SourceLocation,
    protected: bool,
    mode: Mode,
}

/// The deprecation warning for `deletionProtection`, once per file however many entries use it,
/// at the first of them.
fn legacy_protection_warning(uses: &[LegacyUse]) -> Option<Diagnostic> {
    let (first, more) = uses.split_first()?;
    let diagnostic = if more.is_empty() {
        Diagnostic::warning(
            first.location.clone(),
            first.field.clone(),
            format!(
                "`{LEGACY_PROTECTION}` is the legacy (chart 0.5.0) spelling of `mode`; \
                 read as `mode: {}`",
                first.mode.as_str()
            ),
        )
        .with_hint(format!(
            "replace `{LEGACY_PROTECTION}: {}` with `mode: {}` (`pgtenant spec upgrade` does it)",
            first.protected,
            first.mode.as_str()
        ))
    } else {
        Diagnostic::warning(
            first.location.clone(),
            first.field.clone(),
            format!(
                "`{LEGACY_PROTECTION}` is the legacy (chart 0.5.0) spelling of `mode`, used by {} \
                 entries of this file; each is read as the `mode` it means",
                uses.len()
            ),
        )
        .with_hint(format!(
            "replace `{LEGACY_PROTECTION}: true` with `mode: protected` and \
             `{LEGACY_PROTECTION}: false` with `mode: standard` (`pgtenant spec upgrade` does it)"
        ))
    };
    Some(diagnostic)
}

/// The file's namespace if it is usable; problems with it are reported once per file.
fn namespace(
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

fn validate_entry(
    entry: RawEntry,
    format: Format,
    namespace: Option<&str>,
    legacy: &mut Vec<LegacyUse>,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<Declaration> {
    let mode = mode(&entry, format, legacy, diagnostics);
    // An unusable preset is reported already; what depends on it is not checked further.
    let preset = match &entry.preset {
        Field::Given(preset) => Some(preset.value),
        Field::Absent => Some(Preset::default()),
        Field::Invalid => None,
    };
    let schemas = schemas(&entry, preset, diagnostics);
    let extensions = extensions(&entry, diagnostics);
    let roles = roles(&entry, preset, diagnostics);
    let field = format!("{}.{NAME}", entry.path);
    let name = match entry.name {
        Field::Given(name) => name,
        Field::Invalid => return None,
        Field::Absent => {
            diagnostics.push(
                Diagnostic::error(entry.location, entry.path, "missing field `name`")
                    .with_hint("add `name: <database>` to this entry"),
            );
            return None;
        }
    };
    let problems = label_problems(&name.value);
    if !problems.is_empty() {
        diagnostics.push(
            Diagnostic::error(
                name.location,
                field,
                label_message("database name", &name.value, &problems),
            )
            .with_hint(label_hint("", &name.value)),
        );
        return None;
    }
    let namespace = namespace?;
    if let Some(preset) = preset {
        if let Some(diagnostic) =
            identifier_too_long(namespace, &name.value, preset, &name.location, &field)
        {
            diagnostics.push(diagnostic);
        }
    }
    Some(Declaration {
        spec: DatabaseSpec {
            namespace: namespace.to_owned(),
            name: name.value,
            mode,
            location: name.location,
            api_version: format.api_version(),
            preset: preset.unwrap_or_default(),
            schemas,
            extensions,
            connection_limit: entry.connection_limit.given().copied(),
            environment: entry.environment.given().copied(),
            roles,
        },
        field,
    })
}

/// The entry's mode, converting chart 0.5.0's `deletionProtection`. Falls back to the default
/// when the fields are unusable; the file fails in that case anyway.
fn mode(
    entry: &RawEntry,
    format: Format,
    legacy_uses: &mut Vec<LegacyUse>,
    diagnostics: &mut Vec<Diagnostic>,
) -> Mode {
    let field = format!("{}.{LEGACY_PROTECTION}", entry.path);
    match (&entry.mode, &entry.deletion_protection) {
        (Field::Given(mode), Field::Absent) => mode.value,
        (Field::Absent | Field::Invalid, Field::Absent) | (Field::Absent, Field::Invalid) => {
            Mode::default()
        }
        (Field::Absent, Field::Given(legacy)) => {
            let mode = mode_of(legacy.value);
            // `spec upgrade` replaces the field, so it does not warn about what it fixes.
            if format == Format::Legacy {
                legacy_uses.push(LegacyUse {
                    field,
                    location: legacy.location.clone(),
                    protected: legacy.value,
                    mode,
                });
            }
            mode
        }
        (Field::Given(_) | Field::Invalid, Field::Given(_) | Field::Invalid) => {
            let location = match &entry.deletion_protection {
                Field::Given(legacy) => legacy.location.clone(),
                _ => entry.location.clone(),
            };
            diagnostics.push(
                Diagnostic::error(
                    location,
                    field,
                    format!("both `mode` and the legacy `{LEGACY_PROTECTION}` are set"),
                )
                .with_hint(format!("remove `{LEGACY_PROTECTION}`: `mode` replaces it")),
            );
            Mode::default()
        }
    }
}

/// The schemas of the entry: the preset's own first, then the declared ones that are valid,
/// each once. Declaring a schema the preset implies is fine; declaring one twice is not.
fn schemas(
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

fn extensions(entry: &RawEntry, diagnostics: &mut Vec<Diagnostic>) -> Vec<String> {
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
    let mut problems = Vec::new();
    if !contained.is_empty() {
        problems.push(format!("it contains {}", join_and(&contained)));
    }
    if let Some(first) = s.chars().next() {
        if allowed(first) && !first_allowed(first) {
            problems.push(format!("it starts with `{first}`"));
        }
    }
    problems
}

/// Settings by role suffix; each suffix must be a login role of the preset.
fn roles(
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

fn identifier_too_long(
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

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::diagnostic::Severity;
    use crate::file::parse_file;

    const FILE: &str = "idp-dev/my-db/values.yaml";

    fn one_database(name: &str) -> String {
        format!("postgresqlDatabases:\n  - name: '{name}'\n")
    }

    fn diagnostics_of(file: &str, text: &str) -> Vec<Diagnostic> {
        let (databases, diagnostics) = parse_file(Path::new(file), text);
        if diagnostics.iter().any(Diagnostic::is_error) {
            assert!(databases.is_empty());
        }
        diagnostics
    }

    #[test]
    fn dns_labels() {
        for good in ["a", "my-db", "0", "a-1-b", &"a".repeat(63)] {
            assert!(is_dns_label(good), "{good:?}");
        }
        for bad in [
            "",
            "a\"b",
            "x;drop",
            "$$",
            "My-DB",
            "a_b",
            "-a",
            "a-",
            "a b",
            "é",
            "a.b",
            &"a".repeat(64),
        ] {
            assert!(!is_dns_label(bad), "{bad:?}");
        }
    }

    #[test]
    fn hostile_names_are_rejected_saying_what_is_allowed() {
        let cases = [
            ("a\"b", "it contains `\"`", Some("a-b")),
            ("x;drop", "it contains `;`", Some("x-drop")),
            ("$$", "it contains `$`", None),
            ("My-DB", "it contains upper-case letters", Some("my-db")),
            ("a_b", "it contains `_`", Some("a-b")),
            ("-a", "it starts with `-`", Some("a")),
            ("a-", "it ends with `-`", Some("a")),
            ("", "it is empty", None),
            ("drop table", "it contains spaces", Some("drop-table")),
            (
                &"a".repeat(64),
                "it is 64 characters long, more than 63",
                Some(&*"a".repeat(63)),
            ),
        ];
        for (name, reason, example) in cases {
            let diagnostics = diagnostics_of(FILE, &one_database(name));
            assert_eq!(diagnostics.len(), 1, "{name:?}: {diagnostics:#?}");
            let d = &diagnostics[0];
            assert_eq!(d.severity, Severity::Error);
            assert_eq!(d.field, "postgresqlDatabases[0].name");
            assert_eq!((d.location.line, d.location.column), (2, 11));
            if name.is_empty() {
                assert_eq!(d.message, "database name is empty");
            } else {
                assert_eq!(
                    d.message,
                    format!("database name `{name}` is not a valid DNS-1123 label: {reason}")
                );
            }
            let hint = d.hint.as_deref().unwrap_or_default();
            assert!(hint.starts_with(LABEL_RULE), "{hint}");
            match example {
                Some(example) => assert!(hint.ends_with(&format!(", e.g. `{example}`")), "{hint}"),
                None => assert_eq!(hint, LABEL_RULE),
            }
        }
    }

    #[test]
    fn all_reasons_of_a_bad_label_are_given() {
        assert_eq!(
            label_problems("-Bad_Name;-"),
            [
                "it contains upper-case letters, `_` and `;`",
                "it starts with `-`",
                "it ends with `-`",
            ]
        );
        assert_eq!(
            label_problems("a!@#%^&*b"),
            ["it contains `!`, `@`, `#`, `%`, `^` and more"]
        );
    }

    #[test]
    fn a_bad_namespace_folder_is_reported_at_the_start_of_the_file() {
        let diagnostics = diagnostics_of("IDP_dev/my-db/values.yaml", &one_database("my-db"));
        assert_eq!(diagnostics.len(), 1, "{diagnostics:#?}");
        assert_eq!(
            diagnostics[0].to_string(),
            format!(
                "error: IDP_dev/my-db/values.yaml:1:1: namespace: namespace folder `IDP_dev` is not a valid DNS-1123 label: it contains upper-case letters and `_`\n  help: rename the folder: {LABEL_RULE}, e.g. `idp-dev`"
            )
        );
    }

    #[test]
    fn databases_at_the_repo_root_have_no_namespace() {
        let diagnostics = diagnostics_of("values.yaml", &one_database("my-db"));
        assert_eq!(diagnostics.len(), 1, "{diagnostics:#?}");
        assert_eq!(
            diagnostics[0].to_string(),
            "error: values.yaml:1:1: postgresqlDatabases: databases declared outside a namespace folder\n  help: move this file to `<namespace>/<app>/values.yaml`: the first folder is the namespace"
        );
        assert!(diagnostics_of("values.yaml", "image: nginx\n").is_empty());
    }

    #[test]
    fn the_longest_identifier_must_fit_postgresql() {
        assert_eq!(Preset::Idp.longest_role_suffix(), "admin");
        assert_eq!(Preset::Idp.role_suffixes(), crate::model::ROLE_SUFFIXES);
        // `idp-dev-` + name + `-admin` is 14 bytes plus the name.
        let fits = "n".repeat(MAX_IDENTIFIER_BYTES - 14);
        let (databases, diagnostics) = parse_file(Path::new(FILE), &one_database(&fits));
        assert!(diagnostics.is_empty(), "{diagnostics:#?}");
        assert_eq!(databases.len(), 1);
        assert_eq!(
            format!("{}-admin", databases[0].database_name()).len(),
            MAX_IDENTIFIER_BYTES
        );

        let too_long = "n".repeat(MAX_IDENTIFIER_BYTES - 13);
        let diagnostics = diagnostics_of(FILE, &one_database(&too_long));
        assert_eq!(diagnostics.len(), 1, "{diagnostics:#?}");
        let d = &diagnostics[0];
        assert_eq!(d.field, "postgresqlDatabases[0].name");
        assert_eq!(
            d.message,
            format!("the role name `idp-dev-{too_long}-admin` is 64 bytes, 1 byte over PostgreSQL's 63-byte identifier limit: PostgreSQL would silently truncate it and two tenants could end up sharing a role")
        );
        assert_eq!(
            d.hint.as_deref(),
            Some("shorten the database name to at most 49 characters")
        );

        let diagnostics = diagnostics_of(FILE, &one_database(&"n".repeat(52)));
        assert!(diagnostics[0].message.contains("is 66 bytes, 3 bytes over"));
    }

    #[test]
    fn a_namespace_can_leave_no_room_for_a_name() {
        let namespace = "n".repeat(56);
        let file = format!("{namespace}/app/values.yaml");
        let diagnostics = diagnostics_of(&file, &one_database("a"));
        assert_eq!(diagnostics.len(), 1, "{diagnostics:#?}");
        assert_eq!(
            diagnostics[0].hint.as_deref(),
            Some(&*format!("the namespace `{namespace}` leaves no room for a database name: use a shorter namespace"))
        );
    }

    #[test]
    fn legacy_deletion_protection_warns_once_per_file() {
        let text = "postgresqlDatabases:\n  - name: a\n    deletionProtection: true\n  - name: b\n  - name: c\n    deletionProtection: false\n  - name: d\n    deletionProtection: true\n";
        let (databases, diagnostics) = parse_file(Path::new(FILE), text);
        let modes: Vec<Mode> = databases.iter().map(|d| d.mode).collect();
        assert_eq!(
            modes,
            [
                Mode::Protected,
                Mode::Standard,
                Mode::Standard,
                Mode::Protected
            ]
        );
        assert_eq!(diagnostics.len(), 1, "{diagnostics:#?}");
        assert_eq!(
            diagnostics[0].to_string(),
            format!("warning: {FILE}:3:5: postgresqlDatabases[0].deletionProtection: `deletionProtection` is the legacy (chart 0.5.0) spelling of `mode`, used by 3 entries of this file; each is read as the `mode` it means\n  help: replace `deletionProtection: true` with `mode: protected` and `deletionProtection: false` with `mode: standard` (`pgtenant spec upgrade` does it)")
        );
    }

    #[test]
    fn legacy_deletion_protection_is_converted_with_a_warning() {
        for (legacy, mode) in [(true, Mode::Protected), (false, Mode::Standard)] {
            let text = format!(
                "postgresqlDatabases:\n  - name: my-db\n    deletionProtection: {legacy}\n"
            );
            let (databases, diagnostics) = parse_file(Path::new(FILE), &text);
            assert_eq!(databases.len(), 1);
            assert_eq!(databases[0].mode, mode);
            assert_eq!(diagnostics.len(), 1);
            assert_eq!(
                diagnostics[0].to_string(),
                format!(
                    "warning: {FILE}:3:5: postgresqlDatabases[0].deletionProtection: `deletionProtection` is the legacy (chart 0.5.0) spelling of `mode`; read as `mode: {mode}`\n  help: replace `deletionProtection: {legacy}` with `mode: {mode}` (`pgtenant spec upgrade` does it)",
                    mode = mode.as_str()
                )
            );
        }
    }

    #[test]
    fn mode_and_deletion_protection_together_are_an_error() {
        for fields in [
            "mode: protected\n    deletionProtection: true",
            "deletionProtection: false\n    mode: protected",
        ] {
            let text = format!("postgresqlDatabases:\n  - name: my-db\n    {fields}\n");
            let diagnostics = diagnostics_of(FILE, &text);
            assert_eq!(diagnostics.len(), 1, "{diagnostics:#?}");
            let d = &diagnostics[0];
            assert_eq!(d.severity, Severity::Error);
            assert_eq!(d.field, "postgresqlDatabases[0].deletionProtection");
            assert_eq!(
                d.message,
                "both `mode` and the legacy `deletionProtection` are set"
            );
            assert_eq!(
                d.hint.as_deref(),
                Some("remove `deletionProtection`: `mode` replaces it")
            );
        }
        // Still a conflict when one of them is unusable: which one was meant is unclear.
        let text =
            "postgresqlDatabases:\n  - name: my-db\n    mode: 3\n    deletionProtection: true\n";
        assert_eq!(diagnostics_of(FILE, text).len(), 2);
    }

    #[test]
    fn a_name_is_required() {
        let diagnostics = diagnostics_of(FILE, "postgresqlDatabases:\n  - mode: protected\n");
        assert_eq!(diagnostics.len(), 1, "{diagnostics:#?}");
        assert_eq!(
            diagnostics[0].to_string(),
            format!("error: {FILE}:2:5: postgresqlDatabases[0]: missing field `name`\n  help: add `name: <database>` to this entry")
        );
    }

    #[test]
    fn every_problem_of_an_entry_is_reported() {
        let text = "postgresqlDatabases:\n  - name: Bad_Name\n    mdoe: protected\n    deletionProtection: true\n";
        let diagnostics = diagnostics_of(FILE, text);
        let fields: Vec<&str> = diagnostics.iter().map(|d| d.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "postgresqlDatabases[0].name",
                "postgresqlDatabases[0].mdoe",
                "postgresqlDatabases[0].deletionProtection",
            ]
        );
    }

    #[test]
    fn duplicates_in_one_file_are_reported_at_each_declaration() {
        let text = "postgresqlDatabases:\n  - name: my-db\n  - name: other\n  - name: my-db\n    mode: protected\n";
        let diagnostics = diagnostics_of(FILE, text);
        let rendered: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
        assert_eq!(
            rendered,
            [
                format!("error: {FILE}:2:11: postgresqlDatabases[0].name: database `idp-dev/my-db` is declared more than once, also at {FILE}:4:11\n  help: keep one declaration and remove the others; until then none of the files involved is applied"),
                format!("error: {FILE}:4:11: postgresqlDatabases[2].name: database `idp-dev/my-db` is declared more than once, also at {FILE}:2:11\n  help: keep one declaration and remove the others; until then none of the files involved is applied"),
            ]
        );
    }

    fn declaration(file: &str, namespace: &str, name: &str) -> Declaration {
        Declaration {
            spec: DatabaseSpec {
                namespace: namespace.into(),
                name: name.into(),
                mode: Mode::Standard,
                location: SourceLocation {
                    file: PathBuf::from(file),
                    line: 2,
                    column: 11,
                },
                ..DatabaseSpec::default()
            },
            field: "postgresqlDatabases[0].name".into(),
        }
    }

    #[test]
    fn tenants_sharing_a_database_name_collide() {
        let declarations = [
            declaration("a-b/app/values.yaml", "a-b", "c"),
            declaration("a/app/values.yaml", "a", "b-c"),
            declaration("a/other/values.yaml", "a", "c"),
        ];
        let rendered: Vec<String> = collisions(&declarations)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            rendered,
            [
                "error: a-b/app/values.yaml:2:11: postgresqlDatabases[0].name: database `a-b/c` collides with `a/b-c` at a/app/values.yaml:2:11: all become the PostgreSQL database `a-b-c`\n  help: rename one of them; until then none of the files involved is applied",
                "error: a/app/values.yaml:2:11: postgresqlDatabases[0].name: database `a/b-c` collides with `a-b/c` at a-b/app/values.yaml:2:11: all become the PostgreSQL database `a-b-c`\n  help: rename one of them; until then none of the files involved is applied",
            ]
        );
    }

    #[test]
    fn three_declarations_each_name_the_two_others() {
        let declarations = [
            declaration("ns/a/values.yaml", "ns", "db"),
            declaration("ns/b/values.yaml", "ns", "db"),
            declaration("ns/c/values.yaml", "ns", "db"),
        ];
        let diagnostics = collisions(&declarations);
        assert_eq!(diagnostics.len(), 3);
        assert_eq!(
            diagnostics[1].message,
            "database `ns/db` is declared more than once, also at ns/a/values.yaml:2:11 and ns/c/values.yaml:2:11"
        );
    }

    fn v1(fields: &str) -> String {
        format!("apiVersion: pgtenant.io/v1\npostgresqlDatabases:\n  - name: my-db\n    {fields}\n")
    }

    /// Each diagnostic of a v1 entry with `fields`, as `line:column field: message | hint`.
    fn v1_problems(fields: &str) -> Vec<String> {
        diagnostics_of(FILE, &v1(fields))
            .iter()
            .map(|d| {
                format!(
                    "{}:{} {}: {} | {}",
                    d.location.line,
                    d.location.column,
                    d.field,
                    d.message,
                    d.hint.as_deref().unwrap_or("")
                )
            })
            .collect()
    }

    fn v1_database(fields: &str) -> DatabaseSpec {
        let (databases, diagnostics) = parse_file(Path::new(FILE), &v1(fields));
        assert!(diagnostics.is_empty(), "{diagnostics:#?}");
        databases.into_iter().next().unwrap()
    }

    #[test]
    fn a_v1_entry_becomes_a_full_spec() {
        use crate::model::{ApiVersion, Environment, LogStatements};
        let database = v1_database(
            "mode: protected\n    preset: schema-owner\n    schemas: [billing, audit_log]\n    extensions: [pgcrypto, \"uuid-ossp\"]\n    connectionLimit: 40\n    environment: staging\n    roles:\n      read: {logStatements: all, connectionLimit: 5}\n      write: {statementTimeout: 2min}",
        );
        assert_eq!(
            database,
            DatabaseSpec {
                namespace: "idp-dev".into(),
                name: "my-db".into(),
                mode: Mode::Protected,
                location: SourceLocation {
                    file: PathBuf::from(FILE),
                    line: 3,
                    column: 11,
                },
                api_version: ApiVersion::V1,
                preset: Preset::SchemaOwner,
                schemas: vec!["billing".into(), "audit_log".into()],
                extensions: vec!["pgcrypto".into(), "uuid-ossp".into()],
                connection_limit: Some(40),
                environment: Some(Environment::Staging),
                roles: BTreeMap::from([
                    (
                        "read".to_owned(),
                        RoleSettings {
                            connection_limit: Some(5),
                            statement_timeout_ms: None,
                            log_statements: Some(LogStatements::All),
                        }
                    ),
                    (
                        "write".to_owned(),
                        RoleSettings {
                            statement_timeout_ms: Some(120_000),
                            ..RoleSettings::default()
                        }
                    ),
                ]),
            }
        );
        let legacy = parse_file(Path::new(FILE), &one_database("my-db")).0;
        assert_eq!(legacy[0].api_version, ApiVersion::Legacy);
        assert_eq!(legacy[0].preset, Preset::Idp);
        let minimal = v1_database("mode: standard");
        assert_eq!(minimal.api_version, ApiVersion::V1);
        assert_eq!(
            (
                minimal.preset,
                minimal.schemas.len(),
                minimal.roles.len(),
                minimal.connection_limit,
                minimal.environment
            ),
            (Preset::Idp, 0, 0, None, None)
        );
    }

    #[test]
    fn app_migrator_implies_schema_app() {
        assert_eq!(v1_database("preset: app-migrator").schemas, ["app"]);
        assert_eq!(
            v1_database("preset: app-migrator\n    schemas: [billing, app]").schemas,
            ["app", "billing"]
        );
        // The preset may come after the list.
        assert_eq!(
            v1_database("schemas: [app]\n    preset: app-migrator").schemas,
            ["app"]
        );
        assert_eq!(v1_database("schemas: [app]").schemas, ["app"]);
    }

    #[test]
    fn schema_names_are_lowercase_identifiers_of_the_tenant() {
        let long = "s".repeat(64);
        let cases = [
            ("schemas: [Billing]", "4:15 postgresqlDatabases[0].schemas[0]: schema name `Billing` is not a lowercase identifier: it contains upper-case letters | use lowercase letters a-z, digits 0-9 and `_`, not starting with a digit, e.g. `billing`"),
            ("schemas: [audit-log]", "4:15 postgresqlDatabases[0].schemas[0]: schema name `audit-log` is not a lowercase identifier: it contains `-` | use lowercase letters a-z, digits 0-9 and `_`, not starting with a digit, e.g. `audit_log`"),
            ("schemas: [\"2024\"]", "4:15 postgresqlDatabases[0].schemas[0]: schema name `2024` is not a lowercase identifier: it starts with `2` | use lowercase letters a-z, digits 0-9 and `_`, not starting with a digit, e.g. `s_2024`"),
            ("schemas: [\"a;drop\"]", "4:15 postgresqlDatabases[0].schemas[0]: schema name `a;drop` is not a lowercase identifier: it contains `;` | use lowercase letters a-z, digits 0-9 and `_`, not starting with a digit, e.g. `a_drop`"),
            ("schemas: ['']", "4:15 postgresqlDatabases[0].schemas[0]: schema name is empty | use lowercase letters a-z, digits 0-9 and `_`, not starting with a digit, e.g. `app`"),
            ("schemas: [public]", "4:15 postgresqlDatabases[0].schemas[0]: schema `public` is always there and pgtenant manages it already | remove `public` from `schemas`"),
            ("schemas: [information_schema]", "4:15 postgresqlDatabases[0].schemas[0]: `information_schema` is PostgreSQL's own schema | choose another name"),
            ("schemas: [pg_audit]", "4:15 postgresqlDatabases[0].schemas[0]: schema name `pg_audit` starts with `pg_`, which PostgreSQL reserves for its own schemas | choose a name that does not start with `pg_`, e.g. `audit`"),
            ("schemas: [pg_]", "4:15 postgresqlDatabases[0].schemas[0]: schema name `pg_` starts with `pg_`, which PostgreSQL reserves for its own schemas | choose a name that does not start with `pg_`"),
            (&*format!("schemas: [{long}]"), &*format!("4:15 postgresqlDatabases[0].schemas[0]: schema name `{long}` is 64 bytes, more than PostgreSQL's 63-byte identifier limit | shorten it to at most 63 characters")),
            ("schemas: [app, billing, app]", "4:29 postgresqlDatabases[0].schemas[2]: schema `app` is listed twice, also at 4:15 | remove one of them from `schemas`"),
        ];
        for (fields, expected) in cases {
            assert_eq!(v1_problems(fields), [expected], "{fields}");
        }
        assert!(v1_problems(&format!("schemas: [_x, a1, {}]", "s".repeat(63))).is_empty());
    }

    #[test]
    fn extension_names() {
        let cases = [
            ("extensions: [PgCrypto]", "4:18 postgresqlDatabases[0].extensions[0]: extension name `PgCrypto` is not valid: it contains upper-case letters | extension names use lowercase letters a-z, digits 0-9, `_` and `-`, not starting with `-`, e.g. `pgcrypto` or `uuid-ossp`"),
            ("extensions: [\"-x\"]", "4:18 postgresqlDatabases[0].extensions[0]: extension name `-x` is not valid: it starts with `-` | extension names use lowercase letters a-z, digits 0-9, `_` and `-`, not starting with `-`, e.g. `pgcrypto` or `uuid-ossp`"),
            ("extensions: [\"pg crypto\"]", "4:18 postgresqlDatabases[0].extensions[0]: extension name `pg crypto` is not valid: it contains spaces | extension names use lowercase letters a-z, digits 0-9, `_` and `-`, not starting with `-`, e.g. `pgcrypto` or `uuid-ossp`"),
            ("extensions: [pgcrypto, pgcrypto]", "4:28 postgresqlDatabases[0].extensions[1]: extension `pgcrypto` is listed twice, also at 4:18 | remove one of them from `extensions`"),
        ];
        for (fields, expected) in cases {
            assert_eq!(v1_problems(fields), [expected], "{fields}");
        }
        assert_eq!(
            v1_database("extensions: [\"uuid-ossp\", pg_trgm, 0x]").extensions,
            ["uuid-ossp", "pg_trgm", "0x"]
        );
    }

    #[test]
    fn role_settings_are_for_login_roles_of_the_preset() {
        let cases = [
            ("roles: {wirte: {}}", "4:13 postgresqlDatabases[0].roles.wirte: preset `idp` (the default) has no role `wirte` | did you mean `write`?"),
            ("roles: {app: {}}", "4:13 postgresqlDatabases[0].roles.app: preset `idp` (the default) has no role `app` | `app` is a role of preset `app-migrator`; the login roles of preset `idp` (the default) are `admin`, `write` and `read`"),
            ("preset: app-migrator\n    roles: {admin: {}}", "5:13 postgresqlDatabases[0].roles.admin: preset `app-migrator` has no role `admin` | `admin` is a role of preset `idp`; the login roles of preset `app-migrator` are `migrator` and `app`"),
            ("preset: schema-owner\n    roles: {owner: {statementTimeout: 1s}}", "5:13 postgresqlDatabases[0].roles.owner: role `owner` of preset `schema-owner` does not log in, so it takes no settings | settings apply to its login roles `app`, `write` and `read`"),
            ("roles: {dba: {}}", "4:13 postgresqlDatabases[0].roles.dba: preset `idp` (the default) has no role `dba` | the login roles of preset `idp` (the default) are `admin`, `write` and `read`"),
        ];
        for (fields, expected) in cases {
            assert_eq!(v1_problems(fields), [expected], "{fields}");
        }
        // An unusable preset is reported once; the roles are not judged against a guess.
        let problems = v1_problems("preset: bogus\n    roles: {migrator: {}}");
        assert_eq!(problems.len(), 1, "{problems:#?}");
        for preset in Preset::ALL {
            for role in preset.login_roles() {
                let database = v1_database(&format!(
                    "preset: {}\n    roles: {{{role}: {{connectionLimit: 1}}}}",
                    preset.as_str()
                ));
                assert_eq!(database.roles[*role].connection_limit, Some(1));
            }
        }
    }

    #[test]
    fn the_longest_role_of_the_preset_must_fit_postgresql() {
        assert_eq!(Preset::AppMigrator.longest_role_suffix(), "migrator");
        assert_eq!(Preset::SchemaOwner.longest_role_suffix(), "owner");
        // `idp-dev-` + name + `-migrator` is 17 bytes plus the name.
        let fits = "n".repeat(MAX_IDENTIFIER_BYTES - 17);
        let text = format!("apiVersion: pgtenant.io/v1\npostgresqlDatabases:\n  - name: {fits}\n    preset: app-migrator\n  - name: {fits}x\n");
        assert!(
            diagnostics_of(FILE, &text).is_empty(),
            "idp's admin is shorter"
        );
        let text = format!("apiVersion: pgtenant.io/v1\npostgresqlDatabases:\n  - name: {fits}x\n    preset: app-migrator\n");
        let diagnostics = diagnostics_of(FILE, &text);
        assert_eq!(diagnostics.len(), 1, "{diagnostics:#?}");
        assert_eq!(
            diagnostics[0].message,
            format!("the role name `idp-dev-{fits}x-migrator` is 64 bytes, 1 byte over PostgreSQL's 63-byte identifier limit: PostgreSQL would silently truncate it and two tenants could end up sharing a role")
        );
        assert_eq!(
            diagnostics[0].hint.as_deref(),
            Some("shorten the database name to at most 46 characters")
        );
    }

    #[test]
    fn every_problem_of_a_v1_entry_is_reported() {
        let problems = v1_problems(
            "preset: app-migrator\n    schemas: [Bad]\n    extensions: [pgcrypto, pgcrypto]\n    connectionLimit: -5\n    environment: qa\n    roles: {admin: {}, app: {statementTimeout: 1y}}\n    deletionProtection: true",
        );
        let fields: Vec<&str> = problems
            .iter()
            .map(|p| p.split(": ").next().unwrap().split(' ').nth(1).unwrap())
            .collect();
        assert_eq!(
            fields,
            [
                "postgresqlDatabases[0].schemas[0]",
                "postgresqlDatabases[0].extensions[1]",
                "postgresqlDatabases[0].connectionLimit",
                "postgresqlDatabases[0].environment",
                "postgresqlDatabases[0].roles.admin",
                "postgresqlDatabases[0].roles.app.statementTimeout",
                "postgresqlDatabases[0].deletionProtection",
            ]
        );
    }
}
