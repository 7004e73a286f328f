//! Exports, connecting and SSL through the real binary, checked with the real tools: every format
//! parsed back and, where it is a connection string, used by psql against a real cluster; psql
//! launched by `pgtenant psql`; login failures explained; verify-full verified; the store's
//! integrity and key handling.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::aws::Store;
use common::{Env, Output, WithPooler};
use saphyr::{LoadableYamlNode, Yaml};
use serde_json::Value;

const TENANT: &str = "idp-dev/my-db";

/// `idp-dev/my-db` declared and applied.
fn applied_env() -> Env {
    applied_env_on(Store::File)
}

fn applied_env_on(store: Store) -> Env {
    let env = store.env();
    env.declare("idp-dev", "my-db", &[("my-db", "standard")]);
    env.apply();
    env
}

/// The system psql, non-interactive, with nothing from the caller's environment but `vars`.
fn psql(vars: &[(&str, &str)], args: &[&str]) -> Output {
    Output::of(
        Command::new("psql")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(vars.iter().copied())
            .args(["-X", "-A", "-t", "-w"])
            .args(args)
            .output()
            .unwrap(),
    )
}

/// `SELECT current_user` over the connection string `conninfo`, which must work.
fn login_user(conninfo: &str) -> String {
    let out = psql(&[], &["-d", conninfo, "-c", "SELECT current_user"]);
    assert_eq!(out.code, 0, "psql -d {conninfo} failed:\n{}", out.stderr);
    out.stdout.trim().to_string()
}

fn stdout_of(env: &Env, args: &[&str]) -> String {
    let out = env.run(args);
    assert_eq!(out.code, 0, "{args:?} failed:\n{}", out.stderr);
    out.stdout
}

fn run_with(env: &Env, vars: &[(&str, &str)], args: &[&str]) -> Output {
    Output::of(
        env.cmd()
            .envs(vars.iter().copied())
            .args(args)
            .output()
            .unwrap(),
    )
}

