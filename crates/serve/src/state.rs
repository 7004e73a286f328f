//! What the service knows, shared between the workers (which write it) and the HTTP side (which
//! reads it): one snapshot behind a lock, a broadcast of events, the metric families, and the
//! queue of commands for the workers.

use std::collections::{BTreeMap, VecDeque};
use std::sync::RwLock;

use serde::Serialize;
use tokio::sync::{broadcast, mpsc};
use utoipa::ToSchema;

use crate::metrics::Metrics;

/// How many events the snapshot keeps for the page and `GET /api/v1/tenants/{ns}/{db}`.
pub const RECENT_EVENTS: usize = 200;

/// Shared by every task of the service.
pub struct Shared {
    snapshot: RwLock<Snapshot>,
    events: broadcast::Sender<Event>,
    commands: mpsc::UnboundedSender<Command>,
    pub metrics: Metrics,
}

impl Shared {
    /// The shared state and the receiving end of the workers' command queue.
    pub fn new(snapshot: Snapshot) -> (Self, mpsc::UnboundedReceiver<Command>) {
        let (commands, receiver) = mpsc::unbounded_channel();
        let (events, _) = broadcast::channel(1024);
        let shared = Shared {
            snapshot: RwLock::new(snapshot),
            events,
            commands,
            metrics: Metrics::default(),
        };
        (shared, receiver)
    }

    /// A copy of the current state (cheap enough at 1,000 tenants for a request).
    pub fn snapshot(&self) -> Snapshot {
        self.snapshot.read().expect("state lock poisoned").clone()
    }

    /// Reads without copying.
    pub fn read<T>(&self, f: impl FnOnce(&Snapshot) -> T) -> T {
        f(&self.snapshot.read().expect("state lock poisoned"))
    }

    /// Changes the state; workers only.
    pub fn update<T>(&self, f: impl FnOnce(&mut Snapshot) -> T) -> T {
        f(&mut self.snapshot.write().expect("state lock poisoned"))
    }

    /// Records an event (kept in the snapshot's recent events, sent to SSE subscribers).
    pub fn publish(&self, mut event: Event) {
        self.update(|snapshot| {
            snapshot.next_event_id += 1;
            event.id = snapshot.next_event_id;
            if snapshot.recent_events.len() == RECENT_EVENTS {
                snapshot.recent_events.pop_front();
            }
            snapshot.recent_events.push_back(event.clone());
        });
        // No subscriber is not an error.
        let _ = self.events.send(event);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Enqueues work for the workers; false when the service is shutting down.
    pub fn enqueue(&self, command: Command) -> bool {
        self.commands.send(command).is_ok()
    }
}

/// What HTTP handlers may ask the workers to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Reconcile one tenant (`NS/DB`), or all of them.
    Reconcile { tenant: Option<String> },
    /// Fetch the git remote now (a verified webhook).
    FetchNow,
}

/// The whole state, as `GET /api/v1/...`, `/metrics` and the page show it.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct Snapshot {
    pub leader: LeaderState,
    /// This instance's identity (host name and process id), as the leader lock records it.
    pub instance: String,
    pub started_at: String,
    pub source: SourceStatus,
    /// By cluster name.
    pub clusters: BTreeMap<String, ClusterStatus>,
    /// By tenant, `NS/DB`.
    pub tenants: BTreeMap<String, TenantStatus>,
    /// Oldest first.
    #[schema(value_type = Vec<Event>)]
    pub recent_events: VecDeque<Event>,
    #[serde(skip)]
    pub next_event_id: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum LeaderState {
    /// Not yet known (connecting to the cluster).
    #[default]
    Starting,
    /// Holds the lock: reconciles and runs schedules.
    Active,
    /// Another instance holds the lock: serves reads, reconciles nothing, readiness 503.
    Standby,
}

