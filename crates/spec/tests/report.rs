//! The rendered report of a repo full of mistakes: what a user actually reads.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use pgtenant_spec::{load_repo, ApiVersion, LoadedRepo};

fn write_repo(root: &Path, files: &[(&str, &str)]) {
    for (path, text) in files {
        let path = root.join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }
}

fn report(loaded: &LoadedRepo) -> String {
    let mut out = String::new();
    for diagnostic in &loaded.diagnostics {
        writeln!(out, "{diagnostic}").unwrap();
    }
    writeln!(out, "\ndatabases:").unwrap();
    for database in &loaded.databases {
        let format = match database.api_version {
            ApiVersion::Legacy => "legacy".to_owned(),
            ApiVersion::V1 => format!("v1, preset {}", database.preset.as_str()),
        };
        writeln!(
            out,
            "  {} ({}, {format}) from {}",
            database.tenant_id(),
            database.mode.as_str(),
            database.location
        )
        .unwrap();
    }
    writeln!(out, "failed files:").unwrap();
    for file in &loaded.failed_files {
        writeln!(out, "  {}", file.display()).unwrap();
    }
    out
}

#[test]
fn a_repo_with_many_mistakes() {
    let dir = tempfile::tempdir().unwrap();
    let long_name = "n".repeat(50);
    let sixty_four = "a".repeat(64);
    let hostile = format!(
        "postgresqlDatabases:\n\
         - name: 'a\"b'\n\
         - name: x;drop\n\
         - name: $$\n\
         - name: My-DB\n\
         - name: a_b\n\
         - name: -a\n\
         - name: a-\n\
         - name: ''\n\
         - name: {sixty_four}\n"
    );
    let lengths = format!(
        "postgresqlDatabases:\n  - name: {}\n  - name: {long_name}\n",
        "n".repeat(49)
    );
    write_repo(
        dir.path(),
        &[
            ("values.yaml", "postgresqlDatabases:\n  - name: rootless\n"),
            (".git/config/values.yaml", "postgresqlDatabases: {{{\n"),
            ("Team_A/app/values.yaml", "postgresqlDatabases:\n  - name: app\n"),
            (
                "idp-dev/orders/values.yaml",
                "image: orders\nreplicas: 2\npostgresqlDatabases:\n  - name: orders\n    deletionProtection: true\n  - name: carts\n",
            ),
            (
                "idp-dev/typos/values.yaml",
                "postgresqlDatabases:\n\
                 \x20 - nmae: one\n\
                 \x20 - name: two\n\
                 \x20   mdoe: protected\n\
                 \x20 - name: three\n\
                 \x20   mode: protect\n\
                 \x20 - name: four\n\
                 \x20   mode: 3\n\
                 \x20 - name: five\n\
                 \x20   deletion_protection: true\n\
                 \x20 - name: six\n\
                 \x20   deletionProtection: \"yes\"\n\
                 \x20 - name: [seven]\n\
                 \x20 - name: eight\n\
                 \x20   mode: protected\n\
                 \x20   deletionProtection: true\n\
                 \x20 - name: nine\n\
                 \x20   owner: bob\n",
            ),
            ("idp-dev/hostile/values.yaml", &hostile),
            ("idp-dev/lengths/values.yaml", &lengths),
            (
                "idp-dev/broken/values.yaml",
                "postgresqlDatabases:\n  - name: fine\n   mode: protected\n",
            ),
            ("idp-dev/dup-a/values.yaml", "postgresqlDatabases:\n  - name: shared\n"),
            (
                "idp-dev/dup-b/values.yml",
                "postgresqlDatabases:\n  - name: unique-b\n  - name: shared\n",
            ),
            ("team/app/values.yaml", "postgresqlDatabases:\n  - name: a-db\n"),
            ("team-a/app/values.yaml", "postgresqlDatabases:\n  - name: db\n"),
            (
                "shapes/list/values.yaml",
                "postgresqlDatabases:\n  name: not-a-list\n",
            ),
            ("shapes/entry/values.yaml", "postgresqlDatabases:\n  - just-a-name\n"),
            (
                "shapes/spelling/values.yaml",
                "postgresqlDatabse:\n  - name: lost\n",
            ),
            (
                "shapes/documents/values.yaml",
                "image: x\n---\npostgresqlDatabases:\n  - name: second\n",
            ),
            ("healthy/app/values.yaml", "postgresqlDatabases:\n  - name: ok\n    mode: protected\n"),
            (
                "v1/typos/values.yaml",
                "apiVersion: pgtenant.io/v1\n\
                 postgresqlDatabases:\n\
                 \x20 - name: presets\n\
                 \x20   preset: app_migrator\n\
                 \x20   environment: prod\n\
                 \x20 - name: lists\n\
                 \x20   schemas: [app, Billing, public, pg_audit, app]\n\
                 \x20   extensions: [pgcrypto, \"uuid_ossp\", pgcrypto, \"-x\"]\n\
                 \x20 - name: limits\n\
                 \x20   connectionLimit: -2\n\
                 \x20   roles:\n\
                 \x20     wirte: {statementTimeout: 30sec}\n\
                 \x20     read: {logStatements: everything, connectionLimit: \"5\"}\n\
                 \x20     admin: {statementTimeout: 30d, timeout: 1s}\n\
                 \x20 - name: owners\n\
                 \x20   preset: schema-owner\n\
                 \x20   roles: {owner: {statementTimeout: 1.5s}, admin: {}}\n\
                 \x20 - name: legacy\n\
                 \x20   deletionProtection: true\n\
                 \x20   extension: [pgcrypto]\n",
            ),
            (
                "v1/needs-v1/values.yaml",
                "# No apiVersion: legacy format.\npostgresqlDatabases:\n  - name: shop\n    preset: app-migrator\n    schemas: [billing]\n    deletionProtection: true\n",
            ),
            (
                "v1/unknown-version/values.yaml",
                "apiVersion: pgtenant.io/v2\npostgresqlDatabases:\n  - name: future\n",
            ),
            (
                "v1/long/values.yaml",
                "apiVersion: pgtenant.io/v1\npostgresqlDatabases:\n  - name: a-database-name-that-fits-idp-roles-but-not-migrator\n    preset: app-migrator\n",
            ),
            (
                "v1/healthy/values.yaml",
                "image: shop\napiVersion: pgtenant.io/v1\npostgresqlDatabases:\n  - name: checkout\n    mode: protected\n    preset: app-migrator\n    schemas: [app, billing]\n    extensions: [pgcrypto]\n    connectionLimit: 100\n    environment: production\n    roles:\n      app: {connectionLimit: 80, statementTimeout: 30s, logStatements: mod}\n      migrator: {statementTimeout: 15min, logStatements: ddl}\n  - name: reports\n    preset: schema-owner\n",
            ),
        ],
    );

    let loaded = load_repo(dir.path()).unwrap();
    insta::assert_snapshot!("many_mistakes", report(&loaded));

    // The contract the engine relies on, independent of wording.
    assert!(loaded.has_errors());
    assert!(loaded
        .diagnostics
        .windows(2)
        .all(|pair| pair[0].location <= pair[1].location));
    for database in &loaded.databases {
        assert!(!loaded.failed_files.contains(&database.location.file));
    }
    for error in loaded.errors() {
        assert!(loaded.failed_files.contains(&error.location.file));
        assert!(error.hint.is_some(), "an error without a fix: {error}");
    }
}

