//! A local directory: re-read when the file system says something below it changed (inotify
//! through `notify`, debounced so that an editor's or `git pull`'s burst of writes is one read),
//! and every poll interval in any case — the fallback for file systems without events (NFS,
//! some container mounts) and for a directory that disappeared and came back.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use notify_debouncer_mini::notify::{RecommendedWatcher, RecursiveMode};
use notify_debouncer_mini::{new_debouncer, DebounceEventResult, Debouncer};
use tokio::sync::mpsc;

use super::{refuse_empty, Revision, SourceTask};

/// How long a burst of file events is gathered before the directory is read.
pub const DEBOUNCE: Duration = Duration::from_millis(100);

/// What the watcher thread reports: the newest modification time among the changed paths.
type Changed = Option<SystemTime>;

pub(super) async fn run(mut task: SourceTask, root: PathBuf) {
    let (events, mut changed) = mpsc::unbounded_channel::<Changed>();
    let mut watcher: Option<Debouncer<RecommendedWatcher>> = None;
    let mut seen_at = SystemTime::now();
    loop {
        if watcher.is_none() {
            watcher = watch(&root, events.clone());
        }
        let read = {
            let root = root.clone();
            tokio::task::spawn_blocking(move || read(&root)).await
        };
        match read {
            Ok(Ok(repo)) => task.read_ok(Revision {
                repo,
                revision: None,
                seen_at,
            }),
            Ok(Err(error)) => {
                // The watch of a directory that went away watches nothing any more.
                watcher = None;
                task.read_failed(error);
            }
            Err(panicked) => task.read_failed(format!("reading the directory: {panicked}")),
        }
        let poll = *task.poll_interval.borrow();
        tokio::select! {
            _ = task.shutdown.changed() => return,
            event = changed.recv() => {
                let mut newest = event.flatten();
                // Whatever else arrived meanwhile is part of the same read.
                while let Ok(more) = changed.try_recv() {
                    newest = newest.max(more);
                }
                seen_at = newest.unwrap_or_else(|| SystemTime::now() - DEBOUNCE);
            }
            woken = task.wake.recv() => {
                if woken.is_none() {
                    return;
                }
                seen_at = SystemTime::now();
            }
            _ = tokio::time::sleep(poll) => seen_at = SystemTime::now(),
        }
    }
}

/// The repo, or why it is not served.
fn read(root: &Path) -> Result<pgtenant_spec::LoadedRepo, String> {
    let repo = pgtenant_spec::load_repo(root).map_err(|e| {
        format!(
            "reading the apps repo {}: {}",
            root.display(),
            pgtenant_engine::error_chain(&e)
        )
    })?;
    refuse_empty(&repo)?;
    Ok(repo)
}

/// Watches `root` recursively; None when events are not available (then polling alone reads it).
fn watch(
    root: &Path,
    events: mpsc::UnboundedSender<Changed>,
) -> Option<Debouncer<RecommendedWatcher>> {
    let handler = move |result: DebounceEventResult| {
        let newest = match result {
            Ok(changed) => changed
                .iter()
                .filter_map(|event| std::fs::metadata(&event.path).ok()?.modified().ok())
                .max(),
            // A lost event is still a reason to read.
            Err(_) => None,
        };
        let _ = events.send(newest);
    };
    let mut debouncer = match new_debouncer(DEBOUNCE, handler) {
        Ok(debouncer) => debouncer,
        Err(error) => {
            tracing::warn!(%error, "no file-system events; polling the directory instead");
            return None;
        }
    };
    match debouncer.watcher().watch(root, RecursiveMode::Recursive) {
        Ok(()) => Some(debouncer),
        Err(error) => {
            tracing::info!(%error, dir = %root.display(), "cannot watch the directory; polling it");
            None
        }
    }
}
