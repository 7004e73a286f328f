//! `credentials` and `export`: tenant roles' credentials from the store, in the formats applications
//! use (rendered by `pgtenant_secrets::export`).

use crate::commands::reconcile::runtime;
use crate::render::{out, outln};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use clap::ValueEnum;
use pgtenant_secrets::{
    ConnectionOptions, Credential, CredentialStore, Export, ExportFormat, SecretPath, SslMode,
    TenantRole,
};

use pgtenant_spec::{RoleDuty, RoleKind, TenantId, LOGIN_ROLES};

use crate::commands::parse_tenant;
use crate::context::Context;
use crate::render::{self, print_json};
use crate::{EXIT_ERROR, EXIT_OK};

#[derive(clap::Args)]
pub struct CredentialsArgs {
    /// NAMESPACE/DATABASE, as declared in the repo.
    pub tenant: String,
    #[arg(long, value_enum, help = RoleArg::help("The role"))]
    pub role: RoleArg,
    #[arg(long, value_enum, default_value_t = CredentialFormat::Json)]
    pub format: CredentialFormat,
    #[command(flatten)]
    pub ssl: SslArgs,
}

#[derive(clap::Args)]
pub struct ExportArgs {
    /// The apps repo [default: the current directory].
    pub repo: Option<PathBuf>,
    #[arg(long, value_enum)]
    pub format: CredentialFormat,
    /// Directory to write the files into, `<namespace>-<database>-<role>.<ext>`, mode 0600
    /// (created with mode 0700 if missing).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(
        long = "role",
        value_enum,
        help = RoleArg::help("Only these roles (repeatable) [default: all of each tenant's preset]")
    )]
    pub roles: Vec<RoleArg>,
    #[command(flatten)]
    pub ssl: SslArgs,
}

/// How clients secure their connections.
#[derive(clap::Args)]
pub struct SslArgs {
    /// libpq sslmode written into the credentials: `require` encrypts; `verify-full` also checks the
    /// server's certificate and host name against the CA (`--ca-file`, or the embedded cluster's).
    #[arg(long, value_enum, default_value_t = SslModeArg::Require)]
    pub sslmode: SslModeArg,
}

/// A login role of some preset, as `--role` takes it: the presets' logins
/// ([`pgtenant_spec::LOGIN_ROLES`]), never a list of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoleArg(RoleKind);

#[allow(non_upper_case_globals)]
impl RoleArg {
    /// The default role of `psql`.
    pub const Read: RoleArg = RoleArg::of(RoleKind::Read);
    /// idp's owner login, which `psql` warns about.
    pub const Admin: RoleArg = RoleArg::of(RoleKind::Admin);

    /// `kind`, which must log in in some preset (checked at compile time for constants).
    pub const fn of(kind: RoleKind) -> RoleArg {
        let mut i = 0;
        while i < LOGIN_ROLES.len() {
            if LOGIN_ROLES[i] as u8 == kind as u8 {
                return RoleArg(kind);
            }
            i += 1;
        }
        panic!("not a login role of any preset");
    }

    /// Every login role of every preset.
    pub const ALL: [RoleArg; LOGIN_ROLES.len()] = {
        let mut all = [RoleArg(LOGIN_ROLES[0]); LOGIN_ROLES.len()];
        let mut i = 0;
        while i < LOGIN_ROLES.len() {
            all[i] = RoleArg(LOGIN_ROLES[i]);
            i += 1;
        }
        all
    };

    pub fn as_str(self) -> &'static str {
        self.0.as_str()
    }

    /// What the role does in each preset it logs in in, for `--help`:
    /// `reads and writes data (app-migrator); acts as the owner (schema-owner)`.
    fn describe(self) -> String {
        let mut duties: Vec<(RoleDuty, Vec<&str>)> = Vec::new();
        for preset in self.0.login_of() {
            let duty = preset
                .roles()
                .iter()
                .find(|r| r.kind == self.0)
                .expect("login_of lists the presets that have it")
                .duty;
            match duties.iter_mut().find(|(d, _)| *d == duty) {
                Some((_, presets)) => presets.push(preset.as_str()),
                None => duties.push((duty, vec![preset.as_str()])),
            }
        }
        let shown: Vec<String> = duties
            .iter()
            .map(|(duty, presets)| {
                let what = match duty {
                    RoleDuty::Owner => "owns the database, runs migrations",
                    RoleDuty::Write => "reads and writes data",
                    RoleDuty::Read => "reads data",
                    RoleDuty::ActsAsOwner => "acts as the owner",
                };
                format!("{what} ({})", presets.join(", "))
            })
            .collect();
        shown.join("; ")
    }

    /// The login roles of a tenant's preset.
    pub fn of_preset(preset: pgtenant_spec::Preset) -> Vec<RoleArg> {
        preset.login_kinds().map(RoleArg).collect()
    }

    /// Which login roles each preset has, from the presets' definition, for help texts:
    /// `idp: admin|write|read; app-migrator: migrator|app; …`.
    pub fn by_preset() -> String {
        let presets: Vec<String> = pgtenant_spec::Preset::ALL
            .iter()
            .map(|p| format!("{}: {}", p.as_str(), p.login_roles().join("|")))
            .collect();
        presets.join("; ")
    }

    /// `what`, then "a login role of the tenant's preset (…)": a `--role` help text.
    pub fn help(what: &str) -> String {
        format!(
            "{what}: a login role of the tenant's preset ({})",
            RoleArg::by_preset()
        )
    }
}

