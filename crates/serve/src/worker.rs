//! The reconcile loop of one cluster. It alone changes the cluster: the source hands it
//! revisions, HTTP handlers enqueue commands, and it reconciles
//!
//! - the tenants a revision changed, right away and only those (a scoped apply, as
//!   `pgtenant apply --tenant` does), in batches of at most [`CHANGE_BATCH`];
//! - every tenant again within the drift interval, a few at a time spread over it (at most one
//!   batch a second), so that 1,000 tenants never mean 1,000 connections at once;
//! - a failed tenant again after its backoff (doubling from 1 s up to [`MAX_BACKOFF`]), without
//!   holding up the others.
//!
//! Drops keep every guard of the CLI (the default [`DropGuard`]: one drop a run, nothing when a
//! values file failed); a held drop is reported, never forced. Nothing runs before the source
//! has been read once: no revision is not an empty repo. A batch in flight is always finished
//! (shutdown and losing the lead are looked at between batches).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use pgtenant_engine::plan::{DropGuard, NoticeKind, Phase};
use pgtenant_engine::reconcile::{Applied, Request};
use pgtenant_engine::{Desired, ReconcileError, Reconciler};
use pgtenant_spec::{DatabaseSpec, LoadedRepo};
use tokio::sync::{mpsc, watch};
use tokio_postgres::Client;

use crate::metrics::{ClusterLabel, ClusterResult, SourceLabel};
use crate::source::Revision;
use crate::state::{EventKind, Shared, TenantState, TenantStatus};

/// Tenants reconciled together after a change.
pub const CHANGE_BATCH: usize = 50;
/// The longest wait before a failed tenant is tried again.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// How often sizes and connections are read (one query).
pub const STATS_EVERY: Duration = Duration::from_secs(30);

/// What a reload may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerSettings {
    pub drift_interval: Duration,
}

pub struct Worker {
    pub shared: Arc<Shared>,
    pub cluster: String,
    pub reconciler: Reconciler,
    pub guard: DropGuard,
    /// `directory` or `git`: the label of the change-to-applied latency.
    pub source_kind: &'static str,
    pub settings: watch::Receiver<WorkerSettings>,
    pub revisions: watch::Receiver<Option<Arc<Revision>>>,
    /// `Some(tenant)`: that one; None: all.
    pub commands: mpsc::UnboundedReceiver<Option<String>>,
    /// Whether this instance holds the lead.
    pub active: watch::Receiver<bool>,
    pub shutdown: watch::Receiver<bool>,
}

#[derive(Debug, Default)]
struct Tracked {
    failures: u32,
    retry_at: Option<Instant>,
    verified_at: Option<Instant>,
    /// When the change waiting to be applied was seen.
    change_seen_at: Option<SystemTime>,
    /// Left alone: its values file has errors.
    invalid: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    Change,
    Drift,
}

struct Loop {
    desired: Option<Arc<Desired>>,
    /// The revision `desired` was made from: the next one is compared with it.
    last: Option<Arc<Revision>>,
    revision: Option<String>,
    tracked: BTreeMap<String, Tracked>,
    pending: BTreeSet<String>,
    /// Pending because `POST /api/v1/reconcile` asked (not because their declaration changed):
    /// verified in full, and what they apply is a drift repair.
    requested: BTreeSet<String>,
    next_drift: Instant,
    /// The drift pass under way: when it started and which tenants it has verified.
    pass_started: Option<(Instant, BTreeSet<String>)>,
}

