//! The `pgtenant` binary: argument parsing, wiring and exit codes. Output formatting is in `render`;
//! everything else lives in the library crates.

mod context;
mod render;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand, ValueEnum};
use pgtenant_engine::{check, Desired, Executor, PlanContext};
use pgtenant_secrets::{CredentialStore, SecretPath};

use context::Context;

/// Exit codes: the contract scripts rely on.
const EXIT_OK: u8 = 0;
const EXIT_ERROR: u8 = 1;
const EXIT_PENDING: u8 = 2;

#[derive(Parser)]
#[command(
    name = "pgtenant",
    version,
    about = "Self-service tenant databases on a shared PostgreSQL cluster"
)]
struct Cli {
    /// The cluster to manage (libpq URL). Without it, pgtenant runs its own local cluster under the state dir.
    #[arg(
        long,
        env = "PGTENANT_ADMIN_URL",
        global = true,
        hide_env_values = true
    )]
    admin_url: Option<String>,

    /// Local state: credential store, embedded cluster.
    #[arg(long, env = "PGTENANT_STATE_DIR", global = true)]
    state_dir: Option<PathBuf>,

    /// HOST:PORT that applications connect to, written into credentials [default: the admin URL's host and port].
    #[arg(long, env = "PGTENANT_ENDPOINT", global = true)]
    endpoint: Option<String>,

    /// The credential store's key file, kept apart from the data [default: <state-dir>/keys/store.key].
    #[arg(long, env = "PGTENANT_STORE_KEY_FILE", global = true)]
    store_key_file: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show the operations `apply` would run. Exit 0 in sync, 2 changes pending, 1 error.
    Plan(RepoArgs),
    /// Converge the cluster to the repo. Exit 0 when everything converged, 1 when anything failed.
    Apply(RepoArgs),
    /// Report, per tenant, what the cluster holds and any drift. Exit 0 clean, 2 drift, 1 error.
    Check(RepoArgs),
    /// Print a tenant role's credentials from the store.
    Credentials {
        /// NAMESPACE/DATABASE, as declared in the repo.
        tenant: String,
        #[arg(long, value_enum)]
        role: RoleArg,
        #[arg(long, value_enum, default_value_t = CredentialFormat::Json)]
        format: CredentialFormat,
    },
    /// Create (first time) and start the embedded local cluster.
    Up {
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Stop the embedded local cluster.
    Down,
    /// Show the embedded local cluster's state.
    Status {
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
}

#[derive(clap::Args)]
struct RepoArgs {
    /// The apps repo [default: the current directory].
    repo: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum RoleArg {
    Admin,
    Write,
    Read,
}

impl RoleArg {
    fn as_str(self) -> &'static str {
        match self {
            RoleArg::Admin => "admin",
            RoleArg::Write => "write",
            RoleArg::Read => "read",
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
pub enum CredentialFormat {
    Json,
    Env,
    Uri,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            render::error(&error);
            ExitCode::from(EXIT_ERROR)
        }
    }
}

fn run(cli: Cli) -> Result<u8> {
    let context = Context::new(&cli)?;
    match cli.command {
        Command::Plan(args) => plan_command(&context, &args),
        Command::Apply(args) => apply_command(&context, &args),
        Command::Check(args) => check_command(&context, &args),
        Command::Credentials {
            tenant,
            role,
            format,
        } => credentials_command(&context, &tenant, role, format),
        Command::Up { format } => {
            let cluster = context.start_embedded()?;
            render::cluster_status(&cluster.status()?, format)?;
            Ok(EXIT_OK)
        }
        Command::Down => {
            context.embedded().stop()?;
            eprintln!("embedded cluster stopped");
            Ok(EXIT_OK)
        }
        Command::Status { format } => {
            render::cluster_status(&context.embedded().status()?, format)?;
            Ok(EXIT_OK)
        }
    }
}

/// Spec → desired → observed → plan: what plan, apply and check share.
struct Planned {
    repo: pgtenant_spec::LoadedRepo,
    desired: Desired,
    observed: pgtenant_engine::Observed,
    plan: pgtenant_engine::Plan,
    connected: context::Connected,
    _lock: Option<pgtenant_engine::ApplyLock>,
}

/// `exclusive`: hold the cluster-wide apply lock from before the catalog is read until the
/// returned [`Planned`] is dropped, so two applies never plan against each other's half-done work.
fn load_and_plan(
    context: &Context,
    args: &RepoArgs,
    runtime: &tokio::runtime::Runtime,
    exclusive: bool,
) -> Result<Planned> {
    let root = args.repo.clone().unwrap_or_else(|| PathBuf::from("."));
    let repo = pgtenant_spec::load_repo(&root)
        .with_context(|| format!("reading the apps repo {}", root.display()))?;
    render::diagnostics(&repo);
    let desired = Desired::from_repo(&repo);
    let connected = context.connect()?;
    let store = context.store()?;
    let lock = match exclusive {
        true => Some(runtime.block_on(pgtenant_engine::ApplyLock::acquire(&connected.connector))?),
        false => None,
    };
    let observed = runtime
        .block_on(pgtenant_engine::observe(
            &connected.connector,
            &desired,
            store.as_ref(),
        ))
        .context("reading the cluster")?;
    let plan_context = PlanContext {
        endpoint_host: connected.endpoint.host.clone(),
        endpoint_port: connected.endpoint.port,
    };
    let plan = pgtenant_engine::plan(&desired, &observed, &plan_context);
    Ok(Planned {
        repo,
        desired,
        observed,
        plan,
        connected,
        _lock: lock,
    })
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn plan_command(context: &Context, args: &RepoArgs) -> Result<u8> {
    let runtime = runtime()?;
    let planned = load_and_plan(context, args, &runtime, false)?;
    render::plan(&planned.plan, &planned.repo, args.format)?;
    Ok(if planned.repo.has_errors() {
        EXIT_ERROR
    } else if planned.plan.is_converged() {
        EXIT_OK
    } else {
        EXIT_PENDING
    })
}

fn apply_command(context: &Context, args: &RepoArgs) -> Result<u8> {
    let runtime = runtime()?;
    let planned = load_and_plan(context, args, &runtime, true)?;
    let store: Arc<dyn CredentialStore> = context.store()?;
    let executor = Executor {
        connector: planned.connected.connector,
        store,
        endpoint: planned.connected.endpoint,
        parallelism: planned.observed.server.parallelism(),
    };
    let show_progress = args.format == Format::Text && std::io::stderr().is_terminal();
    let progress = render::ApplyProgress::new(&planned.plan, show_progress);
    let outcome = runtime.block_on(executor.apply(&planned.plan, progress.callback()));
    progress.finish();
    render::apply(&planned.plan, &outcome, &planned.repo, args.format)?;
    Ok(
        if planned.repo.has_errors() || outcome.failed().next().is_some() {
            EXIT_ERROR
        } else {
            EXIT_OK
        },
    )
}

fn check_command(context: &Context, args: &RepoArgs) -> Result<u8> {
    let runtime = runtime()?;
    let planned = load_and_plan(context, args, &runtime, false)?;
    let report = check::report(&planned.desired, &planned.observed, &planned.plan);
    render::check(&report, &planned.repo, args.format)?;
    Ok(if planned.repo.has_errors() {
        EXIT_ERROR
    } else if report.in_sync {
        EXIT_OK
    } else {
        EXIT_PENDING
    })
}

fn credentials_command(
    context: &Context,
    tenant: &str,
    role: RoleArg,
    format: CredentialFormat,
) -> Result<u8> {
    let Some((namespace, database)) = tenant.split_once('/') else {
        bail!("`{tenant}` is not NAMESPACE/DATABASE (for example idp-dev/my-db)");
    };
    if !pgtenant_spec::is_dns_label(namespace) || !pgtenant_spec::is_dns_label(database) {
        bail!("`{tenant}` is not NAMESPACE/DATABASE with lowercase letters, digits and '-' only");
    }
    let path = SecretPath::for_role(namespace, database, role.as_str());
    let store = context.store()?;
    let credential = store
        .get(&path)
        .with_context(|| format!("reading {path} from the credential store"))?
        .with_context(|| {
            format!("no stored credentials at {path}: is {tenant} declared in the repo, and has `pgtenant apply` run?")
        })?;
    render::credential(&credential, format)?;
    Ok(EXIT_OK)
}
