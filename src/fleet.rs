//! Fleet runs of `plan` and `apply` (docs/fleet.md): every cluster of the config read
//! concurrently, each declared tenant placed (sticky, `pgtenant_engine::fleet`), then each
//! cluster planned or applied, concurrently, with only the tenants placed on it. A cluster that
//! cannot be reached marks its tenants `unreachable` and fails the run (exit 1) while the others
//! still converge.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use pgtenant_engine::fleet::{self, ClusterView, Inventory, Placement, TenantWish};
use pgtenant_engine::reconcile::{Reconciler, Request};
use pgtenant_engine::{Desired, Plan};
use pgtenant_spec::Diagnostic;
use serde_json::json;

use crate::commands::reconcile::{runtime, RepoArgs};
use crate::context::Context;
use crate::render::{self, outln, Format};
use crate::{EXIT_ERROR, EXIT_OK, EXIT_PENDING};

/// Whether `plan`/`apply` run over a fleet: several clusters in the config and no `--admin-url`
/// (with `--cluster` only the chosen one is planned, placement still consults the others).
pub fn applies(context: &Context) -> bool {
    !context.fleet().is_empty() || !context.fleet_member_of.is_empty()
}

/// A cluster's plan (and what apply did), or why it failed.
type RunResult = Result<(Plan, Option<pgtenant_engine::ApplyOutcome>), String>;

/// One cluster of the run.
struct Member<'c> {
    context: &'c Context,
    reconciler: Option<Reconciler>,
    inventory: Option<Inventory>,
    /// Why it is unreachable.
    error: Option<String>,
}

/// The local record of each tenant's cluster: `<state>/fleet/placements.json`.
fn record_path(context: &Context) -> PathBuf {
    context.state_dir().join("fleet").join("placements.json")
}

