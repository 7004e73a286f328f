use super::*;
use crate::model::{LogStatements, Pooling};

const FILE: &str = "idp-dev/my-db/values.yaml";

fn parse_text(text: &str) -> (RawFile, Vec<Diagnostic>) {
    let mut diagnostics = Vec::new();
    let raw = parse(Path::new(FILE), text, Reading::AsWritten, &mut diagnostics);
    (raw, diagnostics)
}

/// The only diagnostic of `text`, as `line:column field: message | hint`.
fn only_problem(text: &str) -> String {
    let (_, diagnostics) = parse_text(text);
    assert_eq!(diagnostics.len(), 1, "{diagnostics:#?}");
    let d = &diagnostics[0];
    format!(
        "{}:{} {}: {} | {}",
        d.location.line,
        d.location.column,
        d.field,
        d.message,
        d.hint.as_deref().unwrap_or("")
    )
}

fn given<T: Copy>(field: &Field<T>) -> Option<T> {
    match field {
        Field::Given(located) => Some(located.value),
        _ => None,
    }
}

#[test]
fn reads_entries_with_locations() {
    let (raw, diagnostics) = parse_text(
        "image: nginx\npostgresqlDatabases:\n  - name: one\n  - name: two\n    mode: protected\n  - {name: three, deletionProtection: true}\n",
    );
    assert!(diagnostics.is_empty(), "{diagnostics:#?}");
    let declared_at = raw.declared_at.unwrap();
    assert_eq!((declared_at.line, declared_at.column), (2, 1));
    assert_eq!(raw.entries.len(), 3);

    let Field::Given(name) = &raw.entries[0].name else {
        panic!("no name: {:?}", raw.entries[0]);
    };
    assert_eq!(name.value, "one");
    assert_eq!(name.location.to_string(), format!("{FILE}:3:11"));
    assert!(matches!(raw.entries[0].mode, Field::Absent));

    assert_eq!(given(&raw.entries[1].mode), Some(Mode::Protected));
    assert_eq!(raw.entries[1].path, "postgresqlDatabases[1]");
    assert_eq!(given(&raw.entries[2].deletion_protection), Some(true));
}

#[test]
fn files_without_databases_declare_nothing() {
    for text in [
        "",
        "# nothing here\n",
        "image: nginx\nreplicas: 2\n",
        "~\n",
        "---\n",
    ] {
        let (raw, diagnostics) = parse_text(text);
        assert!(raw.declared_at.is_none(), "{text:?}");
        assert!(diagnostics.is_empty(), "{text:?}: {diagnostics:#?}");
    }
}

#[test]
fn null_and_empty_lists_declare_no_databases() {
    for text in [
        "postgresqlDatabases:\n",
        "postgresqlDatabases: ~\n",
        "postgresqlDatabases: []\n",
    ] {
        let (raw, diagnostics) = parse_text(text);
        assert!(raw.declared_at.is_some(), "{text:?}");
        assert!(raw.entries.is_empty(), "{text:?}");
        assert!(diagnostics.is_empty(), "{text:?}: {diagnostics:#?}");
    }
}

#[test]
fn unknown_fields_get_a_suggestion() {
    let cases = [
        ("mdoe: standard", "mdoe", "did you mean `mode`?"),
        ("Mode: standard", "Mode", "did you mean `mode`?"),
        ("nmae: x", "nmae", "did you mean `name`?"),
        (
            "deletion_protection: true",
            "deletion_protection",
            "did you mean `deletionProtection`?",
        ),
    ];
    for (line, key, hint) in cases {
        let text = format!("postgresqlDatabases:\n  - name: a\n    {line}\n");
        assert_eq!(
            only_problem(&text),
            format!("3:5 postgresqlDatabases[0].{key}: unknown field `{key}` | {hint}")
        );
    }
}

#[test]
fn unrelated_unknown_fields_list_the_known_ones() {
    assert_eq!(
        only_problem("postgresqlDatabases:\n  - name: a\n    owner: bob\n"),
        "3:5 postgresqlDatabases[0].owner: unknown field `owner` | the fields of a database are `name`, `mode` and the legacy `deletionProtection`"
    );
    assert_eq!(
        only_problem("postgresqlDatabases:\n  - name: a\n    1: x\n"),
        "3:5 postgresqlDatabases[0]: unexpected key the number `1` | the fields of a database are `name`, `mode` and the legacy `deletionProtection`"
    );
    assert_eq!(
        only_problem("base: &b {mode: standard}\npostgresqlDatabases:\n  - name: a\n    <<: *b\n"),
        "4:5 postgresqlDatabases[0].<<: unknown field `<<` | YAML merge keys are not supported here: write the fields out"
    );
}

