//! Resolving global options into the things commands use: the cluster to manage (given, or the
//! embedded one), the credential store and the endpoint written into credentials.
//!
//! Flags and their environment variables win over the platform config (`pgtenant.yaml`), the
//! config wins over the defaults. Without a config file pgtenant manages one cluster, `default`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context as _, Result};
use pgtenant_cluster::{ClusterOptions, EmbeddedCluster};
use pgtenant_config::StoreKind;
use pgtenant_config::{ClusterConfig, Config, HostPort, PoolerConfig, DEFAULT_CLUSTER};
use pgtenant_engine::{Connector, Endpoint};
use pgtenant_secrets::{AwsSecretsManagerStore, AwsSettings, CredentialStore, FileStore};

use crate::Cli;

pub struct Context {
    admin_url: Option<String>,
    state_dir: PathBuf,
    endpoint: Option<String>,
    store_key_file: PathBuf,
    ca_file: Option<PathBuf>,
    superuser_extensions: BTreeSet<String>,
    /// The config file read, if any.
    config: Option<(PathBuf, Config)>,
    /// The chosen cluster's name: `default` without a config.
    cluster: String,
    /// The config's endpoint of the chosen cluster (`--endpoint` wins).
    config_endpoint: Option<HostPort>,
    /// The config's pooler of the chosen cluster.
    config_pooler: Option<PoolerConfig>,
    /// Why no cluster can be used (several in the config and none chosen, an admin URL reference
    /// that does not resolve): said by every command that needs the cluster.
    unusable: Option<String>,
    /// Worth saying about the config's references (a world-readable admin URL file).
    pub warnings: Vec<String>,
    /// A fleet run (docs/fleet.md): the config lists several clusters, neither `--cluster` nor
    /// `--admin-url` is given. One context per cluster, in config order.
    fleet: Vec<Context>,
    /// `--cluster` chose this cluster of a config that lists several: placement still consults
    /// the others (those reachable), only this one is planned.
    pub fleet_member_of: Vec<Context>,
}

/// Where the config file is, as `--config`, `PGTENANT_CONFIG` and the state dir say.
pub enum ConfigPath {
    /// Given with `--config` / `PGTENANT_CONFIG`: it must exist.
    Given(PathBuf),
    /// `<state-dir>/pgtenant.yaml`, which exists.
    Default(PathBuf),
    /// No config: `<state-dir>/pgtenant.yaml` does not exist.
    Absent(PathBuf),
}

impl ConfigPath {
    pub fn of(cli: &Cli) -> Result<Self> {
        if let Some(path) = cli.config.clone().filter(|p| !p.as_os_str().is_empty()) {
            return Ok(ConfigPath::Given(path));
        }
        let path = state_dir_of(cli)?.join(pgtenant_config::FILE_NAME);
        Ok(match std::fs::symlink_metadata(&path) {
            Ok(_) => ConfigPath::Default(path),
            Err(_) => ConfigPath::Absent(path),
        })
    }

    /// The file to read, if there is one.
    pub fn file(&self) -> Option<&Path> {
        match self {
            ConfigPath::Given(path) | ConfigPath::Default(path) => Some(path),
            ConfigPath::Absent(_) => None,
        }
    }
}

/// `--cluster` / `PGTENANT_CLUSTER`, if given.
pub fn cluster_flag(cli: &Cli) -> Option<&str> {
    cli.cluster
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty())
}

/// The config at `path`, or an error after printing its located problems; warnings are printed.
fn load_config(path: &Path) -> Result<Config> {
    let loaded = pgtenant_config::load(path);
    for diagnostic in &loaded.diagnostics {
        eprintln!("{diagnostic}");
    }
    match loaded.config {
        Some(config) => Ok(config),
        None => bail!(
            "the config file {} has {} error(s) (listed above); `pgtenant config check` checks it",
            path.display(),
            loaded.diagnostics.iter().filter(|d| d.is_error()).count()
        ),
    }
}

