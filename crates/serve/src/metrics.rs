//! The metric families of `/metrics` (prometheus-client, no global registry). Counters and
//! histograms are recorded by the workers as things happen; gauges that describe the state
//! (tenants by state, drift items, sizes, leader) are written from the snapshot when scraped.
//!
//! Names are a contract (alert rules and the dashboard under deploy/ use them):
//!
//! | name | type | labels |
//! |------|------|--------|
//! | `pgtenant_reconcile_duration_seconds` | histogram | cluster, result (ok, failed) |
//! | `pgtenant_reconciles_total` | counter | cluster, result |
//! | `pgtenant_change_to_applied_seconds` | histogram | source (directory, git) |
//! | `pgtenant_source_errors_total` | counter | source |
//! | `pgtenant_source_files_parsed_total` | counter | (values files parsed: a directory's files whose text changed, a commit's changed blobs) |
//! | `pgtenant_source_up` | gauge | |
//! | `pgtenant_tenants` | gauge | cluster, state (pending, in-sync, drifted, failed, held, invalid) |
//! | `pgtenant_drift_items` | gauge | cluster |
//! | `pgtenant_drift_repairs_total` | counter | cluster |
//! | `pgtenant_held_drops` | gauge | cluster |
//! | `pgtenant_last_reconcile_success_timestamp_seconds` | gauge | cluster |
//! | `pgtenant_last_backup_success_timestamp_seconds` | gauge | cluster, kind |
//! | `pgtenant_backup_failures_total` | counter | cluster, kind |
//! | `pgtenant_database_size_bytes` | gauge | cluster, tenant |
//! | `pgtenant_database_connections` | gauge | cluster, tenant |
//! | `pgtenant_leader` | gauge | state (active, standby, starting): 1 for the current one |
//! | `pgtenant_cluster_reachable` | gauge | cluster: 1 when the last connection worked |
//! | `pgtenant_cluster_last_reconcile_ok` | gauge | cluster: 1 when its last reconcile had no failed tenant |
//! | `pgtenant_pgbouncer_up` | gauge | cluster: 1 when the pooler's console answered this scrape |
//! | `pgtenant_pgbouncer_last_collection_error` | gauge | cluster: 1 when it did not |
//! | `pgtenant_pgbouncer_pools_cl_active`, `_cl_waiting`, `_sv_active`, `_sv_idle` | gauge | cluster, database |
//! | `pgtenant_pgbouncer_pools_maxwait_seconds` | gauge | cluster, database |
//! | `pgtenant_pgbouncer_stats_avg_wait_time_seconds`, `_avg_xact_time_seconds` | gauge | cluster, database |
//! | `pgtenant_pgbouncer_stats_transactions_total` | counter | cluster, database (SHOW STATS total_xact_count) |
//!
//! The `pgtenant_pgbouncer_*` families follow CloudNativePG's `cnpg_pgbouncer_*` (SHOW POOLS,
//! SHOW STATS per database); they are read through the pooler's admin console when scraped
//! ([`Metrics::collect_pgbouncer`], bounded by [`PGBOUNCER_TIMEOUT`]), never by a reconcile. A
//! pooler that does not answer gives `pgtenant_pgbouncer_up 0`, not an error page.
//!
//! [`encode`] writes them all (OpenMetrics text): the event-driven families of [`Metrics`] and,
//! derived from the [`Snapshot`] at scrape time, the gauges. Every cluster gets a
//! `pgtenant_tenants` sample for every state (zeros included), so alert rules see a 0, not an
//! absent series.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use std::collections::BTreeSet;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use pgtenant_engine::{PoolStats, PoolerSync};

use crate::state::{LeaderState, Snapshot, TenantState};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterResult {
    pub cluster: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    pub source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterLabel {
    pub cluster: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterKind {
    pub cluster: String,
    pub kind: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Buckets from 10 ms to ~80 s: a scoped reconcile is sub-second, a drift pass of 1,000 tenants
/// takes seconds.
fn duration_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.01, 2.0, 14,
    ))
}

