//! `plan`, `apply` and `check`: spec → desired → observed → plan, then print, execute or report.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use pgtenant_engine::plan::DropGuard;
use pgtenant_engine::reconcile::{Reconciler, Request};
use pgtenant_engine::verified::{self, Trust, VerificationStore, Verifications};
use pgtenant_engine::{check, ApplyOutcome, Desired};

use crate::context::Context;
use crate::render::{self, Format};
use crate::{EXIT_ERROR, EXIT_OK, EXIT_PENDING};

#[derive(clap::Args)]
pub struct RepoArgs {
    #[command(flatten)]
    pub common: ReconcileArgs,
    #[command(flatten)]
    pub guard: GuardArgs,
}

/// What `plan`, `apply` and `check` share.
#[derive(clap::Args)]
pub struct ReconcileArgs {
    /// The apps repo [default: the current directory, if it holds values files].
    #[arg(env = "PGTENANT_REPO", hide_env_values = true)]
    pub repo: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Reconcile only this tenant, NAMESPACE/DATABASE (repeatable): only its database is inspected,
    /// so the cost does not grow with the number of tenants on the cluster. Without it, all of them.
    #[arg(long = "tenant", value_name = "NS/DB")]
    pub tenants: Vec<String>,
    /// Look inside every tenant database, trusting no earlier verification. Without it a database
    /// whose statistics show no transaction since its last verification is not connected to.
    #[arg(long)]
    pub full: bool,
    /// Verify each tenant database again at least this often, whatever its statistics say
    /// (`10m`, `90s`; `0`: every run, like --full).
    #[arg(
        long,
        env = "PGTENANT_TRUST_FOR",
        hide_env_values = true,
        value_name = "DURATION",
        default_value = "10m",
        value_parser = parse_trust_for
    )]
    pub trust_for: Duration,
}

fn parse_trust_for(text: &str) -> Result<Duration, String> {
    verified::parse_trust_for(text)
}

/// `check` drops nothing, so it shows no drop options; they are still accepted (and ignored) for
/// scripts that pass the same options to plan, apply and check.
#[derive(clap::Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub common: ReconcileArgs,
    #[arg(long, hide = true)]
    max_drops: Option<usize>,
    #[arg(long, hide = true)]
    allow_empty_repo: bool,
    #[arg(long, hide = true)]
    allow_namespace_removal: Vec<String>,
}

impl ReconcileArgs {
    /// The repo, what it declares, and the request for the library.
    pub(crate) fn load(
        &self,
        context: &Context,
        guard: DropGuard,
    ) -> Result<(pgtenant_spec::LoadedRepo, Desired, Request)> {
        self.load_reading(context, guard, false)
    }

    /// [`Self::load`]; with `only_scope` and --tenant, only the values files that can declare or
    /// collide with the named tenants are read and derived ([`Context::load_repo_for`]). The plan
    /// of a declared tenant in scope depends on nothing else: its observation is narrowed to its
    /// own roles and databases, whose names it derives, so no removal of another tenant is
    /// planned, and whatever else is planned for others is cut by the scope.
    pub(crate) fn load_reading(
        &self,
        context: &Context,
        guard: DropGuard,
        only_scope: bool,
    ) -> Result<(pgtenant_spec::LoadedRepo, Desired, Request)> {
        let scope = self.scope()?;
        let read = if only_scope {
            scope.clone()
        } else {
            BTreeSet::new()
        };
        // The flag that allows dropping everything also accepts a directory without values files.
        let repo = context.load_repo_for(self.repo.as_deref(), guard.allow_empty_repo, &read)?;
        let desired = Desired::from_repo(&repo);
        let request = Request {
            guard,
            scope,
            full: self.full,
        };
        Ok((repo, desired, request))
    }

    /// The pipeline, trusting earlier verifications as the flags say.
    pub(crate) fn reconciler(&self, context: &Context) -> Result<Reconciler> {
        let mut reconciler = reconciler(context)?;
        reconciler.trust.trust_for = self.trust_for;
        if !self.tenants.is_empty() {
            // A scoped run inspects only its tenants anyway: loading and rewriting the
            // verifications of the whole fleet would be its largest cost at 1,000 tenants. Leaving
            // them untouched is safe: whatever this run changes in a tenant database moves its
            // counters, and a changed declaration changes its digest.
            reconciler.trust = Trust::none();
        }
        Ok(reconciler)
    }

    fn scope(&self) -> Result<BTreeSet<String>> {
        for tenant in &self.tenants {
            crate::commands::parse_tenant(tenant)?;
        }
        Ok(self.tenants.iter().cloned().collect())
    }
}

