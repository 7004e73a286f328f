use std::collections::BTreeMap;
use std::path::PathBuf;

use super::names::{label_problems, LABEL_RULE};
use super::*;
use crate::diagnostic::Severity;
use crate::file::parse_file;
use crate::location::SourceLocation;
use crate::model::{Mode, RoleSettings, MAX_IDENTIFIER_BYTES};

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
        let text =
            format!("postgresqlDatabases:\n  - name: my-db\n    deletionProtection: {legacy}\n");
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
    let text = "postgresqlDatabases:\n  - name: my-db\n    mode: 3\n    deletionProtection: true\n";
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
        "mode: protected\n    preset: schema-owner\n    schemas: [billing, audit_log]\n    extensions: [pgcrypto, \"uuid-ossp\"]\n    connectionLimit: 40\n    environment: staging\n    roles:\n      read: {logStatements: all, connectionLimit: 5}\n      write: {statementTimeout: 2min}\n    pooling: {mode: session, size: 5}",
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
            pooling: Some(crate::model::Pooling::Pooled {
                mode: Some(crate::model::PoolMode::Session),
                size: Some(5),
            }),
            cluster: None,
            placement_labels: BTreeMap::new(),
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
