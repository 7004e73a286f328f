//! What ships under deploy/ to run `pgtenant serve`: the systemd unit (hardened, accepted by
//! `systemd-analyze verify`) and the Kubernetes manifests (accepted by
//! `kubernetes-validate --strict`: PyPI package kubernetes-validate), whose embedded platform
//! config is one the parser accepts.

use std::path::{Path, PathBuf};
use std::process::Command;

use pgtenant_cluster::skip_or_fail;
use saphyr::{LoadableYamlNode, Yaml};

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

/// The tool's path, or None after [`skip_or_fail`] when it is not installed.
fn tool(name: &str, from: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
    });
    if found.is_none() {
        skip_or_fail(&format!("`{name}` is not installed ({from})"));
    }
    found
}

#[test]
fn the_systemd_unit_is_hardened_and_verifies() {
    let unit = std::fs::read_to_string(deploy().join("systemd/pgtenant.service")).unwrap();
    for setting in [
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=\n",
        "KillSignal=SIGTERM",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "StateDirectory=pgtenant",
    ] {
        assert!(unit.contains(setting), "the unit lacks {setting:?}");
    }
    let Some(analyze) = tool("systemd-analyze", "Debian package systemd") else {
        return;
    };
    // Verified with the binary this build made in place of the installed one.
    let dir = tempfile::tempdir().unwrap();
    let binary = assert_cmd::cargo::cargo_bin("pgtenant");
    let path = dir.path().join("pgtenant.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/pgtenant", binary.to_str().unwrap()),
    )
    .unwrap();
    let output = Command::new(analyze)
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && !stderr.contains("pgtenant.service:"),
        "systemd-analyze verify:\n{stderr}"
    );
}

fn manifests() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(deploy().join("kubernetes"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn the_kubernetes_manifests_validate_strictly() {
    let files = manifests();
    assert!(files.len() >= 4, "{files:?}");
    let Some(validate) = tool("kubernetes-validate", "pip install kubernetes-validate") else {
        return;
    };
    let output = Command::new(validate)
        .arg("--strict")
        .args(&files)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "kubernetes-validate --strict:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn load(name: &str) -> Yaml<'static> {
    let text = std::fs::read_to_string(deploy().join("kubernetes").join(name)).unwrap();
    // Each test loads a few small files: leaking them keeps the documents simple to return.
    let text: &'static str = Box::leak(text.into_boxed_str());
    Yaml::load_from_str(text).unwrap().remove(0)
}

#[test]
fn two_replicas_probed_non_root_on_a_read_only_root_filesystem() {
    let deployment = load("deployment.yaml");
    let spec = &deployment["spec"];
    assert_eq!(spec["replicas"].as_integer(), Some(2));
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    assert_eq!(pod["serviceAccountName"].as_str(), Some("pgtenant"));
    let container = &pod["containers"][0];
    assert_eq!(
        container["securityContext"]["readOnlyRootFilesystem"].as_bool(),
        Some(true)
    );
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"].as_bool(),
        Some(false)
    );
    assert_eq!(
        container["livenessProbe"]["httpGet"]["path"].as_str(),
        Some("/healthz")
    );
    assert_eq!(
        container["readinessProbe"]["httpGet"]["path"].as_str(),
        Some("/readyz")
    );
    let service = load("service.yaml");
    assert_eq!(service["kind"].as_str(), Some("Service"));
    let account = load("serviceaccount.yaml");
    assert_eq!(account["kind"].as_str(), Some("ServiceAccount"));
}

#[test]
fn the_config_the_manifests_ship_is_accepted() {
    let configmap = load("configmap.yaml");
    let text = configmap["data"]["pgtenant.yaml"]
        .as_str()
        .unwrap()
        .to_string();
    let dir = Path::new("/etc/pgtenant");
    let loaded = pgtenant_config::parse(&dir.join("pgtenant.yaml"), dir, &text);
    assert!(
        loaded.config.is_some() && loaded.diagnostics.is_empty(),
        "{:#?}",
        loaded.diagnostics
    );
    let config = loaded.config.unwrap();
    assert!(config.serve.git_remote.is_some());
    assert_eq!(
        config.serve.token_file.as_deref(),
        Some(Path::new("/etc/pgtenant/secrets/api-token"))
    );
}