/// The event-driven families, recorded by the workers.
pub struct Metrics {
    pub reconcile_duration: HistogramFamily<ClusterResult>,
    pub reconciles: Family<ClusterResult, Counter>,
    pub change_to_applied: HistogramFamily<SourceLabel>,
    pub source_errors: Family<SourceLabel, Counter>,
    pub source_files_parsed: Counter,
    pub drift_repairs: Family<ClusterLabel, Counter>,
    pub backup_failures: Family<ClusterKind, Counter>,
    /// The cluster's pooler, read when scraped ([`Self::collect_pgbouncer`]).
    pgbouncer: OnceLock<(String, Arc<dyn PoolerSync>)>,
    /// What the last collection found: the pools, or why the console did not answer.
    pgbouncer_last: Mutex<Option<PgbouncerScrape>>,
}

/// How long a scrape waits for the pooler's console.
pub const PGBOUNCER_TIMEOUT: Duration = Duration::from_secs(3);

/// One collection from a pooler.
#[derive(Debug, Clone)]
pub struct PgbouncerScrape {
    pub cluster: String,
    pub pools: Result<Vec<PoolStats>, String>,
}

impl Metrics {
    /// Reports `cluster`'s pooler in `/metrics` from now on (the first call wins).
    pub fn watch_pgbouncer(&self, cluster: &str, pooler: Arc<dyn PoolerSync>) {
        let _ = self.pgbouncer.set((cluster.to_string(), pooler));
    }

