//! The AWS Secrets Manager store against a local Secrets Manager API (moto, see common/aws.rs):
//! what `apply` writes where the platform's ExternalSecrets read, the guard against an empty or
//! unreachable store, `store copy` both ways, `store verify`, and the calls a no-op apply makes.
//! The store-agnostic suites (tests/rotation.rs, tests/credentials.rs) run against it too.

mod common;

use std::collections::BTreeMap;

use common::aws::{self, aws_config, unique_prefix, Store};
use common::{connect, Env, Output};
use pgtenant_secrets::{AwsSecretsManagerStore, AwsSettings};
use serde_json::Value;

/// A store like the binary's, for reading what it wrote.
fn sdk_store(prefix: &str) -> AwsSecretsManagerStore {
    AwsSecretsManagerStore::new(AwsSettings {
        region: Some(aws::REGION.to_owned()),
        prefix: prefix.to_owned(),
        endpoint_url: Some(aws::moto().unwrap().url.clone()),
        kms_key_id: None,
    })
}

/// The current value (JSON) and tags of secret `name`; None when it does not exist.
async fn secret(name: &str) -> Option<(Value, BTreeMap<String, String>)> {
    let store = sdk_store("customer/");
    let client = store.client().await.unwrap();
    let value = client
        .get_secret_value()
        .secret_id(name)
        .send()
        .await
        .ok()?;
    let described = client
        .describe_secret()
        .secret_id(name)
        .send()
        .await
        .unwrap();
    let tags = described
        .tags()
        .iter()
        .map(|t| {
            (
                t.key().unwrap_or_default().to_owned(),
                t.value().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    Some((
        serde_json::from_str(value.secret_string().unwrap()).unwrap(),
        tags,
    ))
}

fn external_secret(env: &Env, tenant: &str, role: &str) -> String {
    let out = env.run(&[
        "credentials",
        tenant,
        "--role",
        role,
        "--format",
        "external-secret",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    out.stdout
}

/// `(key, property)` of every `spec.data[].remoteRef` of an ExternalSecret.
fn remote_refs(yaml: &str) -> Vec<(String, String)> {
    let refs: Vec<(String, String)> = yaml
        .split("remoteRef:")
        .skip(1)
        .map(|entry| {
            let field = |name: &str| {
                entry
                    .lines()
                    .find_map(|l| l.trim().strip_prefix(&format!("{name}: ")))
                    .unwrap_or_else(|| panic!("no {name} in {entry}"))
                    .trim_matches('"')
                    .to_owned()
            };
            (field("key"), field("property"))
        })
        .collect();
    assert!(!refs.is_empty(), "{yaml}");
    refs
}

#[tokio::test]
async fn apply_writes_the_seeds_secrets_where_the_external_secret_reads_them() {
    if !Store::Aws.available() {
        return;
    }
    let env = Env::new();
    // The default prefix: the platform's `customer/` (the only test of this binary using it).
    aws_config(&env, None);
    env.declare("idp-dev", "my-db", &[("my-db", "standard")]);
    env.apply();
    assert!(
        !env.state_path().join("credentials").exists(),
        "nothing goes to the file store"
    );

    for role in ["admin", "write", "read"] {
        let name = format!("customer/idp-dev/my-db-{role}");
        let (value, tags) = secret(&name)
            .await
            .unwrap_or_else(|| panic!("{name} exists"));
        let credentials = env.credentials("idp-dev/my-db", role);
        for key in [
            "username", "password", "endpoint", "port", "dbname", "sslmode", "uri",
        ] {
            assert_eq!(value[key], credentials[key], "{key} of {name}");
        }
        assert_eq!(tags.get("managed-by").map(String::as_str), Some("pgtenant"));
        assert_eq!(
            tags.get("pgtenant/tenant").map(String::as_str),
            Some("idp-dev/my-db")
        );
        // The ExternalSecret reads exactly these keys of exactly this secret.
        for (key, property) in remote_refs(&external_secret(&env, "idp-dev/my-db", role)) {
            assert_eq!(key, name);
            assert!(value.get(&property).is_some(), "{property} in {value}");
        }
        connect(value["uri"].as_str().unwrap(), None)
            .await
            .unwrap_or_else(|e| panic!("{role} logs in with the secret's uri: {e}"));
    }
    assert_eq!(env.plan().code, 0, "converged");
}

#[tokio::test]
async fn an_empty_or_unreachable_store_blocks_instead_of_reissuing_passwords() {
    if !Store::Aws.available() {
        return;
    }
    let env = Store::Aws.env();
    env.declare("idp-dev", "my-db", &[("my-db", "standard")]);
    env.apply();
    let uri = env.credentials("idp-dev/my-db", "write")["uri"]
        .as_str()
        .unwrap()
        .to_owned();

    // Another prefix: a store that holds nothing (a wrong region, account or prefix).
    aws_config(&env, Some(&unique_prefix()));
    let out = env.run(&["apply", "--format", "json"]);
    assert_ne!(out.code, 0, "{}", out.stdout);
    assert!(
        out.stdout
            .contains("the store holds no tenant credentials at all"),
        "{}\n{}",
        out.stdout,
        out.stderr
    );

    // An endpoint where nothing answers: apply stops before changing anything.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        env.state_path().join("pgtenant.yaml"),
        format!(
            "store: {{type: aws-secrets-manager, region: {}, endpointUrl: 'http://127.0.0.1:{closed}'}}\n",
            aws::REGION
        ),
    )
    .unwrap();
    let out = env.run(&["apply"]);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("AWS Secrets Manager"), "{}", out.stderr);
    connect(&uri, None)
        .await
        .expect("the stored password still logs in: none was reissued");
}

#[tokio::test]
async fn store_copy_moves_every_secret_both_ways_without_changing_passwords() {
    if !Store::Aws.available() {
        return;
    }
    let env = Env::new();
    env.declare("idp-dev", "my-db", &[("my-db", "standard")]);
    env.declare("shop", "orders", &[("orders", "standard")]);
    env.apply();
    let roles = [
        ("idp-dev/my-db", "admin"),
        ("idp-dev/my-db", "write"),
        ("idp-dev/my-db", "read"),
        ("shop/orders", "admin"),
        ("shop/orders", "write"),
        ("shop/orders", "read"),
    ];
    let in_file: Vec<Value> = roles.iter().map(|(t, r)| env.credentials(t, r)).collect();

    // The config now names Secrets Manager; the file store is still where it was.
    aws_config(&env, Some(&unique_prefix()));
    let out = env.run(&[
        "store",
        "copy",
        "--to",
        "aws-secrets-manager",
        "--format",
        "json",
    ]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let report = out.json();
    assert_eq!(report["copied"], 6, "{report}");
    assert_eq!(report["verified"], 6, "{report}");
    let in_aws: Vec<Value> = roles.iter().map(|(t, r)| env.credentials(t, r)).collect();
    assert_eq!(in_file, in_aws, "the same credentials, passwords included");
    assert_eq!(env.plan().code, 0, "nothing to do after the move");
    assert_eq!(env.run(&["store", "verify"]).code, 0);
    // Copying again changes nothing.
    let again = env.run(&[
        "store",
        "copy",
        "--to",
        "aws-secrets-manager",
        "--format",
        "json",
    ]);
    assert_eq!(again.json()["unchanged"], 6, "{}", again.stdout);

    // And back, into an empty file store.
    std::fs::remove_dir_all(env.state_path().join("credentials")).unwrap();
    std::fs::remove_dir_all(env.state_path().join("keys")).unwrap();
    let out = env.run(&["store", "copy", "--to", "file", "--format", "json"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(out.json()["copied"], 6, "{}", out.stdout);
    std::fs::remove_file(env.state_path().join("pgtenant.yaml")).unwrap();
    let back: Vec<Value> = roles.iter().map(|(t, r)| env.credentials(t, r)).collect();
    assert_eq!(in_file, back);
    assert_eq!(env.plan().code, 0);
}

#[tokio::test]
async fn store_verify_reports_an_unreadable_secret_and_apply_stops_on_it() {
    if !Store::Aws.available() {
        return;
    }
    let env = Store::Aws.env();
    env.declare("idp-dev", "my-db", &[("my-db", "standard")]);
    env.apply();
    let out = env.run(&["store", "verify", "--format", "json"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(out.json()["checked"], 3);

    let prefix = std::fs::read_to_string(env.state_path().join("pgtenant.yaml"))
        .unwrap()
        .lines()
        .find_map(|l| l.trim().strip_prefix("prefix: ").map(str::to_owned))
        .unwrap();
    let store = sdk_store(&prefix);
    let client = store.client().await.unwrap();
    client
        .put_secret_value()
        .secret_id(format!("{prefix}idp-dev/my-db-read"))
        .secret_string("not json")
        .send()
        .await
        .unwrap();
    let out = env.run(&["store", "verify", "--format", "json"]);
    assert_eq!(out.code, 1);
    let report = out.json();
    assert_eq!(report["failed"][0]["path"], "customer/idp-dev/my-db-read");
    assert_eq!(report["failed"][0]["problem"], "corrupt");
    let apply = env.run(&["apply"]);
    assert_eq!(apply.code, 1, "{}", apply.stdout);
    assert!(apply.stderr.contains("not JSON"), "{}", apply.stderr);
}

/// Secrets Manager requests of one command, from the store's debug log.
fn requests(out: &Output) -> usize {
    out.stderr
        .lines()
        .filter(|l| l.contains("Secrets Manager request"))
        .count()
}

#[tokio::test]
async fn a_no_op_apply_of_100_tenants_makes_a_bounded_number_of_calls() {
    if !Store::Aws.available() {
        return;
    }
    const TENANTS: usize = 100;
    let env = Store::Aws.env();
    for i in 0..TENANTS {
        env.declare(
            &format!("team-{}", i % 10),
            &format!("db-{i}"),
            &[(&format!("db-{i}"), "standard")],
        );
    }
    env.apply();
    let out = env
        .cmd()
        .env("PGTENANT_LOG", "pgtenant_secrets::aws=debug")
        .args(["apply", "--format", "json"])
        .output()
        .unwrap();
    let out = Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert_eq!(out.code, 0, "{}", out.stderr);
    let calls = requests(&out);
    let secrets = TENANTS * 3;
    // ListSecrets pages of 100 and BatchGetSecretValue batches of 20: not one call a secret.
    let bound = secrets.div_ceil(100) + secrets.div_ceil(20) + 2;
    eprintln!(
        "no-op apply of {TENANTS} tenants ({secrets} secrets): {calls} Secrets Manager requests"
    );
    assert!(calls > 0 && calls <= bound, "{calls} > {bound}");
}

/// The same checks against a real AWS account, by hand only: it creates and deletes secrets
/// under a prefix of its own. Run it with credentials and a region in the environment:
///
/// ```text
/// AWS_PROFILE=sandbox AWS_REGION=eu-west-1 PGTENANT_TEST_AWS_REAL=1 \
///     cargo test --test store_aws -- --ignored real_aws_account
/// ```
#[tokio::test]
#[ignore = "needs a real AWS account: see its documentation"]
async fn real_aws_account() {
    assert_eq!(
        std::env::var("PGTENANT_TEST_AWS_REAL").as_deref(),
        Ok("1"),
        "set PGTENANT_TEST_AWS_REAL=1 to confirm the account may be written to"
    );
    let env = Env::new();
    let prefix = format!("pgtenant-test-{}/", std::process::id());
    std::fs::write(
        env.state_path().join("pgtenant.yaml"),
        format!("store: {{type: aws-secrets-manager, prefix: {prefix}}}\n"),
    )
    .unwrap();
    env.declare("idp-dev", "my-db", &[("my-db", "standard")]);
    env.apply();
    for role in ["admin", "write", "read"] {
        let uri = env.credentials("idp-dev/my-db", role)["uri"]
            .as_str()
            .unwrap()
            .to_owned();
        connect(&uri, None).await.unwrap();
    }
    assert_eq!(
        env.run(&["rotate", "idp-dev/my-db", "--all", "--grace"])
            .code,
        0
    );
    assert_eq!(env.plan().code, 0);
}

#[tokio::test]
async fn a_dropped_tenants_secrets_are_deleted_recoverably_and_restored_when_declared_again() {
    if !Store::Aws.available() {
        return;
    }
    let env = Store::Aws.env();
    env.declare("team", "keep", &[("keep", "standard")]);
    env.declare("team", "gone", &[("gone", "standard")]);
    env.apply();
    env.remove("team/gone/values.yaml");
    env.apply();
    let name = format!("{}team/gone-admin", aws::prefix_of(&env));
    let store = sdk_store("customer/");
    let described = store
        .client()
        .await
        .unwrap()
        .describe_secret()
        .secret_id(&name)
        .send()
        .await
        .unwrap();
    assert!(
        described.deleted_date().is_some(),
        "deleted with a recovery window, not destroyed"
    );
    assert_eq!(
        env.run(&["credentials", "team/gone", "--role", "admin"])
            .code,
        1
    );

    // Declared again within the window: the secret is restored and holds the new credentials.
    env.declare("team", "gone", &[("gone", "standard")]);
    env.apply();
    for role in ["admin", "write", "read"] {
        let uri = env.credentials("team/gone", role)["uri"]
            .as_str()
            .unwrap()
            .to_owned();
        connect(&uri, None)
            .await
            .unwrap_or_else(|e| panic!("{role}: {e}"));
    }
    assert_eq!(env.plan().code, 0);
}
