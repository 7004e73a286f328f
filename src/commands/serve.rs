//! `serve`: the reconcile service (crates/serve): watches the apps repo (a directory, or a git
//! remote), reconciles every change, repairs drift, runs the backup schedules, and shows its
//! state over HTTP. Settings: flags, then the config's `serve:` section, then the defaults.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use clap::{Args as _, FromArgMatches as _};
use pgtenant_config::{Config, ServeConfig};
use pgtenant_engine::plan::DropGuard;
use pgtenant_serve::http::{HttpSettings, TlsFiles};
use pgtenant_serve::schedule::{BackupJobs, Schedules};
use pgtenant_serve::service::{self, Reloaded, ServeSettings};
use pgtenant_serve::source::SourceSettings;
use pgtenant_serve::state::BackupStatus;

use crate::commands::backup::RepositoryArgs;
use crate::commands::reconcile::{reconciler, runtime};
use crate::context::Context;
use crate::EXIT_OK;

/// Where `--listen` binds by default.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8432";
pub const DEFAULT_DRIFT_INTERVAL: Duration = Duration::from_secs(600);
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(10);
pub const DEFAULT_BRANCH: &str = "main";

#[derive(clap::Args)]
pub struct ServeArgs {
    /// The apps repo: a directory (watched), or a git remote (`ssh://…`,
    /// `file://…`, `git@host:path`, or a bare repository's path), fetched every poll interval
    /// [default: the config's `serve.git.remote`, else its `repo`, else the current directory].
    #[arg(env = "PGTENANT_REPO", hide_env_values = true)]
    pub repo: Option<String>,
    /// The branch of a git remote [default: the config's `serve.git.branch`, else main].
    #[arg(long)]
    pub branch: Option<String>,
    /// ADDR:PORT for the status page, the API and /metrics [default: 127.0.0.1:8432].
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<String>,
    /// How often every tenant is verified again (drift repaired), spread over the interval, e.g.
    /// `10min` [default: 10min].
    #[arg(long, value_name = "DURATION")]
    pub drift_interval: Option<String>,
    /// How often the repo is read again without an event (git: fetched) [default: 10s].
    #[arg(long, value_name = "DURATION")]
    pub poll_interval: Option<String>,
    /// The bearer token of the mutating endpoints, read from this file [default: the config's
    /// `serve.tokenFile`; none: they answer 403].
    #[arg(
        long,
        env = "PGTENANT_SERVE_TOKEN_FILE",
        hide_env_values = true,
        value_name = "FILE"
    )]
    pub token_file: Option<PathBuf>,
    /// The git webhook's secret, read from this file [default: the config's
    /// `serve.webhookSecretFile`; none: the webhook answers 404].
    #[arg(
        long,
        env = "PGTENANT_SERVE_WEBHOOK_SECRET_FILE",
        hide_env_values = true,
        value_name = "FILE"
    )]
    pub webhook_secret_file: Option<PathBuf>,
}

/// A duration as the spec writes them (`500ms`, `5s`, `10min`).
fn duration(flag: &str, text: &str) -> Result<Duration> {
    let ms = pgtenant_spec::parse_duration_ms_up_to(text, 10 * 366 * 86_400_000).map_err(|e| {
        anyhow::anyhow!("{flag} `{text}` is not a duration ({e:?}); e.g. 500ms, 5s, 10min")
    })?;
    if ms == 0 {
        bail!("{flag} must be more than 0");
    }
    Ok(Duration::from_millis(ms))
}

/// Whether `repo` names a git remote rather than a directory to watch.
fn is_git(repo: &str) -> bool {
    let scp_like = repo
        .split_once(':')
        .is_some_and(|(host, _)| host.contains('@') && !host.contains('/'));
    let path = Path::new(repo);
    let bare = path.join("HEAD").is_file() && path.join("objects").is_dir();
    repo.contains("://") || scp_like || bare
}

/// Where a remote's objects are mirrored: one bare repository per remote and branch.
fn mirror_dir(state_dir: &Path, remote: &str, branch: &str) -> PathBuf {
    let name: String = format!("{}-{branch}", pgtenant_serve::http::scrub::text(remote))
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let tail = &name[name.len().saturating_sub(100)..];
    state_dir.join("serve").join("git").join(tail)
}

fn serve_config(context: &Context) -> ServeConfig {
    context
        .config()
        .map(|c| c.serve.clone())
        .unwrap_or_default()
}

fn schedules_of(config: Option<&Config>) -> Schedules {
    match config.map(|c| &c.backups) {
        Some(b) if b.full.is_some() || b.diff.is_some() || b.incr.is_some() => Schedules {
            full: b.full.clone(),
            diff: b.diff.clone(),
            incr: b.incr.clone(),
        },
        _ => Schedules::default(),
    }
}

