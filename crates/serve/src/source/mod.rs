//! Where the declared state comes from: a local directory (file-system events, with polling as
//! the fallback) or a git remote (fetched every poll interval and on a verified webhook, read
//! straight from the fetched commit's tree).
//!
//! A source hands the worker whole revisions (a [`Revision`]: the repo read and the commit it
//! came from); the worker finds which tenants changed. A source that cannot be read — a missing
//! directory, an unreachable remote, a folder without any values file — is never an empty repo:
//! no revision is sent, the last good one stays, and the error is reported.

pub mod directory;
pub mod git;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use pgtenant_spec::LoadedRepo;
use tokio::sync::{mpsc, watch};

use crate::state::{EventKind, Shared};

/// One read of the source that succeeded.
#[derive(Debug)]
pub struct Revision {
    pub repo: LoadedRepo,
    /// The git commit SHA (directory: None).
    pub revision: Option<String>,
    /// When the change was first seen (the file event, the fetch that found the commit): where
    /// the change-to-applied latency is measured from.
    pub seen_at: SystemTime,
}

/// Which source, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSettings {
    Directory {
        root: PathBuf,
    },
    Git {
        /// A URL or path git understands (`https://`, `ssh://`, `file://`, `/srv/apps.git`).
        remote: String,
        branch: String,
        /// Where the fetched objects are kept (a bare repository, created on first use).
        mirror: PathBuf,
        /// CA bundle (PEM) that verifies an `https://` remote, besides the system's.
        ca_file: Option<PathBuf>,
    },
}

impl SourceSettings {
    pub fn kind(&self) -> &'static str {
        match self {
            SourceSettings::Directory { .. } => "directory",
            SourceSettings::Git { .. } => "git",
        }
    }

    /// Shown in the snapshot: never with credentials.
    pub fn location(&self) -> String {
        match self {
            SourceSettings::Directory { root } => root.display().to_string(),
            SourceSettings::Git { remote, branch, .. } => {
                format!("{} ({branch})", crate::http::scrub::text(remote))
            }
        }
    }
}

/// What a source task is given.
pub struct SourceTask {
    pub shared: Arc<Shared>,
    pub settings: SourceSettings,
    /// The poll interval (changed by a reload).
    pub poll_interval: watch::Receiver<Duration>,
    /// Read now (the git webhook, `POST /api/v1/reconcile` of everything).
    pub wake: mpsc::UnboundedReceiver<()>,
    pub revisions: watch::Sender<Option<Arc<Revision>>>,
    pub shutdown: watch::Receiver<bool>,
}

impl SourceTask {
    pub async fn run(self) {
        match self.settings.clone() {
            SourceSettings::Directory { root } => directory::run(self, root).await,
            SourceSettings::Git {
                remote,
                branch,
                mirror,
                ca_file,
            } => {
                let remote = git::Remote {
                    url: remote,
                    branch,
                    mirror,
                    ca_file,
                };
                git::run(self, remote).await
            }
        }
    }

    /// Records a successful read and hands it to the worker when it differs from the last one.
    fn read_ok(&self, revision: Revision) {
        let now = crate::now();
        let diagnostics: Vec<String> = revision
            .repo
            .diagnostics
            .iter()
            .map(|d| d.to_string())
            .collect();
        let changed = self.revisions.borrow().as_ref().is_none_or(|last| {
            last.revision != revision.revision
                || last.repo.databases != revision.repo.databases
                || last.repo.diagnostics != revision.repo.diagnostics
        });
        let sha = revision.revision.clone();
        self.shared.update(|snapshot| {
            let source = &mut snapshot.source;
            source.error = None;
            source.last_read_at = Some(now.clone());
            source.revision = sha.clone();
            source.diagnostics = diagnostics;
        });
        if changed {
            let message = match &sha {
                Some(sha) => format!("read commit {sha}"),
                None => format!("read {} values file(s)", revision.repo.files_read.len()),
            };
            // Since the change was seen: the debounce and the read, the first part of the
            // change-to-applied latency.
            let since_seen_ms = SystemTime::now()
                .duration_since(revision.seen_at)
                .unwrap_or_default()
                .as_secs_f64()
                * 1000.0;
            tracing::info!(
                revision = sha.as_deref().unwrap_or(""),
                since_seen_ms,
                "source changed"
            );
            self.shared
                .publish(crate::event(EventKind::SourceChanged, None, sha, message));
            self.revisions.send_replace(Some(Arc::new(revision)));
        }
    }

    /// Records a failed read: the last good revision stays.
    fn read_failed(&self, error: String) {
        let kind = self.settings.kind();
        self.shared
            .metrics
            .source_errors
            .get_or_create(&crate::metrics::SourceLabel {
                source: kind.to_string(),
            })
            .inc();
        let repeated = self
            .shared
            .read(|s| s.source.error.as_deref() == Some(&error));
        if !repeated {
            tracing::warn!(source = kind, %error, "the source cannot be read; the last good state stays");
            self.shared.publish(crate::event(
                EventKind::SourceError,
                None,
                None,
                format!("{error}; nothing is dropped, the last good state stays"),
            ));
        }
        self.shared
            .update(|snapshot| snapshot.source.error = Some(error));
    }
}

/// A repo read that is not to be served: it has no values file at all (a wrong or emptied
/// directory, a branch without the apps), which would drop every tenant.
fn refuse_empty(repo: &LoadedRepo) -> Result<(), String> {
    repo.ensure_apps_repo()
        .map_err(|e| format!("{e}; a source without values files is never served as an empty repo"))
}