impl Worker {
    pub async fn run(mut self) {
        tokio::spawn(read_stats_every(
            self.shared.clone(),
            self.reconciler.connector.clone(),
            self.active.clone(),
            self.shutdown.clone(),
        ));
        let mut state = Loop {
            desired: None,
            last: None,
            revision: None,
            tracked: BTreeMap::new(),
            pending: BTreeSet::new(),
            requested: BTreeSet::new(),
            next_drift: Instant::now(),
            pass_started: None,
        };
        let mut was_active = false;
        loop {
            let active = *self.active.borrow();
            if active && !was_active {
                self.activated(&mut state).await;
            }
            was_active = active;
            if active && state.desired.is_some() && self.work(&mut state).await {
                // More may be due at once; still look at shutdown and news first.
                if *self.shutdown.borrow() {
                    return;
                }
                self.drain(&mut state);
                continue;
            }
            let wake = self.next_wake(&state, active);
            tokio::select! {
                biased;
                _ = self.shutdown.changed() => return,
                changed = self.revisions.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let revision = self.revisions.borrow_and_update().clone();
                    if let Some(revision) = revision {
                        self.take_revision(&mut state, &revision);
                    }
                }
                command = self.commands.recv() => match command {
                    Some(command) => self.command(&mut state, command),
                    None => return,
                },
                changed = self.active.changed() => if changed.is_err() { return },
                _ = self.settings.changed() => {
                    // The next batch is spaced by the new interval: a batch due an hour from now
                    // under the old one must not wait for it.
                    state.next_drift = state.next_drift.min(Instant::now());
                }
                _ = tokio::time::sleep_until(wake.into()) => {}
            }
        }
    }

    /// Takes what arrived while a batch ran.
    fn drain(&mut self, state: &mut Loop) {
        if self.revisions.has_changed().unwrap_or(false) {
            let revision = self.revisions.borrow_and_update().clone();
            if let Some(revision) = revision {
                self.take_revision(state, &revision);
            }
        }
        while let Ok(command) = self.commands.try_recv() {
            self.command(state, command);
        }
    }

    fn next_wake(&self, state: &Loop, active: bool) -> Instant {
        let far = Instant::now() + Duration::from_secs(3600);
        if !active || state.desired.is_none() {
            return far;
        }
        let retry = state
            .pending
            .iter()
            .filter_map(|t| state.tracked.get(t).and_then(|t| t.retry_at))
            .min();
        let mut wake = state.next_drift;
        if let Some(retry) = retry {
            wake = wake.min(retry);
        }
        if state
            .pending
            .iter()
            .any(|t| state.tracked.get(t).is_none_or(|t| t.retry_at.is_none()))
        {
            wake = Instant::now();
        }
        wake
    }

    fn command(&self, state: &mut Loop, tenant: Option<String>) {
        match tenant {
            Some(tenant) => {
                if let Some(tracked) = state.tracked.get_mut(&tenant) {
                    tracked.retry_at = None;
                    state.pending.insert(tenant.clone());
                    state.requested.insert(tenant);
                }
            }
            None => {
                for (tenant, tracked) in &mut state.tracked {
                    if !tracked.invalid {
                        tracked.retry_at = None;
                        state.pending.insert(tenant.clone());
                        state.requested.insert(tenant.clone());
                    }
                }
            }
        }
    }

    /// Became the active instance: every tenant declared, and every managed database the repo
    /// no longer declares (removed while no instance was active), is reconciled once.
    async fn activated(&self, state: &mut Loop) {
        match pgtenant_engine::list_databases(&self.reconciler.connector).await {
            Ok(listed) => {
                for db in listed.into_iter().filter(|db| db.state == "managed") {
                    if let Some(tenant) = db.tenant {
                        state.tracked.entry(tenant).or_default();
                    }
                }
            }
            Err(error) => {
                tracing::warn!(error = %pgtenant_engine::error_chain(&error), "listing the cluster's databases")
            }
        }
        if let Some(desired) = state.desired.clone() {
            self.mark_invalid(state, &desired);
        }
        let all: Vec<String> = state
            .tracked
            .iter()
            .filter(|(_, t)| !t.invalid)
            .map(|(id, _)| id.clone())
            .collect();
        for id in all {
            self.ensure_listed(&id);
            state.pending.insert(id);
        }
    }

    /// Tenants the repo stopped declaring because their file has errors are left alone.
    fn mark_invalid(&self, state: &mut Loop, desired: &Desired) {
        if desired.failed_files.is_empty() {
            // No file fails: no tenant is left alone for that.
            for tracked in state.tracked.values_mut() {
                tracked.invalid = false;
            }
            return;
        }
        let declared: BTreeSet<&str> = desired.tenants.iter().map(|t| t.id.as_str()).collect();
        for (id, tracked) in &mut state.tracked {
            let declared = declared.contains(id.as_str());
            tracked.invalid = !declared && desired.undeclared_because_of_errors(id).is_some();
            if tracked.invalid {
                state.pending.remove(id);
                let id = id.clone();
                self.shared.update(|s| {
                    if let Some(status) = s.tenants.get_mut(&id) {
                        status.state = TenantState::Invalid;
                        status.last_error = Some(
                            "its values file has errors: left as it is until the file is fixed"
                                .into(),
                        );
                    }
                });
            }
        }
    }

    fn ensure_listed(&self, id: &str) {
        let cluster = self.cluster.clone();
        self.shared.update(|s| {
            s.tenants
                .entry(id.to_string())
                .or_insert_with(|| TenantStatus {
                    tenant: id.to_string(),
                    database: id.replace('/', "-"),
                    cluster,
                    ..TenantStatus::default()
                });
        });
    }

    /// A new revision: the tenants whose declaration changed (added, changed, removed) are due.
    fn take_revision(&self, state: &mut Loop, revision: &Arc<Revision>) {
        tracing::info_span!("take_revision").in_scope(|| self.take_revision_now(state, revision))
    }

    /// Proportional to the change: the declarations are compared with the last revision's (both
    /// sorted by namespace and name, as the loader sorts them), and only those that differ are
    /// derived again, in the desired state kept between revisions, and shown again. The repo's
    /// checks across files (collisions) are the source's, made on the whole repo every read.
    fn take_revision_now(&self, state: &mut Loop, revision: &Arc<Revision>) {
        let old: &[DatabaseSpec] = state.last.as_ref().map_or(&[], |r| &r.repo.databases);
        let differing = differing(old, &revision.repo.databases);
        let mut desired = state.desired.take().unwrap_or_default();
        // The worker's own copy between reconciles: changed in place, not cloned.
        let kept = Arc::make_mut(&mut desired);
        let changed = update_desired(kept, &differing, &revision.repo.failed_files);
        let cluster = self.cluster.clone();
        self.shared.update(|s| {
            for (namespace, name, spec) in &differing {
                let Some(spec) = spec else { continue };
                let id = format!("{namespace}/{name}");
                let status = s.tenants.entry(id.clone()).or_insert_with(|| TenantStatus {
                    tenant: id,
                    cluster: cluster.clone(),
                    ..TenantStatus::default()
                });
                status.database = spec.database_name();
                if status.last_backup_at.is_none() {
                    status.last_backup_at = s
                        .clusters
                        .get(&cluster)
                        .and_then(|c| c.backups_by_database.get(&status.database))
                        .map(|b| b.at.clone());
                }
                status.preset = spec.preset.as_str().to_string();
                status.mode = spec.mode.as_str().to_string();
                status.file = Some(spec.location.file.display().to_string());
                if status.state == TenantState::Invalid {
                    status.state = TenantState::Pending;
                    status.last_error = None;
                }
            }
        });
        for id in &changed {
            let tracked = state.tracked.entry(id.clone()).or_default();
            tracked.change_seen_at = Some(revision.seen_at);
            tracked.retry_at = None;
            tracked.failures = 0;
            state.pending.insert(id.clone());
            state.requested.remove(id);
            self.ensure_listed(id);
        }
        for (namespace, name, spec) in &differing {
            if spec.is_some() {
                state
                    .tracked
                    .entry(format!("{namespace}/{name}"))
                    .or_default();
            }
        }
        state.revision = revision.revision.clone();
        state.last = Some(revision.clone());
        self.mark_invalid(state, &desired);
        state.desired = Some(desired);
    }

    /// Runs one batch if one is due; true when it did.
    async fn work(&mut self, state: &mut Loop) -> bool {
        let now = Instant::now();
        let ready: BTreeSet<String> = state
            .pending
            .iter()
            .filter(|t| {
                state
                    .tracked
                    .get(*t)
                    .is_none_or(|t| t.retry_at.is_none_or(|r| r <= now))
            })
            .take(CHANGE_BATCH)
            .cloned()
            .collect();
        if !ready.is_empty() {
            self.reconcile(state, ready, Trigger::Change).await;
            return true;
        }
        if now < state.next_drift {
            return false;
        }
        let drift_interval = self.settings.borrow().drift_interval;
        let candidates: Vec<(&String, Option<Instant>)> = state
            .tracked
            .iter()
            .filter(|(_, t)| !t.invalid && t.retry_at.is_none_or(|r| r <= now))
            .map(|(id, t)| (id, t.verified_at))
            .collect();
        let (batch, tick) = drift_batch(candidates, now, drift_interval);
        let batch: BTreeSet<String> = batch.into_iter().cloned().collect();
        state.next_drift = now + tick;
        if batch.is_empty() {
            return false;
        }
        if state.pass_started.is_none() {
            state.pass_started = Some((now, BTreeSet::new()));
        }
        self.reconcile(state, batch, Trigger::Drift).await;
        true
    }

    async fn reconcile(&self, state: &mut Loop, mut scope: BTreeSet<String>, trigger: Trigger) {
        let Some(desired) = state.desired.clone() else {
            return;
        };
        loop {
            let request = Request {
                guard: self.guard.clone(),
                scope: scope.clone(),
                // A drift pass re-verifies whatever the statistics say; a change reads only what
                // may have changed (the in-memory verifications stay warm between reconciles).
                full: trigger == Trigger::Drift
                    || scope.iter().any(|t| state.requested.contains(t)),
            };
            let started = Instant::now();
            let applied = self
                .reconciler
                .apply(&desired, &request, |_| {
                    Arc::new(|_: &pgtenant_engine::TenantOutcome| {})
                })
                .await;
            let elapsed = started.elapsed();
            match applied {
                Ok(applied) => {
                    self.record(state, &desired, &scope, &applied, trigger, elapsed);
                    return;
                }
                // Neither declared nor on the cluster any more: gone, nothing to do.
                Err(ReconcileError::UnknownTenant(gone)) => {
                    self.forget(state, &gone);
                    scope.remove(&gone);
                    if scope.is_empty() {
                        return;
                    }
                }
                // `pgtenant apply` (or rotate, restore) run by hand holds the lock: not a
                // failure of these tenants; they are tried again in a second.
                Err(ReconcileError::Engine(pgtenant_engine::EngineError::Busy { holder })) => {
                    tracing::info!(cluster = %self.cluster, %holder, "the apply lock is busy; trying again");
                    let again = Instant::now() + Duration::from_secs(1);
                    for tenant in &scope {
                        state.tracked.entry(tenant.clone()).or_default().retry_at = Some(again);
                        state.pending.insert(tenant.clone());
                    }
                    return;
                }
                Err(error) => {
                    self.batch_failed(state, &scope, &error, elapsed);
                    return;
                }
            }
        }
    }

    fn forget(&self, state: &mut Loop, tenant: &str) {
        state.tracked.remove(tenant);
        state.pending.remove(tenant);
        self.shared.update(|s| s.tenants.remove(tenant));
    }

    fn backoff(tracked: &mut Tracked) -> Instant {
        tracked.failures = tracked.failures.saturating_add(1);
        let delay = Duration::from_secs(1)
            .saturating_mul(1 << (tracked.failures - 1).min(16))
            .min(MAX_BACKOFF);
        let at = Instant::now() + delay;
        tracked.retry_at = Some(at);
        at
    }

    fn batch_failed(
        &self,
        state: &mut Loop,
        scope: &BTreeSet<String>,
        error: &ReconcileError,
        elapsed: Duration,
    ) {
        let message = pgtenant_engine::error_chain(error);
        tracing::warn!(cluster = %self.cluster, tenants = scope.len(), error = %message, "reconcile failed");
        let unreachable = matches!(
            error,
            ReconcileError::Engine(pgtenant_engine::EngineError::Connect { .. })
                | ReconcileError::Observe(pgtenant_engine::EngineError::Connect { .. })
        );
        let labels = ClusterResult {
            cluster: self.cluster.clone(),
            result: "failed".into(),
        };
        self.shared
            .metrics
            .reconcile_duration
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        self.shared
            .metrics
            .reconciles
            .get_or_create(&labels)
            .inc_by(scope.len() as u64);
        let mut retries = BTreeMap::new();
        for tenant in scope {
            let tracked = state.tracked.entry(tenant.clone()).or_default();
            retries.insert(tenant.clone(), Self::backoff(tracked));
            state.pending.insert(tenant.clone());
        }
        let now = crate::now();
        let cluster = self.cluster.clone();
        self.shared.update(|s| {
            let status = s.clusters.entry(cluster.clone()).or_default();
            status.name = cluster.clone();
            status.reachable = !unreachable;
            status.last_reconcile_at = Some(now.clone());
            status.last_reconcile_ok = Some(false);
            status.last_error = Some(message.clone());
            for (tenant, at) in &retries {
                if let Some(t) = s.tenants.get_mut(tenant) {
                    t.state = TenantState::Failed;
                    t.last_error = Some(message.clone());
                    t.retry_at = Some(crate::rfc3339(crate::instant_to_system(*at)));
                }
            }
        });
        self.shared.publish(
            crate::event(
                EventKind::Failed,
                None,
                state.revision.clone(),
                format!("reconciling {} tenant(s): {message}", scope.len()),
            )
            .with_cluster(&self.cluster)
            .with_duration(elapsed),
        );
    }

    fn record(
        &self,
        state: &mut Loop,
        desired: &Desired,
        scope: &BTreeSet<String>,
        applied: &Applied,
        trigger: Trigger,
        elapsed: Duration,
    ) {
        let now_text = crate::now();
        let now = Instant::now();
        let mut any_failed = false;
        let mut held_drops = Vec::new();
        for tenant in scope {
            let ops: Vec<String> = applied
                .plan
                .operations
                .iter()
                .filter(|op| &op.tenant == tenant)
                .map(|op| format!("{}: {}", op.phase.as_str(), op.why))
                .collect();
            let dropped = applied
                .plan
                .operations
                .iter()
                .any(|op| &op.tenant == tenant && op.phase == Phase::Drop);
            let outcome = applied.outcome.tenants.iter().find(|t| &t.tenant == tenant);
            let notices: Vec<_> = applied
                .plan
                .notices
                .iter()
                .filter(|n| &n.tenant == tenant)
                .collect();
            let error = outcome
                .and_then(|o| o.error.as_ref())
                .map(|e| e.to_string());
            let held = notices.iter().find(|n| n.kind == NoticeKind::Held);
            let unresolved = notices
                .iter()
                .find(|n| matches!(n.kind, NoticeKind::Deferred | NoticeKind::Blocked));
            let retained = notices.iter().any(|n| n.kind == NoticeKind::Retained);
            let declared = desired.tenants.iter().any(|t| &t.id == tenant);
            let applied_count = outcome.map_or(0, |o| o.applied);
            let tracked = state.tracked.entry(tenant.clone()).or_default();
            let (tenant_state, last_error, retry_at) = if let Some(error) = error.clone() {
                (
                    TenantState::Failed,
                    Some(error),
                    Some(Self::backoff(tracked)),
                )
            } else if let Some(notice) = unresolved {
                (
                    TenantState::Failed,
                    Some(notice.reason.clone()),
                    Some(Self::backoff(tracked)),
                )
            } else if let Some(notice) = held {
                held_drops.push(format!("{tenant}: {}", notice.reason));
                (TenantState::Held, Some(notice.reason.clone()), None)
            } else {
                tracked.failures = 0;
                (TenantState::InSync, None, None)
            };
            tracked.retry_at = retry_at;
            let ok = tenant_state == TenantState::InSync;
            any_failed |= tenant_state == TenantState::Failed;
            if ok || tenant_state == TenantState::Held {
                state.pending.remove(tenant);
                tracked.verified_at = Some(now);
            }
            let seen_at = if ok {
                tracked.change_seen_at.take()
            } else {
                None
            };
            self.shared
                .metrics
                .reconciles
                .get_or_create(&ClusterResult {
                    cluster: self.cluster.clone(),
                    result: if tenant_state == TenantState::Failed {
                        "failed"
                    } else {
                        "ok"
                    }
                    .into(),
                })
                .inc();
            if let Some(seen_at) = seen_at {
                let latency = SystemTime::now()
                    .duration_since(seen_at)
                    .unwrap_or_default();
                self.shared
                    .metrics
                    .change_to_applied
                    .get_or_create(&SourceLabel {
                        source: self.source_kind.to_string(),
                    })
                    .observe(latency.as_secs_f64());
            }
            if let Some((_, verified)) = &mut state.pass_started {
                if trigger == Trigger::Drift {
                    verified.insert(tenant.clone());
                }
            }
            let gone = ok && !declared && (dropped || retained);
            if gone {
                state.tracked.remove(tenant);
                state.pending.remove(tenant);
                self.shared.update(|s| s.tenants.remove(tenant));
                self.shared.publish(
                    crate::event(
                        EventKind::Reconciled,
                        Some(tenant),
                        state.revision.clone(),
                        if dropped {
                            "removed from the repo: dropped".to_string()
                        } else {
                            "removed from the repo: protected, kept (orphaned)".to_string()
                        },
                    )
                    .with_cluster(&self.cluster)
                    .with_duration(elapsed),
                );
                continue;
            }
            let requested = state.requested.remove(tenant);
            let repaired = (trigger == Trigger::Drift || requested) && ok && applied_count > 0;
            if repaired {
                self.shared
                    .metrics
                    .drift_repairs
                    .get_or_create(&ClusterLabel {
                        cluster: self.cluster.clone(),
                    })
                    .inc();
            }
            let revision = state.revision.clone();
            let drift = ops.clone();
            let (error_text, retry_text) = (
                last_error.clone(),
                retry_at.map(|at| crate::rfc3339(crate::instant_to_system(at))),
            );
            self.shared.update(|s| {
                let Some(status) = s.tenants.get_mut(tenant) else {
                    return;
                };
                status.state = tenant_state;
                status.last_error = error_text;
                status.retry_at = retry_text;
                status.drift = if ok { Vec::new() } else { drift };
                if ok || tenant_state == TenantState::Held {
                    status.last_verified_at = Some(now_text.clone());
                }
                if ok && applied_count > 0 {
                    status.last_applied_at = Some(now_text.clone());
                    status.last_applied_revision = revision.clone();
                }
                if ok && status.last_applied_at.is_none() {
                    // In sync when first seen: what is served is this revision.
                    status.last_applied_at = Some(now_text.clone());
                    status.last_applied_revision = revision.clone();
                }
            });
            let kind = match tenant_state {
                TenantState::Failed => Some(EventKind::Failed),
                TenantState::Held => Some(EventKind::Held),
                _ if repaired => Some(EventKind::Drift),
                _ if applied_count > 0 => Some(EventKind::Reconciled),
                _ => None,
            };
            if let Some(kind) = kind {
                let message = match kind {
                    EventKind::Failed | EventKind::Held => last_error.clone().unwrap_or_default(),
                    EventKind::Drift => format!("drift repaired: {}", ops.join("; ")),
                    _ => format!("{applied_count} change(s) applied"),
                };
                if kind == EventKind::Failed {
                    tracing::warn!(tenant = %tenant, error = %message, "tenant reconcile failed");
                } else {
                    tracing::info!(tenant = %tenant, %message, "tenant reconciled");
                }
                self.shared.publish(
                    crate::event(kind, Some(tenant), state.revision.clone(), message)
                        .with_cluster(&self.cluster)
                        .with_duration(elapsed),
                );
            }
        }
        let result = if any_failed { "failed" } else { "ok" };
        self.shared
            .metrics
            .reconcile_duration
            .get_or_create(&ClusterResult {
                cluster: self.cluster.clone(),
                result: result.into(),
            })
            .observe(elapsed.as_secs_f64());
        // A drift pass ends when every tenant has been verified since it started.
        let mut pass_done = None;
        if let Some((started, verified)) = &state.pass_started {
            let all = state
                .tracked
                .iter()
                .filter(|(_, t)| !t.invalid)
                .all(|(id, _)| verified.contains(id));
            if all {
                pass_done = Some(started.elapsed());
            }
        }
        if let Some(took) = pass_done {
            let tenants = state.pass_started.take().map_or(0, |(_, v)| v.len());
            tracing::info!(
                cluster = %self.cluster,
                tenants,
                ms = took.as_millis() as u64,
                "drift pass finished"
            );
        }
        let cluster = self.cluster.clone();
        self.shared.update(|s| {
            let status = s.clusters.entry(cluster.clone()).or_default();
            status.name = cluster.clone();
            status.reachable = true;
            status.last_reconcile_at = Some(now_text.clone());
            status.last_reconcile_ok = Some(!any_failed);
            if !any_failed {
                status.last_error = None;
            }
            // Held drops of this batch replace those reported before for the same tenants.
            status
                .held_drops
                .retain(|line| !scope.iter().any(|t| line.starts_with(&format!("{t}: "))));
            status.held_drops.extend(held_drops);
            if let Some(took) = pass_done {
                status.last_drift_pass_at = Some(now_text.clone());
                status.last_drift_pass_ms = Some(took.as_millis() as u64);
            }
        });
    }
}

