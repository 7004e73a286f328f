//! `pgtenant serve` as a whole: the tasks, their channels, signals and the order of shutdown.
//!
//! ```text
//!  source ──revisions──▶ worker ◀──commands── dispatcher ◀── Shared::enqueue (HTTP)
//!     ▲                    │ ▲                    │
//!     └────── wake ────────┼─┼────────────────────┘
//!  leader ──active──▶ worker, scheduler          HTTP ── reads Shared
//! ```
//!
//! SIGTERM (or SIGINT): the worker finishes the batch in flight (each tenant's transaction
//! commits or rolls back whole, nothing is cut off) and stops, then the leader lock is released,
//! then HTTP stops; `run` returns Ok. SIGHUP re-reads the config: intervals and schedules.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use pgtenant_engine::plan::DropGuard;
use pgtenant_engine::Reconciler;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, watch};

use crate::http::{HttpError, HttpSettings};
use crate::leader::Leader;
use crate::schedule::{BackupJobs, Scheduler, Schedules};
use crate::source::{SourceSettings, SourceTask};
use crate::state::{ClusterStatus, Command, EventKind, Shared, Snapshot, SourceStatus};
use crate::worker::{Worker, WorkerSettings};

/// How long shutdown waits for the batch in flight before it lets go regardless (the process
/// exiting ends its sessions, and the server rolls back what they had open).
pub const SHUTDOWN_WAIT: Duration = Duration::from_secs(8);

pub struct ServeSettings {
    pub source: SourceSettings,
    pub http: HttpSettings,
    pub drift_interval: Duration,
    pub poll_interval: Duration,
    /// The cluster's name (`default` without a config) and where applications connect.
    pub cluster: String,
    pub endpoint: String,
    pub reconciler: Reconciler,
    pub guard: DropGuard,
    /// pgBackRest backups on schedule; None when the cluster has no pgBackRest setup.
    pub backups: Option<(Arc<dyn BackupJobs>, Schedules)>,
    /// `<state-dir>/serve/schedule.json`: when the backup schedules last ran (the catch-up).
    pub schedule_record: std::path::PathBuf,
    /// `rotateEvery` and the file that records the rotations; None: no scheduled rotation.
    pub rotation: Option<(Duration, std::path::PathBuf)>,
}

/// What SIGHUP re-reads from the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    pub drift_interval: Duration,
    pub poll_interval: Duration,
    pub schedules: Schedules,
}

pub type Reload = Box<dyn Fn() -> Result<Reloaded, String> + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("installing the signal handlers")]
    Signals(#[source] std::io::Error),
}

