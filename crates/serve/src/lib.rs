//! `pgtenant serve`: the self-service platform as a running service.
//!
//! ```text
//!  source (directory events | git fetch + webhook) ──▶ changed tenants ──▶ worker per cluster ──▶ Reconciler
//!        drift pass (spread over driftInterval) ──────────────────────────▶      │
//!        schedules (backups, expiry, rotation) ───────────────────────────▶      ▼
//!  HTTP (API, /metrics, status page, SSE) ◀── reads ── Shared (snapshot, events, metrics) ◀── writes
//! ```
//!
//! HTTP handlers never reconcile themselves: they read [`state::Shared`] and enqueue
//! [`state::Command`]s for the workers.

pub mod http;
pub mod leader;
pub mod metrics;
pub mod rotation;
pub mod schedule;
pub mod service;
pub mod source;
pub mod state;
pub mod worker;

use std::time::{Instant, SystemTime};

use state::{Event, EventKind};

/// RFC 3339, UTC, to the second.
pub fn rfc3339(at: SystemTime) -> String {
    let at = time::OffsetDateTime::from(at)
        .replace_nanosecond(0)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Now, as [`rfc3339`].
pub fn now() -> String {
    rfc3339(SystemTime::now())
}

/// The wall-clock time of a monotonic instant (for showing when a retry is due).
pub(crate) fn instant_to_system(at: Instant) -> SystemTime {
    let now = Instant::now();
    if at >= now {
        SystemTime::now() + (at - now)
    } else {
        SystemTime::now() - (now - at)
    }
}

/// This instance: host name and process id.
pub fn instance() -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}:{}", std::process::id())
}

/// An event, stamped now; its id is given when published.
pub(crate) fn event(
    kind: EventKind,
    tenant: Option<&str>,
    revision: Option<String>,
    message: String,
) -> Event {
    Event {
        id: 0,
        at: now(),
        kind,
        tenant: tenant.map(str::to_string),
        cluster: None,
        revision,
        message,
        duration_ms: None,
    }
}

impl Event {
    pub(crate) fn with_cluster(mut self, cluster: &str) -> Self {
        self.cluster = Some(cluster.to_string());
        self
    }

    pub(crate) fn with_duration(mut self, took: std::time::Duration) -> Self {
        self.duration_ms = Some(took.as_millis() as u64);
        self
    }
}