/// The declarations that differ between two lists sorted by namespace and name (as the loader
/// sorts them): each with its new spec, None when it is no longer declared.
fn differing<'a>(
    old: &'a [DatabaseSpec],
    new: &'a [DatabaseSpec],
) -> Vec<(&'a str, &'a str, Option<&'a DatabaseSpec>)> {
    let key = |spec: &'a DatabaseSpec| (spec.namespace.as_str(), spec.name.as_str());
    let (mut old, mut new) = (old.iter().peekable(), new.iter().peekable());
    let mut differing = Vec::new();
    loop {
        match (old.peek().copied(), new.peek().copied()) {
            (None, None) => return differing,
            (Some(gone), None) => {
                differing.push((gone.namespace.as_str(), gone.name.as_str(), None));
                old.next();
            }
            (None, Some(added)) => {
                differing.push((added.namespace.as_str(), added.name.as_str(), Some(added)));
                new.next();
            }
            (Some(before), Some(after)) => match key(before).cmp(&key(after)) {
                std::cmp::Ordering::Less => {
                    differing.push((before.namespace.as_str(), before.name.as_str(), None));
                    old.next();
                }
                std::cmp::Ordering::Greater => {
                    differing.push((after.namespace.as_str(), after.name.as_str(), Some(after)));
                    new.next();
                }
                std::cmp::Ordering::Equal => {
                    if before != after {
                        differing.push((
                            after.namespace.as_str(),
                            after.name.as_str(),
                            Some(after),
                        ));
                    }
                    old.next();
                    new.next();
                }
            },
        }
    }
}

