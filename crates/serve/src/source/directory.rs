//! A local directory: re-read when the file system says something below it changed (inotify
//! through `notify`), and every poll interval in any case — the fallback for file systems
//! without events (NFS, some container mounts) and for a directory that disappeared and came back.
//!
//! Events are gathered from the first one until the whole directory has been quiet for
//! [`DEBOUNCE`] (at most [`DEBOUNCE_MAX`] after the first): an editor's save, a `git pull` or a
//! copy is one read, taken as soon as the burst is over rather than a fixed time after each
//! path's last event. Events that arrive while a read runs make the next read.
//!
//! Reads are incremental: every values file's checked result is kept ([`Files`]) with the hash
//! of its text, a file event re-reads only the values files it names (a folder created, moved
//! or removed lists the folders again, reading only the files new to the list), and a file
//! whose text did not change is not parsed again. The poll and a wake-up re-read every file
//! (parsing only the changed ones): the safety net for a lost event. Every file is read by
//! the spec's own single-file reader, so symlinks out of the repo, FIFOs and devices are refused
//! exactly as `pgtenant apply` refuses them, and a file that cannot be read is an error that
//! holds its tenants, never a removal.

use std::collections::BTreeMap;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime};

use notify::{RecommendedWatcher, RecursiveMode, Watcher as _};
use pgtenant_spec::{CheckedValuesFile, LoadOptions, LoadedRepo, VALUES_FILES};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tracing::Instrument as _;

use super::{refuse_empty, Revision, SourceTask};

/// How long the directory must be quiet after a file event before it is read. One writer's
/// burst (a `git checkout`, a copy, a truncate-and-write) has gaps of microseconds to a few
/// milliseconds between its writes; 50 ms of quiet keeps it one read, where reading on the very
/// first event could see a file truncated but not yet written, or a tenant moved out of one file
/// and not yet into the other.
pub const DEBOUNCE: Duration = Duration::from_millis(50);
/// The longest a read waits for quiet after the first event: a directory that is never quiet
/// (something writes below it all the time) is still read.
pub const DEBOUNCE_MAX: Duration = Duration::from_secs(1);

/// What the watcher thread reports: the changed paths and when the event came, or None when
/// events were lost (then everything is read again).
type Changed = Option<(Vec<PathBuf>, SystemTime)>;