/// What one run may drop; beyond it every drop is held and the plan says why.
#[derive(clap::Args, Clone)]
pub struct GuardArgs {
    /// Drop at most this many databases in one run.
    #[arg(long, default_value_t = 1)]
    pub max_drops: usize,
    /// Allow drops although the repo declares no database at all, or holds no values file (a
    /// directory that is otherwise refused as "not the apps repo").
    #[arg(long)]
    pub allow_empty_repo: bool,
    /// Allow every database of this namespace to be dropped (repeatable).
    #[arg(long, value_name = "NAMESPACE")]
    pub allow_namespace_removal: Vec<String>,
}

impl GuardArgs {
    pub(crate) fn drop_guard(&self) -> DropGuard {
        DropGuard {
            max_drops: self.max_drops,
            allow_empty_repo: self.allow_empty_repo,
            allow_namespace_removal: self.allow_namespace_removal.clone(),
        }
    }
}

/// What the library's pipeline needs from the command line: the cluster, the store, the
/// platform's tier (the one `pgtenant backup --environment` remembers) and the trash that takes
/// final backups.
pub fn reconciler(context: &Context) -> Result<Reconciler> {
    let connected = context.connect()?;
    let (host, port) = connected.connector.endpoint();
    let key = verified::cluster_key(&[
        context.cluster_name(),
        &host,
        &port.to_string(),
        connected.connector.user().unwrap_or_default(),
    ]);
    let trust = Trust {
        store: Arc::new(FileVerifications {
            path: context
                .state_dir()
                .join("verified")
                .join(format!("{}-{key}.json", context.cluster_name())),
        }),
        trust_for: verified::DEFAULT_TRUST_FOR,
    };
    let platform_environment =
        pgtenant_backup::CatalogFile::new(&context.state_dir().join("backups"))
            .load()
            .ok()
            .and_then(|catalog| catalog.settings.environment);
    Ok(Reconciler {
        connector: connected.connector,
        store: context.store()?,
        endpoint: connected.endpoint,
        pooler_endpoint: connected.pooler_endpoint,
        pooler_lookup: context
            .pooler_config()
            .is_some_and(|pooler| pooler.auth == pgtenant_config::PoolerAuth::Query),
        superuser_extensions: context.superuser_extensions().clone(),
        scram_iterations: context.scram_iterations(),
        platform_environment,
        final_backups: Some(Arc::new(pgtenant_backup::trash::Trash::new(
            context.state_dir().join("trash"),
        ))),
        trust,
        pooler: crate::commands::cluster::pooler_of(context)?
            .map(|p| p as Arc<dyn pgtenant_engine::PoolerSync>),
        sessions: Default::default(),
    })
}

/// The last verifications of one cluster's tenant databases, in a private file of the state dir
/// (0600 in a 0700 directory, replaced whole). A file that is missing, unreadable, not private,
/// not ours or from another version means "inspect everything", never an error.
struct FileVerifications {
    path: PathBuf,
}

impl VerificationStore for FileVerifications {
    fn load(&self) -> Verifications {
        use std::os::unix::fs::MetadataExt as _;
        let read = || -> Result<Verifications> {
            let file = std::fs::File::open(&self.path)?;
            let metadata = file.metadata()?;
            if metadata.mode() & 0o077 != 0 || metadata.uid() != nix::unistd::geteuid().as_raw() {
                anyhow::bail!("not private to this user");
            }
            Ok(serde_json::from_reader(std::io::BufReader::new(file))?)
        };
        match read() {
            Ok(verifications) => verifications.current(),
            Err(error) => {
                let missing = error
                    .downcast_ref::<std::io::Error>()
                    .is_some_and(|e| e.kind() == std::io::ErrorKind::NotFound);
                if !missing {
                    tracing::warn!(file = %self.path.display(), %error, "ignoring the last verifications: every tenant database is inspected");
                }
                Verifications::new()
            }
        }
    }

    fn save(&self, verifications: &Verifications) {
        let write = || -> Result<()> {
            use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
            let dir = self.path.parent().expect("a file in a directory");
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
            let temporary = dir.join(format!(
                ".{}.{}.tmp",
                self.path.file_name().unwrap_or_default().to_string_lossy(),
                std::process::id()
            ));
            let _ = std::fs::remove_file(&temporary);
            pgtenant_backup::write_private_file(&temporary, &serde_json::to_vec(verifications)?)?;
            std::fs::rename(&temporary, &self.path).inspect_err(|_| {
                let _ = std::fs::remove_file(&temporary);
            })?;
            Ok(())
        };
        if let Err(error) = write() {
            tracing::warn!(file = %self.path.display(), error = format!("{error:#}"), "cannot keep the verifications: the next run inspects again");
        }
    }
}