/// The cluster of `config` that a command uses: `--cluster`, else the only one. Ok(None) when
/// the config lists none. Err(message) when there are several and none is chosen (the fleet
/// comes later); a `--cluster` naming no cluster is an error of its own (outer Err).
pub fn choose_cluster<'c>(
    config: Option<&'c Config>,
    flag: Option<&str>,
) -> Result<Result<Option<&'c ClusterConfig>, String>> {
    let clusters = config.map_or(&[][..], |config| &config.clusters[..]);
    let names = || {
        let names: Vec<&str> = clusters.iter().map(|c| c.name.as_str()).collect();
        names.join(", ")
    };
    match (flag, clusters) {
        (None, []) => Ok(Ok(None)),
        (Some(DEFAULT_CLUSTER), []) => Ok(Ok(None)),
        (Some(name), []) => bail!(
            "--cluster {name}: no such cluster; without clusters in a config file the only one is `{DEFAULT_CLUSTER}`"
        ),
        (Some(name), _) => match clusters.iter().find(|c| c.name == name) {
            Some(cluster) => Ok(Ok(Some(cluster))),
            None => bail!(
                "--cluster {name}: no such cluster in the config file; its clusters are {}",
                names()
            ),
        },
        (None, [only]) => Ok(Ok(Some(only))),
        (None, _) => Ok(Err(format!(
            "the config file lists {} clusters ({}): choose one with --cluster NAME or PGTENANT_CLUSTER",
            clusters.len(),
            names()
        ))),
    }
}

pub struct Connected {
    pub connector: Arc<Connector>,
    pub endpoint: Endpoint,
    /// Where applications connect through the cluster's pooler; None: it has none.
    pub pooler_endpoint: Option<Endpoint>,
}

impl Context {
    pub fn new(cli: &Cli) -> Result<Self> {
        let config = match ConfigPath::of(cli)?.file() {
            Some(path) => Some((path.to_path_buf(), load_config(path)?)),
            None => None,
        };
        let context = Self::with_config(cli, config)?;
        for warning in &context.warnings {
            eprintln!("warning: {warning}");
        }
        Ok(context)
    }

    /// The context of `cli` with `config` (read already) instead of the file's; warnings are
    /// left in [`Context::warnings`].
    pub fn with_config(cli: &Cli, config: Option<(PathBuf, Config)>) -> Result<Self> {
        let flag = cluster_flag(cli).map(str::to_owned);
        let mut context = Self::choosing(cli, config, flag.as_deref())?;
        let several = context.config().map_or(Vec::new(), |c| {
            c.cluster_names().iter().map(|n| n.to_string()).collect()
        });
        let flag_url = cli
            .admin_url
            .as_deref()
            .is_some_and(|u| !u.trim().is_empty());
        if several.len() > 1 && !flag_url {
            let members = several
                .iter()
                .map(|name| Self::choosing(cli, context.config.clone(), Some(name)))
                .collect::<Result<Vec<_>>>()?;
            if flag.is_none() {
                // `unusable` stays: commands that are not fleet-aware still say "choose one".
                context.fleet = members;
            } else {
                context.fleet_member_of = members;
            }
        }
        Ok(context)
    }

