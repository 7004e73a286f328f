//! A git remote: fetched into a bare mirror every poll interval and when woken (a verified
//! webhook), one fetch at a time — wake-ups that arrive during a fetch are one more fetch, not
//! one each. The values files are read straight from the fetched commit's tree: no checkout,
//! no working copy that could be half-updated.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::SystemTime;

use gix::bstr::ByteSlice;
use gix::objs::tree::EntryKind;
use pgtenant_spec::{CheckedValuesFile, Diagnostic, LoadOptions, SourceLocation, VALUES_FILES};

use tracing::Instrument as _;

use super::{refuse_empty, Revision, SourceTask};

/// The remote as configured.
#[derive(Debug, Clone)]
pub(super) struct Remote {
    /// As given (its credentials, if any, in it: `https://user:token@host/…`).
    pub url: String,
    pub branch: String,
    pub mirror: PathBuf,
    /// Extra CAs of an `https://` remote (the system's are trusted too).
    pub ca_file: Option<PathBuf>,
}

/// Every values file of the last commit read, checked, by path with its blob: a commit reads
/// (and parses) only the blobs that changed. Content-addressed, so an entry is never stale.
#[derive(Default)]
struct Checked {
    files: BTreeMap<PathBuf, (gix::ObjectId, CheckedValuesFile)>,
    /// Values files parsed since the start (`pgtenant_source_files_parsed_total`).
    parsed: u64,
}

pub(super) async fn run(mut task: SourceTask, remote: Remote) {
    // The commit last read: a fetch that finds the same one reads nothing again.
    let mut last: Option<String> = None;
    let mut checked = Some(Checked::default());
    loop {
        let seen_at = SystemTime::now();
        let fetched = {
            let (remote, last) = (remote.clone(), last.clone());
            let mut cache = checked.take().unwrap_or_default();
            let parsed_before = cache.parsed;
            let fetched = tokio::task::spawn_blocking(move || {
                let read = fetch_and_read(&remote, last, &mut cache);
                (cache, read)
            })
            .instrument(tracing::info_span!("source_read"))
            .await;
            fetched.map(|(cache, read)| {
                task.shared
                    .metrics
                    .source_files_parsed
                    .inc_by(cache.parsed - parsed_before);
                checked = Some(cache);
                read
            })
        };
        match fetched {
            Ok(Ok(Some((sha, repo)))) => {
                last = Some(sha.clone());
                task.read_ok(Revision {
                    repo,
                    revision: Some(sha),
                    seen_at,
                });
            }
            // The same commit as before: still a successful read.
            Ok(Ok(None)) => task.shared.update(|snapshot| {
                snapshot.source.error = None;
                snapshot.source.last_read_at = Some(crate::now());
            }),
            Ok(Err(error)) => task.read_failed(error),
            Err(panicked) => task.read_failed(format!("fetching: {panicked}")),
        }
        let poll = *task.poll_interval.borrow();
        tokio::select! {
            _ = task.shutdown.changed() => return,
            woken = task.wake.recv() => {
                if woken.is_none() {
                    return;
                }
                // Coalesce: every wake-up queued during the fetch is served by the next one.
                while task.wake.try_recv().is_ok() {}
            }
            _ = tokio::time::sleep(poll) => {}
        }
    }
}