fn yaml_str<'a>(node: &'a Yaml<'a>, path: &[&str]) -> &'a str {
    let mut node = node;
    for key in path {
        node = node
            .as_mapping_get(key)
            .unwrap_or_else(|| panic!("no {key} of {path:?} in {node:?}"));
    }
    node.as_str()
        .unwrap_or_else(|| panic!("{path:?} is not a string: {node:?}"))
}

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn every_format_parses_back_and_connection_strings_log_in(store: Store) {
    let env = applied_env_on(store);
    let json = env.credentials(TENANT, "write");
    for key in [
        "username", "password", "endpoint", "port", "dbname", "sslmode", "uri",
    ] {
        assert!(
            json.get(key).is_some(),
            "credentials JSON lacks {key}: {json:#}"
        );
    }
    assert_eq!(json["sslmode"], "require");
    let user = json["username"].as_str().unwrap();
    assert_eq!(user, "idp-dev-my-db-write");
    let password = json["password"].as_str().unwrap();
    let host = json["endpoint"].as_str().unwrap();
    let port = json["port"].as_u64().unwrap().to_string();
    let format = |format: &str| {
        stdout_of(
            &env,
            &["credentials", TENANT, "--role", "write", "--format", format],
        )
    };

    // uri: libpq takes it as is.
    let uri = format("uri").trim().to_string();
    assert_eq!(uri, json["uri"].as_str().unwrap());
    assert!(uri.ends_with("/idp-dev-my-db?sslmode=require"), "{uri}");
    assert_eq!(login_user(&uri), user);
    assert_eq!(
        stdout_of(&env, &["url", TENANT, "--role", "write"]).trim(),
        uri
    );

    // jdbc: PgJDBC's syntax; without the `jdbc:` prefix it is also a libpq URI (user and password
    // as query parameters), so the very same parameters log in.
    let jdbc = format("jdbc").trim().to_string();
    let expected_prefix = format!("jdbc:postgresql://{host}:{port}/idp-dev-my-db?");
    assert!(jdbc.starts_with(&expected_prefix), "{jdbc}");
    let params: Vec<&str> = jdbc.split_once('?').unwrap().1.split('&').collect();
    assert_eq!(
        params,
        [
            format!("user={user}"),
            format!("password={password}"),
            "sslmode=require".to_string()
        ]
    );
    assert_eq!(login_user(jdbc.strip_prefix("jdbc:").unwrap()), user);

    // env: the seed's variables, sourced by a shell and handed to psql.
    let env_file = env.state.path().join("db.env");
    std::fs::write(&env_file, format("env")).unwrap();
    let sourced = Output::of(
        Command::new("sh")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .arg("-c")
            .arg(
                r#"set -a && . "$1" && set +a &&
                PGHOST="$DB_HOST" PGPORT="$DB_PORT" PGUSER="$DB_USER" PGPASSWORD="$DB_PASSWORD" \
                PGDATABASE="$DB_NAME" PGSSLMODE="$DB_SSLMODE" \
                psql -X -A -t -w -c 'SELECT current_user, current_database()' &&
                psql -X -A -t -w -d "$DATABASE_URL" -c 'SELECT current_user'"#,
            )
            .arg("sh")
            .arg(&env_file)
            .output()
            .unwrap(),
    );
    assert_eq!(sourced.code, 0, "{}", sourced.stderr);
    assert_eq!(
        sourced.stdout,
        format!("{user}|idp-dev-my-db\n{user}\n"),
        "{}",
        sourced.stderr
    );

    // pgpass: libpq finds the password in PGPASSFILE (which it ignores unless mode 0600).
    let pgpass = format("pgpass");
    assert_eq!(
        pgpass,
        format!("{host}:{port}:idp-dev-my-db:{user}:{password}\n")
    );
    let pgpass_file = env.state.path().join("pgpass");
    std::fs::write(&pgpass_file, &pgpass).unwrap();
    std::fs::set_permissions(&pgpass_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = psql(
        &[("PGPASSFILE", pgpass_file.to_str().unwrap())],
        &[
            "-d",
            &format!("host={host} port={port} user={user} dbname=idp-dev-my-db sslmode=require"),
            "-c",
            "SELECT current_user",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout.trim(), user);

    // k8s-secret: a Secret manifest whose values are all strings, its uri logs in.
    let secret_text = format("k8s-secret");
    let docs = Yaml::load_from_str(&secret_text).unwrap();
    assert_eq!(docs.len(), 1);
    let secret = &docs[0];
    assert_eq!(yaml_str(secret, &["apiVersion"]), "v1");
    assert_eq!(yaml_str(secret, &["kind"]), "Secret");
    assert_eq!(
        yaml_str(secret, &["metadata", "name"]),
        "idp-dev-my-db-write"
    );
    assert_eq!(yaml_str(secret, &["metadata", "namespace"]), "idp-dev");
    for (key, value) in [
        ("username", user),
        ("password", password),
        ("endpoint", host),
        ("port", port.as_str()),
        ("dbname", "idp-dev-my-db"),
        ("uri", uri.as_str()),
        ("jdbc-uri", jdbc.as_str()),
    ] {
        assert_eq!(yaml_str(secret, &["stringData", key]), value, "{key}");
    }
    assert_eq!(login_user(yaml_str(secret, &["stringData", "uri"])), user);

    // external-secret: the seed's manifest, no password in it.
    let external = format("external-secret");
    assert!(!external.contains(password), "{external}");
    let docs = Yaml::load_from_str(&external).unwrap();
    let external = &docs[0];
    assert_eq!(
        yaml_str(external, &["apiVersion"]),
        "external-secrets.io/v1"
    );
    assert_eq!(yaml_str(external, &["kind"]), "ExternalSecret");
    assert_eq!(yaml_str(external, &["spec", "refreshInterval"]), "1h");
    assert_eq!(
        yaml_str(external, &["spec", "secretStoreRef", "name"]),
        "aws-secrets"
    );
    assert_eq!(
        yaml_str(external, &["spec", "target", "name"]),
        "idp-dev-my-db-write"
    );
    let data = external["spec"]["data"].as_sequence().unwrap();
    assert_eq!(data.len(), 4);
    for (entry, property) in data
        .iter()
        .zip(["username", "password", "endpoint", "port"])
    {
        assert_eq!(yaml_str(entry, &["secretKey"]), property);
        // Where the store keeps it: `customer/…` for the file store, the configured prefix for
        // Secrets Manager.
        let key = match store {
            Store::File => "customer/idp-dev/my-db-write".to_owned(),
            Store::Aws => format!("{}idp-dev/my-db-write", common::aws::prefix_of(&env)),
        };
        assert_eq!(yaml_str(entry, &["remoteRef", "key"]), key);
        assert_eq!(yaml_str(entry, &["remoteRef", "property"]), property);
    }

    // Exported credentials must work against a cluster that requires SSL.
    let out = env.run(&[
        "credentials",
        TENANT,
        "--role",
        "read",
        "--sslmode",
        "disable",
    ]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("requires SSL"), "{}", out.stderr);
}

fn export_writes_every_declared_role_privately_and_reports_missing_ones(store: Store) {
    let env = store.env();
    env.declare("idp-dev", "my-db", &[("my-db", "standard")]);
    env.declare("shop", "cart", &[("cart", "protected")]);
    env.apply();
    let out_dir = env.state.path().join("export");
    let repo = env.repo_path().to_str().unwrap().to_string();

    let out = env.run(&[
        "export",
        &repo,
        "--format",
        "env",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let mut names: Vec<String> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "idp-dev-my-db-admin.env",
            "idp-dev-my-db-read.env",
            "idp-dev-my-db-write.env",
            "shop-cart-admin.env",
            "shop-cart-read.env",
            "shop-cart-write.env",
        ]
    );
    assert_eq!(mode_of(&out_dir), 0o700);
    for name in &names {
        let file = out_dir.join(name);
        assert_eq!(mode_of(&file), 0o600, "{name}");
        assert!(
            out.stdout.contains(file.to_str().unwrap()),
            "{}",
            out.stdout
        );
    }
    let cart_read = std::fs::read_to_string(out_dir.join("shop-cart-read.env")).unwrap();
    assert!(
        cart_read.contains("DB_USER='shop-cart-read'\n"),
        "{cart_read}"
    );

    // A file that exists with a looser mode is replaced by a private one.
    let yaml_file = out_dir.join("shop-cart-read.secret.yaml");
    std::fs::write(&yaml_file, "old").unwrap();
    std::fs::set_permissions(&yaml_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = env.run(&[
        "export",
        &repo,
        "--format",
        "k8s-secret",
        "--role",
        "read",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout.lines().count(), 2, "{}", out.stdout);
    assert_eq!(mode_of(&yaml_file), 0o600);
    let text = std::fs::read_to_string(&yaml_file).unwrap();
    let docs = Yaml::load_from_str(&text).unwrap();
    assert_eq!(yaml_str(&docs[0], &["metadata", "name"]), "shop-cart-read");
    assert_eq!(
        login_user(yaml_str(&docs[0], &["stringData", "uri"])),
        "shop-cart-read"
    );

    // Declared but never applied: reported by name, the rest still written, exit 1.
    env.declare("idp-dev", "new-db", &[("new-db", "standard")]);
    let out_dir2 = env.state.path().join("export2");
    let out = env.run(&[
        "export",
        &repo,
        "--format",
        "external-secret",
        "--out",
        out_dir2.to_str().unwrap(),
    ]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    for role in ["admin", "write", "read"] {
        assert!(
            out.stderr.contains(&format!(
                "no stored credentials at customer/idp-dev/new-db-{role}"
            )),
            "{}",
            out.stderr
        );
    }
    assert!(out.stderr.contains("pgtenant apply"), "{}", out.stderr);
    assert_eq!(std::fs::read_dir(&out_dir2).unwrap().count(), 6);
    assert!(out_dir2
        .join("idp-dev-my-db-admin.external-secret.yaml")
        .is_file());
}

/// A stand-in psql that shows what it was given: its arguments and the libpq environment.
fn fake_psql(dir: &Path) -> PathBuf {
    let bin = dir.join("fake-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let script = bin.join("psql");
    std::fs::write(
        &script,
        "#!/bin/sh\nfor arg in \"$@\"; do echo \"ARG $arg\"; done\nenv | grep '^PG' | sort\nexit 7\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

#[test]
fn psql_runs_as_read_by_default_with_the_password_in_the_environment_only() {
    let env = applied_env();
    let read = env.credentials(TENANT, "read");
    let password = read["password"].as_str().unwrap();

    // The real psql, as read by default: reads, cannot write, psql's exit code comes through.
    let out = env.run(&[
        "psql",
        TENANT,
        "--",
        "-X",
        "-At",
        "-c",
        "SELECT current_user, ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout.trim(), "idp-dev-my-db-read|t");
    assert!(!out.stderr.contains("warning"), "{}", out.stderr);
    let out = env.run(&["psql", TENANT, "--", "-X", "-c", "CREATE TABLE t (id int)"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("permission denied"), "{}", out.stderr);
    let script = env.state.path().join("fail.sql");
    std::fs::write(&script, "SELECT 1/0;\n").unwrap();
    let out = env.run(&[
        "psql",
        TENANT,
        "--",
        "-X",
        "-v",
        "ON_ERROR_STOP=1",
        "-f",
        script.to_str().unwrap(),
    ]);
    assert_eq!(out.code, 3, "psql's own exit code: {}", out.stderr);

    // write and admin; admin warns.
    let out = env.run(&[
        "psql",
        TENANT,
        "--role",
        "write",
        "--",
        "-X",
        "-At",
        "-c",
        "SELECT current_user",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout.trim(), "idp-dev-my-db-write");
    let out = env.run(&[
        "psql",
        TENANT,
        "--role",
        "admin",
        "--",
        "-X",
        "-At",
        "-c",
        "CREATE TABLE t (id int); SELECT current_user",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.trim().ends_with("idp-dev-my-db-admin"),
        "{}",
        out.stdout
    );
    assert!(
        out.stderr.contains("warning:") && out.stderr.contains("emergencies and for migrations"),
        "{}",
        out.stderr
    );

    // What psql receives: the arguments given, nothing more; the password only in PGPASSWORD;
    // variables that would redirect or re-verify the connection removed.
    let fake = fake_psql(env.state.path());
    let path = format!(
        "{}:{}",
        fake.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = run_with(
        &env,
        &[
            ("PATH", &path),
            ("PGHOSTADDR", "10.9.9.9"),
            ("PGSERVICE", "elsewhere"),
            ("PGSSLROOTCERT", "/nonexistent/root.crt"),
        ],
        &["psql", TENANT, "--", "-c", "SELECT 1"],
    );
    assert_eq!(out.code, 7, "the stand-in's exit code: {}", out.stderr);
    let args: Vec<&str> = out
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("ARG "))
        .collect();
    assert_eq!(args, ["-c", "SELECT 1"]);
    let vars: Vec<&str> = out.stdout.lines().filter(|l| l.starts_with("PG")).collect();
    let port = read["port"].to_string();
    assert_eq!(
        vars,
        [
            "PGDATABASE=idp-dev-my-db".to_string(),
            format!("PGHOST={}", read["endpoint"].as_str().unwrap()),
            format!("PGPASSWORD={password}"),
            format!("PGPORT={port}"),
            "PGSSLMODE=require".to_string(),
            "PGUSER=idp-dev-my-db-read".to_string(),
        ]
    );
}

#[tokio::test]
async fn login_failures_are_explained_with_cause_and_fix() {
    let env = applied_env();
    let superuser = env.superuser(None).await;

    // No SSL: the server's own words (as psql shows them), then pgtenant's explanation.
    let read = env.credentials(TENANT, "read");
    let plain = format!(
        "host={} port={} user={} password={} dbname=idp-dev-my-db sslmode=disable",
        read["endpoint"].as_str().unwrap(),
        read["port"],
        read["username"].as_str().unwrap(),
        read["password"].as_str().unwrap()
    );
    let out = psql(&[], &["-d", &plain, "-c", "SELECT 1"]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("no pg_hba.conf entry") && out.stderr.contains("no encryption"),
        "{}",
        out.stderr
    );
    let out = env.run(&[
        "psql",
        TENANT,
        "--sslmode",
        "disable",
        "--",
        "-X",
        "-c",
        "SELECT 1",
    ]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let first = out.stderr.lines().next().unwrap();
    assert!(
        first.starts_with("error: SSL is required") && first.contains("sslmode=require"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("no encryption"),
        "the cause follows: {}",
        out.stderr
    );
    // With SSL, as the credentials say, the same login works.
    assert_eq!(
        env.run(&["psql", TENANT, "--", "-X", "-c", "SELECT 1"])
            .code,
        0
    );

    // Stale password: the role's password was changed behind the store's back.
    superuser
        .batch_execute(r#"ALTER ROLE "idp-dev-my-db-read" PASSWORD 'changed-elsewhere'"#)
        .await
        .unwrap();
    let out = env.run(&["psql", TENANT, "--", "-X", "-c", "SELECT 1"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("credentials are stale")
            && out.stderr.contains("rotate")
            && out.stderr.contains("password authentication failed"),
        "{}",
        out.stderr
    );
    // doctor: read fails, the others log in.
    let out = env.run(&["doctor", TENANT, "--format", "json"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let report = out.json();
    assert_eq!(report["ok"], false);
    let by_role = |role: &str| -> Value {
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["role"] == role)
            .unwrap()
            .clone()
    };
    assert_eq!(by_role("admin")["ok"], true);
    assert_eq!(by_role("write")["ok"], true);
    assert!(
        by_role("write")["tls"].as_str().unwrap().starts_with("TLS"),
        "{report:#}"
    );
    assert_eq!(by_role("read")["ok"], false);
    assert!(
        by_role("read")["error"].as_str().unwrap().contains("stale"),
        "{report:#}"
    );
    let text = env.run(&["doctor", TENANT, "--role", "write"]);
    assert_eq!(text.code, 0, "{}", text.stderr);
    assert!(text.stdout.starts_with("ok    write"), "{}", text.stdout);

    // Too many connections: the role's limit is exhausted.
    superuser
        .batch_execute(r#"ALTER ROLE "idp-dev-my-db-write" CONNECTION LIMIT 0"#)
        .await
        .unwrap();
    let out = env.run(&[
        "psql", TENANT, "--role", "write", "--", "-X", "-c", "SELECT 1",
    ]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let first = out.stderr.lines().next().unwrap();
    assert!(
        first.contains("too many connections") && first.contains("retry"),
        "{}",
        out.stderr
    );

    // The database is gone: declare it and apply.
    superuser
        .batch_execute(r#"DROP DATABASE "idp-dev-my-db" WITH (FORCE)"#)
        .await
        .unwrap();
    let out = env.run(&[
        "psql", TENANT, "--role", "admin", "--", "-X", "-c", "SELECT 1",
    ]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("database idp-dev-my-db does not exist")
            && out
                .stderr
                .contains("declare idp-dev/my-db in the apps repo")
            && out.stderr.contains("pgtenant apply"),
        "{}",
        out.stderr
    );

    // Not in the store at all.
    let out = env.run(&["psql", "idp-dev/nope"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("no stored credentials"),
        "{}",
        out.stderr
    );
}

/// A self-signed CA that did not sign the cluster's certificate.
fn other_ca(dir: &Path) -> PathBuf {
    let cert = dir.join("other-ca.crt");
    let out = Output::of(
        Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
            ])
            .args(["-nodes", "-days", "1", "-subj", "/CN=not the cluster CA"])
            .arg("-keyout")
            .arg(dir.join("other-ca.key"))
            .arg("-out")
            .arg(&cert)
            .output()
            .unwrap(),
    );
    assert_eq!(out.code, 0, "openssl: {}", out.stderr);
    cert
}

#[test]
fn verify_full_really_verifies_the_server() {
    let env = applied_env();
    let ca = env.cluster.cluster.ca_cert_path();
    let ca_str = ca.to_str().unwrap();
    let with_ca = [("PGTENANT_CA_FILE", ca_str)];
    let url = |vars: &[(&str, &str)]| {
        let out = run_with(
            &env,
            vars,
            &["url", TENANT, "--role", "read", "--sslmode", "verify-full"],
        );
        assert_eq!(out.code, 0, "{}", out.stderr);
        out.stdout.trim().to_string()
    };

    // An admin URL's cluster has no CA unless one is given.
    let out = env.run(&["url", TENANT, "--role", "read", "--sslmode", "verify-full"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("--ca-file"), "{}", out.stderr);
    let out = env.run(&["ca"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("--ca-file"), "{}", out.stderr);

    // The right CA: psql verifies the chain and the host name, and logs in.
    let uri = url(&with_ca);
    assert!(
        uri.ends_with(&format!("?sslmode=verify-full&sslrootcert={ca_str}")),
        "{uri}"
    );
    assert_eq!(login_user(&uri), "idp-dev-my-db-read");
    let out = run_with(
        &env,
        &with_ca,
        &[
            "psql",
            TENANT,
            "--sslmode",
            "verify-full",
            "--",
            "-X",
            "-At",
            "-c",
            "SELECT current_user",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout.trim(), "idp-dev-my-db-read");
    let out = run_with(&env, &with_ca, &["ca"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, std::fs::read_to_string(&ca).unwrap());
    let env_format = run_with(
        &env,
        &with_ca,
        &[
            "credentials",
            TENANT,
            "--role",
            "read",
            "--format",
            "env",
            "--sslmode",
            "verify-full",
        ],
    );
    assert!(
        env_format
            .stdout
            .contains(&format!("DB_SSLROOTCERT='{ca_str}'\n")),
        "{}",
        env_format.stdout
    );

    // A CA that did not sign the server's certificate: psql refuses, and so does pgtenant psql,
    // with the reason.
    let wrong = other_ca(env.state.path());
    let wrong_ca = [("PGTENANT_CA_FILE", wrong.to_str().unwrap())];
    let bad_uri = url(&wrong_ca);
    let out = psql(&[], &["-d", &bad_uri, "-c", "SELECT 1"]);
    assert_eq!(out.code, 2, "a foreign CA must not verify: {}", out.stdout);
    assert!(
        out.stderr.contains("certificate verify failed"),
        "{}",
        out.stderr
    );
    let out = run_with(
        &env,
        &wrong_ca,
        &[
            "psql",
            TENANT,
            "--sslmode",
            "verify-full",
            "--",
            "-X",
            "-c",
            "SELECT 1",
        ],
    );
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("not signed by the CA in")
            && out.stderr.contains(wrong.to_str().unwrap()),
        "{}",
        out.stderr
    );
    // Without --no-check psql itself refuses too; its exit code comes through.
    let out = run_with(
        &env,
        &wrong_ca,
        &[
            "psql",
            TENANT,
            "--sslmode",
            "verify-full",
            "--no-check",
            "--",
            "-X",
            "-c",
            "SELECT 1",
        ],
    );
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("certificate verify failed"),
        "{}",
        out.stderr
    );
    // require does not verify, so the same foreign CA does not matter there.
    let out = run_with(
        &env,
        &wrong_ca,
        &["psql", TENANT, "--", "-X", "-c", "SELECT 1"],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);

    // The right CA but a host name the certificate does not list: libpq refuses.
    let read = env.credentials(TENANT, "read");
    let port = read["port"].to_string();
    let password = read["password"].as_str().unwrap();
    let wrong_host = format!(
        "host=wrong.example hostaddr=127.0.0.1 port={port} user=idp-dev-my-db-read \
         dbname=idp-dev-my-db sslmode=verify-full sslrootcert={ca_str}"
    );
    let out = psql(
        &[("PGPASSWORD", password)],
        &["-d", &wrong_host, "-c", "SELECT 1"],
    );
    assert_eq!(out.code, 2, "a wrong host name must not verify");
    assert!(
        out.stderr.contains("does not match host name"),
        "{}",
        out.stderr
    );
    // The same with the right name logs in: only the name made the difference.
    let right_host = wrong_host.replace("host=wrong.example", "host=localhost");
    let out = psql(
        &[("PGPASSWORD", password)],
        &["-d", &right_host, "-c", "SELECT 1"],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);

    // Credentials written for an address the certificate does not name (the IPv4-mapped IPv6
    // form of 127.0.0.1 reaches the same server): pgtenant's own check refuses with the reason,
    // psql refuses too, and without verification the same endpoint works.
    let out = run_with(
        &env,
        &[("PGTENANT_ENDPOINT", &format!("[::ffff:127.0.0.1]:{port}"))],
        &["apply"],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = env.run(&["psql", TENANT, "--", "-X", "-At", "-c", "SELECT 1"]);
    if out.stderr.contains("Address family not supported") {
        pgtenant_cluster::skip_or_fail(
            "no IPv6 sockets here, so the host name check through pgtenant cannot be tested",
        );
        return;
    }
    assert_eq!(
        out.code, 0,
        "sslmode=require does not check names: {}",
        out.stderr
    );
    let mapped_uri = url(&with_ca);
    assert!(mapped_uri.contains("@[::ffff:127.0.0.1]:"), "{mapped_uri}");
    let out = psql(&[], &["-d", &mapped_uri, "-c", "SELECT 1"]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("does not match host name"),
        "{}",
        out.stderr
    );
    let out = run_with(
        &env,
        &with_ca,
        &[
            "psql",
            TENANT,
            "--sslmode",
            "verify-full",
            "--",
            "-X",
            "-c",
            "SELECT 1",
        ],
    );
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("does not name the host ::ffff:127.0.0.1"),
        "{}",
        out.stderr
    );
}

#[test]
fn ca_and_verify_full_default_to_the_embedded_clusters_ca() {
    let env = applied_env();
    // No admin URL: the embedded cluster under the state dir is the cluster, and its CA the CA.
    let embedded = env.state.path().join("cluster");
    let no_admin_url = |args: &[&str]| {
        Output::of(
            env.cmd()
                .env_remove("PGTENANT_ADMIN_URL")
                .args(args)
                .output()
                .unwrap(),
        )
    };
    let out = no_admin_url(&["ca"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("pgtenant up"), "{}", out.stderr);

    // Stand in for the embedded cluster's CA with this test cluster's (which signed the server
    // the stored credentials point at).
    std::fs::create_dir_all(&embedded).unwrap();
    let ca = std::fs::read_to_string(env.cluster.cluster.ca_cert_path()).unwrap();
    std::fs::write(embedded.join("ca.crt"), &ca).unwrap();
    let out = no_admin_url(&["ca"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, ca);
    let out = no_admin_url(&["url", TENANT, "--role", "write", "--sslmode", "verify-full"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let uri = out.stdout.trim();
    assert!(
        uri.ends_with(&format!(
            "sslrootcert={}",
            embedded.join("ca.crt").to_str().unwrap()
        )),
        "{uri}"
    );
    assert_eq!(login_user(uri), "idp-dev-my-db-write");
}

#[tokio::test]
async fn store_verify_finds_tampering_and_a_broken_key_never_reissues_passwords() {
    let env = applied_env();
    let state = env.state.path();
    let key_file = state.join("keys/store.key");
    let read_secret = state.join("credentials/customer/idp-dev/my-db-read.secret");
    let saved: Vec<Value> = ["admin", "write", "read"]
        .iter()
        .map(|role| env.credentials(TENANT, role))
        .collect();
    let verifiers = || async {
        env.superuser(None)
            .await
            .query(
                "SELECT rolname, rolpassword FROM pg_authid WHERE rolname LIKE 'idp-dev-my-db-%' ORDER BY 1",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|row| (row.get::<_, String>(0), row.get::<_, Option<String>>(1)))
            .collect::<Vec<_>>()
    };
    let before = verifiers().await;
    assert_eq!(before.len(), 3);

    let out = env.run(&["store", "verify", "--format", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let report = out.json();
    assert_eq!(report["ok"], true);
    assert_eq!(report["checked"], 3);
    assert_eq!(report["failed"], serde_json::json!([]));
    let out = env.run(&["store", "verify"]);
    assert_eq!(out.code, 0);
    assert!(out.stdout.contains("3 secret(s) checked"), "{}", out.stdout);

    // One flipped character in one secret: found, named, exit 1.
    let original = std::fs::read(&read_secret).unwrap();
    let mut tampered = original.clone();
    let at = tampered.len() - 10; // inside the base64 ciphertext
    tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
    std::fs::write(&read_secret, &tampered).unwrap();
    let out = env.run(&["store", "verify", "--format", "json"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let report = out.json();
    assert_eq!(report["ok"], false);
    assert_eq!(report["failed"].as_array().unwrap().len(), 1);
    assert_eq!(report["failed"][0]["path"], "customer/idp-dev/my-db-read");
    assert_eq!(report["failed"][0]["problem"], "wrong-key-or-tampered");
    // A corrupt file (not an envelope at all) is told apart.
    std::fs::write(&read_secret, b"garbage\n").unwrap();
    let out = env.run(&["store", "verify"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stdout
            .contains("FAIL  customer/idp-dev/my-db-read: corrupt"),
        "{}",
        out.stdout
    );
    std::fs::write(&read_secret, &original).unwrap();
    assert_eq!(env.run(&["store", "verify"]).code, 0);

    // The key file is missing: apply stops with a clear error.
    let key = std::fs::read(&key_file).unwrap();
    std::fs::remove_file(&key_file).unwrap();
    let out = env.run(&["apply"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("does not exist but the data directory")
            && out.stderr.contains("restore the key file from its backup"),
        "{}",
        out.stderr
    );
    assert!(!key_file.exists(), "no new key was made");
    assert_eq!(env.run(&["store", "verify"]).code, 1);
    assert_eq!(env.run(&["credentials", TENANT, "--role", "read"]).code, 1);

    // Another valid key: nothing decrypts, apply stops rather than issue passwords.
    let other_key = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n";
    std::fs::write(&key_file, other_key).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = env.run(&["apply"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("cannot decrypt")
            && out.stderr.contains("check that the right key file"),
        "{}",
        out.stderr
    );
    let out = env.run(&["store", "verify", "--format", "json"]);
    assert_eq!(out.code, 1);
    assert_eq!(out.json()["failed"].as_array().unwrap().len(), 3);
    assert!(
        out.stderr.contains("most likely not the key"),
        "{}",
        out.stderr
    );
    assert_eq!(std::fs::read_to_string(&key_file).unwrap(), other_key);

    // Key restored: the server's passwords never changed, the saved credentials still log in,
    // and the store holds exactly what it held.
    std::fs::write(&key_file, &key).unwrap();
    assert_eq!(verifiers().await, before, "no role's password was changed");
    for credential in &saved {
        let uri = credential["uri"].as_str().unwrap();
        assert_eq!(login_user(uri), credential["username"].as_str().unwrap());
    }
    for (role, credential) in ["admin", "write", "read"].iter().zip(&saved) {
        assert_eq!(&env.credentials(TENANT, role), credential);
    }
    assert_eq!(env.run(&["store", "verify"]).code, 0);
    assert_eq!(env.plan().code, 0, "in sync again");
}

fn doctor_for_a_tenant_without_credentials_is_an_error(store: Store) {
    let env = applied_env_on(store);
    for format in ["text", "json"] {
        let out = env.run(&["doctor", "idp-dev/unknown", "--format", format]);
        assert_eq!(out.code, 1, "{format}: {}\n{}", out.stdout, out.stderr);
        assert!(
            out.stderr
                .contains("idp-dev/unknown has no stored credentials"),
            "{format}: {}",
            out.stderr
        );
        assert!(out.stderr.contains("pgtenant apply"), "{}", out.stderr);
    }
    assert_eq!(env.run(&["doctor", TENANT]).code, 0);
}

fn a_role_outside_the_tenants_preset_is_answered_with_the_presets_roles(store: Store) {
    let env = store.env();
    env.write(
        "shop/checkout/values.yaml",
        "apiVersion: pgtenant.io/v1\npostgresqlDatabases:\n  - name: checkout\n    preset: app-migrator\n",
    );
    env.write(
        "shop/api/values.yaml",
        "apiVersion: pgtenant.io/v1\npostgresqlDatabases:\n  - name: api\n    preset: schema-owner\n",
    );
    env.apply();
    for (tenant, role, expected) in [
        (
            "shop/checkout",
            "admin",
            "shop/checkout has no admin role: app-migrator tenants have the roles migrator, app",
        ),
        (
            "shop/checkout",
            "read",
            "shop/checkout has no read role: app-migrator tenants have the roles migrator, app",
        ),
        (
            "shop/api",
            "admin",
            "shop/api has no admin role: schema-owner tenants have the roles app, write, read",
        ),
    ] {
        for command in ["credentials", "url"] {
            let out = env.run(&[command, tenant, "--role", role]);
            assert_eq!(out.code, 1, "{command} {tenant} {role}");
            assert!(out.stderr.contains(expected), "{}", out.stderr);
            assert!(
                !out.stderr.contains("declared in the repo"),
                "{}",
                out.stderr
            );
        }
    }
    assert_eq!(
        env.run(&["credentials", "shop/checkout", "--role", "migrator"])
            .code,
        0
    );
    // An idp tenant that is not there at all still gets the "declared? applied?" question.
    let out = env.run(&["credentials", "idp-dev/nothing", "--role", "admin"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("declared in the repo"),
        "{}",
        out.stderr
    );
}

#[test]
fn role_help_names_every_presets_roles() {
    let env = Env::new();
    for command in ["export", "doctor", "credentials", "url", "rotate"] {
        let help = env.run(&[command, "--help"]);
        assert_eq!(help.code, 0, "{command}");
        assert!(
            help.stdout.contains(
                "a login role of the tenant's preset (idp: admin|write|read; app-migrator: \
                 migrator|app; schema-owner: app|write|read)"
            ),
            "{command}:\n{}",
            help.stdout
        );
        assert!(
            !help.stdout.contains("admin, write and read"),
            "{command}:\n{}",
            help.stdout
        );
    }
}

// The store-agnostic tests, against the file store and Secrets Manager (common/aws.rs).
both_stores_sync!(every_format_parses_back_and_connection_strings_log_in);
both_stores_sync!(export_writes_every_declared_role_privately_and_reports_missing_ones);
both_stores_sync!(doctor_for_a_tenant_without_credentials_is_an_error);
both_stores_sync!(a_role_outside_the_tenants_preset_is_answered_with_the_presets_roles);

/// `current_user`, the server's port (not the pooler's) and the database, over `conninfo`.
fn who_and_where(conninfo: &str) -> String {
    let out = psql(
        &[],
        &[
            "-d",
            conninfo,
            "-c",
            "SELECT current_user || ' ' || current_database()",
        ],
    );
    assert_eq!(out.code, 0, "psql -d {conninfo} failed:\n{}", out.stderr);
    out.stdout.trim().to_string()
}

#[test]
fn every_credential_format_carries_the_pooled_endpoint_and_connects_through_it() {
    let Some(p) = WithPooler::new() else { return };
    p.env.write(
        "team/apps/values.yaml",
        "apiVersion: pgtenant.io/v1\npostgresqlDatabases:\n  - name: a\n    pooling: {mode: transaction, size: 4}\n  - name: solo\n    pooling: none\n",
    );
    let up: Value = serde_json::from_str(&p.ok(&["up", "--format", "json"]).stdout).unwrap();
    let port = up["pooler"]["port"].as_u64().expect("pgbouncer runs") as u16;
    p.ok(&["apply"]);

    // JSON: the direct keys unchanged, the pooler's beside them, and both connect.
    let json: Value = serde_json::from_str(
        &p.ok(&[
            "credentials",
            "team/a",
            "--role",
            "write",
            "--format",
            "json",
        ])
        .stdout,
    )
    .unwrap();
    assert_eq!(json["pooler_endpoint"], "127.0.0.1", "{json}");
    assert_eq!(json["pooler_port"], port, "{json}");
    assert_ne!(json["port"], json["pooler_port"], "{json}");
    let uri = json["pooler_uri"].as_str().unwrap();
    assert_eq!(who_and_where(uri), "team-a-write team-a");
    assert_eq!(
        who_and_where(json["uri"].as_str().unwrap()),
        "team-a-write team-a"
    );
    let jdbc = json["pooler_jdbc"].as_str().unwrap();
    assert!(
        jdbc.starts_with(&format!(
            "jdbc:postgresql://127.0.0.1:{port}/team-a?user=team-a-write&"
        )),
        "{jdbc}"
    );

    // env: DATABASE_POOLER_URL connects; the host and port variables say the same.
    let env_text = p
        .ok(&["credentials", "team/a", "--role", "read", "--format", "env"])
        .stdout;
    let var = |name: &str| {
        env_text
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{name}=")))
            .map(|value| value.trim_matches('\'').to_string())
            .unwrap_or_else(|| panic!("no {name} in {env_text}"))
    };
    assert_eq!(var("DB_POOLER_HOST"), "127.0.0.1");
    assert_eq!(var("DB_POOLER_PORT"), port.to_string());
    assert_eq!(
        who_and_where(&var("DATABASE_POOLER_URL")),
        "team-a-read team-a"
    );

    // Kubernetes Secret: PGO's keys, and the URI connects.
    let secret = p
        .ok(&[
            "credentials",
            "team/a",
            "--role",
            "admin",
            "--format",
            "k8s-secret",
        ])
        .stdout;
    let docs = Yaml::load_from_str(&secret).unwrap();
    assert_eq!(
        yaml_str(&docs[0], &["stringData", "pgbouncer-host"]),
        "127.0.0.1"
    );
    assert_eq!(
        yaml_str(&docs[0], &["stringData", "pgbouncer-port"]),
        port.to_string()
    );
    assert!(yaml_str(&docs[0], &["stringData", "pgbouncer-jdbc-uri"]).starts_with("jdbc:"));
    assert_eq!(
        who_and_where(yaml_str(&docs[0], &["stringData", "pgbouncer-uri"])),
        "team-a-admin team-a"
    );

    // ExternalSecret: the pooler's properties of the stored secret.
    let external = p
        .ok(&[
            "credentials",
            "team/a",
            "--role",
            "write",
            "--format",
            "external-secret",
        ])
        .stdout;
    assert!(external.contains("property: pooler_endpoint"), "{external}");
    assert!(external.contains("property: pooler_port"), "{external}");

    // psql --pooled connects to the pooler's port (psql's own view of the connection).
    let out = p.run(&[
        "psql",
        "team/a",
        "--role",
        "write",
        "--pooled",
        "--",
        "-X",
        "-A",
        "-t",
        "-c",
        "\\conninfo",
    ]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains(&format!("port \"{port}\"")),
        "{}",
        out.stdout
    );

    // A database with `pooling: none` has no pooled endpoint, and psql --pooled says so.
    let solo: Value = serde_json::from_str(
        &p.ok(&[
            "credentials",
            "team/solo",
            "--role",
            "write",
            "--format",
            "json",
        ])
        .stdout,
    )
    .unwrap();
    assert!(solo.get("pooler_endpoint").is_none(), "{solo}");
    let out = p.run(&["psql", "team/solo", "--pooled", "--", "-c", "SELECT 1"]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(
        out.stderr
            .contains("the credentials of team/solo carry no pooled endpoint")
            && out.stderr.contains("`pooling: none`"),
        "{}",
        out.stderr
    );
    // The apply converged: the pooled endpoints are not drift.
    let plan = p.run(&["plan", "--format", "json"]);
    assert_eq!(plan.code, 0, "{}\n{}", plan.stdout, plan.stderr);
}