/// The process's one async runtime, started on first use.
pub fn runtime() -> Result<&'static tokio::runtime::Runtime> {
    pgtenant_pg::runtime().context("starting the async runtime")
}

pub fn plan(context: &Context, args: &RepoArgs) -> Result<u8> {
    if crate::fleet::applies(context) {
        return crate::fleet::run(
            context,
            &args.common,
            args.guard.drop_guard(),
            crate::fleet::Mode::Plan,
        );
    }
    let (repo, desired, request) =
        args.common
            .load_reading(context, args.guard.drop_guard(), true)?;
    let reconciler = args.common.reconciler(context)?;
    let planned = runtime()?.block_on(reconciler.plan(&desired, &request))?;
    render::plan(&planned.plan, &repo, args.common.format)?;
    Ok(if repo.has_errors() {
        EXIT_ERROR
    } else if planned.plan.is_converged() {
        EXIT_OK
    } else {
        EXIT_PENDING
    })
}

pub fn apply(context: &Context, args: &RepoArgs) -> Result<u8> {
    if crate::fleet::applies(context) {
        return crate::fleet::run(
            context,
            &args.common,
            args.guard.drop_guard(),
            crate::fleet::Mode::Apply,
        );
    }
    // A pooler's sync after a scoped apply replaces only the scoped tenants' entries and logins:
    // the scoped load is enough for it too.
    let (repo, desired, request) =
        args.common
            .load_reading(context, args.guard.drop_guard(), true)?;
    let reconciler = args.common.reconciler(context)?;
    let format = args.common.format;
    let mut progress = None;
    let policy = ha_policy(context, &reconciler);
    let survived = runtime()?.block_on(async {
        let mut progress_of = |plan: &pgtenant_engine::plan::Plan| {
            progress
                .insert(render::ApplyProgress::new(plan, Some(format)))
                .callback()
        };
        match &policy {
            Some(policy) => {
                pgtenant_engine::failover::apply(
                    &reconciler,
                    policy,
                    &desired,
                    &request,
                    progress_of,
                )
                .await
            }
            None => reconciler
                .apply(&desired, &request, &mut progress_of)
                .await
                .map(pgtenant_engine::failover::Survived::from),
        }
    });
    if let Some(progress) = progress {
        progress.finish();
    }
    let survived = survived?;
    let applied = survived.applied;
    notes(&applied.outcome);
    let (plan, outcome) = (&applied.plan, &applied.outcome);
    render::apply_survived(plan, outcome, &survived.failovers, &repo, format)?;
    Ok(
        if repo.has_errors() || outcome.failed().next().is_some() || plan.has_unresolved() {
            EXIT_ERROR
        } else {
            EXIT_OK
        },
    )
}

/// How `apply` survives a failover of an HA cluster (`clusters[].patroni`, `failoverTimeout`, or a
/// multi-host admin URL with `target_session_attrs=read-write`); None: not an HA cluster, a lost
/// connection fails the run as before.
pub fn ha_policy(
    context: &Context,
    reconciler: &Reconciler,
) -> Option<pgtenant_engine::failover::HaPolicy> {
    let cluster = context
        .config()
        .and_then(|config| config.cluster(context.cluster_name()));
    let patroni = cluster.map(|c| c.patroni.clone()).unwrap_or_default();
    let timeout = cluster.and_then(|c| c.failover_timeout);
    let multi_host = reconciler.connector.hosts().len() > 1 && reconciler.connector.wants_primary();
    (!patroni.is_empty() || timeout.is_some() || multi_host).then(|| {
        pgtenant_engine::failover::HaPolicy {
            patroni,
            timeout: timeout.unwrap_or(pgtenant_config::ClusterConfig::DEFAULT_FAILOVER_TIMEOUT),
            follower: crate::commands::cluster::pooler_of(context)
                .ok()
                .flatten()
                .map(|p| p as Arc<dyn pgtenant_engine::failover::FollowPrimary>),
        }
    })
}

