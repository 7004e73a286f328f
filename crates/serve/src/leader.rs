//! One active instance per cluster: the active one holds a session-level advisory lock in the
//! control database ([`pgtenant_engine::LeaderLock`]) on a session of its own, kept open. The
//! others are hot standbys: they serve reads (readiness 503) and try for the lock every
//! [`POLL`], so when the active one dies — its session ends with it, and the server releases the
//! lock — one of them is active within about a second. The active one checks its session as
//! often: a lost session (the server restarted, the network cut) means it steps down at once.

use std::sync::Arc;
use std::time::Duration;

use pgtenant_engine::{Connector, LeaderLock};
use tokio::sync::watch;

use crate::state::{EventKind, LeaderState, Shared};

/// How often a standby tries for the lock and the active one checks it still has it.
pub const POLL: Duration = Duration::from_secs(1);

pub struct Leader {
    pub shared: Arc<Shared>,
    pub cluster: String,
    pub connector: Arc<Connector>,
    pub active: watch::Sender<bool>,
    pub shutdown: watch::Receiver<bool>,
    /// Turns true once the worker has stopped: only then is the lock let go.
    pub worker_done: watch::Receiver<bool>,
}

impl Leader {
    pub async fn run(mut self) {
        let label = format!(
            "pgtenant serve {}",
            self.shared.read(|s| s.instance.clone())
        );
        // The session is kept between attempts: a standby does not reconnect every second.
        let mut lock: Option<LeaderLock> = None;
        let mut last_error: Option<String> = None;
        loop {
            if *self.shutdown.borrow() {
                break;
            }
            match self.step(&mut lock, &label).await {
                Ok(()) => last_error = None,
                Err(message) => {
                    if lock.as_ref().is_some_and(LeaderLock::is_held)
                        || self.shared.read(|s| s.leader) == LeaderState::Active
                    {
                        self.set(
                            LeaderState::Standby,
                            "lost the leader lock's session: standing by",
                        );
                    }
                    lock = None;
                    if last_error.as_deref() != Some(message.as_str()) {
                        tracing::warn!(cluster = %self.cluster, error = %message, "cannot take the leader lock");
                        let cluster = self.cluster.clone();
                        let shown = message.clone();
                        self.shared.update(|s| {
                            let status = s.clusters.entry(cluster.clone()).or_default();
                            status.name = cluster;
                            status.reachable = false;
                            status.last_error = Some(shown);
                        });
                    }
                    last_error = Some(message);
                }
            }
            tokio::select! {
                _ = self.shutdown.changed() => {}
                _ = tokio::time::sleep(POLL) => {}
            }
        }
        // The worker finishes the batch in flight before the lock goes.
        while !*self.worker_done.borrow() {
            if self.worker_done.changed().await.is_err() {
                break;
            }
        }
        drop(lock);
    }

    /// One look: connect if needed, check a held lock's session, or try for the lock.
    async fn step(&self, lock: &mut Option<LeaderLock>, label: &str) -> Result<(), String> {
        let error = |e: pgtenant_engine::EngineError| pgtenant_engine::error_chain(&e);
        if lock.is_none() {
            *lock = Some(
                LeaderLock::connect(&self.connector, label)
                    .await
                    .map_err(error)?,
            );
        }
        let session = lock.as_mut().expect("connected above");
        if session.is_held() {
            if !session.is_alive().await {
                return Err("the leader lock's session ended".into());
            }
            return Ok(());
        }
        if session.try_acquire().await.map_err(error)? {
            self.set(LeaderState::Active, "holds the leader lock: active");
        } else if self.shared.read(|s| s.leader) != LeaderState::Standby {
            self.set(
                LeaderState::Standby,
                "another instance is active: standing by",
            );
        }
        Ok(())
    }

    fn set(&self, state: LeaderState, message: &str) {
        tracing::info!(cluster = %self.cluster, "{message}");
        self.shared.update(|s| s.leader = state);
        self.active.send_replace(state == LeaderState::Active);
        self.shared.publish(
            crate::event(EventKind::Leader, None, None, message.to_string())
                .with_cluster(&self.cluster),
        );
    }
}
