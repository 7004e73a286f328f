//! The Kubernetes manifests pgtenant writes are ones a cluster accepts: every `k8s-secret` is
//! validated by `kubernetes-validate --strict` (PyPI) against Kubernetes 1.32, the version of the
//! k8s-openapi types they are built from, and every `external-secret` against the ExternalSecret
//! (external-secrets.io/v1) schema in tests/fixtures/external-secret.schema.json. Both checks are
//! shown to reject a broken manifest, so a passing run means something.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::Env;

const KUBERNETES_VERSION: &str = "1.32.0";

/// `kubernetes-validate --strict` of `files`: (exit status ok, output). None (after
/// `skip_or_fail`) when the tool is not installed.
fn kubernetes_validate(files: &[PathBuf]) -> Option<(bool, String)> {
    let out = match Command::new("kubernetes-validate")
        .args(["--strict", "-k", KUBERNETES_VERSION])
        .args(files)
        .output()
    {
        Ok(out) => out,
        Err(_) => {
            pgtenant_cluster::skip_or_fail(
                "kubernetes-validate is not installed (pip install kubernetes-validate)",
            );
            return None;
        }
    };
    Some((
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ))
}

/// Each of `files` checked against the vendored ExternalSecret schema (python3 `jsonschema` and
/// `yaml`, which kubernetes-validate brings): (all valid, output).
fn external_secret_schema(files: &[PathBuf]) -> Option<(bool, String)> {
    let schema =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/external-secret.schema.json");
    let script = r#"
import json, sys, yaml, jsonschema
schema = json.load(open(sys.argv[1]))
bad = 0
for name in sys.argv[2:]:
    for doc in yaml.safe_load_all(open(name)):
        errors = list(jsonschema.Draft7Validator(schema).iter_errors(doc))
        for e in errors:
            print(f"{name}: {'/'.join(map(str, e.absolute_path))}: {e.message}")
        bad += bool(errors)
sys.exit(1 if bad else 0)
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&schema)
        .args(files)
        .output()
        .expect("python3");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if text.contains("ModuleNotFoundError") {
        pgtenant_cluster::skip_or_fail(
            "python3 lacks jsonschema or yaml (pip install kubernetes-validate brings both)",
        );
        return None;
    }
    Some((out.status.success(), text))
}

fn export(env: &Env, format: &str, dir: &Path) -> Vec<PathBuf> {
    let out = env.run(&["export", "--format", format, "--out", dir.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

#[test]
fn every_manifest_validates_and_a_broken_one_is_rejected() {
    let env = Env::new();
    env.declare("idp-dev", "my-db", &[("my-db", "standard")]);
    env.write(
        "shop/checkout/values.yaml",
        "apiVersion: pgtenant.io/v1\npostgresqlDatabases:\n  - name: checkout\n    preset: app-migrator\n",
    );
    env.apply();

    let secrets = export(&env, "k8s-secret", &env.state_path().join("secrets"));
    assert_eq!(secrets.len(), 5, "{secrets:?}");
    let Some((ok, said)) = kubernetes_validate(&secrets) else {
        return;
    };
    assert!(ok, "{said}");
    for file in &secrets {
        let text = std::fs::read_to_string(file).unwrap();
        assert!(
            text.contains("app.kubernetes.io/managed-by: pgtenant"),
            "{text}"
        );
    }
    // `credentials` prints the same manifest.
    let printed = env.run(&[
        "credentials",
        "idp-dev/my-db",
        "--role",
        "write",
        "--format",
        "k8s-secret",
    ]);
    assert_eq!(
        printed.stdout,
        std::fs::read_to_string(
            env.state_path()
                .join("secrets/idp-dev-my-db-write.secret.yaml")
        )
        .unwrap()
    );

    let externals = export(&env, "external-secret", &env.state_path().join("external"));
    assert_eq!(externals.len(), 5);
    let Some((ok, said)) = external_secret_schema(&externals) else {
        return;
    };
    assert!(ok, "{said}");

    // The checks bite: a field Kubernetes does not know, a remoteRef without its key.
    let broken = env.state_path().join("broken");
    std::fs::create_dir(&broken).unwrap();
    let secret = broken.join("secret.yaml");
    let text = std::fs::read_to_string(&secrets[0]).unwrap();
    std::fs::write(&secret, text.replace("type: Opaque", "typo: Opaque")).unwrap();
    let (ok, said) = kubernetes_validate(&[secret]).unwrap();
    assert!(!ok, "an unknown field must fail --strict: {said}");
    let external = broken.join("external.yaml");
    let text = std::fs::read_to_string(&externals[0]).unwrap();
    let without_key: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("key:"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&external, without_key).unwrap();
    let (ok, said) = external_secret_schema(&[external]).unwrap();
    assert!(
        !ok && said.contains("'key' is a required property"),
        "{said}"
    );
}
