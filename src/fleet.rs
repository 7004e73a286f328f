//! Fleet runs of `plan`, `apply` and `check` (docs/fleet.md): every cluster of the config read
//! concurrently, each declared tenant placed (sticky, `pgtenant_engine::fleet`), then each
//! cluster planned, applied (through failovers for an HA cluster) or checked, concurrently, with
//! only the tenants placed on it. A cluster that cannot be reached marks its tenants
//! `unreachable` and fails the run (exit 1) while the others still converge. Also `list` over
//! the fleet and [`home`], the cluster of one tenant (`credentials`, `url`, `psql`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use pgtenant_engine::check::{self, CheckReport};
use pgtenant_engine::fleet::{self, ClusterView, Inventory, Placement, TenantWish};
use pgtenant_engine::plan::DropGuard;
use pgtenant_engine::reconcile::{Reconciler, Request};
use pgtenant_engine::{Connector, Desired, Plan};
use pgtenant_secrets::Credential;
use pgtenant_spec::Diagnostic;
use serde_json::json;

use crate::commands::reconcile::{runtime, ReconcileArgs};
use crate::context::Context;
use crate::render::{self, outln, Format};
use crate::{EXIT_ERROR, EXIT_OK, EXIT_PENDING};

/// Whether `plan`, `apply` and `check` run over a fleet: several clusters in the config and no
/// `--admin-url` (with `--cluster` only the chosen one is planned, placement still consults the
/// others).
pub fn applies(context: &Context) -> bool {
    !context.fleet().is_empty() || !context.fleet_member_of.is_empty()
}

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

/// What a fleet run does on each cluster.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Plan,
    Apply,
    Check,
}

/// What one cluster's run produced.
struct ClusterRun {
    plan: Plan,
    /// `apply`: what it did.
    outcome: Option<pgtenant_engine::ApplyOutcome>,
    /// `apply` on an HA cluster (applied through failovers): the failovers it survived. None:
    /// not an HA cluster, or not `apply`.
    failovers: Option<Vec<pgtenant_engine::failover::Failover>>,
    /// `check`: the cluster's report (its tenants only).
    report: Option<CheckReport>,
}

/// One cluster's plan, apply or check, running.
type ClusterFuture = std::pin::Pin<Box<dyn std::future::Future<Output = RunResult>>>;

/// A cluster's run, or why it failed.
type RunResult = Result<ClusterRun, String>;

/// `read` of every cluster at once, each on its own connection; a cluster without a connector
/// keeps its error. The results are in the order given.
fn read_all<T, F, Fut>(
    connectors: Vec<Result<Arc<Connector>, String>>,
    read: F,
) -> Result<Vec<Result<T, String>>>
where
    F: Fn(Arc<Connector>) -> Fut,
    Fut: std::future::Future<Output = Result<T, pgtenant_engine::EngineError>> + Send + 'static,
    T: Send + 'static,
{
    let rt = runtime()?;
    let handles: Vec<_> = connectors
        .into_iter()
        .map(|connector| connector.map(|c| rt.spawn(read(c))))
        .collect();
    handles
        .into_iter()
        .map(|handle| {
            Ok(match handle {
                Err(error) => Err(error),
                Ok(handle) => rt
                    .block_on(handle)
                    .context("reading a cluster")?
                    .map_err(|error| pgtenant_engine::error_chain(&error)),
            })
        })
        .collect()
}

/// Every member's control connector, or why it has none.
fn connectors(members: &[Context]) -> Vec<Result<Arc<Connector>, String>> {
    members
        .iter()
        .map(|m| {
            m.connect()
                .map(|c| c.connector)
                .map_err(|e| format!("{e:#}"))
        })
        .collect()
}

/// Every member's inventory, read concurrently (an error: unreachable for this run).
fn inventories(
    connectors: Vec<Result<Arc<Connector>, String>>,
) -> Result<Vec<Result<Inventory, String>>> {
    read_all(connectors, |connector| async move {
        fleet::inventory(&connector).await
    })
}