    /// The context of one cluster: `flag` as `--cluster` says.
    fn choosing(cli: &Cli, config: Option<(PathBuf, Config)>, flag: Option<&str>) -> Result<Self> {
        let state_dir = state_dir_of(cli)?;
        let mut warnings = Vec::new();
        let flag_url = cli.admin_url.clone().filter(|url| !url.trim().is_empty());
        let flag_ca = cli.ca_file.clone().filter(|f| !f.as_os_str().is_empty());
        let chosen = choose_cluster(config.as_ref().map(|(_, c)| c), flag)?;
        let (cluster, mut unusable) = match chosen {
            Ok(cluster) => (cluster, None),
            // An admin URL given as a flag needs no choice among the config's clusters.
            Err(_) if flag_url.is_some() => (None, None),
            Err(why) => (None, Some(why)),
        };
        let mut admin_url = flag_url.clone();
        if let (None, Some(cluster)) = (&flag_url, cluster) {
            match cluster.admin_url.resolve() {
                Ok(resolved) => {
                    for warning in &resolved.warnings {
                        warnings.push(format!("cluster {}: {warning}", cluster.name));
                    }
                    admin_url = Some(resolved.url);
                }
                Err(error) => {
                    unusable = Some(format!(
                        "{}: the admin URL of cluster `{}`: {error}",
                        cluster.admin_url_location, cluster.name
                    ))
                }
            }
        }
        let config_value =
            |f: fn(&Config) -> Option<PathBuf>| config.as_ref().and_then(|(_, c)| f(c));
        let store_key_file = cli
            .store_key_file
            .clone()
            .or_else(|| config_value(|c| c.store.key_file.clone()))
            .unwrap_or_else(|| state_dir.join("keys").join("store.key"));
        let mut superuser_extensions: BTreeSet<String> = cli
            .superuser_extensions
            .iter()
            .map(|e| e.trim().to_string())
            .filter(|e| !e.is_empty())
            .collect();
        if superuser_extensions.is_empty() {
            if let Some((_, config)) = &config {
                superuser_extensions = config.superuser_extensions.iter().cloned().collect();
            }
        }
        Ok(Context {
            admin_url,
            state_dir,
            endpoint: cli.endpoint.clone().filter(|e| !e.trim().is_empty()),
            store_key_file,
            ca_file: flag_ca.or_else(|| cluster.and_then(|c| c.ca_file.clone())),
            superuser_extensions,
            cluster: cluster.map_or(DEFAULT_CLUSTER, |c| &c.name).to_owned(),
            config_endpoint: cluster.and_then(|c| c.endpoint.clone()),
            config_pooler: cluster.and_then(|c| c.pooler.clone()),
            unusable,
            config,
            warnings,
            fleet: Vec::new(),
            fleet_member_of: Vec::new(),
        })
    }

    /// The clusters of a fleet run, one context each (empty: not a fleet run).
    pub fn fleet(&self) -> &[Context] {
        &self.fleet
    }

    /// The config's entry of this context's cluster, if any.
    pub fn cluster_config(&self) -> Option<&ClusterConfig> {
        self.config()?.cluster(&self.cluster)
    }

    /// The apps repo: `given` (the REPO argument or PGTENANT_REPO), else the config's `repo:`,
    /// else the current directory.
    pub fn repo(&self, given: Option<&Path>) -> PathBuf {
        given
            .map(Path::to_path_buf)
            .or_else(|| self.config.as_ref().and_then(|(_, c)| c.repo.clone()))
            .unwrap_or_else(|| PathBuf::from("."))
    }

    /// Reads the apps repo (see [`Self::repo`]) and prints its diagnostics. Unless
    /// `allow_not_a_repo`, a directory without any values file is refused: it is the wrong
    /// directory (a project checkout, a mistyped path), never a repo that declares nothing.
    pub fn load_repo(
        &self,
        given: Option<&Path>,
        allow_not_a_repo: bool,
    ) -> Result<pgtenant_spec::LoadedRepo> {
        self.load_repo_for(given, allow_not_a_repo, &BTreeSet::new())
    }

    /// [`Self::load_repo`] reading only the values files that can declare or collide with the
    /// tenants `scope` (`NS/DB`; empty: every file), so that its cost does not grow with the
    /// repo. When what it read does not declare every one of them (a removal, a broken file of
    /// theirs), the whole repo is read after all: a removal is planned, and its guards judged,
    /// against everything the repo declares.
    pub fn load_repo_for(
        &self,
        given: Option<&Path>,
        allow_not_a_repo: bool,
        scope: &BTreeSet<String>,
    ) -> Result<pgtenant_spec::LoadedRepo> {
        let root = self.repo(given);
        let reading = || format!("reading the apps repo {}", root.display());
        let options = pgtenant_spec::LoadOptions::from_env().with_context(reading)?;
        let mut repo =
            pgtenant_spec::load_repo_scoped(&root, scope, &options).with_context(reading)?;
        let declared = |tenant: &String| repo.databases.iter().any(|d| d.tenant_id() == *tenant);
        if !scope.iter().all(declared) {
            repo = pgtenant_spec::load_repo_with(&root, &options).with_context(reading)?;
        }
        if !allow_not_a_repo {
            repo.ensure_apps_repo()?;
        }
        crate::render::diagnostics(&repo);
        if !repo.not_read.is_empty() {
            eprintln!(
                "--tenant: read {} of {} values file(s), those that can declare or collide with the \
                 named tenant(s); the other {} were not read, so their problems are not reported here \
                 (a run without --tenant reads every file)",
                repo.files_read.len(),
                repo.files_read.len() + repo.not_read.len(),
                repo.not_read.len()
            );
        }
        Ok(repo)
    }

