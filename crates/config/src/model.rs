use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use pgtenant_spec::{Environment, PoolMode, SourceLocation};
use serde::Serialize;

use crate::reference::AdminUrlSource;

/// The config's file name, looked for in the state directory when no path is given.
pub const FILE_NAME: &str = "pgtenant.yaml";

/// The name of the one cluster pgtenant manages without a config (or with one that lists none).
pub const DEFAULT_CLUSTER: &str = "default";

/// A validated `pgtenant.yaml`. Paths are absolute: relative ones in the file are taken from
/// the file's directory.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Config {
    /// `repo:`, the apps repo (a local directory).
    pub repo: Option<PathBuf>,
    /// `clusters:`, in file order; names are unique.
    pub clusters: Vec<ClusterConfig>,
    /// `store:`.
    pub store: StoreConfig,
    /// `environment:`, the platform's tier.
    pub environment: Option<Environment>,
    /// `retention:`, days kept per tier where the file overrides the default.
    pub retention_days: Vec<(Environment, u32)>,
    /// `backups:`.
    pub backups: BackupSchedules,
    /// `serve:`.
    pub serve: ServeConfig,
    /// `superuserExtensions:`.
    pub superuser_extensions: Vec<String>,
    /// `pooling:`, what a tenant database without a `pooling:` of its own gets.
    pub pooling: PoolingDefaults,
    /// `passwords:`, how the tenant logins' passwords are set.
    pub passwords: Passwords,
}

/// `passwords:`: how pgtenant sets the passwords it generates for tenant logins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Passwords {
    /// `scramIterations:`, the iteration count of each login's SCRAM verifier: what every client
    /// runs PBKDF2 for on every new connection [default: 4096].
    pub scram_iterations: u32,
}

impl Passwords {
    /// PostgreSQL's default (`scram_iterations`), RFC 7677's minimum, and pgjdbc's: its SCRAM
    /// client refuses fewer.
    pub const DEFAULT_SCRAM_ITERATIONS: u32 = 4096;
    pub const MIN_SCRAM_ITERATIONS: u32 = 1;
    /// Well past OWASP's 600,000 for PBKDF2-HMAC-SHA256; more only slows every connect.
    pub const MAX_SCRAM_ITERATIONS: u32 = 1_000_000;
}

impl Default for Passwords {
    fn default() -> Self {
        Passwords {
            scram_iterations: Self::DEFAULT_SCRAM_ITERATIONS,
        }
    }
}

impl Config {
    /// The cluster named `name`.
    pub fn cluster(&self, name: &str) -> Option<&ClusterConfig> {
        self.clusters.iter().find(|cluster| cluster.name == name)
    }

    /// The names of the clusters, in file order.
    pub fn cluster_names(&self) -> Vec<&str> {
        self.clusters.iter().map(|c| c.name.as_str()).collect()
    }

    /// Days that backups of `tier` are kept: the file's override, else the tier's default.
    pub fn retention_days(&self, tier: Environment) -> u32 {
        self.retention_days
            .iter()
            .find(|(t, _)| *t == tier)
            .map_or_else(|| tier.retention_days(), |(_, days)| *days)
    }
}

/// One item of `clusters:`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    /// A DNS-1123 label, unique in the file.
    pub name: String,
    /// Where the cluster's admin URL comes from.
    pub admin_url: AdminUrlSource,
    /// Where `adminUrl` is written, for errors found when it is resolved.
    pub admin_url_location: SourceLocation,
    /// What applications connect to; None: the admin URL's host and port.
    pub endpoint: Option<HostPort>,
    /// CA bundle (PEM) that verifies the server certificate.
    pub ca_file: Option<PathBuf>,
    pub labels: BTreeMap<String, String>,
    /// `pooler:`, the cluster's pgbouncer; None: no pooler (credentials carry no pooled endpoint).
    pub pooler: Option<PoolerConfig>,
    /// `patroni:`, the REST API base URLs (`http://10.0.0.1:8008`) of a Patroni cluster's
    /// members: the writer is the member whose `/primary` answers 200. Empty: not a Patroni
    /// cluster (a multi-host admin URL with `target_session_attrs=read-write` still finds it).
    pub patroni: Vec<String>,
    /// `failoverTimeout:`, how long a run waits for a new primary after losing the one it
    /// wrote to; None: [`ClusterConfig::DEFAULT_FAILOVER_TIMEOUT`] for an HA cluster.
    pub failover_timeout: Option<Duration>,
    /// `capacity:`, the most the fleet's placement puts on the cluster; None: no limit.
    pub capacity: Capacity,
    /// Where the item starts.
    pub location: SourceLocation,
}