impl ValueEnum for RoleArg {
    fn value_variants<'a>() -> &'a [Self] {
        &RoleArg::ALL
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.as_str()).help(self.describe()))
    }
}

/// The login roles `store` holds credentials for in NAMESPACE/DATABASE.
pub fn stored_roles(store: &dyn CredentialStore, namespace: &str, database: &str) -> Vec<RoleArg> {
    let Ok(runtime) = runtime() else {
        return Vec::new();
    };
    RoleArg::ALL
        .into_iter()
        .filter(|role| {
            matches!(
                runtime.block_on(store.get(&SecretPath::for_role(
                    namespace,
                    database,
                    role.as_str()
                ))),
                Ok(Some(_))
            )
        })
        .collect()
}

/// When the credentials the store holds for a tenant show its preset and that preset has no
/// `role`: which roles it has instead (from the presets' definition, no repo needed).
fn not_in_preset(stored: &[RoleArg], tenant: &str, role: RoleArg) -> Option<String> {
    if stored.is_empty() {
        return None;
    }
    let fitting: Vec<pgtenant_spec::Preset> = pgtenant_spec::Preset::ALL
        .into_iter()
        .filter(|preset| {
            stored
                .iter()
                .all(|r| preset.login_roles().contains(&r.as_str()))
        })
        .collect();
    if fitting.is_empty()
        || fitting
            .iter()
            .any(|preset| preset.login_roles().contains(&role.as_str()))
    {
        return None;
    }
    let roles: Vec<String> = fitting
        .iter()
        .map(|p| {
            format!(
                "{} tenants have the roles {}",
                p.as_str(),
                p.login_roles().join(", ")
            )
        })
        .collect();
    Some(format!(
        "{tenant} has no {} role: {}",
        role.as_str(),
        roles.join("; ")
    ))
}