    /// The config file read, if any.
    pub fn config(&self) -> Option<&Config> {
        self.config.as_ref().map(|(_, config)| config)
    }

    /// Where the config file read is, if any.
    pub fn config_path(&self) -> Option<&Path> {
        self.config.as_ref().map(|(path, _)| path.as_path())
    }

    /// The name of the cluster commands manage: `default` without a config.
    pub fn cluster_name(&self) -> &str {
        &self.cluster
    }

    /// Why no cluster can be used, if none can: several in the config and none chosen, or an
    /// admin URL reference that does not resolve.
    pub fn unusable(&self) -> Option<&str> {
        self.unusable.as_deref()
    }

    /// Err when no cluster can be used ([`Context::unusable`]).
    fn usable(&self) -> Result<()> {
        match &self.unusable {
            Some(why) => bail!("{why}"),
            None => Ok(()),
        }
    }

    pub fn superuser_extensions(&self) -> &BTreeSet<String> {
        &self.superuser_extensions
    }

    /// The config's `passwords.scramIterations`, else PostgreSQL's default.
    pub fn scram_iterations(&self) -> u32 {
        self.config.as_ref().map_or(
            pgtenant_config::Passwords::DEFAULT_SCRAM_ITERATIONS,
            |(_, config)| config.passwords.scram_iterations,
        )
    }

    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// The admin URL when one is given (None: the embedded cluster).
    pub fn admin_url(&self) -> Option<&str> {
        self.admin_url.as_deref()
    }

    pub fn embedded(&self) -> EmbeddedCluster {
        EmbeddedCluster::at(&self.state_dir.join("cluster"))
    }

    pub fn start_embedded(&self) -> Result<EmbeddedCluster> {
        self.usable()?;
        self.create_state_dir()?;
        let dir = self.state_dir.join("cluster");
        let existing = EmbeddedCluster::at(&dir);
        let first_time = !existing.is_initialized();
        if first_time {
            eprintln!(
                "creating the embedded PostgreSQL cluster in {}",
                dir.display()
            );
        }
        // Granted whenever this run starts the server (not on every command): so clusters made by
        // an older pgtenant get it too.
        let starting = first_time || !existing.status().is_ok_and(|status| status.running);
        if starting && !first_time {
            // Said, not silent: someone may have stopped it on purpose (`pgtenant down`).
            eprintln!(
                "starting the embedded PostgreSQL cluster in {} (it was stopped; `pgtenant down` stops it again)",
                dir.display()
            );
        }
        let cluster = EmbeddedCluster::ensure_running(&dir, &ClusterOptions::default())
            .with_context(|| format!("starting the embedded cluster in {}", dir.display()))?;
        if starting {
            grant_platform_parameters(&cluster)?;
        }
        Ok(cluster)
    }

    /// The admin URL when given; otherwise the embedded cluster, created and started as needed.
    pub fn connect(&self) -> Result<Connected> {
        self.usable()?;
        let (url, embedded_pooler) = match &self.admin_url {
            Some(url) => (url.clone(), None),
            None => {
                let cluster = self.start_embedded()?;
                (cluster.control_url()?, cluster.pooler_endpoint())
            }
        };
        let connector = Arc::new(Connector::from_url(&url).context("using the admin URL")?);
        let endpoint = match (&self.endpoint, &self.config_endpoint) {
            (Some(endpoint), _) => parse_endpoint(endpoint)?,
            (None, Some(HostPort { host, port })) => Endpoint {
                host: host.clone(),
                port: *port,
            },
            (None, None) => {
                let (host, port) = connector.endpoint();
                Endpoint { host, port }
            }
        };
        Ok(Connected {
            connector,
            endpoint,
            // The config's pooler, else the embedded cluster's (when pgbouncer is installed).
            pooler_endpoint: self
                .pooler_endpoint()
                .or(embedded_pooler.map(|(host, port)| Endpoint { host, port })),
        })
    }

    /// The chosen cluster's pooler in the config (`clusters[].pooler`).
    pub fn pooler_config(&self) -> Option<&PoolerConfig> {
        self.config_pooler.as_ref()
    }

