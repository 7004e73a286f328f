//! The rendered report of a repo full of mistakes: what a user actually reads.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use pgtenant_spec::{load_repo, LoadedRepo};

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
        writeln!(
            out,
            "  {} ({}) from {}",
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