/// `clusters[].capacity:`: both limits optional; a cluster at either limit gets no new tenant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capacity {
    /// `maxTenants:`, tenant databases on the cluster.
    pub max_tenants: Option<u32>,
    /// `maxSize:`, the total size of its tenant databases in bytes (`50GB`).
    pub max_size_bytes: Option<u64>,
}

impl ClusterConfig {
    /// At least Patroni's `ttl` + `retry_timeout` with its defaults (30 s + 10 s), with room for
    /// the promotion itself.
    pub const DEFAULT_FAILOVER_TIMEOUT: Duration = Duration::from_secs(60);
}

/// `pooling:`: the pool mode and size of tenant databases that do not set their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolingDefaults {
    /// `mode:` [default: transaction].
    pub mode: PoolMode,
    /// `size:`, pgbouncer's `pool_size` [default: 10].
    pub size: u32,
    /// `serverSocket:`, whether the embedded cluster's pgbouncer reaches the server over its
    /// private Unix socket instead of TCP + TLS [default: true]; only for the embedded cluster
    /// (a config that lists clusters may not set it).
    pub server_socket: bool,
}

impl PoolingDefaults {
    pub const DEFAULT_SIZE: u32 = 10;
}

impl Default for PoolingDefaults {
    fn default() -> Self {
        PoolingDefaults {
            mode: PoolMode::Transaction,
            size: Self::DEFAULT_SIZE,
            server_socket: true,
        }
    }
}

/// `clusters[].pooler:`, the pgbouncer in front of a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolerConfig {
    /// `run:` [default: local].
    pub run: PoolerRun,
    /// `listen:`, where pgbouncer listens (and its admin console answers).
    pub listen: HostPort,
    /// `endpoint:`, what applications connect to; None: `listen`.
    pub endpoint: Option<HostPort>,
    /// `configDir:`, where `pgbouncer.ini` and the auth file are written; None:
    /// `<state>/pooler/<cluster>/`.
    pub config_dir: Option<PathBuf>,
    /// `auth:` [default: file].
    pub auth: PoolerAuth,
    /// `tls:`, the certificate clients verify; None: the embedded CA's.
    pub tls: Option<TlsConfig>,
}

impl PoolerConfig {
    /// Where applications connect: `endpoint`, else `listen`.
    pub fn app_endpoint(&self) -> &HostPort {
        self.endpoint.as_ref().unwrap_or(&self.listen)
    }
}

/// `pooler.run`: who runs pgbouncer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PoolerRun {
    /// A pgbouncer process pgtenant (`serve`, `up`) starts and supervises.
    #[default]
    Local,
    /// pgtenant only writes the files and RELOADs through the admin console at `listen`
    /// (pgbouncer is run by systemd, Kubernetes, …).
    Files,
}

impl PoolerRun {
    pub const ALL: [PoolerRun; 2] = [PoolerRun::Local, PoolerRun::Files];

    pub fn as_str(self) -> &'static str {
        match self {
            PoolerRun::Local => "local",
            PoolerRun::Files => "files",
        }
    }
}

/// `pooler.auth`: how pgbouncer checks tenant passwords.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PoolerAuth {
    /// An `auth_file` of the SCRAM verifiers pgtenant computes (no superuser, no cleartext).
    #[default]
    File,
    /// `auth_query` through `pgtenant.pooler_lookup` in every tenant database (needs a control
    /// role that can read `pg_authid`).
    Query,
}

impl PoolerAuth {
    pub const ALL: [PoolerAuth; 2] = [PoolerAuth::File, PoolerAuth::Query];