#[test]
fn wrong_types_are_errors() {
    let cases = [
        (
            "mode: 3",
            "3:11 postgresqlDatabases[0].mode: expected `standard` or `protected`, found the number `3` | use `mode: standard` or `mode: protected`",
        ),
        (
            "deletionProtection: \"yes\"",
            "3:25 postgresqlDatabases[0].deletionProtection: expected `true` or `false`, found the string `yes` | replace `deletionProtection` with `mode: protected` or `mode: standard`",
        ),
        (
            "mode: !strict protected",
            "3:11 postgresqlDatabases[0].mode: expected `standard` or `protected`, found a value tagged `!strict` | use `mode: standard` or `mode: protected`",
        ),
    ];
    for (line, expected) in cases {
        let text = format!("postgresqlDatabases:\n  - name: a\n    {line}\n");
        assert_eq!(only_problem(&text), expected);
    }
}

#[test]
fn a_name_must_be_a_string() {
    assert_eq!(
        only_problem("postgresqlDatabases:\n  - name: [a]\n"),
        "2:11 postgresqlDatabases[0].name: expected the database name as a string, found a list | give the database a single name, e.g. `name: my-db`"
    );
    assert_eq!(
        only_problem("postgresqlDatabases:\n  - name: 123\n"),
        "2:11 postgresqlDatabases[0].name: expected the database name as a string, found the number `123` | quote it so YAML reads it as text: `name: \"123\"`"
    );
    assert_eq!(
        only_problem("postgresqlDatabases:\n  - name:\n"),
        "2:9 postgresqlDatabases[0].name: expected the database name as a string, found no value | give the database a single name, e.g. `name: my-db`"
    );
    let (raw, _) = parse_text("postgresqlDatabases:\n  - name: 123\n");
    assert!(matches!(raw.entries[0].name, Field::Invalid));
    // A misspelt `name` counts as given, so it is not reported missing as well.
    let (raw, _) = parse_text("postgresqlDatabases:\n  - nmae: a\n");
    assert!(matches!(raw.entries[0].name, Field::Invalid));
    let (raw, _) = parse_text("postgresqlDatabases:\n  - nmae: a\n    name: b\n");
    assert!(matches!(raw.entries[0].name, Field::Given(_)));
}

#[test]
fn bad_mode_values_suggest_the_closest() {
    let cases = [
        ("protect", "did you mean `protected`?"),
        ("Protected", "did you mean `protected`?"),
        ("standart", "did you mean `standard`?"),
        ("readonly", "use `standard` or `protected`"),
    ];
    for (value, hint) in cases {
        let text = format!("postgresqlDatabases:\n  - name: a\n    mode: {value}\n");
        assert_eq!(
            only_problem(&text),
            format!("3:11 postgresqlDatabases[0].mode: unknown mode `{value}`: expected `standard` or `protected` | {hint}")
        );
    }
}

#[test]
fn invalid_yaml_reports_where() {
    let problem = only_problem("postgresqlDatabases:\n  - name: [a\n  - name: b\n");
    assert!(problem.starts_with("3:"), "{problem}");
    assert!(problem.contains(" : invalid YAML: "), "{problem}");

    assert_eq!(
        only_problem("image: x\npostgresqlDatabases: [\n"),
        "3:1 : invalid YAML: while parsing a node, did not find expected node content | fix the YAML syntax at or just before this position (indentation, quotes, brackets)"
    );
}

#[test]
fn duplicate_keys_are_errors() {
    assert_eq!(
        only_problem("postgresqlDatabases:\n  - name: a\n    name: b\n"),
        "3:5 : duplicate key in a mapping | remove or rename one of the two: YAML readers disagree on which one wins"
    );
    let (raw, _) = parse_text("postgresqlDatabases: []\npostgresqlDatabases: []\n");
    assert!(raw.declared_at.is_none());
}

#[test]
fn misshapen_lists_and_entries_are_errors() {
    assert_eq!(
        only_problem("postgresqlDatabases:\n  name: a\n"),
        "2:3 postgresqlDatabases: expected a list of databases, found a mapping | list each database as `- name: <database>` under `postgresqlDatabases:`"
    );
    assert_eq!(
        only_problem("postgresqlDatabases:\n  - my-db\n"),
        "2:5 postgresqlDatabases[0]: expected a database entry, found the string `my-db` | write each database as a mapping, e.g. `- name: my-db`"
    );
}

#[test]
fn databases_in_a_later_document_are_an_error() {
    assert_eq!(
        only_problem("image: x\n---\npostgresqlDatabases:\n  - name: a\n"),
        "3:1 postgresqlDatabases: `postgresqlDatabases` in a second YAML document is not read | Helm reads only the first document of a values file: move it above the first `---`"
    );
}