/// The members credentials name for an HA cluster: the admin URL's hosts when it names several
/// and asks for the primary (`target_session_attrs=read-write`), and no `endpoint` is configured
/// (one endpoint, a proxy or a virtual IP, is then what applications use). Empty otherwise.
pub fn ha_hosts(context: &Context) -> Vec<(String, u16)> {
    let configured_endpoint = context
        .config()
        .and_then(|config| config.cluster(context.cluster_name()))
        .is_some_and(|cluster| cluster.endpoint.is_some());
    let Some(connector) = context
        .admin_url()
        .filter(|_| !configured_endpoint)
        .and_then(|url| pgtenant_pg::Connector::from_url(url).ok())
    else {
        return Vec::new();
    };
    if connector.hosts().len() > 1 && connector.wants_primary() {
        connector.hosts()
    } else {
        Vec::new()
    }
}

/// What the run did besides statements (settled password changes, final backups), on stderr.
fn notes(outcome: &ApplyOutcome) {
    for note in outcome.tenants.iter().flat_map(|t| &t.notes) {
        eprintln!("{note}");
    }
}

/// Converges one declared tenant only (its roles, ownership, grants, default privileges), leaving
/// every other tenant alone and dropping nothing: for commands that changed that tenant's database
/// behind the engine's back, such as a restore.
pub fn reconcile_tenant(
    context: &Context,
    repo: Option<&Path>,
    tenant: &str,
) -> Result<ApplyOutcome> {
    let repo = context.load_repo(repo, false)?;
    let desired = Desired::from_repo(&repo);
    let reconciler = reconciler(context)?;
    let applied = runtime()?.block_on(reconciler.reconcile_tenant(&desired, tenant, |_| {
        Arc::new(|_: &pgtenant_engine::TenantOutcome| {})
    }))?;
    notes(&applied.outcome);
    Ok(applied.outcome)
}

pub fn check(context: &Context, args: &CheckArgs) -> Result<u8> {
    let args = &args.common;
    if crate::fleet::applies(context) {
        let mode = crate::fleet::Mode::Check;
        return crate::fleet::run(context, args, DropGuard::default(), mode);
    }
    let (repo, desired, request) = args.load_reading(context, DropGuard::default(), true)?;
    let reconciler = args.reconciler(context)?;
    let planned = runtime()?.block_on(reconciler.plan(&desired, &request))?;
    let mut report = check::report(&desired, &planned.observed, &planned.plan);
    // Tenants outside --tenant were not inspected: listing them as in sync would be a claim.
    report
        .tenants
        .retain(|t| planned.context.in_scope(&t.tenant));
    if let Some(pooler) = crate::commands::cluster::pooler_of(context)? {
        pooler_check(&pooler, &desired, &mut report)?;
    }
    render::check(&report, &repo, args.format)?;
    Ok(if repo.has_errors() {
        EXIT_ERROR
    } else if report.in_sync {
        EXIT_OK
    } else {
        EXIT_PENDING
    })
}

/// Adds each pooled tenant's pool (SHOW DATABASES/POOLS/STATS) to `report`: an entry pgbouncer
/// lacks or holds differently from the repo is drift, which apply repairs (re-render + RELOAD).
pub(crate) fn pooler_check(
    pooler: &pgtenant_pooler::Pooler,
    desired: &Desired,
    report: &mut pgtenant_engine::check::CheckReport,
) -> Result<()> {
    let pools = runtime()?.block_on(pooler.report(desired));
    for tenant in report.tenants.iter_mut() {
        let Some(declared) = desired.tenants.iter().find(|t| t.id == tenant.tenant) else {
            continue;
        };
        if pooler.entry(declared).is_none() {
            continue;
        }
        let what = match &pools {
            Ok(pools) => {
                let pool = pools.get(&tenant.database).cloned().unwrap_or_default();
                tenant.pooler = Some(serde_json::to_value(&pool)?);
                match pool.entry {
                    "ok" => None,
                    "stale" => Some(format!(
                        "pgbouncer's entry for {} is stale: {}",
                        tenant.database,
                        pool.differs.unwrap_or_default()
                    )),
                    _ => Some(format!("pgbouncer has no entry for {}", tenant.database)),
                }
            }
            Err(error) => {
                let error = pgtenant_engine::error_chain(error);
                tenant.pooler = Some(serde_json::json!({ "entry": "missing", "error": error }));
                Some(format!("pgbouncer does not answer: {error}"))
            }
        };
        if let Some(what) = what {
            tenant.drift.push(pgtenant_engine::check::DriftItem {
                phase: "pooler",
                what,
                fix: "`pgtenant apply` rewrites pgbouncer's files and RELOADs it (and starts a \
                      local pgbouncer that is not running)"
                    .to_string(),
            });
            if tenant.status == "in-sync" {
                tenant.status = "drift";
            }
            report.in_sync = false;
        }
    }
    Ok(())
}