    /// Where applications connect through the cluster's pooler: the config's
    /// `pooler.endpoint` (else its `listen`); None when the cluster has no pooler.
    pub fn pooler_endpoint(&self) -> Option<Endpoint> {
        let pooler = self.config_pooler.as_ref()?;
        let HostPort { host, port } = pooler.app_endpoint().clone();
        Some(Endpoint { host, port })
    }

    /// The configured store (`store.type`, the file store by default).
    pub fn store(&self) -> Result<Arc<dyn CredentialStore>> {
        self.store_of(self.store_kind())
    }

    /// The config's `store.type`.
    pub fn store_kind(&self) -> StoreKind {
        self.config
            .as_ref()
            .map_or(StoreKind::File, |(_, c)| c.store.kind)
    }

    /// The store of type `kind`: the file store under the state directory, or Secrets Manager as
    /// the config's `store:` says (its defaults otherwise).
    pub fn store_of(&self, kind: StoreKind) -> Result<Arc<dyn CredentialStore>> {
        Ok(match kind {
            StoreKind::File => Arc::new(self.file_store()?),
            StoreKind::AwsSecretsManager => Arc::new(self.aws_store()),
        })
    }

    /// The AWS Secrets Manager store with the config's settings.
    pub fn aws_store(&self) -> AwsSecretsManagerStore {
        let mut settings = AwsSettings::default();
        if let Some((_, config)) = &self.config {
            let store = &config.store;
            settings.region = store.region.clone();
            settings.endpoint_url = store.endpoint_url.clone();
            settings.kms_key_id = store.kms_key_id.clone();
            if let Some(prefix) = &store.prefix {
                settings.prefix = prefix.clone();
            }
        }
        AwsSecretsManagerStore::new(settings)
    }

    /// The CA that verifies the cluster's server certificate, absolute: `--ca-file`, else the
    /// embedded cluster's own CA when no admin URL is given. None when neither is known.
    pub fn ca_file(&self) -> Result<Option<PathBuf>> {
        self.usable()?;
        match (&self.ca_file, &self.admin_url) {
            (Some(file), _) => {
                Ok(Some(std::path::absolute(file).with_context(|| {
                    format!("resolving --ca-file {}", file.display())
                })?))
            }
            (None, None) => Ok(Some(self.embedded().ca_cert_path())),
            (None, Some(_)) => Ok(None),
        }
    }

    /// The store as the concrete file store, for what only it offers (`verify`).
    pub fn file_store(&self) -> Result<FileStore> {
        self.create_state_dir()?;
        let data_dir = self.state_dir.join("credentials");
        let store = FileStore::open(&data_dir, &self.store_key_file).with_context(|| {
            format!(
                "opening the credential store {} (key {})",
                data_dir.display(),
                self.store_key_file.display()
            )
        })?;
        Ok(store)
    }

    /// Private to its owner, but traversable when the embedded server runs as another OS user
    /// (running as root): it must reach the cluster directory inside.
    fn create_state_dir(&self) -> Result<()> {
        create_private_dir(&self.state_dir, if is_root() { 0o711 } else { 0o700 })
    }
}

/// What a managed service's master role may do and the embedded control role otherwise could not:
/// set `log_statement` for tenant roles (seed 002 logs every statement of human roles).
pub fn grant_platform_parameters(cluster: &EmbeddedCluster) -> Result<()> {
    let url = cluster.superuser_url()?;
    crate::commands::reconcile::runtime()?
        .block_on(async {
            let superuser = Connector::from_url(&url)?.connect(None).await?;
            let grant = format!(
                "GRANT SET ON PARAMETER log_statement TO {}",
                pgtenant_engine::Ident::new(pgtenant_cluster::CONTROL_ROLE).quote()
            );
            superuser.batch_execute(&grant).await.map_err(|source| {
                pgtenant_engine::EngineError::Catalog {
                    database: None,
                    source,
                }
            })
        })
        .context("granting the control role the platform's parameters")
}