/// Fetches the branch of `remote` into its bare mirror; the commit and the repo read from its
/// tree, or None when the commit is `last`.
fn fetch_and_read(
    remote: &Remote,
    last: Option<String>,
    checked: &mut Checked,
) -> Result<Option<(String, pgtenant_spec::LoadedRepo)>, String> {
    let Remote { branch, mirror, .. } = remote;
    let shown = crate::http::scrub::text(&remote.url);
    let repo = open_mirror(mirror)?;
    let tracking = format!("refs/remotes/origin/{branch}");
    let refspec = format!("+refs/heads/{branch}:{tracking}");
    // gix's errors may quote the URL: scrubbed like everything shown.
    let fetch_error =
        |e: gix::Error| crate::http::scrub::text(&format!("fetching {branch} from {shown}: {e}"));
    let (url, account) = without_credentials(&remote.url).map_err(fetch_error)?;
    let remote_handle = repo
        .remote_at(url.clone())
        .map_err(fetch_error)?
        .with_refspecs([refspec.as_str()], gix::remote::Direction::Fetch)
        .map_err(fetch_error)?;
    let mut connection = remote_handle
        .connect(gix::remote::Direction::Fetch)
        .map_err(fetch_error)?
        // Only the URL's credentials: no credential helper, no prompt.
        .with_credentials(move |action| match action {
            gix::credentials::helper::Action::Get(context) => {
                Ok(account
                    .clone()
                    .map(|identity| gix::credentials::protocol::Outcome {
                        identity,
                        next: context.into(),
                    }))
            }
            _ => Ok(None),
        });
    if matches!(url.scheme, gix::url::Scheme::Https | gix::url::Scheme::Http) {
        let options = http_options(&repo, &url, remote.ca_file.as_deref())
            .map_err(|e| format!("fetching {branch} from {shown}: {e}"))?;
        connection.set_transport_options(Box::new(options));
    }
    connection
        .prepare_fetch(gix::progress::Discard, Default::default())
        .map_err(fetch_error)?
        .receive(gix::progress::Discard, &AtomicBool::new(false))
        .map_err(fetch_error)?;
    let read_error = |e: gix::Error| format!("reading {tracking} of {shown}: {e}");
    let mut reference = repo.find_reference(tracking.as_str()).map_err(read_error)?;
    let commit = reference.peel_to_commit().map_err(read_error)?;
    let sha = commit.id().to_string();
    if last.as_deref() == Some(sha.as_str()) {
        return Ok(None);
    }
    let tree = commit.tree().map_err(read_error)?;
    let options = LoadOptions::from_env().map_err(|e| e.to_string())?;
    let mut files = BTreeMap::new();
    collect(&tree, Path::new(""), &options, checked, &mut files).map_err(read_error)?;
    checked.files = files;
    let root = PathBuf::from(format!("{shown}@{}", &sha[..12.min(sha.len())]));
    let loaded = pgtenant_spec::load_repo_from_checked(
        &root,
        checked
            .files
            .iter()
            .map(|(path, (_, checked))| (path.as_path(), checked)),
    );
    refuse_empty(&loaded).map_err(|e| format!("commit {sha} of {shown}: {e}"))?;
    Ok(Some((sha, loaded)))
}

/// The remote's URL without its credentials, and those credentials (`https://user:token@…`).
fn without_credentials(
    remote: &str,
) -> Result<(gix::Url, Option<gix::sec::identity::Account>), gix::Error> {
    let mut url = gix::url::parse(remote.as_bytes().as_bstr()).map_err(gix::Error::from_error)?;
    if !matches!(url.scheme, gix::url::Scheme::Https | gix::url::Scheme::Http) {
        return Ok((url, None));
    }
    let account = url
        .set_password(None)
        .map(|password| gix::sec::identity::Account {
            username: url.set_user(None).unwrap_or_default(),
            password,
            oauth_refresh_token: None,
        });
    Ok((url, account))
}