pub fn run(context: &Context, args: &ServeArgs) -> Result<u8> {
    // serve reconciles every declared tenant into its one cluster: in a fleet that would create
    // tenants placed on the other clusters a second time, here.
    if crate::fleet::applies(context) {
        bail!(
            "the config declares several clusters; `pgtenant serve` does not place tenants across \
             clusters yet (it would create every tenant on one of them): run `pgtenant apply` \
             for the fleet, or serve with a config of one cluster or an --admin-url"
        );
    }
    let config = serve_config(context);
    let listen_text = args
        .listen
        .clone()
        .or_else(|| config.listen.as_ref().map(|l| l.to_string()))
        .unwrap_or_else(|| DEFAULT_LISTEN.to_string());
    let listen: SocketAddr = listen_text.parse().with_context(|| {
        format!("--listen `{listen_text}` is not ADDR:PORT (e.g. 127.0.0.1:8432)")
    })?;
    let drift_interval = match &args.drift_interval {
        Some(text) => duration("--drift-interval", text)?,
        None => config.drift_interval.unwrap_or(DEFAULT_DRIFT_INTERVAL),
    };
    let poll_interval = match &args.poll_interval {
        Some(text) => duration("--poll-interval", text)?,
        None => config.poll_interval.unwrap_or(DEFAULT_POLL_INTERVAL),
    };
    let remote = args.repo.clone().filter(|r| is_git(r)).or_else(|| {
        if args.repo.is_none() {
            config.git_remote.clone()
        } else {
            None
        }
    });
    let source = match remote {
        Some(remote) => {
            let branch = args
                .branch
                .clone()
                .or_else(|| config.git_branch.clone())
                .unwrap_or_else(|| DEFAULT_BRANCH.to_string());
            SourceSettings::Git {
                mirror: mirror_dir(context.state_dir(), &remote, &branch),
                remote,
                branch,
                ca_file: config.git_ca_file.clone(),
            }
        }
        None => {
            let root = context.repo(args.repo.as_deref().map(Path::new));
            SourceSettings::Directory {
                root: std::path::absolute(&root).unwrap_or(root),
            }
        }
    };
    let mut reconciler = reconciler(context)?.keeping_sessions();
    // The last verifications stay in memory, warm between reconciles (issue 11): a change reads
    // only the databases whose statistics moved; every drift pass verifies all of them.
    reconciler.trust = pgtenant_engine::verified::Trust::in_memory(drift_interval);
    let endpoint = format!("{}:{}", reconciler.endpoint.host, reconciler.endpoint.port);
    let http = HttpSettings {
        listen,
        token_file: args
            .token_file
            .clone()
            .or_else(|| config.token_file.clone()),
        webhook_secret_file: args
            .webhook_secret_file
            .clone()
            .or_else(|| config.webhook_secret_file.clone()),
        tls: config.tls.as_ref().map(|tls| TlsFiles {
            certificate: tls.cert_file.clone(),
            key: tls.key_file.clone(),
        }),
    };
    let backups = backup_jobs(context).map(|jobs| (jobs, schedules_of(context.config())));
    let settings = ServeSettings {
        source,
        http,
        drift_interval,
        poll_interval,
        cluster: context.cluster_name().to_string(),
        endpoint,
        reconciler,
        guard: DropGuard::default(),
        backups,
        schedule_record: context.state_dir().join("serve").join("schedule.json"),
        rotation: config.rotate_every.map(|every| {
            (
                every,
                context.state_dir().join("serve").join("rotations.json"),
            )
        }),
    };
    let reload = reloader(context, args, drift_interval, poll_interval);
    let scheme = if settings.http.tls.is_some() {
        "https"
    } else {
        "http"
    };
    runtime()?
        .block_on(service::run(settings, reload, move |address| {
            let shown = if address.ip().is_unspecified() {
                format!("127.0.0.1:{}", address.port())
            } else {
                address.to_string()
            };
            println!("pgtenant serve: status page {scheme}://{shown}/");
        }))
        .context("serving")?;
    Ok(EXIT_OK)
}