/// Brings `kept` (made from the last revision) to the new one, given the declarations that
/// differ: only those are derived again. The tenants whose desired state changed.
fn update_desired(
    kept: &mut Desired,
    differing: &[(&str, &str, Option<&DatabaseSpec>)],
    failed_files: &[std::path::PathBuf],
) -> BTreeSet<String> {
    let mut changed = BTreeSet::new();
    for &(namespace, name, spec) in differing {
        let id = format!("{namespace}/{name}");
        let at = kept
            .tenants
            .binary_search_by(|t| (t.namespace.as_str(), t.name.as_str()).cmp(&(namespace, name)));
        match (spec, at) {
            (Some(spec), Ok(at)) => {
                let derived = pgtenant_engine::DesiredTenant::from_spec(spec);
                if kept.tenants[at] != derived {
                    kept.tenants[at] = derived;
                    changed.insert(id);
                }
            }
            (Some(spec), Err(at)) => {
                kept.tenants
                    .insert(at, pgtenant_engine::DesiredTenant::from_spec(spec));
                changed.insert(id);
            }
            (None, Ok(at)) => {
                kept.tenants.remove(at);
                changed.insert(id);
            }
            (None, Err(_)) => {}
        }
    }
    if kept.failed_files != failed_files {
        // Why drops are held, worded where the desired state is made.
        let failed = Desired::from_repo(&LoadedRepo {
            failed_files: failed_files.to_vec(),
            ..LoadedRepo::default()
        });
        kept.failed_files = failed.failed_files;
        kept.drops_held_because = failed.drops_held_because;
    }
    changed
}

