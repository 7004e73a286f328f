//! Scheduled password rotation (`serve.rotateEvery`, e.g. `90d`): every login of every tenant in
//! sync gets a new password with grace (its second login takes over, the credentials apps hold
//! keep working until the next rotation), by the engine's crash-safe [`Rotator`], under the apply
//! lock. When each login was last rotated is kept in a small file of the state directory; a
//! login seen for the first time starts its period then (starting the service never rotates
//! everything at once).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use pgtenant_engine::rotate::Rotator;
use pgtenant_engine::{ApplyLock, Desired, Reconciler};
use tokio::sync::watch;

use crate::source::Revision;
use crate::state::{EventKind, Shared, TenantState};

/// How often the rotation schedule is looked at (in memory; the record is written only when it
/// changes): a rotation that fell due while the service was stopped runs within this of the
/// start, once its tenant is in sync.
pub const CHECK_EVERY: Duration = Duration::from_secs(5);

pub struct Rotation {
    pub shared: Arc<Shared>,
    pub cluster: String,
    pub reconciler: Reconciler,
    pub every: Duration,
    /// `<state-dir>/serve/rotations.json`: login → last rotation (seconds since the epoch).
    pub record: PathBuf,
    pub revisions: watch::Receiver<Option<Arc<Revision>>>,
    pub active: watch::Receiver<bool>,
    pub shutdown: watch::Receiver<bool>,
}

/// What to do with one login.
#[derive(Debug, PartialEq, Eq)]
pub enum Due {
    /// First seen: its period starts now.
    Start,
    Rotate,
    Wait,
}

pub fn due(last: Option<u64>, now: u64, every: Duration) -> Due {
    match last {
        None => Due::Start,
        Some(last) if now.saturating_sub(last) >= every.as_secs() => Due::Rotate,
        Some(_) => Due::Wait,
    }
}

fn epoch_seconds() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

impl Rotation {
    pub async fn run(mut self) {
        loop {
            tokio::select! {
                _ = self.shutdown.changed() => return,
                _ = tokio::time::sleep(CHECK_EVERY) => {}
            }
            if *self.active.borrow() {
                self.check().await;
            }
        }
    }

    fn load(&self) -> BTreeMap<String, u64> {
        std::fs::read(&self.record)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    }

    fn save(&self, record: &BTreeMap<String, u64>) {
        let write = || -> std::io::Result<()> {
            if let Some(dir) = self.record.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let temporary = self.record.with_extension("json.tmp");
            std::fs::write(&temporary, serde_json::to_vec_pretty(record)?)?;
            std::fs::rename(&temporary, &self.record)
        };
        if let Err(error) = write() {
            tracing::warn!(%error, file = %self.record.display(), "recording rotations");
        }
    }

    async fn check(&self) {
        let Some(revision) = self.revisions.borrow().clone() else {
            return;
        };
        let desired = Desired::from_repo(&revision.repo);
        let loaded = self.load();
        let mut record = loaded.clone();
        let now = epoch_seconds();
        for tenant in &desired.tenants {
            let in_sync = self.shared.read(|s| {
                s.tenants
                    .get(&tenant.id)
                    .is_some_and(|t| t.state == TenantState::InSync)
            });
            if !in_sync {
                continue;
            }
            for role in tenant.login_roles() {
                let key = format!("{}/{}", tenant.id, role.kind.as_str());
                match due(record.get(&key).copied(), now, self.every) {
                    Due::Wait => {}
                    Due::Start => {
                        record.insert(key, now);
                    }
                    Due::Rotate => {
                        if *self.shutdown.borrow() || !*self.active.borrow() {
                            if record != loaded {
                                self.save(&record);
                            }
                            return;
                        }
                        let result = async {
                            let _lock = ApplyLock::acquire(&self.reconciler.connector).await?;
                            Rotator {
                                connector: &self.reconciler.connector,
                                store: self.reconciler.store.as_ref(),
                            }
                            .rotate(tenant, role.kind, true)
                            .await
                        }
                        .await;
                        if let (Ok(_), Some(pooler)) = (&result, &self.reconciler.pooler) {
                            // The new password must work through the pooler at once (its auth
                            // file holds each login's verifier); the rotation stands either way.
                            if let Err(error) = pooler
                                .sync(
                                    &self.reconciler.connector,
                                    &desired,
                                    self.reconciler.store.as_ref(),
                                )
                                .await
                            {
                                tracing::warn!(tenant = %tenant.id, %error, "the pooler could not be updated after a rotation");
                            }
                        }
                        let message = match result {
                            Ok(rotated) => {
                                record.insert(key, now);
                                format!(
                                    "{} rotated (grace): the store names {} now",
                                    role.kind.as_str(),
                                    rotated.username
                                )
                            }
                            Err(error) => format!(
                                "rotating {}: {}; tried again later",
                                role.kind.as_str(),
                                pgtenant_engine::error_chain(&error)
                            ),
                        };
                        tracing::info!(tenant = %tenant.id, %message, "scheduled rotation");
                        self.shared.publish(
                            crate::event(EventKind::Rotation, Some(&tenant.id), None, message)
                                .with_cluster(&self.cluster),
                        );
                    }
                }
            }
        }
        if record != loaded {
            self.save(&record);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_login_is_rotated_once_its_period_is_over() {
        let every = Duration::from_secs(90 * 86_400);
        assert_eq!(due(None, 1_000, every), Due::Start);
        assert_eq!(due(Some(1_000), 1_000 + 89 * 86_400, every), Due::Wait);
        assert_eq!(due(Some(1_000), 1_000 + 90 * 86_400, every), Due::Rotate);
    }
}
