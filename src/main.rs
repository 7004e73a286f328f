//! The `pgtenant` binary: argument parsing and dispatch. Each command group lives in `commands/`,
//! shared output helpers in `render`; everything else lives in the library crates.

mod commands;
mod context;
mod fleet;
mod render;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};

use commands::{cluster, connect, credentials, list, reconcile, rotate, serve, store};
use context::Context;

/// Exit codes: the contract scripts rely on.
pub const EXIT_OK: u8 = 0;
pub const EXIT_ERROR: u8 = 1;
pub const EXIT_PENDING: u8 = 2;

/// The heading of the options every command takes; shown once, in `pgtenant --help`.
const GLOBAL: &str = "Global options";

#[derive(Parser)]
#[command(
    name = "pgtenant",
    version,
    about = "Self-service tenant databases on a shared PostgreSQL cluster"
)]
struct Cli {
    /// The cluster to manage (libpq URL). Without it, pgtenant runs its own local cluster under the state dir.
    #[arg(long, env = "PGTENANT_ADMIN_URL", global = true, hide_env_values = true, help_heading = GLOBAL)]
    admin_url: Option<String>,

    /// Local state: credential store, embedded cluster.
    #[arg(long, env = "PGTENANT_STATE_DIR", global = true, hide_env_values = true, help_heading = GLOBAL)]
    state_dir: Option<PathBuf>,

    /// HOST:PORT that applications connect to, written into credentials [default: the admin URL's host and port].
    #[arg(long, env = "PGTENANT_ENDPOINT", global = true, hide_env_values = true, help_heading = GLOBAL)]
    endpoint: Option<String>,

    /// The credential store's key file, kept apart from the data [default: <state-dir>/keys/store.key].
    #[arg(long, env = "PGTENANT_STORE_KEY_FILE", global = true, hide_env_values = true, help_heading = GLOBAL)]
    store_key_file: Option<PathBuf>,

    /// CA bundle (PEM) that verifies the cluster's server certificate, for `--sslmode verify-full`
    /// [default: the embedded cluster's CA; none for an admin URL].
    #[arg(long, env = "PGTENANT_CA_FILE", global = true, hide_env_values = true, help_heading = GLOBAL)]
    ca_file: Option<PathBuf>,

    /// Extensions that need superuser and that tenants may still declare: the control role creates
    /// them where the server lets it (seed 004's `superuser_extensions`). Comma-separated.
    #[arg(
        long,
        env = "PGTENANT_SUPERUSER_EXTENSIONS",
        global = true,
        value_delimiter = ',',
        hide_env_values = true,
        help_heading = GLOBAL
    )]
    superuser_extensions: Vec<String>,

    /// The platform config (pgtenant.yaml): repo, clusters, store; flags and variables win over it
    /// [default: <state-dir>/pgtenant.yaml, when it exists].
    #[arg(long, env = "PGTENANT_CONFIG", global = true, hide_env_values = true, help_heading = GLOBAL)]
    config: Option<PathBuf>,

    /// The cluster of the config file to manage, by name; needed when it lists several.
    #[arg(long, env = "PGTENANT_CLUSTER", global = true, hide_env_values = true, help_heading = GLOBAL)]
    cluster: Option<String>,

    /// How log lines on stderr look: `text` for people, `json` (one object a line) for machines.
    /// Which ones appear is set by PGTENANT_LOG (e.g. `info`, `debug`, `pgtenant_backup=debug`)
    /// [default level: warnings only].
    #[arg(
        long,
        env = "PGTENANT_LOG_FORMAT",
        global = true,
        value_enum,
        default_value_t = LogFormat::Text,
        hide_env_values = true,
        help_heading = GLOBAL
    )]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Show the operations `apply` would run. Exit 0 in sync, 2 changes pending, 1 error.
    Plan(reconcile::RepoArgs),
    /// Converge the cluster to the repo. Exit 0 when everything converged, 1 when anything failed.
    Apply(reconcile::RepoArgs),
    /// Report, per tenant, what the cluster holds and any drift. Exit 0 clean, 2 drift, 1 error.
    Check(reconcile::CheckArgs),
    /// Print a tenant role's credentials from the store.
    Credentials(credentials::CredentialsArgs),
    /// Write the credentials of every tenant role declared in the repo to files (mode 0600).
    Export(credentials::ExportArgs),
    /// Run psql as a tenant role (read by default); the password goes through the environment.
    Psql(connect::PsqlArgs),
    /// Print a tenant role's connection URI.
    Url(connect::UrlArgs),
    /// Print the CA certificate (PEM) that verifies the cluster, for sslmode=verify-full.
    Ca,
    /// Log in as a tenant's roles with the stored credentials; explain what fails.
    Doctor(connect::DoctorArgs),
    /// The credential store.
    Store {
        #[command(subcommand)]
        command: store::StoreCommand,
    },
    /// Final backups of dropped databases: list them, restore one into its database declared again.
    Trash {
        #[command(subcommand)]
        command: commands::trash::TrashCommand,
    },
    /// Move a tenant to another cluster of the fleet (offline: pg_dump/pg_restore), or `--abort`
    /// a completed move. Without --yes the steps are printed and it exits 2.
    Move(commands::r#move::MoveArgs),
    /// Every database on the cluster: managed, orphaned-protected (since when) or unmanaged.
    List(list::ListArgs),
    /// New passwords for a tenant's roles (crash-safe; `--grace` for zero downtime).
    Rotate(rotate::RotateArgs),
    /// Backups: `backup run` (the cluster, pgBackRest), `backup NS/DB` (one tenant, pg_dump),
    /// `backup list`, `backup verify`, `backup expire`.
    Backup(commands::backup::BackupArgs),
    /// Restore one tenant database to a point in time or a backup, in place or `--into` another.
    Restore(commands::backup::RestoreArgs),
    /// Create (first time) and start the embedded local cluster.
    Up(cluster::StatusArgs),
    /// Stop the embedded local cluster.
    Down,
    /// Show the embedded local cluster's state.
    Status(cluster::StatusArgs),
    /// The apps repo's values files: `upgrade` legacy files to v1, print the JSON `schema`.
    Spec {
        #[command(subcommand)]
        command: commands::spec::SpecCommand,
    },
    /// Run as a service: watch the repo (a directory or a git remote), reconcile every change,
    /// repair drift, run the backup schedules; status page, API and /metrics over HTTP.
    Serve(serve::ServeArgs),
    /// The platform config (pgtenant.yaml): `check` it, print its JSON `schema`.
    Config {
        #[command(subcommand)]
        command: commands::config::ConfigCommand,
    },
}