/// The cluster one tenant's credentials belong to (see [`home`]).
pub struct Home<'c> {
    pub context: &'c Context,
    /// Chosen among the fleet's clusters (not the one cluster of the command line).
    fleet: bool,
}

impl Home<'_> {
    /// In a fleet, `credential` with its cluster's endpoint (and pooler's, when it is pooled):
    /// the store may still name another (a cluster whose endpoint changed, a move not applied
    /// yet), which is said on stderr; `pgtenant apply` rewrites the stored one.
    pub fn settle(&self, tenant: &str, credential: &mut Credential) -> Result<()> {
        if !self.fleet {
            return Ok(());
        }
        let connected = self.context.connect()?;
        let name = self.context.cluster_name();
        let endpoint = (connected.endpoint.host.clone(), connected.endpoint.port);
        if (credential.endpoint.clone(), credential.port) != endpoint {
            eprintln!(
                "warning: the stored credentials of {tenant} name {}:{}, its cluster `{name}` is                  at {}:{}: shown with the cluster's; `pgtenant apply` updates the store",
                credential.endpoint, credential.port, endpoint.0, endpoint.1
            );
            (credential.endpoint, credential.port) = endpoint;
        }
        if let (Some(stored), Some(pooler)) = (&mut credential.pooler, connected.pooler_endpoint) {
            stored.endpoint = pooler.host;
            stored.port = pooler.port;
        }
        Ok(())
    }
}