fn create_private_dir(dir: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .with_context(|| format!("creating the state directory {}", dir.display()))?;
    // The umask may have narrowed the mode; set it exactly.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting permissions of {}", dir.display()))
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// `--state-dir` / `PGTENANT_STATE_DIR`, else the default.
fn state_dir_of(cli: &Cli) -> Result<PathBuf> {
    match &cli.state_dir {
        Some(dir) => Ok(dir.clone()),
        None => default_state_dir(),
    }
}

/// root keeps state where system services do; everyone else under the XDG state directory.
fn default_state_dir() -> Result<PathBuf> {
    if is_root() {
        return Ok(PathBuf::from("/var/lib/pgtenant"));
    }
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("pgtenant"));
    }
    match std::env::var_os("HOME") {
        Some(home) => Ok(PathBuf::from(home).join(".local/state/pgtenant")),
        None => bail!("cannot choose a state directory: set --state-dir or PGTENANT_STATE_DIR"),
    }
}

fn parse_endpoint(endpoint: &str) -> Result<Endpoint> {
    let parsed = HostPort::parse(endpoint).map(|HostPort { host, port }| Endpoint { host, port });
    parsed.with_context(|| {
        format!("--endpoint `{endpoint}` is not HOST:PORT (for example db.internal:5432)")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(args: &[&str], config: &str) -> Result<Context> {
        use clap::Parser as _;
        let dir = Path::new("/etc/pgtenant");
        let loaded = pgtenant_config::parse(&dir.join("pgtenant.yaml"), dir, config);
        let cli = crate::Cli::try_parse_from(
            ["pgtenant", "--state-dir", "/nonexistent/state"]
                .iter()
                .chain(args)
                .chain(&["list"]),
        )?;
        Context::with_config(
            &cli,
            Some((dir.join("pgtenant.yaml"), loaded.config.unwrap())),
        )
    }

    #[test]
    fn the_repo_argument_wins_over_the_config_which_wins_over_the_current_directory() {
        let with_repo = context(&[], "repo: apps\n").unwrap();
        assert_eq!(with_repo.repo(None), PathBuf::from("/etc/pgtenant/apps"));
        assert_eq!(with_repo.repo(Some(Path::new("x"))), PathBuf::from("x"));
        assert_eq!(context(&[], "").unwrap().repo(None), PathBuf::from("."));
    }

    #[test]
    fn the_cluster_is_the_only_one_or_the_chosen_one() {
        let two = "clusters:\n  - {name: a, adminUrl: 'postgres://u@a/p'}\n  - {name: b, adminUrl: 'postgres://u@b:6000/p', endpoint: 'apps.b:7000'}\n";
        let none = context(&[], two).unwrap();
        assert!(none.unusable().unwrap().contains("2 clusters (a, b)"));
        assert!(none.connect().is_err() && none.ca_file().is_err());
        let b = context(&["--cluster", "b"], two).unwrap();
        assert_eq!(
            (b.cluster_name(), b.admin_url()),
            ("b", Some("postgres://u@b:6000/p"))
        );
        assert_eq!(b.config_endpoint, HostPort::parse("apps.b:7000"));
        let error = context(&["--cluster", "c"], two).err().unwrap().to_string();
        assert!(error.contains("its clusters are a, b"), "{error}");
        // A flag's admin URL needs no choice; with one cluster it replaces only the URL.
        let flagged = context(&["--admin-url", "postgres://f@f/p"], two).unwrap();
        assert_eq!(
            (flagged.unusable(), flagged.admin_url()),
            (None, Some("postgres://f@f/p"))
        );
        let one = "clusters:\n  - {name: a, adminUrl: 'postgres://u@a/p', endpoint: 'apps.a:1'}\n";
        let flagged = context(&["--admin-url", "postgres://f@f/p"], one).unwrap();
        assert_eq!(flagged.admin_url(), Some("postgres://f@f/p"));
        assert_eq!(flagged.config_endpoint, HostPort::parse("apps.a:1"));
        let default = context(&[], "").unwrap();
        assert_eq!(
            (default.cluster_name(), default.admin_url()),
            ("default", None)
        );
        assert!(context(&["--cluster", "default"], "").is_ok());
        assert!(context(&["--cluster", "main"], "").is_err());
    }

    #[test]
    fn endpoints() {
        let e = parse_endpoint("db.internal:6432").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("db.internal", 6432));
        let e = parse_endpoint("[::1]:5432").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("::1", 5432));
        assert!(parse_endpoint("db.internal").is_err());
        assert!(parse_endpoint(":5432").is_err());
        assert!(parse_endpoint("db:99999").is_err());
    }
}