pub(crate) fn recorded(context: &Context) -> BTreeMap<String, String> {
    std::fs::read(record_path(context))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

pub(crate) fn record(context: &Context, placements: &BTreeMap<String, String>) -> Result<()> {
    let path = record_path(context);
    let dir = path.parent().expect("a file in a directory");
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let temporary = dir.join(format!(".placements.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&temporary);
    pgtenant_backup::write_private_file(&temporary, &serde_json::to_vec_pretty(placements)?)?;
    std::fs::rename(&temporary, &path).with_context(|| format!("writing {}", path.display()))
}

pub fn run(context: &Context, args: &RepoArgs, apply: bool) -> Result<u8> {
    let common = &args.common;
    let (members, only) = if context.fleet().is_empty() {
        (&context.fleet_member_of[..], Some(context.cluster_name()))
    } else {
        (context.fleet(), None)
    };
    // The chosen cluster itself must be usable, as without a fleet.
    if let Some(name) = only {
        if let Some(why) = members
            .iter()
            .find(|m| m.cluster_name() == name)
            .and_then(|m| m.unusable())
        {
            anyhow::bail!("{why}");
        }
    }
    let (repo, desired, request) = common.load(context, args.guard.drop_guard())?;
    let rt = runtime()?;

    // Every cluster's inventory, concurrently, each on its own control connection.
    let mut members: Vec<Member> = members
        .iter()
        .map(|member| match common.reconciler(member) {
            Ok(reconciler) => Member {
                context: member,
                reconciler: Some(reconciler),
                inventory: None,
                error: None,
            },
            Err(error) => Member {
                context: member,
                reconciler: None,
                inventory: None,
                error: Some(format!("{error:#}")),
            },
        })
        .collect();
    let reads: Vec<_> = members
        .iter()
        .map(|m| {
            m.reconciler.as_ref().map(|r| {
                let connector = r.connector.clone();
                rt.spawn(async move { fleet::inventory(&connector).await })
            })
        })
        .collect();
    for (member, read) in members.iter_mut().zip(reads) {
        let Some(read) = read else { continue };
        match rt.block_on(read).context("reading a cluster")? {
            Ok(inventory) => member.inventory = Some(inventory),
            Err(error) => member.error = Some(pgtenant_engine::error_chain(&error)),
        }
    }

    // Placement. With --cluster, a cluster that cannot be read is left out of it.
    let views: Vec<ClusterView> = members
        .iter()
        .filter(|m| {
            only.is_none() || m.inventory.is_some() || only == Some(m.context.cluster_name())
        })
        .map(|m| {
            let config = m.context.cluster_config();
            ClusterView {
                name: m.context.cluster_name().to_owned(),
                labels: config.map(|c| c.labels.clone()).unwrap_or_default(),
                max_tenants: config.and_then(|c| c.capacity.max_tenants),
                max_size_bytes: config.and_then(|c| c.capacity.max_size_bytes),
                inventory: m.inventory.clone(),
            }
        })
        .collect();
    let names: Vec<&str> = members.iter().map(|m| m.context.cluster_name()).collect();
    let platform = context.config().and_then(|c| c.environment);
    let mut spec_errors = 0;
    let wishes: Vec<TenantWish> = repo
        .databases
        .iter()
        .map(|spec| {
            if let Some(choice) = spec
                .cluster
                .as_ref()
                .filter(|c| !names.contains(&c.name.as_str()))
            {
                spec_errors += 1;
                let diagnostic = Diagnostic::error(
                    choice.location.clone(),
                    choice.field.clone(),
                    format!("`{}` is not a cluster of the platform config", choice.name),
                )
                .with_hint(format!("its clusters are {}", names.join(", ")));
                eprintln!("{diagnostic}");
            }
            TenantWish {
                id: spec.tenant_id(),
                cluster: spec.cluster.as_ref().map(|c| c.name.clone()),
                labels: spec.placement_labels.clone(),
                environment: spec.environment.or(platform),
            }
        })
        .collect();
    let mut known = recorded(context);
    let placements = fleet::place(&views, &wishes, &known);

    // Each reachable cluster with the tenants placed on it.
    let mut runs = Vec::new();
    for member in &members {
        let name = member.context.cluster_name();
        let (Some(reconciler), Some(inventory)) = (&member.reconciler, &member.inventory) else {
            continue;
        };
        if only.is_some_and(|only| only != name) {
            continue;
        }
        let here: BTreeSet<&str> = placements
            .iter()
            .filter(|p| p.cluster.as_deref() == Some(name))
            .map(|p| p.tenant.as_str())
            .collect();
        // A tenant this cluster shares with another is left alone (both copies would rewrite its
        // one set of stored credentials), and, being undeclared here, must not be dropped: no
        // drop on this cluster until only one cluster holds it.
        let shared: Vec<&str> = placements
            .iter()
            .filter(|p| p.state == "duplicate" && p.found_on.iter().any(|c| c == name))
            .map(|p| p.tenant.as_str())
            .collect();
        let drops_held_because =
            if shared.is_empty() {
                desired.drops_held_because.clone()
            } else {
                Some(format!(
                "{} also on another cluster ({}): nothing is dropped on `{name}` until only one \
                 cluster holds each",
                if shared.len() == 1 { "a tenant is" } else { "tenants are" },
                shared.join(", ")
            ))
            };
        let cluster_desired = Desired {
            tenants: desired
                .tenants
                .iter()
                .filter(|t| here.contains(t.id.as_str()))
                .map(|t| pgtenant_engine::DesiredTenant {
                    cluster: Some(name.to_owned()),
                    ..t.clone()
                })
                .collect(),
            drops_held_because,
            failed_files: desired.failed_files.clone(),
        };
        let mut cluster_request = Request {
            guard: request.guard.clone(),
            scope: request.scope.clone(),
            full: request.full,
        };
        if !request.scope.is_empty() {
            cluster_request
                .scope
                .retain(|t| here.contains(t.as_str()) || inventory.tenants.contains(t));
            if cluster_request.scope.is_empty() {
                continue;
            }
        }
        let reconciler = reconciler.clone();
        let handle = rt.spawn(async move {
            if apply {
                reconciler
                    .apply(&cluster_desired, &cluster_request, |_| {
                        std::sync::Arc::new(|_: &pgtenant_engine::TenantOutcome| {})
                    })
                    .await
                    .map(|applied| (applied.plan, Some(applied.outcome)))
            } else {
                reconciler
                    .plan(&cluster_desired, &cluster_request)
                    .await
                    .map(|planned| (planned.plan, None))
            }
        });
        runs.push((name, handle));
    }
    let mut results: Vec<(&str, RunResult)> = Vec::new();
    for (name, handle) in runs {
        let result = rt
            .block_on(handle)
            .context("running a cluster")?
            .map_err(|error| pgtenant_engine::error_chain(&error));
        results.push((name, result));
    }

    // The local record of placements: what every reachable cluster holds now.
    if apply {
        for placement in &placements {
            if let Some(cluster) = &placement.cluster {
                let ok = results.iter().any(|(name, r)| name == cluster && r.is_ok());
                if ok {
                    known.insert(placement.tenant.clone(), cluster.clone());
                }
            }
        }
        record(context, &known)?;
    }

    // With --cluster only the chosen cluster's reachability counts (the others are consulted).
    let unreachable: Vec<&Member> = members
        .iter()
        .filter(|m| m.error.is_some())
        .filter(|m| only.is_none_or(|only| only == m.context.cluster_name()))
        .collect();
    let failed_cluster = results.iter().any(|(_, r)| r.is_err());
    let stuck = placements.iter().any(|p| {
        matches!(
            p.state,
            "duplicate" | "held" | "unreachable" | "unplaceable"
        )
    });
    let pending = results
        .iter()
        .any(|(_, r)| r.as_ref().is_ok_and(|(plan, _)| !plan.is_converged()));
    let failed_tenants = results.iter().any(|(_, r)| {
        r.as_ref().is_ok_and(|(plan, outcome)| {
            plan.has_unresolved()
                || outcome
                    .as_ref()
                    .is_some_and(|o| o.failed().next().is_some())
        })
    });
    let error = repo.has_errors()
        || spec_errors > 0
        || !unreachable.is_empty()
        || failed_cluster
        || stuck
        || (apply && failed_tenants);

    match common.format {
        Format::Json => {
            let clusters: Vec<serde_json::Value> = members
                .iter()
                .map(|m| {
                    let name = m.context.cluster_name();
                    let result = results.iter().find(|(n, _)| *n == name).map(|(_, r)| r);
                    let mut value = json!({
                        "name": name,
                        "reachable": m.error.is_none(),
                        "error": m.error.clone().or_else(|| result.and_then(|r| r.as_ref().err().cloned())),
                        "tenants": placements.iter().filter(|p| p.cluster.as_deref() == Some(name)).count(),
                    });
                    if let Some(Ok((plan, outcome))) = result {
                        value["converged"] = json!(plan.is_converged());
                        value["operations"] = render::operations_json(plan);
                        value["notices"] = json!(plan.notices);
                        value["summary"] = render::summary(plan);
                        if let Some(outcome) = outcome {
                            value["applied"] = json!(outcome.applied());
                            value["failed"] = json!(outcome.failed().count());
                            value["tenants_outcome"] = json!(outcome.tenants);
                        }
                    }
                    value
                })
                .collect();
            let tenants: Vec<serde_json::Value> = placements.iter().map(tenant_json).collect();
            let mut top = json!({
                "clusters": clusters,
                "tenants": tenants,
                "placement": placements.iter().filter(|p| p.would_place.is_some()).map(|p| json!({
                    "tenant": p.tenant,
                    "cluster": p.cluster,
                    "would_place": p.would_place,
                    "reason": p.reason,
                })).collect::<Vec<_>>(),
                "diagnostics": render::repo_diagnostics_json(&repo),
            });
            if apply {
                top["ok"] = json!(!error);
            } else {
                top["converged"] = json!(!pending && !stuck);
            }
            render::print_json(&top)?;
        }
        Format::Text => {
            for (name, result) in &results {
                outln!("== cluster {name} ==");
                match result {
                    Ok((plan, None)) => render::plan(plan, &repo, Format::Text)?,
                    Ok((plan, Some(outcome))) => {
                        render::apply_survived(plan, outcome, &[], &repo, Format::Text)?
                    }
                    Err(error) => outln!("FAILED: {error}"),
                }
            }
            for member in &unreachable {
                outln!(
                    "== cluster {} == unreachable: {}",
                    member.context.cluster_name(),
                    member.error.as_deref().unwrap_or_default()
                );
            }
            for p in &placements {
                match p.state {
                    "existing" | "new" if p.would_place.is_none() => {}
                    state => outln!("{state}: {}: {}", p.tenant, p.reason),
                }
            }
        }
    }
    Ok(if error {
        EXIT_ERROR
    } else if pending && !apply {
        EXIT_PENDING
    } else {
        EXIT_OK
    })
}

/// One tenant of the JSON `tenants` list: its cluster and placement state.
fn tenant_json(p: &Placement) -> serde_json::Value {
    json!({
        "tenant": p.tenant,
        "cluster": p.cluster.clone().or_else(|| p.found_on.first().cloned()),
        "state": p.state,
        "found_on": p.found_on,
        "would_place": p.would_place,
        "reason": p.reason,
    })
}