/// An error when a password change of this role was interrupted: its stored credential may be
/// one the server already refuses.
fn refuse_pending(
    store: &dyn CredentialStore,
    namespace: &str,
    database: &str,
    role: RoleArg,
) -> Result<()> {
    let path = SecretPath::for_role(namespace, database, role.as_str());
    if runtime()?
        .block_on(pgtenant_engine::rotate::is_pending(store, &path))
        .with_context(|| format!("reading the pending password change of {path}"))?
    {
        bail!(pgtenant_engine::rotate::pending_message(
            &TenantId::new(namespace, database).to_string(),
            role.as_str()
        ));
    }
    Ok(())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CredentialFormat {
    /// {username, password, endpoint, port, dbname, sslmode, sslrootcert, uri, jdbc}
    Json,
    /// DB_NAME, DB_USER, DB_PASSWORD, DB_HOST, DB_PORT, DB_SSLMODE, DATABASE_URL, single-quoted.
    Env,
    /// postgresql://user:password@host:port/dbname?sslmode=…
    Uri,
    /// jdbc:postgresql://host:port/dbname?user=…&password=…&sslmode=…
    Jdbc,
    /// A Kubernetes Secret `<ns>-<db>-<role>` in namespace `<ns>`.
    K8sSecret,
    /// The platform's ExternalSecret reading `customer/<ns>/<db>-<role>` (no password).
    ExternalSecret,
    /// A ~/.pgpass line.
    Pgpass,
}

impl From<CredentialFormat> for ExportFormat {
    fn from(format: CredentialFormat) -> Self {
        match format {
            CredentialFormat::Json => ExportFormat::Json,
            CredentialFormat::Env => ExportFormat::Env,
            CredentialFormat::Uri => ExportFormat::Uri,
            CredentialFormat::Jdbc => ExportFormat::Jdbc,
            CredentialFormat::K8sSecret => ExportFormat::K8sSecret,
            CredentialFormat::ExternalSecret => ExportFormat::ExternalSecret,
            CredentialFormat::Pgpass => ExportFormat::Pgpass,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SslModeArg {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl From<SslModeArg> for SslMode {
    fn from(mode: SslModeArg) -> Self {
        match mode {
            SslModeArg::Disable => SslMode::Disable,
            SslModeArg::Allow => SslMode::Allow,
            SslModeArg::Prefer => SslMode::Prefer,
            SslModeArg::Require => SslMode::Require,
            SslModeArg::VerifyCa => SslMode::VerifyCa,
            SslModeArg::VerifyFull => SslMode::VerifyFull,
        }
    }
}

/// A tenant role and its stored credential.
pub struct Loaded {
    pub namespace: String,
    pub database: String,
    pub role: RoleArg,
    pub credential: Credential,
}

impl Loaded {
    pub fn tenant_role(&self) -> TenantRole<'_> {
        TenantRole {
            namespace: &self.namespace,
            database: &self.database,
            role: self.role.as_str(),
        }
    }

    pub fn export<'a>(&'a self, options: &'a ConnectionOptions) -> Export<'a> {
        Export {
            tenant: self.tenant_role(),
            credential: &self.credential,
            options,
        }
    }
}

/// The stored credential of `role` in `tenant` (NAMESPACE/DATABASE), or why there is none.
pub fn load(context: &Context, tenant: &str, role: RoleArg) -> Result<Loaded> {
    let (namespace, database) = parse_tenant(tenant)?;
    let store = context.store()?;
    refuse_pending(store.as_ref(), namespace, database, role)?;
    let Some(credential) = read(store.as_ref(), namespace, database, role)? else {
        let stored = stored_roles(store.as_ref(), namespace, database);
        if let Some(hint) = not_in_preset(&stored, tenant, role) {
            bail!(hint);
        }
        let path = SecretPath::for_role(namespace, database, role.as_str());
        bail!(
            "no stored credentials at {path}: is {tenant} declared in the repo, and has `pgtenant apply` run?"
        );
    };
    Ok(Loaded {
        namespace: namespace.to_string(),
        database: database.to_string(),
        role,
        credential,
    })
}

/// The cluster of `tenant` (in a fleet, the one it lives on: [`crate::fleet::home`]), its
/// connection options (`options_of` that cluster) and the stored credential of `role`, with
/// that cluster's endpoint.
pub fn load_at_home<'c>(
    context: &'c Context,
    tenant: &str,
    role: RoleArg,
    options_of: impl FnOnce(&Context) -> Result<ConnectionOptions>,
) -> Result<(&'c Context, ConnectionOptions, Loaded)> {
    parse_tenant(tenant)?;
    let home = crate::fleet::home(context, tenant)?;
    let options = options_of(home.context)?;
    let mut loaded = load(home.context, tenant, role)?;
    home.settle(tenant, &mut loaded.credential)?;
    Ok((home.context, options, loaded))
}

fn read(
    store: &dyn CredentialStore,
    namespace: &str,
    database: &str,
    role: RoleArg,
) -> Result<Option<Credential>> {
    let path = SecretPath::for_role(namespace, database, role.as_str());
    runtime()?
        .block_on(store.get(&path))
        .with_context(|| format!("reading {path} from the credential store"))
}

/// `sslmode` and, for the verifying modes, the CA clients check the server with.
pub fn connection_options(context: &Context, sslmode: SslModeArg) -> Result<ConnectionOptions> {
    let sslmode = SslMode::from(sslmode);
    if !sslmode.verifies_server() {
        // Not even when a CA is known: with a root certificate libpq turns `require` into
        // `verify-ca`, which is not what was asked for.
        return Ok(ConnectionOptions {
            sslmode,
            sslrootcert: None,
            hosts: crate::commands::reconcile::ha_hosts(context),
        });
    }
    let ca = context.ca_file()?.with_context(|| {
        format!(
            "sslmode {} needs the CA that signed the cluster's certificate: pass --ca-file FILE \
             (or set PGTENANT_CA_FILE)",
            sslmode.as_str()
        )
    })?;
    if !ca.is_file() {
        bail!(
            "the CA file {} does not exist: for the embedded cluster run `pgtenant up` first, \
             otherwise pass the cluster's CA with --ca-file",
            ca.display()
        );
    }
    Ok(ConnectionOptions {
        sslmode,
        sslrootcert: Some(ca),
        hosts: crate::commands::reconcile::ha_hosts(context),
    })
}

/// Exported credentials must work against a cluster that requires SSL.
fn exportable_options(context: &Context, sslmode: SslModeArg) -> Result<ConnectionOptions> {
    let options = connection_options(context, sslmode)?;
    if matches!(
        options.sslmode,
        SslMode::Disable | SslMode::Allow | SslMode::Prefer
    ) {
        bail!(
            "sslmode {} is not offered for credentials: the cluster requires SSL, so use require \
             (the default), verify-ca or verify-full",
            options.sslmode.as_str()
        );
    }
    Ok(options)
}

pub fn run(context: &Context, args: &CredentialsArgs) -> Result<u8> {
    let (context, options, loaded) = load_at_home(context, &args.tenant, args.role, |c| {
        exportable_options(c, args.ssl.sslmode)
    })?;
    let export = loaded.export(&options);
    match args.format {
        CredentialFormat::Json => print_json(&export.json())?,
        format => out!("{}", render(context, &loaded, &export, format.into())),
    }
    Ok(EXIT_OK)
}

/// `format` of `export`; the ExternalSecret reads the secret's name in the configured store
/// (Secrets Manager's prefix may differ from `customer/`).
fn render(context: &Context, loaded: &Loaded, export: &Export<'_>, format: ExportFormat) -> String {
    match (format, context.store_kind()) {
        (ExportFormat::ExternalSecret, pgtenant_config::StoreKind::AwsSecretsManager) => {
            let path = loaded.tenant_role().secret_path();
            export.external_secret_at(&context.aws_store().secret_name(&path))
        }
        _ => export.render(format),
    }
}

/// `export`: one file per declared tenant role. Missing or unreadable credentials are reported and
/// make the exit code 1; the others are still written.
pub fn export(context: &Context, args: &ExportArgs) -> Result<u8> {
    let options = exportable_options(context, args.ssl.sslmode)?;
    let format = ExportFormat::from(args.format);
    let repo = context.load_repo(args.repo.as_deref(), false)?;
    let store = context.store()?;
    create_out_dir(&args.out)?;

    let (mut written, mut missing, mut failed, mut pending) = (0usize, 0usize, 0usize, 0usize);
    for spec in &repo.databases {
        let roles = RoleArg::of_preset(spec.preset)
            .into_iter()
            .filter(|role| args.roles.is_empty() || args.roles.contains(role));
        for role in roles {
            if let Err(error) = refuse_pending(store.as_ref(), &spec.namespace, &spec.name, role) {
                pending += 1;
                render::error(&error);
                continue;
            }
            let loaded = match read(store.as_ref(), &spec.namespace, &spec.name, role) {
                Ok(Some(credential)) => Loaded {
                    namespace: spec.namespace.clone(),
                    database: spec.name.clone(),
                    role,
                    credential,
                },
                Ok(None) => {
                    missing += 1;
                    eprintln!(
                        "error: {} ({} role): no stored credentials at {}",
                        spec.tenant_id(),
                        role.as_str(),
                        SecretPath::for_role(&spec.namespace, &spec.name, role.as_str())
                    );
                    continue;
                }
                Err(error) => {
                    failed += 1;
                    render::error(&error);
                    continue;
                }
            };
            let file = args.out.join(format!(
                "{}.{}",
                loaded.tenant_role().object_name(),
                format.extension()
            ));
            let text = render(context, &loaded, &loaded.export(&options), format);
            write_private(&file, text.as_bytes())?;
            outln!("{}", file.display());
            written += 1;
        }
    }

    eprintln!(
        "exported {written} credential(s) of {} tenant(s) as {} to {}",
        repo.databases.len(),
        format.name(),
        args.out.display()
    );
    if missing > 0 {
        eprintln!(
            "{missing} credential(s) missing from the store: run `pgtenant apply` for the repo to \
             create them"
        );
    }
    if failed > 0 {
        eprintln!(
            "{failed} credential(s) could not be read: `pgtenant store verify` lists every bad entry"
        );
    }
    if pending > 0 {
        eprintln!(
            "{pending} credential(s) not exported: their password change was interrupted; run \
             `pgtenant apply` to settle it, then export again"
        );
    }
    if repo.has_errors() {
        eprintln!("the repo has errors: the tenants of the failed files were not exported");
    }
    let clean = missing == 0 && failed == 0 && pending == 0 && !repo.has_errors();
    Ok(if clean { EXIT_OK } else { EXIT_ERROR })
}

fn create_out_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating the output directory {}", dir.display()))
}

/// Writes a new mode-0600 file next to `file` and renames it into place, so the credential never
/// sits in a file others can read, even when it replaces one with a looser mode.
fn write_private(file: &Path, contents: &[u8]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let name = file
        .file_name()
        .context("an output file name")?
        .to_string_lossy();
    let temp = file.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)
        .and_then(|mut f| {
            f.write_all(contents)?;
            f.sync_all()
        })
        .and_then(|()| std::fs::rename(&temp, file));
    if let Err(error) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(error).with_context(|| format!("writing {}", file.display()));
    }
    Ok(())
}