/// The HTTP transport's options for `url`: gix's defaults, with the system's CAs and those of
/// `ca_file` (PEM) trusted. TLS through rustls with ring (no OpenSSL).
fn http_options(
    repo: &gix::Repository,
    url: &gix::Url,
    ca_file: Option<&Path>,
) -> Result<gix::protocol::transport::client::blocking_io::http::Options, String> {
    use gix::protocol::transport::client::blocking_io::http;
    // Without a process default, rustls would have to guess; ring is the one built in.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut options = repo
        .transport_options(url.to_bstring().as_bstr(), None)
        .map_err(|e| e.to_string())?
        .and_then(|options| options.downcast::<http::Options>().ok())
        .map(|options| *options)
        .unwrap_or_default();
    let extra = match ca_file {
        Some(path) => {
            let pem = std::fs::read(path)
                .map_err(|e| format!("reading git.caFile {}: {e}", path.display()))?;
            let certificates = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("git.caFile {}: {e}", path.display()))?;
            if certificates.is_empty() {
                return Err(format!(
                    "git.caFile {}: no PEM certificate in it",
                    path.display()
                ));
            }
            certificates
        }
        None => Vec::new(),
    };
    let backend = http::reqwest::Options {
        configure_client: Some(Box::new(move |builder| {
            Ok(extra.iter().cloned().fold(builder, |builder, certificate| {
                builder.add_root_certificate(certificate)
            }))
        })),
        configure_request: None,
    };
    options.backend = Some(std::sync::Arc::new(std::sync::Mutex::new(backend)));
    Ok(options)
}

fn open_mirror(mirror: &Path) -> Result<gix::Repository, String> {
    let opened = if mirror.join("HEAD").exists() {
        gix::open(mirror)
    } else {
        std::fs::create_dir_all(mirror)
            .map_err(|e| format!("creating the git mirror {}: {e}", mirror.display()))?;
        gix::init_bare(mirror)
    };
    opened.map_err(|e| format!("opening the git mirror {}: {e}", mirror.display()))
}

/// Every values file below `tree` (`relative` inside the repo), as a directory read finds them:
/// dot folders skipped, a values file that is not a regular file an error for it.
fn collect(
    tree: &gix::Tree<'_>,
    relative: &Path,
    options: &LoadOptions,
    last: &mut Checked,
    files: &mut BTreeMap<PathBuf, (gix::ObjectId, CheckedValuesFile)>,
) -> Result<(), gix::Error> {
    let mut entries = Vec::new();
    for entry in tree.iter() {
        let entry = entry?;
        let name = entry.filename().to_str_lossy().into_owned();
        entries.push((name, entry.kind(), entry.id().detach()));
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, kind, id) in entries {
        if name.starts_with('.') {
            continue;
        }
        let path = relative.join(&name);
        if VALUES_FILES.contains(&name.as_str()) {
            let is_blob = matches!(kind, EntryKind::Blob | EntryKind::BlobExecutable);
            // The same blob at the same path as in the last commit read: the same result.
            if is_blob {
                if let Some(kept) = last.files.remove(&path).filter(|(blob, _)| *blob == id) {
                    files.insert(path, kept);
                    continue;
                }
            }
            let refused = |message: &str| {
                Err(
                    Diagnostic::error(SourceLocation::file_start(&path), "", message)
                        .with_hint("commit the values file itself, a regular file"),
                )
            };
            let text = match kind {
                EntryKind::Blob | EntryKind::BlobExecutable => {
                    let blob = tree.repo.find_blob(id)?;
                    if blob.data.len() as u64 > options.max_values_file_bytes {
                        refused(&format!(
                            "values file is larger than {} bytes",
                            options.max_values_file_bytes
                        ))
                    } else {
                        match String::from_utf8(blob.data.clone()) {
                            Ok(text) => Ok(text),
                            Err(_) => refused("values file is not UTF-8 text"),
                        }
                    }
                }
                EntryKind::Link => {
                    refused("values file is a symlink; pgtenant reads only the files of the commit")
                }
                _ => refused("values file is not a file"),
            };
            if text.is_ok() {
                last.parsed += 1;
            }
            let checked = CheckedValuesFile::check(&path, text);
            // A refused entry is checked again next time (its id may be a tree's or a link's).
            let id = if is_blob {
                id
            } else {
                gix::ObjectId::null(id.kind())
            };
            files.insert(path, (id, checked));
            continue;
        }
        if kind == EntryKind::Tree {
            let subtree = tree.repo.find_tree(id)?;
            collect(&subtree, &path, options, last, files)?;
        }
    }
    Ok(())
}