pub(super) async fn run(mut task: SourceTask, root: PathBuf) {
    let (events, mut changed) = mpsc::unbounded_channel::<Changed>();
    let mut watcher: Option<RecommendedWatcher> = None;
    let mut seen_at = SystemTime::now();
    let mut files = Some(Files::new(root.clone()));
    // None: read every file; Some: only these paths changed.
    let mut paths: Option<Vec<PathBuf>> = None;
    loop {
        if watcher.is_none() {
            watcher = watch(&root, events.clone());
        }
        let mut cache = files.take().unwrap_or_else(|| Files::new(root.clone()));
        let parsed_before = cache.parsed;
        let started = std::time::Instant::now();
        let incremental = paths.as_ref().map(Vec::len);
        let read = tokio::task::spawn_blocking(move || {
            let read = match paths {
                Some(paths) => cache.read_changed(&paths),
                None => cache.read_all(),
            };
            (cache, read)
        })
        .instrument(tracing::info_span!("source_read"))
        .await;
        paths = None;
        tracing::debug!(
            ms = started.elapsed().as_secs_f64() * 1000.0,
            paths = ?incremental,
            "directory read"
        );
        match read {
            Ok((cache, read)) => {
                task.shared
                    .metrics
                    .source_files_parsed
                    .inc_by(cache.parsed - parsed_before);
                files = Some(cache);
                match read {
                    Ok(repo) => task.read_ok(Revision {
                        repo,
                        revision: None,
                        seen_at,
                    }),
                    Err(error) => {
                        // The watch of a directory that went away watches nothing any more.
                        watcher = None;
                        task.read_failed(error);
                    }
                }
            }
            Err(panicked) => task.read_failed(format!("reading the directory: {panicked}")),
        }
        let poll = *task.poll_interval.borrow();
        tokio::select! {
            _ = task.shutdown.changed() => return,
            event = changed.recv() => {
                let mut batch = vec![event.flatten()];
                // The burst goes on until the directory is quiet: all of it is one read.
                let cap = tokio::time::Instant::now() + DEBOUNCE_MAX;
                loop {
                    let quiet = (tokio::time::Instant::now() + DEBOUNCE).min(cap);
                    tokio::select! {
                        _ = task.shutdown.changed() => return,
                        more = changed.recv() => batch.push(more.flatten()),
                        _ = tokio::time::sleep_until(quiet) => break,
                    }
                }
                let mut first = None;
                let mut named = Some(Vec::new());
                for event in batch {
                    match event {
                        Some((changed, at)) => {
                            first = Some(first.map_or(at, |first: SystemTime| first.min(at)));
                            if let Some(named) = named.as_mut() {
                                named.extend(changed);
                            }
                        }
                        // Lost events: read everything.
                        None => named = None,
                    }
                }
                // After a failed read, everything is read again.
                if files.as_ref().is_some_and(|f| f.complete) {
                    paths = named.map(|mut named| {
                        named.sort();
                        named.dedup();
                        named
                    });
                }
                seen_at = first.unwrap_or_else(SystemTime::now);
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

/// One values file as last read.
struct Entry {
    /// The hash of its text (None: it could not be read, and is read again every time).
    hash: Option<[u8; 32]>,
    checked: CheckedValuesFile,
}

/// Every values file of the directory as last read, by path relative to the root (sorted, as
/// the spec's loader reads them).
pub(crate) struct Files {
    root: PathBuf,
    absolute: PathBuf,
    files: BTreeMap<PathBuf, Entry>,
    /// Whether `files` is the result of a successful read (else the next read is a full one).
    complete: bool,
    /// How many values files were parsed since the start (`pgtenant_source_files_parsed_total`).
    pub(crate) parsed: u64,
}

impl Files {
    pub(crate) fn new(root: PathBuf) -> Self {
        Files {
            absolute: std::path::absolute(&root).unwrap_or_else(|_| root.clone()),
            root,
            files: BTreeMap::new(),
            complete: false,
            parsed: 0,
        }
    }

    /// Lists every values file again and reads each one (parsing only changed texts).
    pub(crate) fn read_all(&mut self) -> Result<LoadedRepo, String> {
        self.complete = false;
        let options = self.options()?;
        let listed = self.list()?;
        self.files.retain(|path, _| listed.contains(path));
        for relative in &listed {
            self.refresh(relative, &options);
        }
        self.complete = true;
        self.repo()
    }

    /// Reads only what the events name: each values file named, and when a folder was
    /// created, moved or removed, the files that list differently (new ones read, gone ones
    /// dropped). Anything it cannot place is a reason to read everything.
    pub(crate) fn read_changed(&mut self, changed: &[PathBuf]) -> Result<LoadedRepo, String> {
        if !self.complete {
            return self.read_all();
        }
        let options = self.options()?;
        // A root that went away is not an empty repo: the same error as a full read.
        if !std::fs::metadata(&self.root).is_ok_and(|m| m.is_dir()) {
            return self.read_all();
        }
        let mut folders = Vec::new();
        let mut named = Vec::new();
        for path in changed {
            // notify names paths below the root made absolute.
            let Ok(relative) = path
                .strip_prefix(&self.absolute)
                .or_else(|_| path.strip_prefix(&self.root))
            else {
                return self.read_all();
            };
            // Dot folders and files are not read by the loader.
            if relative.components().any(
                |c| matches!(c, Component::Normal(name) if name.to_string_lossy().starts_with('.')),
            ) {
                continue;
            }
            let is_values_file = relative
                .file_name()
                .is_some_and(|name| VALUES_FILES.iter().any(|values| name == *values));
            if is_values_file {
                named.push(relative.to_path_buf());
                continue;
            }
            // A folder (now, or before: values files were listed below it) lists again.
            let was_folder = self
                .files
                .range(relative.to_path_buf()..)
                .next()
                .is_some_and(|(file, _)| file.starts_with(relative));
            let is_folder =
                std::fs::symlink_metadata(self.root.join(relative)).is_ok_and(|m| m.is_dir());
            if was_folder || is_folder {
                folders.push(relative.to_path_buf());
            }
        }
        self.complete = false;
        // Only below each folder named: the rest of the tree is as it was.
        for folder in folders {
            let listed = match self.entered(&folder) {
                Ok(true) => match pgtenant_spec::find_values_files(&self.root.join(&folder)) {
                    Ok(below) => below.into_iter().map(|file| folder.join(file)).collect(),
                    // Gone again, or unreadable: what a full read makes of it.
                    Err(_) => return self.read_all(),
                },
                Ok(false) => std::collections::BTreeSet::new(),
                Err(_) => return self.read_all(),
            };
            let gone: Vec<PathBuf> = self
                .files
                .range(folder.clone()..)
                .take_while(|(file, _)| file.starts_with(&folder))
                .filter(|(file, _)| !listed.contains(*file))
                .map(|(file, _)| file.clone())
                .collect();
            for file in gone {
                self.files.remove(&file);
            }
            for relative in &listed {
                if !self.files.contains_key(relative) {
                    self.refresh(relative, &options);
                }
            }
        }
        for relative in named {
            match self.listed(&relative) {
                Ok(true) => self.refresh(&relative, &options),
                Ok(false) => {
                    self.files.remove(&relative);
                }
                // An unreadable folder on the way: what a full read makes of it.
                Err(_) => return self.read_all(),
            }
        }
        self.complete = true;
        self.repo()
    }

    fn options(&self) -> Result<LoadOptions, String> {
        LoadOptions::from_env().map_err(|e| e.to_string())
    }

    /// Every values file below the root, as the spec's loader finds them.
    fn list(&self) -> Result<std::collections::BTreeSet<PathBuf>, String> {
        let listed = pgtenant_spec::find_values_files(&self.root).map_err(|e| self.error(&e))?;
        Ok(listed.into_iter().collect())
    }

    /// Whether the loader enters the folder `relative`: it and every folder above it a folder,
    /// not a link, and none named like a values file (dot folders are left out before).
    fn entered(&self, relative: &Path) -> io::Result<bool> {
        let mut at = self.root.clone();
        for component in relative.components() {
            at.push(component);
            let metadata = match std::fs::symlink_metadata(&at) {
                Ok(metadata) => metadata,
                Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(false),
                Err(error) => return Err(error),
            };
            let is_values_name = VALUES_FILES
                .iter()
                .any(|values| component.as_os_str() == *values);
            if !metadata.is_dir() || is_values_name {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Whether the loader would list `relative` (a values file's name): the folder it is in
    /// entered, and an entry of that name present, whatever its type.
    fn listed(&self, relative: &Path) -> io::Result<bool> {
        if !self.entered(relative.parent().unwrap_or(Path::new("")))? {
            return Ok(false);
        }
        match std::fs::symlink_metadata(self.root.join(relative)) {
            Ok(_) => Ok(true),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Reads `relative` with the spec's single-file reader; parses it when its text changed.
    fn refresh(&mut self, relative: &Path, options: &LoadOptions) {
        let text = pgtenant_spec::read_values_file_with(&self.root, relative, options);
        let hash = text
            .as_ref()
            .ok()
            .map(|text| Sha256::digest(text.as_bytes()).into());
        if let (Some(hash), Some(entry)) = (hash, self.files.get(relative)) {
            if entry.hash == Some(hash) {
                return;
            }
        }
        if hash.is_some() {
            self.parsed += 1;
        }
        let checked = CheckedValuesFile::check(relative, text);
        self.files
            .insert(relative.to_path_buf(), Entry { hash, checked });
    }

    /// The repo of the files as read, or why it is not served.
    fn repo(&self) -> Result<LoadedRepo, String> {
        let repo = pgtenant_spec::load_repo_from_checked(
            &self.root,
            self.files
                .iter()
                .map(|(path, entry)| (path.as_path(), &entry.checked)),
        );
        refuse_empty(&repo)?;
        Ok(repo)
    }

    fn error(&self, error: &pgtenant_spec::SpecError) -> String {
        format!(
            "reading the apps repo {}: {}",
            self.root.display(),
            pgtenant_engine::error_chain(error)
        )
    }
}

/// Watches `root` recursively; None when events are not available (then polling alone reads it).
/// Every event is sent on at once, with when it came; the source's loop gathers the burst.
fn watch(root: &Path, events: mpsc::UnboundedSender<Changed>) -> Option<RecommendedWatcher> {
    let handler = move |result: notify::Result<notify::Event>| {
        let changed = match result {
            // Reads and opens change nothing.
            Ok(event) if matches!(event.kind, notify::EventKind::Access(_)) => return,
            // An overflowed queue names no path: a reason to read everything.
            Ok(event) if event.need_rescan() || event.paths.is_empty() => None,
            Ok(event) => Some((event.paths, SystemTime::now())),
            // A lost event is still a reason to read (everything).
            Err(_) => None,
        };
        let _ = events.send(changed);
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(watcher) => watcher,
        Err(error) => {
            tracing::warn!(%error, "no file-system events; polling the directory instead");
            return None;
        }
    };
    match watcher.watch(root, RecursiveMode::Recursive) {
        Ok(()) => Some(watcher),
        Err(error) => {
            tracing::info!(%error, dir = %root.display(), "cannot watch the directory; polling it");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, relative: &str, text: &str) {
        let path = root.join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn app(name: &str) -> String {
        format!("postgresqlDatabases:\n  - name: {name}\n")
    }

    fn tenants(repo: &LoadedRepo) -> Vec<String> {
        repo.databases.iter().map(|d| d.tenant_id()).collect()
    }

    /// The incremental read is what a full load of the directory gives.
    fn same_as_a_full_load(root: &Path, repo: &LoadedRepo) {
        let full = pgtenant_spec::load_repo(root).unwrap();
        assert_eq!(repo.databases, full.databases);
        assert_eq!(repo.diagnostics, full.diagnostics);
        assert_eq!(repo.files_read, full.files_read);
        assert_eq!(repo.failed_files, full.failed_files);
    }

    #[test]
    fn a_change_to_one_of_many_files_parses_only_that_file() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for i in 0..20 {
            write(
                root,
                &format!("ns/app{i}/values.yaml"),
                &app(&format!("app{i}")),
            );
        }
        let mut files = Files::new(root.to_path_buf());
        let repo = files.read_all().unwrap();
        assert_eq!(files.parsed, 20);
        assert_eq!(repo.databases.len(), 20);

        // One file changed: one parse.
        write(root, "ns/app3/values.yaml", &app("renamed"));
        let repo = files
            .read_changed(&[root.join("ns/app3/values.yaml")])
            .unwrap();
        assert_eq!(files.parsed, 21);
        assert!(tenants(&repo).contains(&"ns/renamed".to_string()));
        same_as_a_full_load(root, &repo);

        // Touched without a change of text, or an unrelated file: no parse.
        files
            .read_changed(&[
                root.join("ns/app3/values.yaml"),
                root.join("ns/app3/README.md"),
            ])
            .unwrap();
        assert_eq!(files.parsed, 21);

        // The periodic full read parses nothing unchanged either.
        files.read_all().unwrap();
        assert_eq!(files.parsed, 21);

        // A new folder named by its event alone is listed and its file read.
        write(root, "other/new/values.yaml", &app("new"));
        let repo = files.read_changed(&[root.join("other")]).unwrap();
        assert_eq!(files.parsed, 22);
        assert!(tenants(&repo).contains(&"other/new".to_string()));
        same_as_a_full_load(root, &repo);

        // A removed file, a removed folder: their tenants are no longer declared.
        std::fs::remove_file(root.join("ns/app0/values.yaml")).unwrap();
        std::fs::remove_dir_all(root.join("other")).unwrap();
        let repo = files
            .read_changed(&[root.join("ns/app0/values.yaml"), root.join("other")])
            .unwrap();
        assert_eq!(repo.databases.len(), 19);
        same_as_a_full_load(root, &repo);
        assert_eq!(files.parsed, 22);
    }

    /// A folder's event lists only below it; whatever happened there, the result is the full
    /// load's: nested folders added, one replaced by a link out of the repo, one emptied.
    #[test]
    fn a_folder_event_lists_below_that_folder_as_the_loader_would() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(outside.path(), "values.yaml", &app("outside"));
        for name in ["a", "b"] {
            write(root, &format!("ns/{name}/values.yaml"), &app(name));
        }
        write(root, "team/x/values.yaml", &app("x"));
        let mut files = Files::new(root.to_path_buf());
        files.read_all().unwrap();

        // Deep folders created under an existing one: the event names the top folder.
        write(root, "ns/deep/er/values.yaml", &app("deeper"));
        write(root, "ns/deep/.hidden/values.yaml", &app("hidden"));
        let repo = files.read_changed(&[root.join("ns/deep")]).unwrap();
        assert!(tenants(&repo).contains(&"ns/deeper".to_string()));
        assert!(!tenants(&repo).contains(&"ns/hidden".to_string()));
        same_as_a_full_load(root, &repo);

        // A folder replaced by a link out of the repo: its tenants go, the link is not entered.
        std::fs::remove_dir_all(root.join("ns/b")).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("ns/b")).unwrap();
        let repo = files.read_changed(&[root.join("ns/b")]).unwrap();
        assert!(!tenants(&repo).contains(&"ns/b".to_string()));
        assert!(!tenants(&repo).contains(&"ns/outside".to_string()));
        same_as_a_full_load(root, &repo);

        // A folder emptied (its values file moved to another folder's event-less rename).
        std::fs::rename(root.join("ns/deep/er"), root.join("ns/deep/.er")).unwrap();
        let repo = files.read_changed(&[root.join("ns/deep/er")]).unwrap();
        assert!(!tenants(&repo).contains(&"ns/deeper".to_string()));
        same_as_a_full_load(root, &repo);
        assert!(tenants(&repo).contains(&"team/x".to_string()));
    }

    #[test]
    fn a_broken_or_refused_file_read_alone_keeps_its_tenants_declared_as_failed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "ns/a/values.yaml", &app("a"));
        write(root, "ns/b/values.yaml", &app("b"));
        write(outside.path(), "values.yaml", &app("secret"));
        let mut files = Files::new(root.to_path_buf());
        files.read_all().unwrap();

        // Broken YAML: the file fails, which holds its tenants; it is not a removal.
        write(root, "ns/a/values.yaml", "postgresqlDatabases: [\n");
        let repo = files
            .read_changed(&[root.join("ns/a/values.yaml")])
            .unwrap();
        assert_eq!(repo.failed_files, [PathBuf::from("ns/a/values.yaml")]);
        same_as_a_full_load(root, &repo);

        // A symlink out of the repo is refused as the full loader refuses it.
        std::fs::remove_file(root.join("ns/b/values.yaml")).unwrap();
        std::os::unix::fs::symlink(
            outside.path().join("values.yaml"),
            root.join("ns/b/values.yaml"),
        )
        .unwrap();
        let repo = files
            .read_changed(&[root.join("ns/b/values.yaml")])
            .unwrap();
        assert!(repo
            .failed_files
            .contains(&PathBuf::from("ns/b/values.yaml")));
        assert!(!format!("{:?}", repo.diagnostics).contains("secret"));
        same_as_a_full_load(root, &repo);

        // A file below a symlinked folder is not one the loader lists.
        std::os::unix::fs::symlink(outside.path(), root.join("ns/linked")).unwrap();
        let repo = files
            .read_changed(&[root.join("ns/linked/values.yaml")])
            .unwrap();
        same_as_a_full_load(root, &repo);

        // The whole directory gone: an error, never an empty repo.
        let kept = tempfile::tempdir().unwrap();
        std::fs::rename(root, kept.path().join("moved")).unwrap();
        let error = files
            .read_changed(&[root.join("ns/a/values.yaml")])
            .unwrap_err();
        assert!(error.contains("does not exist"), "{error}");
        std::fs::rename(kept.path().join("moved"), root).unwrap();
    }
}
