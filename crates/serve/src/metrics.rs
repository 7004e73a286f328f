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

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;

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
    pub drift_repairs: Family<ClusterLabel, Counter>,
    pub backup_failures: Family<ClusterKind, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            reconcile_duration: Family::new_with_constructor(duration_histogram),
            reconciles: Family::default(),
            change_to_applied: Family::new_with_constructor(duration_histogram),
            source_errors: Family::default(),
            drift_repairs: Family::default(),
            backup_failures: Family::default(),
        }
    }
}
