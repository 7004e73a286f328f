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
pub mod metrics;
pub mod state;