/// Sizes and connections of every database, on a session and a task of their own: every
/// [`STATS_EVERY`] while this instance is active, at once when it becomes active, and again as
/// soon as tenants are listed if the last read had none to show (the first read can come before
/// the source). `pg_database_size` walks every file of every database — 0.8–1.0 s at 1,000
/// databases — so it is never read per change, and in the reconcile loop it held up every change
/// and drift batch behind it.
async fn read_stats_every(
    shared: Arc<Shared>,
    connector: Arc<pgtenant_engine::Connector>,
    mut active: watch::Receiver<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let listed = || shared.read(|s| !s.tenants.is_empty());
    let mut session: Option<Client> = None;
    // When the last read was, and whether it had tenants to show.
    let mut last_read: Option<(Instant, bool)> = None;
    loop {
        if *active.borrow_and_update() {
            let due = last_read.is_none_or(|(at, had_tenants)| {
                at.elapsed() >= STATS_EVERY || (!had_tenants && listed())
            });
            if due {
                let had_tenants = listed();
                read_stats(&shared, &connector, &mut session).await;
                last_read = Some((Instant::now(), had_tenants));
            }
        } else {
            last_read = None;
        }
        tokio::select! {
            _ = shutdown.changed() => return,
            changed = active.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Size and connections of every database, in one query on a session kept open.
async fn read_stats(
    shared: &Shared,
    connector: &pgtenant_engine::Connector,
    session: &mut Option<Client>,
) {
    if session.as_ref().is_none_or(|c| c.is_closed()) {
        *session = connector.connect(None).await.ok();
    }
    let Some(client) = session.as_ref() else {
        return;
    };
    let rows = client
        .query(
            "SELECT d.datname::text,
                    CASE WHEN pg_catalog.has_database_privilege(d.oid, 'CONNECT')
                           OR pg_catalog.pg_has_role('pg_read_all_stats', 'USAGE')
                         THEN pg_catalog.pg_database_size(d.oid) END,
                    s.numbackends
               FROM pg_catalog.pg_database d
               LEFT JOIN pg_catalog.pg_stat_database s ON s.datid = d.oid
              WHERE NOT d.datistemplate",
            &[],
        )
        .await;
    let rows = match rows {
        Ok(rows) => rows,
        Err(error) => {
            tracing::warn!(%error, "reading database sizes");
            *session = None;
            return;
        }
    };
    let stats: BTreeMap<String, (Option<i64>, Option<i32>)> = rows
        .iter()
        .map(|row| (row.get(0), (row.get(1), row.get(2))))
        .collect();
    shared.update(|s| {
        for status in s.tenants.values_mut() {
            if let Some((size, connections)) = stats.get(&status.database) {
                status.size_bytes = *size;
                status.connections = *connections;
            }
        }
    });
}

/// The drift pass's next batch and the time to the one after. The pass is spread over 90% of
/// the interval, at most one batch a second, leaving the rest for the batches' own time; every
/// tenant unverified for 80% of the interval is taken now (up to [`CHANGE_BATCH`] of them), so a
/// pass whose batches are slower than its ticks catches up instead of overrunning the interval.
fn drift_batch<T: Copy>(
    mut candidates: Vec<(T, Option<Instant>)>,
    now: Instant,
    interval: Duration,
) -> (Vec<T>, Duration) {
    let total = candidates.len().max(1);
    let spread = interval.mul_f64(0.9);
    let ticks = (spread.as_secs().max(1) as usize).min(total);
    let tick = spread / ticks as u32;
    let due = now.checked_sub(interval.mul_f64(0.8));
    let overdue = candidates
        .iter()
        .filter(|(_, verified)| match (verified, due) {
            (None, _) => true,
            (Some(verified), Some(due)) => *verified <= due,
            (Some(_), None) => false,
        })
        .count();
    let size = total.div_ceil(ticks).max(overdue.min(CHANGE_BATCH));
    candidates.sort_by_key(|(_, verified)| *verified);
    let batch = candidates
        .into_iter()
        .take(size)
        .map(|(id, _)| id)
        .collect();
    (batch, tick)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(files: &[(&str, &str)]) -> LoadedRepo {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        let mut repo = pgtenant_spec::load_repo(dir.path()).unwrap();
        repo.root = std::path::PathBuf::new();
        repo
    }

    fn apps(names: &[&str]) -> String {
        let mut text = "apiVersion: pgtenant.io/v1\npostgresqlDatabases:\n".to_string();
        for name in names {
            text.push_str(&format!("  - name: {name}\n"));
        }
        text
    }

    /// A simulated hour of drift passes over 1,000 tenants, all verified at the same moment (as
    /// at start-up), with a 100 s interval and each batch costing 0.6 s plus 50 ms a tenant: a
    /// batch of 10 takes 1.1 s, longer than its 1 s tick, as the benchmark measured at N = 1,000
    /// (a 102 s pass took 113.6 s before batches caught up). No tenant goes longer than the
    /// interval between two verifications, and no batch is larger than a change batch.
    #[test]
    fn drift_batches_verify_every_tenant_within_the_interval_even_when_batches_are_slow() {
        let interval = Duration::from_secs(100);
        let start = Instant::now() + Duration::from_secs(1_000);
        let ids: Vec<String> = (0..1_000).map(|i| format!("ns/t{i:04}")).collect();
        let mut verified: BTreeMap<&String, Instant> = ids.iter().map(|id| (id, start)).collect();
        let mut now = start;
        let mut longest = Duration::ZERO;
        let mut largest = 0;
        while now < start + Duration::from_secs(3_600) {
            let candidates = ids.iter().map(|id| (id, Some(verified[id]))).collect();
            let (batch, tick) = drift_batch(candidates, now, interval);
            let cost = Duration::from_millis(600 + 50 * batch.len() as u64);
            for id in &batch {
                longest = longest.max(now + cost - verified[*id]);
                verified.insert(*id, now + cost);
            }
            largest = largest.max(batch.len());
            now += tick.max(cost);
        }
        for at in verified.values() {
            longest = longest.max(now - *at);
        }
        assert!(longest <= interval, "a tenant went {longest:?} unverified");
        assert!(largest <= CHANGE_BATCH, "a batch of {largest}");
    }

    #[test]
    fn the_kept_desired_state_follows_each_revision_deriving_only_what_changed() {
        let revisions = [
            repo(&[("a/x/values.yaml", &apps(&["one", "two"])), ("a-b/y/values.yaml", &apps(&["three"]))]),
            // One tenant added, between the others by namespace then name.
            repo(&[
                ("a/x/values.yaml", &apps(&["one", "two", "one-b"])),
                ("a-b/y/values.yaml", &apps(&["three"])),
            ]),
            // One tenant's declaration changed, one removed, a file broken (its tenants left out).
            repo(&[
                ("a/x/values.yaml", "apiVersion: pgtenant.io/v1\npostgresqlDatabases:\n  - name: one\n    preset: schema-owner\n  - name: one-b\n"),
                ("a-b/y/values.yaml", "postgresqlDatabases: [\n"),
            ]),
            // Fixed again; a tenant moved to another file without a change of its own.
            repo(&[
                ("a/x/values.yaml", "apiVersion: pgtenant.io/v1\npostgresqlDatabases:\n  - name: one\n    preset: schema-owner\n"),
                ("a/z/values.yaml", &apps(&["one-b"])),
                ("a-b/y/values.yaml", &apps(&["three"])),
            ]),
        ];
        let expected_changes: [&[&str]; 4] = [
            &["a-b/three", "a/one", "a/two"],
            &["a/one-b"],
            &["a-b/three", "a/one", "a/two"],
            &["a-b/three"],
        ];
        let mut kept = Desired::default();
        let mut last: &[DatabaseSpec] = &[];
        for (repo, expected) in revisions.iter().zip(expected_changes) {
            let differing = differing(last, &repo.databases);
            let changed = update_desired(&mut kept, &differing, &repo.failed_files);
            assert_eq!(
                changed.iter().map(String::as_str).collect::<Vec<_>>(),
                expected
            );
            let fresh = Desired::from_repo(repo);
            assert_eq!(kept.tenants, fresh.tenants);
            assert_eq!(kept.failed_files, fresh.failed_files);
            assert_eq!(kept.drops_held_because, fresh.drops_held_because);
            last = &repo.databases;
        }
    }
}