/// The cluster `tenant` (NS/DB) lives on, for commands that act on one tenant (`credentials`,
/// `url`, `psql`): `context` itself unless it is a fleet run; in a fleet, the one cluster whose
/// database marker names the tenant, else the one `<state>/fleet/placements.json` records.
pub fn home<'c>(context: &'c Context, tenant: &str) -> Result<Home<'c>> {
    let members = context.fleet();
    if members.is_empty() {
        return Ok(Home {
            context,
            fleet: false,
        });
    }
    let found: Vec<&Context> = members
        .iter()
        .zip(inventories(connectors(members))?)
        .filter(|(_, read)| read.as_ref().is_ok_and(|i| i.tenants.contains(tenant)))
        .map(|(member, _)| member)
        .collect();
    let recorded = recorded(context);
    let context = match found[..] {
        [member] => member,
        [] => recorded
            .get(tenant)
            .and_then(|name| members.iter().find(|m| m.cluster_name() == name))
            .with_context(|| {
                format!(
                    "{tenant} is not placed on any cluster of the fleet yet (no reachable cluster                      holds its database, and {} does not record it): run `pgtenant apply` to                      place and create it",
                    record_path(context).display()
                )
            })?,
        _ => anyhow::bail!(
            "{tenant} is on several clusters ({}): `pgtenant plan` reports it as duplicate; settle              that first",
            found
                .iter()
                .map(|m| m.cluster_name())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    Ok(Home {
        context,
        fleet: true,
    })
}

/// `pgtenant list` over the fleet: every cluster's databases, read concurrently, each with its
/// cluster. An unreachable cluster is reported and makes the exit code 1; the others are listed.
pub fn list(context: &Context, format: Format) -> Result<u8> {
    let members = context.fleet();
    let listed = read_all(connectors(members), |connector| async move {
        pgtenant_engine::list_databases(&connector).await
    })?;
    let mut error = false;
    match format {
        Format::Json => {
            let mut clusters = Vec::new();
            let mut databases = Vec::new();
            for (member, listed) in members.iter().zip(&listed) {
                let name = member.cluster_name();
                clusters.push(json!({
                    "name": name,
                    "reachable": listed.is_ok(),
                    "error": listed.as_ref().err(),
                    "databases": listed.as_ref().map_or(0, Vec::len),
                }));
                for db in listed.iter().flatten() {
                    let mut value = serde_json::to_value(db)?;
                    value["cluster"] = json!(name);
                    databases.push(value);
                }
                error |= listed.is_err();
            }
            render::print_json(&json!({"clusters": clusters, "databases": databases}))?;
        }
        Format::Text => {
            crate::commands::list::header(true);
            for (member, listed) in members.iter().zip(&listed) {
                match listed {
                    Ok(databases) => {
                        for db in databases {
                            crate::commands::list::line(db, Some(member.cluster_name()));
                        }
                    }
                    Err(why) => {
                        error = true;
                        eprintln!(
                            "error: cluster {} is unreachable: {why}",
                            member.cluster_name()
                        );
                    }
                }
            }
        }
    }
    Ok(if error { EXIT_ERROR } else { EXIT_OK })
}

pub fn run(context: &Context, common: &ReconcileArgs, guard: DropGuard, mode: Mode) -> Result<u8> {
    let apply = mode == Mode::Apply;
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
    let (repo, desired, request) = common.load(context, guard)?;
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
    let read = inventories(
        members
            .iter()
            .map(|m| match &m.reconciler {
                Some(r) => Ok(r.connector.clone()),
                None => Err(m.error.clone().unwrap_or_default()),
            })
            .collect(),
    )?;
    for (member, read) in members.iter_mut().zip(read) {
        match read {
            Ok(inventory) => member.inventory = Some(inventory),
            Err(error) => member.error = Some(error),
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
    let mut names = Vec::new();
    // `check`: each cluster's context and declared tenants, for its pooler's report.
    let mut checked = Vec::new();
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
        let policy = if apply {
            crate::commands::reconcile::ha_policy(member.context, &reconciler)
        } else {
            None
        };
        if mode == Mode::Check {
            checked.push((name, member.context, cluster_desired.clone()));
        }
        let no_progress = |_: &Plan| {
            std::sync::Arc::new(|_: &pgtenant_engine::TenantOutcome| {})
                as pgtenant_engine::execute::Progress
        };
        let run: ClusterFuture = match policy {
            // failover::apply's future is not Send (its password checks borrow): it runs on
            // this thread, beside the other clusters' tasks.
            Some(policy) => Box::pin(async move {
                pgtenant_engine::failover::apply(
                    &reconciler,
                    &policy,
                    &cluster_desired,
                    &cluster_request,
                    no_progress,
                )
                .await
                .map(|survived| ClusterRun::applied(survived, true))
                .map_err(|e| pgtenant_engine::error_chain(&e))
            }),
            None => {
                let task = rt.spawn(async move {
                    if apply {
                        return reconciler
                            .apply(&cluster_desired, &cluster_request, no_progress)
                            .await
                            .map(|applied| ClusterRun::applied(applied.into(), false));
                    }
                    let planned = reconciler.plan(&cluster_desired, &cluster_request).await?;
                    let report = (mode == Mode::Check).then(|| {
                        let mut report =
                            check::report(&cluster_desired, &planned.observed, &planned.plan);
                        // Tenants outside --tenant were not inspected.
                        report
                            .tenants
                            .retain(|t| planned.context.in_scope(&t.tenant));
                        report
                    });
                    Ok(ClusterRun {
                        plan: planned.plan,
                        outcome: None,
                        failovers: None,
                        report,
                    })
                });
                Box::pin(async move {
                    match task.await {
                        Ok(result) => result.map_err(|e| pgtenant_engine::error_chain(&e)),
                        Err(error) => Err(format!("running the cluster: {error}")),
                    }
                })
            }
        };
        runs.push(run);
        names.push(name);
    }
    let mut results: Vec<(&str, RunResult)> = names
        .into_iter()
        .zip(rt.block_on(futures::future::join_all(runs)))
        .collect();
    // `check`: each pooled tenant's pool on its cluster's pooler.
    for (name, member, declared) in &checked {
        let Some((
            _,
            Ok(ClusterRun {
                report: Some(report),
                ..
            }),
        )) = results.iter_mut().find(|(n, _)| n == name)
        else {
            continue;
        };
        if let Some(pooler) = crate::commands::cluster::pooler_of(member)? {
            crate::commands::reconcile::pooler_check(&pooler, declared, report)?;
        }
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
    let stuck = placements.iter().any(is_stuck);
    let pending = results.iter().any(|(_, r)| {
        r.as_ref().is_ok_and(|run| match &run.report {
            Some(report) => !report.in_sync,
            None => !run.plan.is_converged(),
        })
    });
    let failed_tenants = results.iter().any(|(_, r)| {
        r.as_ref().is_ok_and(|run| {
            run.plan.has_unresolved()
                || run
                    .outcome
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
                    if let Some(inventory) = &m.inventory {
                        value["headroom"] = json!({
                            "size_bytes": inventory.size_bytes,
                            "connections": inventory.connections,
                            "usable_connections": inventory.usable_connections,
                        });
                    }
                    if let Some(Ok(run)) = result {
                        let plan = &run.plan;
                        if let Some(report) = &run.report {
                            value["in_sync"] = json!(report.in_sync);
                        } else {
                            value["converged"] = json!(plan.is_converged());
                            value["operations"] = render::operations_json(plan);
                            value["summary"] = render::summary(plan);
                        }
                        value["notices"] = json!(plan.notices);
                        if let Some(outcome) = &run.outcome {
                            value["applied"] = json!(outcome.applied());
                            value["failed"] = json!(outcome.failed().count());
                            value["tenants_outcome"] = json!(outcome.tenants);
                        }
                        if let Some(failovers) = &run.failovers {
                            value["failovers"] = json!(failovers);
                        }
                    }
                    value
                })
                .collect();
            let tenants = if mode == Mode::Check {
                checked_tenants(&placements, &results)?
            } else {
                placements.iter().map(tenant_json).collect()
            };
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
            match mode {
                Mode::Apply => top["ok"] = json!(!error),
                Mode::Plan => top["converged"] = json!(!pending && !stuck),
                Mode::Check => {
                    top["in_sync"] = json!(!pending && !stuck && unreachable.is_empty());
                    top["notices"] = json!(results
                        .iter()
                        .filter_map(|(_, r)| r.as_ref().ok()?.report.as_ref())
                        .flat_map(|report| &report.notices)
                        .collect::<Vec<_>>());
                }
            }
            render::print_json(&top)?;
        }
        Format::Text => {
            for (name, result) in &results {
                outln!("== cluster {name} ==");
                match result {
                    Ok(ClusterRun {
                        report: Some(report),
                        ..
                    }) => render::check(report, &repo, Format::Text)?,
                    Ok(ClusterRun {
                        plan,
                        outcome: Some(outcome),
                        failovers,
                        ..
                    }) => render::apply_survived(
                        plan,
                        outcome,
                        failovers.as_deref().unwrap_or_default(),
                        &repo,
                        Format::Text,
                    )?,
                    Ok(run) => render::plan(&run.plan, &repo, Format::Text)?,
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

impl ClusterRun {
    /// What `apply` did; `ha`: through failovers (`failover::apply`).
    fn applied(survived: pgtenant_engine::failover::Survived, ha: bool) -> ClusterRun {
        ClusterRun {
            plan: survived.applied.plan,
            outcome: Some(survived.applied.outcome),
            failovers: ha.then_some(survived.failovers),
            report: None,
        }
    }
}

/// A tenant no cluster plans this run: `duplicate`, `held`, `unreachable` or `unplaceable`.
fn is_stuck(p: &Placement) -> bool {
    matches!(
        p.state,
        "duplicate" | "held" | "unreachable" | "unplaceable"
    )
}

/// `check`'s JSON `tenants`: each checked tenant's report with its `cluster`, then each tenant
/// that no cluster checked (`unreachable`, `held`, `duplicate`, `unplaceable`) with that state as
/// its `status` and the reason.
fn checked_tenants(
    placements: &[Placement],
    results: &[(&str, RunResult)],
) -> Result<Vec<serde_json::Value>> {
    let mut tenants = Vec::new();
    for (name, result) in results {
        for report in result.iter().filter_map(|run| run.report.as_ref()) {
            for tenant in &report.tenants {
                let mut value = serde_json::to_value(tenant)?;
                value["cluster"] = json!(name);
                tenants.push(value);
            }
        }
    }
    for p in placements {
        if is_stuck(p) {
            let mut value = tenant_json(p);
            value["status"] = json!(p.state);
            tenants.push(value);
        }
    }
    Ok(tenants)
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
