//! Resolving global options into the things commands use: the cluster to manage (given, or the
//! embedded one), the credential store and the endpoint written into credentials.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context as _, Result};
use pgtenant_cluster::{ClusterOptions, EmbeddedCluster};
use pgtenant_engine::{Connector, Endpoint};
use pgtenant_secrets::{CredentialStore, FileStore};

use crate::Cli;

pub struct Context {
    admin_url: Option<String>,
    state_dir: PathBuf,
    endpoint: Option<String>,
    store_key_file: PathBuf,
    ca_file: Option<PathBuf>,
    superuser_extensions: BTreeSet<String>,
}

pub struct Connected {
    pub connector: Arc<Connector>,
    pub endpoint: Endpoint,
}

impl Context {
    pub fn new(cli: &Cli) -> Result<Self> {
        let state_dir = match &cli.state_dir {
            Some(dir) => dir.clone(),
            None => default_state_dir()?,
        };
        let store_key_file = cli
            .store_key_file
            .clone()
            .unwrap_or_else(|| state_dir.join("keys").join("store.key"));
        Ok(Context {
            admin_url: cli.admin_url.clone().filter(|url| !url.trim().is_empty()),
            state_dir,
            endpoint: cli.endpoint.clone(),
            store_key_file,
            ca_file: cli.ca_file.clone().filter(|f| !f.as_os_str().is_empty()),
            superuser_extensions: cli
                .superuser_extensions
                .iter()
                .map(|e| e.trim().to_string())
                .filter(|e| !e.is_empty())
                .collect(),
        })
    }

    pub fn superuser_extensions(&self) -> &BTreeSet<String> {
        &self.superuser_extensions
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
        let url = match &self.admin_url {
            Some(url) => url.clone(),
            None => self.start_embedded()?.control_url()?,
        };
        let connector = Arc::new(Connector::from_url(&url).context("using the admin URL")?);
        let endpoint = match &self.endpoint {
            Some(endpoint) => parse_endpoint(endpoint)?,
            None => {
                let (host, port) = connector.endpoint();
                Endpoint { host, port }
            }
        };
        Ok(Connected {
            connector,
            endpoint,
        })
    }

    pub fn store(&self) -> Result<Arc<dyn CredentialStore>> {
        Ok(Arc::new(self.file_store()?))
    }

    /// The CA that verifies the cluster's server certificate, absolute: `--ca-file`, else the
    /// embedded cluster's own CA when no admin URL is given. None when neither is known.
    pub fn ca_file(&self) -> Result<Option<PathBuf>> {
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
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime
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
    let parsed = endpoint.rsplit_once(':').and_then(|(host, port)| {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = port.parse::<u16>().ok()?;
        (!host.is_empty()).then(|| Endpoint {
            host: host.to_string(),
            port,
        })
    });
    parsed.with_context(|| {
        format!("--endpoint `{endpoint}` is not HOST:PORT (for example db.internal:5432)")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