/// Runs the service until SIGTERM or SIGINT. `bound` is told the HTTP address once listening.
pub async fn run(
    settings: ServeSettings,
    reload: Reload,
    bound: impl FnOnce(SocketAddr) + Send + 'static,
) -> Result<(), ServeError> {
    let mut terminate = signal(SignalKind::terminate()).map_err(ServeError::Signals)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(ServeError::Signals)?;
    let mut hangup = signal(SignalKind::hangup()).map_err(ServeError::Signals)?;

    let snapshot = Snapshot {
        instance: crate::instance(),
        started_at: crate::now(),
        source: SourceStatus {
            kind: settings.source.kind().to_string(),
            location: settings.source.location(),
            ..SourceStatus::default()
        },
        clusters: [(
            settings.cluster.clone(),
            ClusterStatus {
                name: settings.cluster.clone(),
                endpoint: settings.endpoint.clone(),
                ..ClusterStatus::default()
            },
        )]
        .into(),
        ..Snapshot::default()
    };
    let (shared, mut commands) = Shared::new(snapshot);
    let shared = Arc::new(shared);
    if let Some(pooler) = &settings.reconciler.pooler {
        shared
            .metrics
            .watch_pgbouncer(&settings.cluster, pooler.clone());
    }

    let (shutdown_tx, shutdown) = watch::channel(false);
    let (http_stop_tx, mut http_stop) = watch::channel(false);
    let (active_tx, active) = watch::channel(false);
    let (worker_done_tx, worker_done) = watch::channel(false);
    let (revisions_tx, revisions) = watch::channel(None);
    let rotation_revisions = revisions.clone();
    let (wake_tx, wake) = mpsc::unbounded_channel();
    let (worker_commands_tx, worker_commands) = mpsc::unbounded_channel();
    let (worker_settings_tx, worker_settings) = watch::channel(WorkerSettings {
        drift_interval: settings.drift_interval,
    });
    let (poll_tx, poll_interval) = watch::channel(settings.poll_interval);
    let (schedules_tx, schedules) = watch::channel(
        settings
            .backups
            .as_ref()
            .map(|(_, s)| s.clone())
            .unwrap_or_default(),
    );

    let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
    let mut http = tokio::spawn(crate::http::run(
        shared.clone(),
        settings.http.clone(),
        move |address| {
            bound(address);
            let _ = bound_tx.send(());
        },
        async move {
            while !*http_stop.borrow() {
                if http_stop.changed().await.is_err() {
                    break;
                }
            }
        },
    ));
    // Nothing else starts before the address is bound: a second instance on the same port
    // fails here, before it touches the cluster.
    if bound_rx.await.is_err() {
        return match http.await {
            Ok(Err(error)) => Err(error.into()),
            _ => Ok(()),
        };
    }

    let leader = tokio::spawn(
        Leader {
            shared: shared.clone(),
            cluster: settings.cluster.clone(),
            connector: settings.reconciler.connector.clone(),
            active: active_tx,
            shutdown: shutdown.clone(),
            worker_done,
        }
        .run(),
    );
    let source_kind = settings.source.kind();
    let source = tokio::spawn(
        SourceTask {
            shared: shared.clone(),
            settings: settings.source.clone(),
            poll_interval,
            wake,
            revisions: revisions_tx,
            shutdown: shutdown.clone(),
        }
        .run(),
    );
    let mut worker = tokio::spawn(
        Worker {
            shared: shared.clone(),
            cluster: settings.cluster.clone(),
            reconciler: settings.reconciler.clone(),
            guard: settings.guard.clone(),
            source_kind,
            settings: worker_settings,
            revisions,
            commands: worker_commands,
            active: active.clone(),
            shutdown: shutdown.clone(),
        }
        .run(),
    );
    let scheduler = settings.backups.as_ref().map(|(jobs, _)| {
        tokio::spawn(
            Scheduler {
                shared: shared.clone(),
                cluster: settings.cluster.clone(),
                jobs: jobs.clone(),
                schedules,
                record: settings.schedule_record.clone(),
                active: active.clone(),
                shutdown: shutdown.clone(),
            }
            .run(),
        )
    });
    let rotation = settings.rotation.clone().map(|(every, record)| {
        tokio::spawn(
            crate::rotation::Rotation {
                shared: shared.clone(),
                cluster: settings.cluster.clone(),
                reconciler: settings.reconciler.clone(),
                every,
                record,
                revisions: rotation_revisions,
                active: active.clone(),
                shutdown: shutdown.clone(),
            }
            .run(),
        )
    });
    let dispatcher = {
        let mut shutdown = shutdown.clone();
        let wake_tx = wake_tx.clone();
        tokio::spawn(async move {
            loop {
                let command = tokio::select! {
                    _ = shutdown.changed() => return,
                    command = commands.recv() => command,
                };
                match command {
                    Some(Command::Reconcile { tenant }) => {
                        // Everything: read the source first, so the newest state is what runs.
                        if tenant.is_none() {
                            let _ = wake_tx.send(());
                        }
                        let _ = worker_commands_tx.send(tenant);
                    }
                    Some(Command::FetchNow) => {
                        let _ = wake_tx.send(());
                    }
                    None => return,
                }
            }
        })
    };

    let http_result = loop {
        tokio::select! {
            _ = terminate.recv() => break None,
            _ = interrupt.recv() => break None,
            _ = hangup.recv() => match reload() {
                Ok(reloaded) => {
                    tracing::info!(?reloaded, "configuration reloaded");
                    worker_settings_tx.send_replace(WorkerSettings {
                        drift_interval: reloaded.drift_interval,
                    });
                    poll_tx.send_replace(reloaded.poll_interval);
                    schedules_tx.send_replace(reloaded.schedules);
                    shared.publish(crate::event(
                        EventKind::Leader,
                        None,
                        None,
                        "configuration reloaded (SIGHUP)".into(),
                    ));
                }
                Err(error) => {
                    tracing::warn!(%error, "reloading the configuration failed; the running one stays");
                }
            },
            finished = &mut http => break Some(finished),
            // The worker ends on its own only when its channels close: nothing left to do.
            _ = &mut worker => break None,
        }
    };

    tracing::info!("shutting down: finishing the reconcile in flight");
    shutdown_tx.send_replace(true);
    if !worker.is_finished()
        && tokio::time::timeout(SHUTDOWN_WAIT, &mut worker)
            .await
            .is_err()
    {
        tracing::warn!("the reconcile in flight did not finish in time; stopping anyway");
        worker.abort();
    }
    // A rotation in flight finishes like a reconcile does.
    if let Some(rotation) = rotation {
        if tokio::time::timeout(SHUTDOWN_WAIT, rotation).await.is_err() {
            tracing::warn!("the rotation in flight did not finish in time");
        }
    }
    worker_done_tx.send_replace(true);
    let _ = leader.await;
    let _ = source.await;
    let _ = dispatcher.await;
    if let Some(scheduler) = scheduler {
        scheduler.abort();
    }
    http_stop_tx.send_replace(true);
    let finished = match http_result {
        Some(finished) => finished,
        None => http.await,
    };
    match finished {
        Ok(result) => result.map_err(ServeError::from),
        Err(_) => Ok(()),
    }
}