#[test]
fn a_misspelt_databases_key_is_an_error_in_both_formats() {
    for (text, key) in [
        ("postgresqlDatabase:\n  - name: a\n", "postgresqlDatabase"),
        ("PostgresqlDatabases:\n  - name: a\n", "PostgresqlDatabases"),
        (
            "postgresql_databases:\n  - name: a\n",
            "postgresql_databases",
        ),
        ("postgresqlDatabses: []\n", "postgresqlDatabses"),
        ("postgresqlDatabase:\n", "postgresqlDatabase"),
        ("postgresqlDatabase: {name: a}\n", "postgresqlDatabase"),
        (
            "image: x\npostgresqldatabases:\n  - name: a\n",
            "postgresqldatabases",
        ),
        (
            "apiVersion: pgtenant.io/v1\npostgresqlDatabase:\n  - name: a\n",
            "postgresqlDatabase",
        ),
        (
            "postgresqlDatabases: []\npostgresqlDatabase:\n  - name: a\n",
            "postgresqlDatabase",
        ),
    ] {
        let (raw, diagnostics) = parse_text(text);
        assert!(raw.entries.is_empty(), "{text:?}");
        assert_eq!(diagnostics.len(), 1, "{text:?}: {diagnostics:#?}");
        assert!(diagnostics[0].is_error(), "{text:?}");
        assert_eq!(diagnostics[0].field, key);
        assert_eq!(
            diagnostics[0].message,
            format!("top-level key `{key}` is ignored"),
        );
        assert_eq!(
            diagnostics[0].hint.as_deref(),
            Some("did you mean `postgresqlDatabases`? databases are only read from that key; until it is fixed, the databases this file declared are left as they are"),
        );
    }
}

#[test]
fn a_chart_value_named_like_the_databases_key_is_only_a_warning() {
    // Charts such as Bitnami's postgresql have `postgresqlDatabase: <name>` of their own.
    for text in [
        "postgresqlDatabase: app\n",
        "postgresqlDatabase: \"\"\n",
        "postgresqlDatabase: 3\n",
    ] {
        let (raw, diagnostics) = parse_text(text);
        assert!(raw.declared_at.is_none());
        assert_eq!(diagnostics.len(), 1, "{text:?}");
        assert!(!diagnostics[0].is_error(), "{text:?}");
        assert_eq!(
            diagnostics[0].to_string(),
            format!("warning: {FILE}:1:1: postgresqlDatabase: top-level key `postgresqlDatabase` is ignored\n  help: did you mean `postgresqlDatabases`? databases are only read from that key")
        );
    }
}

#[test]
fn a_v1_file_without_databases_is_an_error() {
    assert_eq!(
        only_problem("apiVersion: pgtenant.io/v1\nimage: x\n"),
        "1:13 apiVersion: `apiVersion: pgtenant.io/v1` without `postgresqlDatabases` | add `postgresqlDatabases:` (`postgresqlDatabases: []` declares none), or remove `apiVersion` if the file is not pgtenant's; until then the databases this file declared are left as they are"
    );
    let (_, diagnostics) = parse_text("apiVersion: pgtenant.io/v2\n");
    assert_eq!(diagnostics.len(), 1);
    assert!(diagnostics[0].is_error());
    // Other charts' `apiVersion` is theirs.
    for text in ["apiVersion: v2\nimage: x\n", "apiVersion: 2\n"] {
        let (_, diagnostics) = parse_text(text);
        assert!(diagnostics.is_empty(), "{text:?}: {diagnostics:#?}");
    }
    // A misspelt databases key is the one problem reported.
    let (_, diagnostics) = parse_text("apiVersion: pgtenant.io/v1\npostgresqlDatabase: []\n");
    assert_eq!(diagnostics.len(), 1, "{diagnostics:#?}");
    assert_eq!(diagnostics[0].field, "postgresqlDatabase");
}

#[test]
fn a_top_level_that_is_not_a_mapping_is_an_error() {
    assert_eq!(
        only_problem("- a list\n"),
        "1:1 : a values file must be a mapping of keys, found a list | write the file as keys and values, databases under `postgresqlDatabases:`; until then the databases it declared are left as they are"
    );
    let (_, diagnostics) = parse_text("just a string\n");
    assert_eq!(diagnostics.len(), 1);
    assert!(diagnostics[0].is_error());
}

#[test]
fn hostile_text_cannot_break_report_lines() {
    let problem = only_problem("postgresqlDatabases:\n  - name: a\n    \"x\\ny\": 1\n");
    assert!(!problem.contains('\n'), "{problem}");
    assert!(problem.contains("unknown field `x\\ny`"), "{problem}");
}