    pub fn as_str(self) -> &'static str {
        match self {
            PoolerAuth::File => "file",
            PoolerAuth::Query => "query",
        }
    }
}

/// `HOST:PORT` (`[::1]:5432` for IPv6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

impl HostPort {
    /// `db.internal:5432`, `[::1]:5432`; None when it is not HOST:PORT.
    pub fn parse(text: &str) -> Option<HostPort> {
        let (host, port) = text.trim().rsplit_once(':')?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = port.parse::<u16>().ok().filter(|port| *port > 0)?;
        let plain = !host.is_empty() && !host.chars().any(|c| c.is_whitespace() || c == '/');
        plain.then(|| HostPort {
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// `store:`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreConfig {
    pub kind: StoreKind,
    /// `keyFile:` (file store); None: the default under the state directory.
    pub key_file: Option<PathBuf>,
    /// `region:` (AWS Secrets Manager); None: the AWS SDK's own (`AWS_REGION`, the profile).
    pub region: Option<String>,
    /// `prefix:` (AWS Secrets Manager): what secret names start with instead of `customer/`;
    /// None: `customer/`.
    pub prefix: Option<String>,
    /// `endpointUrl:` (AWS Secrets Manager): another API endpoint (a VPC endpoint, a local
    /// emulator); None: the region's.
    pub endpoint_url: Option<String>,
    /// `kmsKeyId:` (AWS Secrets Manager): the KMS key that encrypts new secrets; None: the
    /// account's `aws/secretsmanager` key.
    pub kms_key_id: Option<String>,
}

/// `store.type`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StoreKind {
    /// The encrypted file store under the state directory.
    #[default]
    File,
    /// AWS Secrets Manager, one secret per tenant role at `<prefix><namespace>/<database>-<role>`.
    AwsSecretsManager,
}

impl StoreKind {
    pub const ALL: [StoreKind; 2] = [StoreKind::File, StoreKind::AwsSecretsManager];

    pub fn as_str(self) -> &'static str {
        match self {
            StoreKind::File => "file",
            StoreKind::AwsSecretsManager => "aws-secrets-manager",
        }
    }
}

/// `backups:`: cron schedules (minute hour day-of-month month day-of-week), checked for shape.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackupSchedules {
    pub full: Option<String>,
    pub diff: Option<String>,
    pub incr: Option<String>,
}

/// `serve:`, for the long-running service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServeConfig {
    pub listen: Option<HostPort>,
    pub drift_interval: Option<Duration>,
    pub poll_interval: Option<Duration>,
    /// `git.remote`: the apps repo as a git remote (instead of `repo:`'s directory).
    pub git_remote: Option<String>,
    /// `git.branch` [default: main].
    pub git_branch: Option<String>,
    /// `git.caFile`: CA bundle (PEM) that verifies an `https://` remote, besides the system's.
    pub git_ca_file: Option<PathBuf>,
    /// `tokenFile`: the bearer token of the mutating endpoints.
    pub token_file: Option<PathBuf>,
    /// `webhookSecretFile`: the git webhook's secret.
    pub webhook_secret_file: Option<PathBuf>,
    /// `tls`: serve HTTPS with this certificate and key.
    pub tls: Option<TlsConfig>,
    /// `rotateEvery`: new passwords (with grace) for every tenant's logins this often.
    pub rotate_every: Option<Duration>,
}

/// `serve.tls`: PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_ports() {
        let e = HostPort::parse("db.internal:6432").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("db.internal", 6432));
        assert_eq!(e.to_string(), "db.internal:6432");
        let e = HostPort::parse("[::1]:5432").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("::1", 5432));
        assert_eq!(e.to_string(), "[::1]:5432");
        for bad in [
            "db.internal",
            ":5432",
            "db:99999",
            "db:0",
            "a b:1",
            "postgres://x:1",
        ] {
            assert_eq!(HostPort::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn retention_falls_back_to_the_tier_default() {
        let config = Config {
            retention_days: vec![(Environment::Test, 3)],
            ..Config::default()
        };
        assert_eq!(config.retention_days(Environment::Test), 3);
        assert_eq!(config.retention_days(Environment::Production), 35);
    }
}