    /// Reads the watched pooler's pools (at most [`PGBOUNCER_TIMEOUT`]); nothing without one.
    pub async fn collect_pgbouncer(&self) {
        let Some((cluster, pooler)) = self.pgbouncer.get() else {
            return;
        };
        let pools = match tokio::time::timeout(PGBOUNCER_TIMEOUT, pooler.pool_stats()).await {
            Ok(Some(result)) => result,
            Ok(None) => return,
            Err(_) => Err(format!(
                "no answer within {} s",
                PGBOUNCER_TIMEOUT.as_secs()
            )),
        };
        if let Err(error) = &pools {
            tracing::debug!(%error, "pgbouncer's console did not answer the metrics scrape");
        }
        *self.pgbouncer_last.lock().expect("not poisoned") = Some(PgbouncerScrape {
            cluster: cluster.clone(),
            pools,
        });
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            reconcile_duration: Family::new_with_constructor(duration_histogram),
            reconciles: Family::default(),
            change_to_applied: Family::new_with_constructor(duration_histogram),
            source_errors: Family::default(),
            source_files_parsed: Counter::default(),
            drift_repairs: Family::default(),
            backup_failures: Family::default(),
            pgbouncer: OnceLock::new(),
            pgbouncer_last: Mutex::new(None),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClusterState {
    cluster: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClusterTenant {
    cluster: String,
    tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClusterDatabase {
    cluster: String,
    database: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// RFC 3339 to seconds since the epoch (what Prometheus compares with `time()`).
fn epoch_seconds(at: &str) -> Option<f64> {
    let at =
        time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).ok()?;
    Some(at.unix_timestamp_nanos() as f64 / 1e9)
}

/// The whole `/metrics` page (OpenMetrics text, ending in `# EOF`).
pub fn encode(metrics: &Metrics, snapshot: &Snapshot) -> String {
    let mut registry = Registry::default();
    registry.register(
        "pgtenant_reconcile_duration_seconds",
        "Duration of one tenant's reconcile",
        metrics.reconcile_duration.clone(),
    );
    registry.register(
        "pgtenant_reconciles",
        "Tenant reconciles by result",
        metrics.reconciles.clone(),
    );
    registry.register(
        "pgtenant_change_to_applied_seconds",
        "From the source event (file change, commit) to the change applied",
        metrics.change_to_applied.clone(),
    );
    registry.register(
        "pgtenant_source_errors",
        "Failed reads of the source of truth (the last good state stays)",
        metrics.source_errors.clone(),
    );
    registry.register(
        "pgtenant_source_files_parsed",
        "Values files parsed (only the files whose text changed, or whose blob changed in a commit)",
        metrics.source_files_parsed.clone(),
    );
    registry.register(
        "pgtenant_drift_repairs",
        "Drift found and repaired",
        metrics.drift_repairs.clone(),
    );
    registry.register(
        "pgtenant_backup_failures",
        "Failed scheduled backups",
        metrics.backup_failures.clone(),
    );

    let source_up = Gauge::<i64>::default();
    source_up.set(i64::from(
        snapshot.source.error.is_none() && snapshot.source.last_read_at.is_some(),
    ));
    registry.register(
        "pgtenant_source_up",
        "1 when the last read of the source of truth worked",
        source_up,
    );

    let leader = Family::<StateLabel, Gauge>::default();
    for state in [
        LeaderState::Active,
        LeaderState::Standby,
        LeaderState::Starting,
    ] {
        let name = match state {
            LeaderState::Active => "active",
            LeaderState::Standby => "standby",
            LeaderState::Starting => "starting",
        };
        leader
            .get_or_create(&StateLabel {
                state: name.to_string(),
            })
            .set(i64::from(snapshot.leader == state));
    }
    registry.register(
        "pgtenant_leader",
        "This instance's leader state: 1 for the current one",
        leader,
    );

    // Clusters named by the configuration or by a tenant (a tenant may name an unknown one).
    let clusters: BTreeSet<&str> = snapshot
        .clusters
        .keys()
        .map(String::as_str)
        .chain(snapshot.tenants.values().map(|t| t.cluster.as_str()))
        .collect();

    let tenants = Family::<ClusterState, Gauge>::default();
    let drift_items = Family::<ClusterLabel, Gauge>::default();
    let held_drops = Family::<ClusterLabel, Gauge>::default();
    for cluster in &clusters {
        for state in TenantState::ALL {
            tenants
                .get_or_create(&ClusterState {
                    cluster: cluster.to_string(),
                    state: state.as_str().to_string(),
                })
                .set(0);
        }
        let label = ClusterLabel {
            cluster: cluster.to_string(),
        };
        drift_items.get_or_create(&label).set(0);
        held_drops.get_or_create(&label).set(
            snapshot
                .clusters
                .get(*cluster)
                .map_or(0, |c| c.held_drops.len() as i64),
        );
    }
    let size = Family::<ClusterTenant, Gauge>::default();
    let connections = Family::<ClusterTenant, Gauge>::default();
    for tenant in snapshot.tenants.values() {
        tenants
            .get_or_create(&ClusterState {
                cluster: tenant.cluster.clone(),
                state: tenant.state.as_str().to_string(),
            })
            .inc();
        drift_items
            .get_or_create(&ClusterLabel {
                cluster: tenant.cluster.clone(),
            })
            .inc_by(tenant.drift.len() as i64);
        let label = ClusterTenant {
            cluster: tenant.cluster.clone(),
            tenant: tenant.tenant.clone(),
        };
        if let Some(bytes) = tenant.size_bytes {
            size.get_or_create(&label).set(bytes);
        }
        if let Some(count) = tenant.connections {
            connections.get_or_create(&label).set(i64::from(count));
        }
    }
    registry.register("pgtenant_tenants", "Tenants by cluster and state", tenants);
    registry.register(
        "pgtenant_drift_items",
        "Pending operations found by the last verification of each tenant",
        drift_items,
    );
    registry.register(
        "pgtenant_held_drops",
        "Drops held by a guard (reported, never forced)",
        held_drops,
    );

    let reachable = Family::<ClusterLabel, Gauge>::default();
    let reconcile_ok = Family::<ClusterLabel, Gauge>::default();
    let last_success = Family::<ClusterLabel, FloatGauge>::default();
    let last_backup = Family::<ClusterKind, FloatGauge>::default();
    for (name, cluster) in &snapshot.clusters {
        let label = ClusterLabel {
            cluster: name.clone(),
        };
        reachable
            .get_or_create(&label)
            .set(i64::from(cluster.reachable));
        if let Some(ok) = cluster.last_reconcile_ok {
            reconcile_ok.get_or_create(&label).set(i64::from(ok));
        }
        if cluster.last_reconcile_ok == Some(true) {
            if let Some(at) = cluster.last_reconcile_at.as_deref().and_then(epoch_seconds) {
                last_success.get_or_create(&label).set(at);
            }
        }
        if let Some(backup) = &cluster.last_backup {
            if let Some(at) = epoch_seconds(&backup.at) {
                last_backup
                    .get_or_create(&ClusterKind {
                        cluster: name.clone(),
                        kind: backup.kind.clone(),
                    })
                    .set(at);
            }
        }
    }
    registry.register(
        "pgtenant_cluster_reachable",
        "1 when the last connection to the cluster worked",
        reachable,
    );
    registry.register(
        "pgtenant_cluster_last_reconcile_ok",
        "1 when the cluster's last reconcile had no failed tenant",
        reconcile_ok,
    );
    registry.register(
        "pgtenant_last_reconcile_success_timestamp_seconds",
        "When the cluster's last reconcile without a failed tenant finished",
        last_success,
    );
    registry.register(
        "pgtenant_last_backup_success_timestamp_seconds",
        "When the cluster's last successful backup finished",
        last_backup,
    );
    registry.register(
        "pgtenant_database_size_bytes",
        "Size of each tenant database (pg_database_size)",
        size,
    );
    registry.register(
        "pgtenant_database_connections",
        "Connections to each tenant database (pg_stat_database.numbackends)",
        connections,
    );

    let last = metrics.pgbouncer_last.lock().expect("not poisoned").clone();
    if let Some(scrape) = last {
        register_pgbouncer(&mut registry, &scrape);
    }

    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)
        .expect("writing to a String cannot fail");
    text
}

/// The `pgtenant_pgbouncer_*` families of one collection.
fn register_pgbouncer(registry: &mut Registry, scrape: &PgbouncerScrape) {
    let cluster = ClusterLabel {
        cluster: scrape.cluster.clone(),
    };
    let up = Family::<ClusterLabel, Gauge>::default();
    let error = Family::<ClusterLabel, Gauge>::default();
    up.get_or_create(&cluster)
        .set(i64::from(scrape.pools.is_ok()));
    error
        .get_or_create(&cluster)
        .set(i64::from(scrape.pools.is_err()));
    registry.register(
        "pgtenant_pgbouncer_up",
        "1 when the pooler's admin console answered the last scrape",
        up,
    );
    registry.register(
        "pgtenant_pgbouncer_last_collection_error",
        "1 when the last collection from the pooler failed",
        error,
    );
    let pools = scrape.pools.as_deref().unwrap_or_default();
    type Field = fn(&PoolStats) -> i64;
    type Seconds = fn(&PoolStats) -> f64;
    let counts: [(&str, &str, Field); 4] = [
        (
            "pgtenant_pgbouncer_pools_cl_active",
            "Client connections linked to a server connection and able to process queries",
            |p| p.cl_active,
        ),
        (
            "pgtenant_pgbouncer_pools_cl_waiting",
            "Client connections waiting for a server connection",
            |p| p.cl_waiting,
        ),
        (
            "pgtenant_pgbouncer_pools_sv_active",
            "Server connections linked to a client",
            |p| p.sv_active,
        ),
        (
            "pgtenant_pgbouncer_pools_sv_idle",
            "Server connections unused and immediately usable",
            |p| p.sv_idle,
        ),
    ];
    let label = |p: &PoolStats| ClusterDatabase {
        cluster: scrape.cluster.clone(),
        database: p.database.clone(),
    };
    for (name, help, field) in counts {
        let family = Family::<ClusterDatabase, Gauge>::default();
        for pool in pools {
            family.get_or_create(&label(pool)).set(field(pool));
        }
        registry.register(name, help, family);
    }
    // CloudNativePG's total_xact_count, as a counter (promtool refuses a `_count` gauge).
    let transactions = Family::<ClusterDatabase, Counter>::default();
    for pool in pools {
        transactions
            .get_or_create(&label(pool))
            .inc_by(pool.total_xact_count.max(0) as u64);
    }
    registry.register(
        "pgtenant_pgbouncer_stats_transactions",
        "Transactions pooled since pgbouncer started (SHOW STATS total_xact_count)",
        transactions,
    );
    let times: [(&str, &str, Seconds); 3] = [
        (
            "pgtenant_pgbouncer_pools_maxwait_seconds",
            "How long the oldest waiting client has waited",
            |p| p.maxwait_seconds,
        ),
        (
            "pgtenant_pgbouncer_stats_avg_wait_time_seconds",
            "Average time clients waited for a server connection",
            |p| p.avg_wait_seconds,
        ),
        (
            "pgtenant_pgbouncer_stats_avg_xact_time_seconds",
            "Average transaction duration",
            |p| p.avg_xact_seconds,
        ),
    ];
    for (name, help, field) in times {
        let family = Family::<ClusterDatabase, FloatGauge>::default();
        for pool in pools {
            family.get_or_create(&label(pool)).set(field(pool));
        }
        registry.register(name, help, family);
    }
}

/// The Prometheus text format (0.0.4) of [`encode`]'s OpenMetrics text, for scrapers and tools
/// that do not ask for OpenMetrics (promtool, curl): counter families are named with their
/// `_total` suffix and there is no `# EOF`. The samples are the same.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: BTreeSet<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut text = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(line) => text.push_str(&line),
            None => text.push_str(line),
        }
        text.push('\n');
    }
    text
}