/// The problems of `fields` in one v1 entry, as `line:column field: message | hint`.
fn v1_problems(fields: &str) -> Vec<String> {
    let text =
        format!("apiVersion: pgtenant.io/v1\npostgresqlDatabases:\n  - name: a\n    {fields}\n");
    let (_, diagnostics) = parse_text(&text);
    diagnostics
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

#[test]
fn reads_v1_fields_with_locations() {
    let (raw, diagnostics) = parse_text(
        "postgresqlDatabases:\n  - name: shop\n    preset: app-migrator\n    schemas: [billing, app]\n    extensions:\n      - pgcrypto\n      - \"uuid-ossp\"\n    connectionLimit: 50\n    environment: production\n    roles:\n      app: {connectionLimit: 20, statementTimeout: 30s, logStatements: mod}\n      migrator:\n        statementTimeout: 900000\napiVersion: pgtenant.io/v1\n",
    );
    assert!(diagnostics.is_empty(), "{diagnostics:#?}");
    assert_eq!(raw.format, Format::V1);
    let entry = &raw.entries[0];
    assert_eq!(given(&entry.preset), Some(Preset::AppMigrator));
    assert_eq!(given(&entry.environment), Some(Environment::Production));
    assert_eq!(given(&entry.connection_limit), Some(50));
    let Field::Given(schemas) = &entry.schemas else {
        panic!("{entry:?}");
    };
    let schemas: Vec<(usize, &str, String)> = schemas
        .value
        .iter()
        .map(|(index, name)| (*index, name.value.as_str(), name.location.to_string()))
        .collect();
    assert_eq!(
        schemas,
        [
            (0, "billing", format!("{FILE}:4:15")),
            (1, "app", format!("{FILE}:4:24")),
        ]
    );
    let Field::Given(extensions) = &entry.extensions else {
        panic!("{entry:?}");
    };
    assert_eq!(extensions.value[1].1.value, "uuid-ossp");
    assert_eq!(extensions.value[1].1.location.line, 7);
    let Field::Given(roles) = &entry.roles else {
        panic!("{entry:?}");
    };
    let roles: Vec<(&str, &str, &RoleSettings)> = roles
        .value
        .iter()
        .map(|role| {
            (
                role.suffix.value.as_str(),
                role.path.as_str(),
                &role.settings,
            )
        })
        .collect();
    assert_eq!(
        roles,
        [
            (
                "app",
                "postgresqlDatabases[0].roles.app",
                &RoleSettings {
                    connection_limit: Some(20),
                    statement_timeout_ms: Some(30_000),
                    log_statements: Some(LogStatements::Mod),
                }
            ),
            (
                "migrator",
                "postgresqlDatabases[0].roles.migrator",
                &RoleSettings {
                    statement_timeout_ms: Some(900_000),
                    ..RoleSettings::default()
                }
            ),
        ]
    );
}

#[test]
fn v1_fields_in_a_legacy_file_say_how_to_get_v1() {
    let (raw, diagnostics) = parse_text(
        "postgresqlDatabases:\n  - name: a\n    preset: idp\n    roles: {write: {connectionLimit: 3}}\n    mode: protected\n",
    );
    assert_eq!(raw.format, Format::Legacy);
    let rendered: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
    assert_eq!(
        rendered,
        [
            format!("error: {FILE}:3:5: postgresqlDatabases[0].preset: `preset` needs the v1 format, and this file has no `apiVersion`\n  help: add `apiVersion: pgtenant.io/v1` at the top of the file (`pgtenant spec upgrade` does it)"),
            format!("error: {FILE}:4:5: postgresqlDatabases[0].roles: `roles` needs the v1 format, and this file has no `apiVersion`\n  help: add `apiVersion: pgtenant.io/v1` at the top of the file (`pgtenant spec upgrade` does it)"),
        ]
    );
    // The values are still read, so that their own problems are reported at once.
    let (_, diagnostics) = parse_text("postgresqlDatabases:\n  - name: a\n    environment: prod\n");
    assert_eq!(diagnostics.len(), 2, "{diagnostics:#?}");
    assert_eq!(
        diagnostics[1].hint.as_deref(),
        Some("did you mean `production`?")
    );
}

#[test]
fn deletion_protection_was_removed_in_v1() {
    assert_eq!(
        v1_problems("deletionProtection: true"),
        ["4:5 postgresqlDatabases[0].deletionProtection: `deletionProtection` was removed in v1; use `mode: protected` | replace `deletionProtection: true` with `mode: protected`"]
    );
    assert_eq!(
        v1_problems("deletionProtection: false"),
        ["4:5 postgresqlDatabases[0].deletionProtection: `deletionProtection` was removed in v1; use `mode: protected` | replace `deletionProtection: false` with `mode: standard`"]
    );
    assert_eq!(
        v1_problems("mode: protected\n    deletionProtection: true"),
        ["5:5 postgresqlDatabases[0].deletionProtection: `deletionProtection` was removed in v1; use `mode: protected` | remove `deletionProtection`: `mode` replaces it"]
    );
    assert_eq!(
        v1_problems("deletion_protection: true"),
        ["4:5 postgresqlDatabases[0].deletion_protection: unknown field `deletion_protection` | `deletionProtection` was removed in v1: use `mode: protected`"]
    );
}

#[test]
fn the_api_version_must_be_known() {
    let problems = |text: &str| {
        let (raw, diagnostics) = parse_text(text);
        let rendered: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
        (raw.format, rendered)
    };
    assert_eq!(
        problems("apiVersion: pgtenant.io/v2\npostgresqlDatabases: []\n"),
        (
            Format::Unknown,
            vec![format!("error: {FILE}:1:13: apiVersion: unknown apiVersion `pgtenant.io/v2`: the supported one is `pgtenant.io/v1`\n  help: did you mean `pgtenant.io/v1`?")]
        )
    );
    assert_eq!(
        problems("apiVersion: v2\npostgresqlDatabases: []\n"),
        (
            Format::Unknown,
            vec![format!("error: {FILE}:1:13: apiVersion: unknown apiVersion `v2`: the supported one is `pgtenant.io/v1`\n  help: write `apiVersion: pgtenant.io/v1`, or remove the key for the legacy (chart 1.0.1) format")]
        )
    );
    assert_eq!(
        problems("apiVersion: 1\npostgresqlDatabases: []\n"),
        (
            Format::Unknown,
            vec![format!("error: {FILE}:1:13: apiVersion: expected `pgtenant.io/v1`, found the number `1`\n  help: write `apiVersion: pgtenant.io/v1`")]
        )
    );
    // Without databases, `apiVersion` belongs to the app's chart.
    assert_eq!(
        problems("apiVersion: v2\nimage: x\n"),
        (Format::Legacy, vec![])
    );
    // An unusable version blames neither format: only the fields' own problems are reported.
    let (_, rendered) =
        problems("apiVersion: v2\npostgresqlDatabases:\n  - name: a\n    deletionProtection: true\n    preset: idp\n");
    assert_eq!(rendered.len(), 1, "{rendered:#?}");
}

#[test]
fn a_misspelt_api_version_key_is_a_warning_next_to_databases() {
    let (raw, diagnostics) =
        parse_text("apiversion: pgtenant.io/v1\npostgresqlDatabases:\n  - name: a\n");
    assert_eq!(raw.format, Format::Legacy);
    assert_eq!(diagnostics.len(), 1);
    assert_eq!(
        diagnostics[0].to_string(),
        format!("warning: {FILE}:1:1: apiversion: top-level key `apiversion` is ignored\n  help: did you mean `apiVersion`? the format version is only read from that key")
    );
    let (_, diagnostics) = parse_text("api_version: x\nimage: y\n");
    assert!(diagnostics.is_empty(), "{diagnostics:#?}");
    // Chart values named like the keys are not mistaken for them.
    let (_, diagnostics) = parse_text("postgresql: {enabled: false}\napi: {replicas: 2}\n");
    assert!(diagnostics.is_empty(), "{diagnostics:#?}");
}

#[test]
fn enumerated_values_suggest_the_closest() {
    let cases = [
        (
            "preset: app_migrator",
            "4:13 postgresqlDatabases[0].preset: unknown preset `app_migrator`: expected `idp`, `app-migrator` or `schema-owner` | did you mean `app-migrator`?",
        ),
        (
            "preset: migrator",
            "4:13 postgresqlDatabases[0].preset: unknown preset `migrator`: expected `idp`, `app-migrator` or `schema-owner` | use `idp`, `app-migrator` or `schema-owner`",
        ),
        (
            "preset: 1",
            "4:13 postgresqlDatabases[0].preset: expected `idp`, `app-migrator` or `schema-owner`, found the number `1` | use one of `idp`, `app-migrator` or `schema-owner`, e.g. `preset: idp`",
        ),
        (
            "environment: prod",
            "4:18 postgresqlDatabases[0].environment: unknown environment `prod`: expected `production`, `staging`, `test` or `dev` | did you mean `production`?",
        ),
        (
            "environment: Staging",
            "4:18 postgresqlDatabases[0].environment: unknown environment `Staging`: expected `production`, `staging`, `test` or `dev` | did you mean `staging`?",
        ),
        (
            "roles: {read: {logStatements: everything}}",
            "4:35 postgresqlDatabases[0].roles.read.logStatements: unknown logStatements value `everything`: expected `none`, `ddl`, `mod` or `all` | use `none`, `ddl`, `mod` or `all`",
        ),
        (
            "roles: {read: {logStatements: false}}",
            "4:35 postgresqlDatabases[0].roles.read.logStatements: expected `none`, `ddl`, `mod` or `all`, found the boolean `false` | use one of `none`, `ddl`, `mod` or `all`, e.g. `logStatements: none`",
        ),
    ];
    for (fields, expected) in cases {
        assert_eq!(v1_problems(fields), [expected], "{fields}");
    }
}

#[test]
fn connection_limits() {
    for (fields, limit) in [
        ("connectionLimit: -1", -1),
        ("connectionLimit: 0", 0),
        ("connectionLimit: 2147483647", i32::MAX),
    ] {
        let text = format!(
            "apiVersion: pgtenant.io/v1\npostgresqlDatabases:\n  - name: a\n    {fields}\n"
        );
        let (raw, diagnostics) = parse_text(&text);
        assert!(diagnostics.is_empty(), "{diagnostics:#?}");
        assert_eq!(given(&raw.entries[0].connection_limit), Some(limit));
    }
    let cases = [
        (
            "connectionLimit: -2",
            "4:22 postgresqlDatabases[0].connectionLimit: connection limit `-2` is below -1 | use `-1` for no limit, or the number of connections allowed (0 or more)",
        ),
        (
            "connectionLimit: -9999999999",
            "4:22 postgresqlDatabases[0].connectionLimit: connection limit `-9999999999` is below -1 | use `-1` for no limit, or the number of connections allowed (0 or more)",
        ),
        (
            "connectionLimit: 2147483648",
            "4:22 postgresqlDatabases[0].connectionLimit: connection limit `2147483648` is more than PostgreSQL's maximum of 2147483647 | use `-1` for no limit",
        ),
        (
            "connectionLimit: \"10\"",
            "4:22 postgresqlDatabases[0].connectionLimit: expected a number of connections, found the string `10` | write it without quotes: `connectionLimit: 10`",
        ),
        (
            "connectionLimit: 2.5",
            "4:22 postgresqlDatabases[0].connectionLimit: expected a number of connections, found the number `2.5` | e.g. `connectionLimit: 20`, or `-1` for no limit",
        ),
        (
            "roles: {write: {connectionLimit: many}}",
            "4:38 postgresqlDatabases[0].roles.write.connectionLimit: expected a number of connections, found the string `many` | e.g. `connectionLimit: 20`, or `-1` for no limit",
        ),
    ];
    for (fields, expected) in cases {
        assert_eq!(v1_problems(fields), [expected], "{fields}");
    }
}

#[test]
fn name_lists_must_be_lists_of_strings() {
    let cases = [
        (
            "schemas: app",
            vec!["4:14 postgresqlDatabases[0].schemas: expected a list of schema names, found the string `app` | write a list, even of one: `schemas: [app]`"],
        ),
        (
            "schemas:",
            vec!["4:12 postgresqlDatabases[0].schemas: expected a list of schema names, found no value | list them, e.g. `schemas: [app, billing]`, or remove `schemas`"],
        ),
        (
            "extensions: {pgcrypto: true}",
            vec!["4:17 postgresqlDatabases[0].extensions: expected a list of extension names, found a mapping | list them, e.g. `extensions: [pgcrypto, \"uuid-ossp\"]`, or remove `extensions`"],
        ),
        (
            "schemas: [app, 2024, [x]]",
            vec![
                "4:20 postgresqlDatabases[0].schemas[1]: expected a schema name, found the number `2024` | quote it so YAML reads it as text",
                "4:26 postgresqlDatabases[0].schemas[2]: expected a schema name, found a list | write one name per item, e.g. `schemas: [app, billing]`",
            ],
        ),
    ];
    for (fields, expected) in cases {
        assert_eq!(v1_problems(fields), expected, "{fields}");
    }
    let (raw, _) = parse_text(
        "apiVersion: pgtenant.io/v1\npostgresqlDatabases:\n  - name: a\n    schemas: [1, app]\n",
    );
    let Field::Given(schemas) = &raw.entries[0].schemas else {
        panic!();
    };
    assert_eq!(schemas.value.len(), 1);
    assert_eq!(schemas.value[0].0, 1, "the index is the item's in the file");
}

#[test]
fn roles_must_be_settings_by_role() {
    let cases = [
        (
            "roles: [write]",
            vec!["4:12 postgresqlDatabases[0].roles: expected settings by role, found a list | e.g. `roles: {write: {statementTimeout: 30s}}`"],
        ),
        (
            "roles: {write: 30s}",
            vec!["4:20 postgresqlDatabases[0].roles.write: expected the settings of role `write`, found the string `30s` | e.g. `write: {statementTimeout: 30s}`, or remove the role"],
        ),
        (
            "roles: {write: {statement_timeout: 30s}}",
            vec!["4:21 postgresqlDatabases[0].roles.write.statement_timeout: unknown field `statement_timeout` | did you mean `statementTimeout`?"],
        ),
        (
            "roles: {write: {password: x}}",
            vec!["4:21 postgresqlDatabases[0].roles.write.password: unknown field `password` | the settings of a role are `connectionLimit`, `statementTimeout` and `logStatements`"],
        ),
        (
            "roles: {1: {}}",
            vec!["4:13 postgresqlDatabases[0].roles: expected a role name, found the number `1` | name the role, e.g. `roles: {write: {statementTimeout: 30s}}`"],
        ),
    ];
    for (fields, expected) in cases {
        assert_eq!(v1_problems(fields), expected, "{fields}");
    }
}

#[test]
fn statement_timeouts() {
    let timeout = |value: &str| {
        let text = format!("apiVersion: pgtenant.io/v1\npostgresqlDatabases:\n  - name: a\n    roles:\n      write:\n        statementTimeout: {value}\n");
        let (raw, diagnostics) = parse_text(&text);
        let Field::Given(roles) = &raw.entries[0].roles else {
            panic!("{diagnostics:#?}");
        };
        let problems: Vec<String> = diagnostics
            .iter()
            .map(|d| format!("{} | {}", d.message, d.hint.as_deref().unwrap_or("")))
            .collect();
        (roles.value[0].settings.statement_timeout_ms, problems)
    };
    for (value, ms) in [
        ("30s", 30_000),
        ("5min", 300_000),
        ("250ms", 250),
        ("1h", 3_600_000),
        ("1500", 1_500),
        ("0", 0),
        ("\"0\"", 0),
        ("2147483647", 2_147_483_647),
    ] {
        assert_eq!(timeout(value), (Some(ms), vec![]), "{value}");
    }
    let cases = [
        ("-1", "`statementTimeout` cannot be negative, found `-1` | use a duration such as `30s`, or `0` for no timeout"),
        ("-5s", "`statementTimeout` cannot be negative, found `-5s` | use a duration such as `30s`, or `0` for no timeout"),
        ("30sec", "unknown unit `sec` in `30sec`: PostgreSQL takes `ms`, `s`, `min`, `h` or `d` | did you mean `30s`?"),
        ("5 m", "unknown unit `m` in `5 m`: PostgreSQL takes `ms`, `s`, `min`, `h` or `d` | did you mean `5min`?"),
        ("2w", "unknown unit `w` in `2w`: PostgreSQL takes `ms`, `s`, `min`, `h` or `d` | use one of the units `ms`, `s`, `min`, `h` or `d`"),
        ("1.5min", "`1.5min` is not a whole number of its unit | write `90000ms`"),
        ("soon", "expected a duration such as `30s` or a number of milliseconds, found the string `soon` | write a whole number with a unit `ms`, `s`, `min`, `h` or `d` (e.g. `250ms`, `30s`, `5min`), or a number of milliseconds"),
        ("30d", "`30d` is more than PostgreSQL's maximum statement timeout of 2147483647ms (about 24.8 days) | use at most `24d`, or `0` for no timeout"),
        ("2147483648", "`2147483648` milliseconds is more than PostgreSQL's maximum statement timeout of 2147483647ms (about 24.8 days) | use at most `2147483647` (or `24d`), or `0` for no timeout"),
        ("99999999999999999999", "expected a duration such as `30s` or a number of milliseconds, found the number `100000000000000000000` | e.g. `statementTimeout: 30s`, `statementTimeout: 5min` or `statementTimeout: 250`"),
        ("1.5", "expected a duration such as `30s` or a number of milliseconds, found the number `1.5` | e.g. `statementTimeout: 30s`, `statementTimeout: 5min` or `statementTimeout: 250`"),
        ("true", "expected a duration such as `30s` or a number of milliseconds, found the boolean `true` | e.g. `statementTimeout: 30s`, `statementTimeout: 5min` or `statementTimeout: 250`"),
    ];
    for (value, expected) in cases {
        assert_eq!(timeout(value), (None, vec![expected.to_owned()]), "{value}");
    }
}

#[test]
fn unknown_fields_in_v1_list_the_v1_fields() {
    assert_eq!(
        v1_problems("owner: bob"),
        ["4:5 postgresqlDatabases[0].owner: unknown field `owner` | the fields of a database are `name`, `mode`, `preset`, `schemas`, `extensions`, `connectionLimit`, `environment`, `roles`, `pooling`, `cluster` and `placement`"]
    );
    assert_eq!(
        v1_problems("extension: [pgcrypto]"),
        ["4:5 postgresqlDatabases[0].extension: unknown field `extension` | did you mean `extensions`?"]
    );
    assert_eq!(
        v1_problems("connection_limit: 3"),
        ["4:5 postgresqlDatabases[0].connection_limit: unknown field `connection_limit` | did you mean `connectionLimit`?"]
    );
}

fn pooling_of(fields: &str) -> (Option<Pooling>, Vec<String>) {
    let text =
        format!("apiVersion: pgtenant.io/v1\npostgresqlDatabases:\n  - name: a\n    {fields}\n");
    let (raw, _) = parse_text(&text);
    (given(&raw.entries[0].pooling), v1_problems(fields))
}

#[test]
fn pooling_is_none_or_the_pools_settings() {
    assert_eq!(pooling_of("pooling: none"), (Some(Pooling::Off), vec![]));
    assert_eq!(
        pooling_of("pooling: {mode: session, size: 25}"),
        (
            Some(Pooling::Pooled {
                mode: Some(crate::model::PoolMode::Session),
                size: Some(25)
            }),
            vec![]
        )
    );
    assert_eq!(
        pooling_of("pooling: {size: 1}"),
        (
            Some(Pooling::Pooled {
                mode: None,
                size: Some(1)
            }),
            vec![]
        )
    );
    assert_eq!(
        pooling_of("pooling: {}"),
        (
            Some(Pooling::Pooled {
                mode: None,
                size: None
            }),
            vec![]
        )
    );
}

#[test]
fn pooling_problems_are_located_with_a_suggestion() {
    for (fields, expected) in [
        (
            "pooling: {mode: transactoin}",
            "4:21 postgresqlDatabases[0].pooling.mode: unknown pool mode `transactoin`: expected `transaction` or `session` | did you mean `transaction`?",
        ),
        (
            "pooling: {mode: statement}",
            "4:21 postgresqlDatabases[0].pooling.mode: unknown pool mode `statement`: expected `transaction` or `session` | use `transaction` or `session`",
        ),
        (
            "pooling: {sise: 3}",
            "4:15 postgresqlDatabases[0].pooling.sise: unknown field `sise` | did you mean `size`?",
        ),
        (
            "pooling: {mode: session, max: 3}",
            "4:30 postgresqlDatabases[0].pooling.max: unknown field `max` | the settings of `pooling` are `mode` and `size`",
        ),
        (
            "pooling: {size: 0}",
            "4:21 postgresqlDatabases[0].pooling.size: a pool size of `0` lets no connection through | use 1 to 10000 server connections, or `pooling: none` to opt out",
        ),
        (
            "pooling: {size: 10001}",
            "4:21 postgresqlDatabases[0].pooling.size: pool size `10001` is more than 10000 | use at most 10000: the server's max_connections bounds it anyway",
        ),
        (
            "pooling: {size: -2}",
            "4:21 postgresqlDatabases[0].pooling.size: pool size `-2` is negative | use 1 to 10000 server connections",
        ),
        (
            "pooling: {size: \"5\"}",
            "4:21 postgresqlDatabases[0].pooling.size: expected a number of connections, found the string `5` | write it without quotes: `size: 5`",
        ),
        (
            "pooling: nnoe",
            "4:14 postgresqlDatabases[0].pooling: unknown pooling `nnoe`: expected `none` or the pool's settings | did you mean `none`?",
        ),
        (
            "pooling: session",
            "4:14 postgresqlDatabases[0].pooling: unknown pooling `session`: expected `none` or the pool's settings | write `pooling: {mode: session}`",
        ),
        (
            "pooling: false",
            "4:14 postgresqlDatabases[0].pooling: expected `none` or the pool's settings, found the boolean `false` | write `pooling: none` to opt out of the pooler",
        ),
        (
            "pooling: [transaction]",
            "4:14 postgresqlDatabases[0].pooling: expected `none` or the pool's settings, found a list | e.g. `pooling: {mode: transaction, size: 10}`",
        ),
        (
            "poolng: none",
            "4:5 postgresqlDatabases[0].poolng: unknown field `poolng` | did you mean `pooling`?",
        ),
    ] {
        let (pooling, problems) = pooling_of(fields);
        assert_eq!(pooling, None, "{fields}");
        assert_eq!(problems, [expected.to_owned()], "{fields}");
    }
}

#[test]
fn pooling_needs_the_v1_format() {
    let (_, diagnostics) = parse_text("postgresqlDatabases:\n  - name: a\n    pooling: none\n");
    let rendered: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
    assert_eq!(
        rendered,
        [format!("error: {FILE}:3:5: postgresqlDatabases[0].pooling: `pooling` needs the v1 format, and this file has no `apiVersion`\n  help: add `apiVersion: pgtenant.io/v1` at the top of the file (`pgtenant spec upgrade` does it)")]
    );
}

#[test]
fn cluster_and_placement_are_read_with_their_locations() {
    let (raw, diagnostics) = parse_text(
        "apiVersion: pgtenant.io/v1\npostgresqlDatabases:\n  - name: one\n    cluster: eu-1\n    placement: {labels: {region: eu, tier: production}}\n",
    );
    assert!(diagnostics.is_empty(), "{diagnostics:#?}");
    let Field::Given(cluster) = &raw.entries[0].cluster else {
        panic!("no cluster: {:?}", raw.entries[0]);
    };
    assert_eq!(cluster.value, "eu-1");
    assert_eq!(cluster.location.to_string(), format!("{FILE}:4:14"));
    let labels = raw.entries[0].placement.given().unwrap();
    assert_eq!(labels.get("region").map(String::as_str), Some("eu"));
    assert_eq!(labels.len(), 2);
}

#[test]
fn cluster_and_placement_problems_are_located() {
    for (fields, expected) in [
        ("cluster: Main", "4:14 postgresqlDatabases[0].cluster: `Main` is not a valid cluster name"),
        ("cluster: [a]", "4:14 postgresqlDatabases[0].cluster: expected the name of a cluster of pgtenant.yaml, found a list"),
        ("placement: eu", "4:16 postgresqlDatabases[0].placement: expected the placement's settings, found the string `eu`"),
        ("placement: {label: {a: b}}", "4:17 postgresqlDatabases[0].placement.label: unknown field `label` | did you mean `labels`?"),
        ("placement: {labels: [a]}", "4:25 postgresqlDatabases[0].placement.labels: expected labels as a mapping"),
        ("placement: {labels: {tier: 1}}", "4:32 postgresqlDatabases[0].placement.labels.tier: expected the label's value as a string, found the number `1`"),
        ("placement: {labels: {-x: a}}", "4:26 postgresqlDatabases[0].placement.labels: the string `-x` is not a label name"),
    ] {
        let text = format!("apiVersion: pgtenant.io/v1\npostgresqlDatabases:\n  - name: one\n    {fields}\n");
        let problem = only_problem(&text);
        assert!(problem.starts_with(expected), "{fields}:\n{problem}");
    }
    // v1 only.
    let problem = only_problem("postgresqlDatabases:\n  - name: one\n    cluster: main\n");
    assert!(
        problem.contains("`cluster` needs the v1 format"),
        "{problem}"
    );
}