/// SIGHUP: the config file again, flags still winning.
fn reloader(
    context: &Context,
    args: &ServeArgs,
    drift_interval: Duration,
    poll_interval: Duration,
) -> service::Reload {
    let path = context.config_path().map(Path::to_path_buf);
    let (drift_flag, poll_flag) = (args.drift_interval.is_some(), args.poll_interval.is_some());
    Box::new(move || {
        let config = match &path {
            Some(path) => {
                let loaded = pgtenant_config::load(path);
                match loaded.config {
                    Some(config) => Some(config),
                    None => {
                        let errors: Vec<String> = loaded
                            .diagnostics
                            .iter()
                            .filter(|d| d.is_error())
                            .map(|d| d.to_string())
                            .collect();
                        return Err(format!("{}: {}", path.display(), errors.join("; ")));
                    }
                }
            }
            None => None,
        };
        let serve = config.as_ref().map(|c| c.serve.clone()).unwrap_or_default();
        Ok(Reloaded {
            drift_interval: if drift_flag {
                drift_interval
            } else {
                serve.drift_interval.unwrap_or(DEFAULT_DRIFT_INTERVAL)
            },
            poll_interval: if poll_flag {
                poll_interval
            } else {
                serve.poll_interval.unwrap_or(DEFAULT_POLL_INTERVAL)
            },
            schedules: schedules_of(config.as_ref()),
        })
    })
}

/// pgBackRest for the embedded cluster, or for an admin URL with PGTENANT_PGBACKREST_CONFIG and
/// PGTENANT_PGBACKREST_STANZA; None (no schedules) for an admin URL without them.
fn backup_jobs(context: &Context) -> Option<Arc<dyn BackupJobs>> {
    let matches = RepositoryArgs::augment_args(clap::Command::new("serve"))
        .try_get_matches_from(["serve"])
        .ok()?;
    let args = RepositoryArgs::from_arg_matches(&matches).ok()?;
    let pgbackrest = std::env::var_os("PGTENANT_PGBACKREST_CONFIG").is_some();
    if context.admin_url().is_some() && !pgbackrest {
        tracing::info!("no pgBackRest setup for this cluster: no backup schedules");
        return None;
    }
    let backups = match crate::commands::backup::open(context, &args) {
        Ok(backups) => backups,
        Err(error) => {
            tracing::warn!(error = %format!("{error:#}"), "backups unavailable: no backup schedules");
            return None;
        }
    };
    Some(Arc::new(Jobs(Mutex::new(backups))))
}

struct Jobs(Mutex<pgtenant_backup::Backups>);

struct Quiet;

impl pgtenant_backup::Progress for Quiet {
    fn step(&mut self, _: usize, _: usize, _: &str) {}
    fn warn(&mut self, message: &str) {
        tracing::warn!("{message}");
    }
}

impl BackupJobs for Jobs {
    fn backup(&self, kind: &str) -> Result<String, String> {
        let backups = self
            .0
            .lock()
            .map_err(|_| "backup state poisoned".to_string())?;
        let report = backups
            .run(kind, &mut Quiet)
            .map_err(|e| pgtenant_engine::error_chain(&e))?;
        Ok(format!(
            "{} ({}) in {:.1} s; expired {} physical, {} logical",
            report.backup.id,
            report.backup.kind,
            report.seconds,
            report.expired.physical.len(),
            report.expired.logical.len()
        ))
    }

    fn last_backups(&self, wanted: &[String]) -> Result<BTreeMap<String, BackupStatus>, String> {
        let backups = self
            .0
            .lock()
            .map_err(|_| "backup state poisoned".to_string())?;
        let error = |e: pgtenant_backup::BackupError| pgtenant_engine::error_chain(&e);
        let mut found: BTreeMap<String, BackupStatus> = BTreeMap::new();
        if let Some(rest) = backups.pgbackrest() {
            let mut sets = rest.info().map_err(error)?.backup;
            sets.sort_by_key(|set| std::cmp::Reverse(set.timestamp.stop));
            for set in sets {
                if !found.is_empty() && wanted.iter().all(|db| found.contains_key(db)) {
                    break;
                }
                let detailed = rest.set_info(&set.label).map_err(error)?;
                let at = set.stopped().to_rfc3339();
                for database in detailed.databases.unwrap_or_default() {
                    found.entry(database.name).or_insert_with(|| BackupStatus {
                        kind: set.kind.clone(),
                        at: at.clone(),
                    });
                }
            }
        }
        // A tenant's own dump (a final backup, `backup run --tenant`) when it is newer.
        for dump in backups.catalog().map_err(error)?.logical {
            let at = dump.finished.to_rfc3339();
            let newer = found.get(&dump.database).is_none_or(|b| b.at < at);
            if newer {
                found.insert(
                    dump.database,
                    BackupStatus {
                        kind: pgtenant_serve::schedule::LOGICAL.to_string(),
                        at,
                    },
                );
            }
        }
        Ok(found)
    }
}