/// Where the declared state comes from and how reading it went.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct SourceStatus {
    /// `directory` or `git`.
    pub kind: String,
    /// The directory, or the remote URL (without credentials) and branch.
    pub location: String,
    /// The git commit SHA being served (directory: none).
    pub revision: Option<String>,
    /// When the source was last read successfully (RFC 3339).
    pub last_read_at: Option<String>,
    /// Why the last read failed; the last good state is still served.
    pub error: Option<String>,
    /// Located problems of the values files served (errors keep those tenants as they were).
    pub diagnostics: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct ClusterStatus {
    pub name: String,
    /// host:port applications connect to.
    pub endpoint: String,
    pub reachable: bool,
    pub last_reconcile_at: Option<String>,
    /// Whether the last reconcile of this cluster had no failed tenant.
    pub last_reconcile_ok: Option<bool>,
    pub last_error: Option<String>,
    /// The last successful backup: kind (`full`, `diff`, `incr`) and time.
    pub last_backup: Option<BackupStatus>,
    /// Each database's last backup, as last read from the backups (tenants show theirs).
    #[serde(skip)]
    pub backups_by_database: BTreeMap<String, BackupStatus>,
    /// The last full drift pass: when it finished and how long it took.
    pub last_drift_pass_at: Option<String>,
    pub last_drift_pass_ms: Option<u64>,
    pub held_drops: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct BackupStatus {
    /// `full`, `diff`, `incr`, or `logical` (a tenant's own dump).
    pub kind: String,
    /// When it finished (RFC 3339).
    pub at: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TenantState {
    /// Declared, not reconciled yet by this instance.
    #[default]
    Pending,
    InSync,
    /// Found different from the declaration; repaired by the next reconcile.
    Drifted,
    /// The last reconcile failed; retried with backoff.
    Failed,
    /// Its drop is held by a guard (reported, never forced).
    Held,
    /// Its values file has errors: kept as it was.
    Invalid,
}

impl TenantState {
    pub const ALL: [TenantState; 6] = [
        TenantState::Pending,
        TenantState::InSync,
        TenantState::Drifted,
        TenantState::Failed,
        TenantState::Held,
        TenantState::Invalid,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TenantState::Pending => "pending",
            TenantState::InSync => "in-sync",
            TenantState::Drifted => "drifted",
            TenantState::Failed => "failed",
            TenantState::Held => "held",
            TenantState::Invalid => "invalid",
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct TenantStatus {
    /// `NS/DB`.
    pub tenant: String,
    pub database: String,
    pub cluster: String,
    pub state: TenantState,
    pub preset: String,
    pub mode: String,
    /// The values file declaring it, relative to the repo.
    pub file: Option<String>,
    /// What the last plan found different (one line per pending operation).
    pub drift: Vec<String>,
    pub last_applied_revision: Option<String>,
    pub last_applied_at: Option<String>,
    pub last_verified_at: Option<String>,
    pub last_error: Option<String>,
    /// When a failed tenant is tried again (RFC 3339).
    pub retry_at: Option<String>,
    /// When the last backup holding its database finished (RFC 3339): the newest pgBackRest
    /// backup that has it, or its own logical dump if newer.
    pub last_backup_at: Option<String>,
    pub size_bytes: Option<i64>,
    pub connections: Option<i32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    /// A tenant was reconciled (changes applied, or verified in sync).
    Reconciled,
    /// A tenant's reconcile failed.
    Failed,
    /// Drift was found (and repaired by the same pass unless it failed).
    Drift,
    /// A drop was held by a guard.
    Held,
    /// The source could not be read; the last good state stays.
    SourceError,
    /// A new revision of the source was read.
    SourceChanged,
    Backup,
    Rotation,
    /// This instance became active or standby.
    Leader,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Event {
    /// Increasing; the SSE event id.
    pub id: u64,
    pub at: String,
    pub kind: EventKind,
    pub tenant: Option<String>,
    pub cluster: Option<String>,
    /// The commit SHA applied (git source).
    pub revision: Option<String>,
    pub message: String,
    pub duration_ms: Option<u64>,
}