#[test]
fn a_healthy_repo_serializes_for_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    write_repo(
        dir.path(),
        &[(
            "idp-dev/app/values.yaml",
            "postgresqlDatabases:\n  - name: my-db\n    deletionProtection: false\n",
        )],
    );
    let loaded = load_repo(dir.path()).unwrap();
    insta::assert_snapshot!(
        "healthy_json",
        serde_json::to_string_pretty(&loaded).unwrap()
    );
}

#[test]
fn a_v1_repo_serializes_for_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    write_repo(
        dir.path(),
        &[(
            "shop/checkout/values.yaml",
            "apiVersion: pgtenant.io/v1\n\
             postgresqlDatabases:\n\
             \x20 - name: checkout\n\
             \x20   mode: protected\n\
             \x20   preset: app-migrator\n\
             \x20   schemas: [billing]\n\
             \x20   extensions: [pgcrypto, \"uuid-ossp\"]\n\
             \x20   connectionLimit: 100\n\
             \x20   environment: production\n\
             \x20   roles:\n\
             \x20     app: {connectionLimit: 80, statementTimeout: 30s, logStatements: mod}\n\
             \x20     migrator: {statementTimeout: 15min}\n",
        )],
    );
    let loaded = load_repo(dir.path()).unwrap();
    insta::assert_snapshot!(
        "healthy_v1_json",
        serde_json::to_string_pretty(&loaded).unwrap()
    );
}
