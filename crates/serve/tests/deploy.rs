//! What ships under deploy/ for monitoring: the alert rules (promtool check rules and promtool
//! test rules) and the Grafana dashboard (valid JSON), both on metric names `/metrics` serves.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use pgtenant_serve::metrics::{encode, to_prometheus_text, Metrics};
use pgtenant_serve::state::Snapshot;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

fn promtool(args: &[&str]) {
    let Some(promtool) = support::tool("promtool", "Debian package prometheus") else {
        return;
    };
    let output = Command::new(promtool)
        .args(args)
        .current_dir(deploy().join("prometheus"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "promtool {args:?}:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    promtool(&["check", "rules", "alerts.yaml"]);
    promtool(&["test", "rules", "tests/alerts_test.yaml"]);
}

/// Every series name `/metrics` can serve (histograms with their `_bucket`, `_sum`, `_count`).
fn served_names() -> BTreeSet<String> {
    let text = to_prometheus_text(&encode(&Metrics::default(), &Snapshot::default()));
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').unwrap();
        if kind == "histogram" {
            for suffix in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{name}{suffix}"));
            }
        } else {
            names.insert(name.to_string());
        }
    }
    names
}

/// The `pgtenant_…` names in `text`.
fn used_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find("pgtenant_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

#[test]
fn alert_rules_and_dashboard_use_only_served_metric_names() {
    let served = served_names();
    let rules = std::fs::read_to_string(deploy().join("prometheus/alerts.yaml")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(deploy().join("grafana/pgtenant.json")).unwrap(),
    )
    .expect("the dashboard is valid JSON");

    let panels = dashboard["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    let mut expressions = String::new();
    for panel in panels {
        assert!(
            ids.insert(panel["id"].as_u64().unwrap()),
            "panel ids are unique"
        );
        assert!(panel["gridPos"]["w"].as_u64().unwrap() > 0);
        if panel["type"] == "row" {
            continue;
        }
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{} has a query", panel["title"]);
        for target in targets {
            expressions.push_str(target["expr"].as_str().expect("expr"));
            expressions.push('\n');
        }
    }
    let mut used = used_names(&expressions);
    // The rules' names, without the annotations' prose (which names counters to look at).
    let rule_exprs: String = rules
        .lines()
        .filter(|line| {
            !line.trim_start().starts_with("description:") && !line.trim_start().starts_with('#')
        })
        .collect::<Vec<_>>()
        .join("\n");
    used.extend(used_names(&rule_exprs));
    let unknown: Vec<_> = used.difference(&served).collect();
    assert!(
        unknown.is_empty(),
        "not served: {unknown:?}; served: {served:?}"
    );
    // And the alert rules cover the contract's state gauges.
    for name in [
        "pgtenant_drift_items",
        "pgtenant_source_up",
        "pgtenant_leader",
        "pgtenant_last_backup_success_timestamp_seconds",
        "pgtenant_cluster_last_reconcile_ok",
    ] {
        assert!(rules.contains(name), "an alert on {name}");
    }
}