fn main() -> ExitCode {
    // Everything pgtenant writes (state, dumps, exports, logs) is private unless made otherwise.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    // clap exits 2 on a usage error; 2 means "changes pending" here, so usage errors exit 1.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return ExitCode::from(if error.use_stderr() {
                EXIT_ERROR
            } else {
                EXIT_OK
            });
        }
    };
    init_logs(cli.log_format);
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            render::error(&error);
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// Log events go to stderr, as `--log-format` says, filtered by PGTENANT_LOG (EnvFilter syntax).
/// Without it only warnings are logged: what the commands report stays their own stderr lines.
fn init_logs(format: LogFormat) {
    use std::io::IsTerminal as _;
    use tracing_subscriber::filter::{EnvFilter, LevelFilter};
    let filter = EnvFilter::builder()
        .with_default_directive(LevelFilter::WARN.into())
        .with_env_var("PGTENANT_LOG")
        .from_env_lossy();
    // PGTENANT_LOG_SPANS=1 also logs each span's time when it closes (busy and idle): how a
    // reconcile's time divides between its phases, for benchmarks.
    let spans = if std::env::var_os("PGTENANT_LOG_SPANS").is_some_and(|v| v == "1") {
        tracing_subscriber::fmt::format::FmtSpan::CLOSE
    } else {
        tracing_subscriber::fmt::format::FmtSpan::NONE
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_span_events(spans)
        .with_timer(LogTime(format));
    let _ = match format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).try_init(),
        LogFormat::Json => logs.json().try_init(),
    };
}

/// Log times in the formats of every other time: RFC 3339 in JSON, `2026-12-01 06:51:14.123456 UTC`
/// in text.
struct LogTime(LogFormat);

impl tracing_subscriber::fmt::time::FormatTime for LogTime {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        let now = pgtenant_backup::Timestamp::now();
        match self.0 {
            LogFormat::Text => write!(w, "{now}"),
            LogFormat::Json => w.write_str(&now.to_rfc3339()),
        }
    }
}

fn run(cli: Cli) -> Result<u8> {
    // Checking the config must work when the config is broken: before the context reads it.
    if let Command::Config { command } = &cli.command {
        return commands::config::run(&cli, command);
    }
    let context = Context::new(&cli)?;
    match &cli.command {
        Command::Plan(args) => reconcile::plan(&context, args),
        Command::Apply(args) => reconcile::apply(&context, args),
        Command::Check(args) => reconcile::check(&context, args),
        Command::Credentials(args) => credentials::run(&context, args),
        Command::Export(args) => credentials::export(&context, args),
        Command::Psql(args) => connect::psql(&context, args),
        Command::Url(args) => connect::url(&context, args),
        Command::Ca => connect::ca(&context),
        Command::Doctor(args) => connect::doctor(&context, args),
        Command::Store { command } => store::run(&context, command),
        Command::Rotate(args) => rotate::run(&context, args),
        Command::List(args) => list::run(&context, args),
        Command::Move(args) => commands::r#move::run(&context, args),
        Command::Trash { command } => commands::trash::run_command(&context, command),
        Command::Backup(args) => commands::backup::backup(&context, args),
        Command::Restore(args) => commands::backup::restore(&context, args),
        Command::Up(args) => cluster::up(&context, args),
        Command::Down => cluster::down(&context),
        Command::Status(args) => cluster::status(&context, args),
        Command::Spec { command } => commands::spec::run(command),
        Command::Serve(args) => serve::run(&context, args),
        Command::Config { .. } => unreachable!("run before the context"),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every help text of every (sub)command, as `--help` prints it.
    fn helps(mut command: clap::Command, path: String, out: &mut Vec<(String, String)>) {
        out.push((path.clone(), command.render_long_help().to_string()));
        for sub in command.get_subcommands() {
            helps(sub.clone(), format!("{path} {}", sub.get_name()), out);
        }
    }

    #[test]
    fn help_texts_show_no_empty_env_values_and_describe_every_argument() {
        let mut all = Vec::new();
        helps(super::Cli::command(), "pgtenant".into(), &mut all);
        assert!(all.len() > 20, "subcommands walked: {}", all.len());
        for (path, help) in &all {
            assert!(
                !help.contains("=]"),
                "`{path} --help` shows an empty [env: X=]:\n{help}"
            );
        }
        fn undescribed(command: &clap::Command, path: &str, out: &mut Vec<String>) {
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                if arg.is_hide_set() || matches!(id, "help" | "version") {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() && arg.is_positional()
                {
                    out.push(format!("{path} <{id}>"));
                }
            }
            for sub in command.get_subcommands() {
                undescribed(sub, &format!("{path} {}", sub.get_name()), out);
            }
        }
        let mut missing = Vec::new();
        undescribed(&super::Cli::command(), "pgtenant", &mut missing);
        assert!(
            missing.is_empty(),
            "arguments without a description: {missing:?}"
        );
    }
}
