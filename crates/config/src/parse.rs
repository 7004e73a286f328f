//! `pgtenant.yaml` text to a validated [`Config`], every problem located.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pgtenant_spec::{
    closest, closest_word, describe, is_dns_label, is_label_key, listed, parse_duration_ms_up_to,
    shown, syntax_error, Diagnostic, DurationError, Environment, LoadOptions, PoolMode, Pooling,
    SourceLocation, LABEL_KEY_HINT,
};
use saphyr::{LoadableYamlNode, MarkedYaml, Scalar, YamlData};

use crate::cron::check_schedule;
use crate::model::Passwords;
use crate::model::{
    BackupSchedules, Capacity, ClusterConfig, Config, HostPort, PoolerAuth, PoolerConfig,
    PoolerRun, PoolingDefaults, ServeConfig, StoreConfig, StoreKind, TlsConfig,
};
use crate::reference::{has_inline_password, AdminUrlSource};

pub(crate) const REPO: &str = "repo";
pub(crate) const CLUSTERS: &str = "clusters";
pub(crate) const STORE: &str = "store";
pub(crate) const ENVIRONMENT: &str = "environment";
pub(crate) const RETENTION: &str = "retention";
pub(crate) const BACKUPS: &str = "backups";
pub(crate) const SERVE: &str = "serve";
pub(crate) const SUPERUSER_EXTENSIONS: &str = "superuserExtensions";
pub(crate) const POOLING: &str = "pooling";
pub(crate) const PASSWORDS: &str = "passwords";
pub(crate) const TOP_LEVEL: [&str; 10] = [
    REPO,
    CLUSTERS,
    STORE,
    ENVIRONMENT,
    RETENTION,
    BACKUPS,
    SERVE,
    SUPERUSER_EXTENSIONS,
    POOLING,
    PASSWORDS,
];

pub(crate) const NAME: &str = "name";
pub(crate) const ADMIN_URL: &str = "adminUrl";
pub(crate) const ENDPOINT: &str = "endpoint";
pub(crate) const CA_FILE: &str = "caFile";
pub(crate) const LABELS: &str = "labels";
pub(crate) const POOLER: &str = "pooler";
pub(crate) const PATRONI: &str = "patroni";
pub(crate) const FAILOVER_TIMEOUT: &str = "failoverTimeout";
pub(crate) const CAPACITY: &str = "capacity";
pub(crate) const MAX_TENANTS: &str = "maxTenants";
pub(crate) const MAX_SIZE: &str = "maxSize";
pub(crate) const CAPACITY_FIELDS: [&str; 2] = [MAX_TENANTS, MAX_SIZE];
pub(crate) const CLUSTER_FIELDS: [&str; 9] = [
    NAME,
    ADMIN_URL,
    ENDPOINT,
    CA_FILE,
    LABELS,
    POOLER,
    PATRONI,
    FAILOVER_TIMEOUT,
    CAPACITY,
];

pub(crate) const MODE: &str = "mode";
pub(crate) const SIZE: &str = "size";
pub(crate) const SERVER_SOCKET: &str = "serverSocket";
pub(crate) const POOLING_FIELDS: [&str; 3] = [MODE, SIZE, SERVER_SOCKET];
pub(crate) const SCRAM_ITERATIONS: &str = "scramIterations";
pub(crate) const PASSWORDS_FIELDS: [&str; 1] = [SCRAM_ITERATIONS];
pub(crate) const RUN: &str = "run";
pub(crate) const CONFIG_DIR: &str = "configDir";
pub(crate) const AUTH: &str = "auth";
pub(crate) const POOLER_FIELDS: [&str; 6] = [RUN, LISTEN, ENDPOINT, CONFIG_DIR, AUTH, TLS];

pub(crate) const TYPE: &str = "type";
pub(crate) const KEY_FILE: &str = "keyFile";
pub(crate) const REGION: &str = "region";
pub(crate) const PREFIX: &str = "prefix";
pub(crate) const ENDPOINT_URL: &str = "endpointUrl";
pub(crate) const KMS_KEY_ID: &str = "kmsKeyId";
pub(crate) const STORE_FIELDS: [&str; 6] =
    [TYPE, KEY_FILE, REGION, PREFIX, ENDPOINT_URL, KMS_KEY_ID];
/// The keys only the AWS Secrets Manager store takes.
const AWS_STORE_FIELDS: [&str; 4] = [REGION, PREFIX, ENDPOINT_URL, KMS_KEY_ID];

pub(crate) const BACKUP_FIELDS: [&str; 3] = ["full", "diff", "incr"];

pub(crate) const LISTEN: &str = "listen";
pub(crate) const DRIFT_INTERVAL: &str = "driftInterval";
pub(crate) const POLL_INTERVAL: &str = "pollInterval";
pub(crate) const GIT: &str = "git";
pub(crate) const TOKEN_FILE: &str = "tokenFile";
pub(crate) const WEBHOOK_SECRET_FILE: &str = "webhookSecretFile";
pub(crate) const TLS: &str = "tls";
pub(crate) const ROTATE_EVERY: &str = "rotateEvery";
pub(crate) const SERVE_FIELDS: [&str; 8] = [
    LISTEN,
    DRIFT_INTERVAL,
    POLL_INTERVAL,
    GIT,
    TOKEN_FILE,
    WEBHOOK_SECRET_FILE,
    TLS,
    ROTATE_EVERY,
];
pub(crate) const REMOTE: &str = "remote";
pub(crate) const BRANCH: &str = "branch";
pub(crate) const GIT_FIELDS: [&str; 3] = [REMOTE, BRANCH, CA_FILE];
pub(crate) const CERT_FILE: &str = "certFile";
pub(crate) const TLS_FIELDS: [&str; 2] = [CERT_FILE, KEY_FILE];

/// The longest retention and interval taken: ten years, far beyond any real one.
const MAX_DURATION_MS: u64 = 10 * 366 * 86_400_000;
const DAY_MS: u64 = 86_400_000;

/// `env:` and `file:` in `adminUrl`.
const ENV_PREFIX: &str = "env:";
const FILE_PREFIX: &str = "file:";

/// `50GB` in bytes (1024-based units `B`, `kB`, `MB`, `GB`, `TB`, as PostgreSQL's `pg_size_pretty`
/// writes them; the unit's case is not checked); None when it is not a whole number with a unit.
pub(crate) fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "b" => 0,
        "kb" => 10,
        "mb" => 20,
        "gb" => 30,
        "tb" => 40,
        _ => return None,
    };
    number.checked_mul(1u64 << shift)
}

/// What reading a config file gave.
#[derive(Debug)]
pub struct Loaded {
    /// None when any diagnostic is an error.
    pub config: Option<Config>,
    /// Sorted by position.
    pub diagnostics: Vec<Diagnostic>,
}

impl Loaded {
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }
}

/// Reads and validates the config file at `path`, with the safety of values files (a regular
/// file, through symlinks, at most the values-file size limit). Diagnostics name `path` as given.
pub fn load(path: &Path) -> Loaded {
    let failed = |diagnostic: Diagnostic| Loaded {
        config: None,
        diagnostics: vec![diagnostic],
    };
    let at_start = |message: String, hint: &str| {
        Diagnostic::error(SourceLocation::file_start(path), "", message).with_hint(hint)
    };
    let absolute = match std::path::absolute(path) {
        Ok(absolute) => absolute,
        Err(error) => return failed(at_start(format!("cannot read file: {error}"), "")),
    };
    // The file may be a symlink anywhere (`/etc/pgtenant.yaml` → a checkout): the reader
    // refuses links that leave its root, so the root is the folder of the resolved file.
    let resolved = match std::fs::canonicalize(&absolute) {
        Ok(resolved) => resolved,
        Err(error) => {
            return failed(at_start(
                format!("cannot read the config file: {error}"),
                "give the path of an existing file with --config or PGTENANT_CONFIG",
            ))
        }
    };
    let (Some(root), Some(name)) = (resolved.parent(), resolved.file_name()) else {
        return failed(at_start("not a config file".to_owned(), ""));
    };
    let options = match LoadOptions::from_env() {
        Ok(options) => options,
        Err(error) => return failed(at_start(error.to_string(), "")),
    };
    let text = match pgtenant_spec::read_values_file_with(root, Path::new(name), &options) {
        Ok(text) => text,
        Err(mut diagnostic) => {
            diagnostic.location.file = path.to_path_buf();
            return failed(diagnostic);
        }
    };
    let base = absolute.parent().unwrap_or(Path::new("/"));
    parse(path, base, &text)
}

/// Validates the text of a config file. `file` names it in diagnostics; relative paths in it
/// are taken from `base` (the file's directory).
pub fn parse(file: &Path, base: &Path, text: &str) -> Loaded {
    let mut parser = Parser {
        file,
        base,
        diagnostics: Vec::new(),
    };
    let config = parser.file(text);
    let mut diagnostics = parser.diagnostics;
    diagnostics.sort_by(|a, b| a.location.cmp(&b.location));
    let config = config.filter(|_| !diagnostics.iter().any(Diagnostic::is_error));
    Loaded {
        config,
        diagnostics,
    }
}

struct Parser<'a> {
    file: &'a Path,
    base: &'a Path,
    diagnostics: Vec<Diagnostic>,
}

type Entries<'n> = Vec<(&'n str, &'n MarkedYaml<'n>, &'n MarkedYaml<'n>)>;

impl Parser<'_> {
    fn location(&self, node: &MarkedYaml) -> SourceLocation {
        SourceLocation::at(self.file, &node.span.start)
    }

    fn error(&mut self, node: &MarkedYaml, field: &str, message: String, hint: String) {
        let diagnostic = Diagnostic::error(self.location(node), field, message).with_hint(hint);
        self.diagnostics.push(diagnostic);
    }

    fn warning(&mut self, node: &MarkedYaml, field: &str, message: String, hint: String) {
        let diagnostic = Diagnostic::warning(self.location(node), field, message).with_hint(hint);
        self.diagnostics.push(diagnostic);
    }

    fn file(&mut self, text: &str) -> Option<Config> {
        let documents = match MarkedYaml::load_from_str(text) {
            Ok(documents) => documents,
            Err(error) => {
                self.diagnostics.push(syntax_error(self.file, &error));
                return None;
            }
        };
        for extra in documents.iter().skip(1) {
            self.error(
                extra,
                "",
                "a config file holds one YAML document; this one is ignored".to_owned(),
                "remove the `---` and merge it into the first document".to_owned(),
            );
        }
        match documents.first() {
            None => Some(Config::default()),
            Some(document) if matches!(document.data, YamlData::Value(Scalar::Null)) => {
                Some(Config::default())
            }
            Some(document) => self.top_level(document),
        }
    }

    /// The keys of a mapping at `path`, unknown ones reported (with did-you-mean) and left out.
    /// None when `node` is not a mapping (reported).
    fn mapping<'n>(
        &mut self,
        node: &'n MarkedYaml<'n>,
        path: &str,
        known: &[&str],
    ) -> Option<Entries<'n>> {
        let YamlData::Mapping(map) = &node.data else {
            let what = if path.is_empty() {
                "the config file".to_owned()
            } else {
                format!("`{path}`")
            };
            self.error(
                node,
                path,
                format!(
                    "expected {what} to be a mapping of keys, found {}",
                    describe(node)
                ),
                format!("its keys are {}", listed(known, "and")),
            );
            return None;
        };
        let mut entries = Vec::new();
        for (key, value) in map {
            let field = |name: &str| match path {
                "" => name.to_owned(),
                _ => format!("{path}.{name}"),
            };
            let Some(name) = string(key) else {
                self.error(
                    key,
                    path,
                    format!("expected a key name, found {}", describe(key)),
                    format!("the keys here are {}", listed(known, "and")),
                );
                continue;
            };
            if known.is_empty() || known.contains(&name) {
                entries.push((name, key, value));
                continue;
            }
            let hint = match closest(name, known) {
                _ if name == "<<" => {
                    "YAML merge keys are not supported here: write the keys out".to_owned()
                }
                Some(meant) => format!("did you mean `{meant}`?"),
                None => format!("the keys here are {}", listed(known, "and")),
            };
            let name = shown(name);
            self.error(key, &field(&name), format!("unknown key `{name}`"), hint);
        }
        Some(entries)
    }

    fn top_level(&mut self, document: &MarkedYaml) -> Option<Config> {
        let entries = self.mapping(document, "", &TOP_LEVEL)?;
        let mut config = Config::default();
        let mut server_socket = None;
        for (name, _, value) in entries {
            match name {
                REPO => config.repo = self.repo(value),
                CLUSTERS => config.clusters = self.clusters(value),
                STORE => config.store = self.store(value),
                ENVIRONMENT => config.environment = self.environment(ENVIRONMENT, value),
                RETENTION => config.retention_days = self.retention(value),
                BACKUPS => config.backups = self.backups(value),
                SERVE => config.serve = self.serve(value),
                SUPERUSER_EXTENSIONS => config.superuser_extensions = self.extensions(value),
                POOLING => (config.pooling, server_socket) = self.pooling(value),
                PASSWORDS => config.passwords = self.passwords(value),
                _ => unreachable!("only known keys are returned"),
            }
        }
        if let Some(node) = server_socket.filter(|_| !config.clusters.is_empty()) {
            self.error(
                node,
                &format!("{POOLING}.{SERVER_SOCKET}"),
                "only the embedded cluster has a Unix socket for its pooler; the clusters listed \
                 here are reached over TCP + TLS"
                    .to_owned(),
                format!("remove `{SERVER_SOCKET}` (or `clusters:`, to use the embedded cluster)"),
            );
        }
        Some(config)
    }

    /// A non-empty string, or reported as `expected`.
    fn text<'n>(&mut self, node: &'n MarkedYaml, field: &str, expected: &str) -> Option<&'n str> {
        match string(node) {
            Some(text) if !text.trim().is_empty() => Some(text),
            _ => {
                self.error(
                    node,
                    field,
                    format!("expected {expected}, found {}", describe(node)),
                    match &node.data {
                        YamlData::Value(Scalar::Integer(_) | Scalar::FloatingPoint(_))
                        | YamlData::Value(Scalar::Boolean(_)) => {
                            "quote it so YAML reads it as text".to_owned()
                        }
                        _ => format!("write {expected}"),
                    },
                );
                None
            }
        }
    }

    /// A path; relative ones are taken from the config file's directory.
    fn path(&mut self, node: &MarkedYaml, field: &str) -> Option<PathBuf> {
        let text = self.text(node, field, "a path")?;
        Some(self.base.join(text.trim()))
    }

    fn repo(&mut self, value: &MarkedYaml) -> Option<PathBuf> {
        let text = self.text(value, REPO, "the apps repo's directory")?;
        if looks_like_a_remote(text) {
            self.error(
                value,
                REPO,
                format!(
                    "`{}` is a git remote; `repo` takes a local directory for now",
                    shown(text)
                ),
                "clone the repo and give its directory (git remotes come with `pgtenant serve`)"
                    .to_owned(),
            );
            return None;
        }
        self.path(value, REPO)
    }

    fn clusters(&mut self, value: &MarkedYaml) -> Vec<ClusterConfig> {
        let YamlData::Sequence(items) = &value.data else {
            if !matches!(value.data, YamlData::Value(Scalar::Null)) {
                self.error(
                    value,
                    CLUSTERS,
                    format!("expected a list of clusters, found {}", describe(value)),
                    "write each cluster as a list item: `- name: main`".to_owned(),
                );
            }
            return Vec::new();
        };
        let mut clusters: Vec<ClusterConfig> = Vec::new();
        for (index, item) in items.iter().enumerate() {
            let Some(cluster) = self.cluster(index, item) else {
                continue;
            };
            if let Some(first) = clusters.iter().find(|c| c.name == cluster.name) {
                let diagnostic = Diagnostic::error(
                    cluster.location.clone(),
                    format!("{CLUSTERS}[{index}].{NAME}"),
                    format!("the cluster name `{}` is used twice", cluster.name),
                )
                .with_hint(format!(
                    "cluster names are unique; the first `{}` is at line {}",
                    cluster.name, first.location.line
                ));
                self.diagnostics.push(diagnostic);
                continue;
            }
            clusters.push(cluster);
        }
        clusters
    }

    fn cluster(&mut self, index: usize, item: &MarkedYaml) -> Option<ClusterConfig> {
        let path = format!("{CLUSTERS}[{index}]");
        let entries = self.mapping(item, &path, &CLUSTER_FIELDS)?;
        let mut name = None;
        let mut name_location = self.location(item);
        let mut admin_url = None;
        let mut endpoint = None;
        let mut ca_file = None;
        let mut labels = BTreeMap::new();
        let mut pooler = None;
        let mut patroni = Vec::new();
        let mut failover_timeout = None;
        let mut capacity = Capacity::default();
        let mut complete = true;
        for (key, _, value) in &entries {
            let field = format!("{path}.{key}");
            match *key {
                NAME => {
                    name_location = self.location(value);
                    name = self.cluster_name(value, &field);
                    complete &= name.is_some();
                }
                ADMIN_URL => {
                    admin_url = self
                        .admin_url(value, &field)
                        .map(|s| (s, self.location(value)));
                    complete &= admin_url.is_some();
                }
                ENDPOINT => {
                    endpoint = self.host_port(value, &field, "db.internal:5432");
                    complete &= endpoint.is_some();
                }
                CA_FILE => {
                    ca_file = self.path(value, &field);
                    complete &= ca_file.is_some();
                }
                LABELS => labels = self.labels(value, &field),
                POOLER => {
                    pooler = self.pooler(value, &field);
                    complete &= pooler.is_some();
                }
                PATRONI => {
                    let urls = self.patroni(value, &field);
                    complete &= urls.is_some();
                    patroni = urls.unwrap_or_default();
                }
                FAILOVER_TIMEOUT => {
                    failover_timeout = self.interval(value, &field, "60s");
                    complete &= failover_timeout.is_some();
                }
                CAPACITY => match self.capacity(value, &field) {
                    Some(given) => capacity = given,
                    None => complete = false,
                },
                _ => unreachable!("only known keys are returned"),
            }
        }
        for (required, example) in [
            (NAME, "name: main"),
            (ADMIN_URL, "adminUrl: env:PGTENANT_ADMIN_URL"),
        ] {
            if !entries.iter().any(|(key, _, _)| *key == required) {
                self.error(
                    item,
                    &path,
                    format!("a cluster needs `{required}`"),
                    format!("add `{example}`"),
                );
                complete = false;
            }
        }
        let (admin_url, admin_url_location) = admin_url?;
        (complete).then(|| ClusterConfig {
            name: name.unwrap_or_default(),
            admin_url,
            admin_url_location,
            endpoint,
            ca_file,
            labels,
            pooler,
            patroni,
            failover_timeout,
            capacity,
            location: name_location,
        })
    }

    /// `capacity: {maxTenants: N, maxSize: 50GB}`, both optional.
    fn capacity(&mut self, value: &MarkedYaml, path: &str) -> Option<Capacity> {
        let entries = self.mapping(value, path, &CAPACITY_FIELDS)?;
        let mut capacity = Capacity::default();
        let mut valid = true;
        for (key, _, value) in &entries {
            let field = format!("{path}.{key}");
            match *key {
                MAX_TENANTS => {
                    let given = match &value.data {
                        YamlData::Value(Scalar::Integer(n)) => u32::try_from(*n).ok(),
                        _ => None,
                    };
                    match given {
                        Some(n) => capacity.max_tenants = Some(n),
                        None => {
                            self.error(
                                value,
                                &field,
                                format!(
                                    "expected a number of tenant databases, found {}",
                                    describe(value)
                                ),
                                format!("e.g. `{MAX_TENANTS}: 500` (0 takes no new tenant)"),
                            );
                            valid = false;
                        }
                    }
                }
                _ => match self.size(value, &field) {
                    Some(bytes) => capacity.max_size_bytes = Some(bytes),
                    None => valid = false,
                },
            }
        }
        valid.then_some(capacity)
    }

    /// A size with a unit, as PostgreSQL writes them: `500MB`, `50GB`, `2TB` (1024-based, `B`,
    /// `kB`, `MB`, `GB`, `TB`).
    fn size(&mut self, value: &MarkedYaml, field: &str) -> Option<u64> {
        let parsed = match &value.data {
            YamlData::Value(Scalar::String(text)) => parse_size(text),
            _ => None,
        };
        if parsed.is_none() {
            let hint = match &value.data {
                YamlData::Value(Scalar::Integer(n)) => {
                    format!("give a unit: `{MAX_SIZE}: {n}GB` (B, kB, MB, GB or TB)")
                }
                _ => format!("e.g. `{MAX_SIZE}: 50GB` (B, kB, MB, GB or TB, 1024-based)"),
            };
            self.error(
                value,
                field,
                format!("expected a size such as `50GB`, found {}", describe(value)),
                hint,
            );
        }
        parsed
    }

    /// `patroni:`, a list of the members' REST API base URLs (`http://HOST:PORT`).
    fn patroni(&mut self, value: &MarkedYaml, field: &str) -> Option<Vec<String>> {
        let example = "patroni: [http://10.0.0.1:8008, http://10.0.0.2:8008]";
        let YamlData::Sequence(items) = &value.data else {
            self.error(
                value,
                field,
                format!(
                    "expected a list of Patroni REST API URLs, found {}",
                    describe(value)
                ),
                format!("e.g. `{example}`"),
            );
            return None;
        };
        if items.is_empty() {
            self.error(
                value,
                field,
                "`patroni` lists no member".to_owned(),
                format!("list every member's REST API, e.g. `{example}`; or remove `patroni`"),
            );
            return None;
        }
        let mut urls = Vec::new();
        let mut valid = true;
        for (i, item) in items.iter().enumerate() {
            let at = format!("{field}[{i}]");
            let Some(text) = self.text(item, &at, "a Patroni REST API URL") else {
                valid = false;
                continue;
            };
            let text = text.trim().trim_end_matches('/');
            let address = text.strip_prefix("http://").unwrap_or_default();
            if address.contains('/') || HostPort::parse(address).is_none() {
                let hint = if text.starts_with("https://") {
                    "pgtenant reaches Patroni's REST API over plain http (on a private network); \
                     write `http://HOST:PORT`"
                        .to_owned()
                } else {
                    format!("write `http://HOST:PORT`, e.g. `{example}`")
                };
                self.error(
                    item,
                    &at,
                    format!("`{}` is not a Patroni REST API URL", shown(text)),
                    hint,
                );
                valid = false;
                continue;
            }
            urls.push(text.to_owned());
        }
        valid.then_some(urls)
    }

    fn cluster_name(&mut self, value: &MarkedYaml, field: &str) -> Option<String> {
        let name = self.text(value, field, "the cluster's name")?;
        if !is_dns_label(name) || name.len() > 63 {
            self.error(
                value,
                field,
                format!("`{}` is not a valid cluster name", shown(name)),
                "use lowercase letters, digits and '-', starting and ending with a letter or \
                 digit, at most 63 characters (a DNS-1123 label), e.g. `main`"
                    .to_owned(),
            );
            return None;
        }
        Some(name.to_owned())
    }

    fn admin_url(&mut self, value: &MarkedYaml, field: &str) -> Option<AdminUrlSource> {
        let forms = "`env:VARIABLE`, `file:/path/to/url` or a `postgres://` URL";
        let text = self
            .text(value, field, &format!("the admin URL: {forms}"))?
            .trim();
        if let Some(var) = text.strip_prefix(ENV_PREFIX) {
            let var = var.trim();
            let valid = var
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                self.error(
                    value,
                    field,
                    format!("`{}` is not an environment variable name", shown(var)),
                    "use letters, digits and '_', e.g. `env:PGTENANT_ADMIN_URL`".to_owned(),
                );
                return None;
            }
            return Some(AdminUrlSource::Env(var.to_owned()));
        }
        if let Some(path) = text.strip_prefix(FILE_PREFIX) {
            let path = path.trim();
            if path.is_empty() {
                self.error(
                    value,
                    field,
                    "`file:` names no file".to_owned(),
                    "e.g. `file:/etc/pgtenant/admin-url`, a file of mode 0600 holding the URL"
                        .to_owned(),
                );
                return None;
            }
            return Some(AdminUrlSource::File(self.base.join(path)));
        }
        let lower = text.to_ascii_lowercase();
        let url = lower.starts_with("postgres://") || lower.starts_with("postgresql://");
        if !url && !text.contains('=') {
            let hint = match text.split_once(':') {
                Some((scheme, _)) if closest_word(scheme, &["env", "file"]).is_some() => format!(
                    "did you mean `{}:`?",
                    closest_word(scheme, &["env", "file"]).unwrap_or_default()
                ),
                _ => format!("write {forms}"),
            };
            self.error(
                value,
                field,
                "expected `env:VARIABLE`, `file:/path` or a postgres:// URL".to_owned(),
                hint,
            );
            return None;
        }
        if has_inline_password(text) {
            self.warning(
                value,
                field,
                "the admin URL holds a password, in a file that is easily shared".to_owned(),
                "keep it elsewhere: `adminUrl: file:/etc/pgtenant/admin-url` (mode 0600) or \
                 `adminUrl: env:PGTENANT_ADMIN_URL`"
                    .to_owned(),
            );
        }
        Some(AdminUrlSource::Inline(text.to_owned()))
    }

    fn host_port(&mut self, value: &MarkedYaml, field: &str, example: &str) -> Option<HostPort> {
        let text = self.text(value, field, "HOST:PORT")?;
        let parsed = HostPort::parse(text);
        if parsed.is_none() {
            self.error(
                value,
                field,
                format!("`{}` is not HOST:PORT", shown(text)),
                format!("e.g. `{example}` (`[::1]:5432` for an IPv6 address)"),
            );
        }
        parsed
    }

    fn labels(&mut self, value: &MarkedYaml, field: &str) -> BTreeMap<String, String> {
        let mut labels = BTreeMap::new();
        let Some(entries) = self.mapping(value, field, &[]) else {
            return labels;
        };
        for (key, key_node, label) in entries {
            let at = format!("{field}.{}", shown(key));
            if !is_label_key(key) {
                self.error(
                    key_node,
                    &at,
                    format!("`{}` is not a label name", shown(key)),
                    LABEL_KEY_HINT.to_owned(),
                );
                continue;
            }
            match &label.data {
                YamlData::Value(Scalar::String(text)) => {
                    labels.insert(key.to_owned(), text.to_string());
                }
                _ => self.error(
                    label,
                    &at,
                    format!(
                        "expected the label's value as a string, found {}",
                        describe(label)
                    ),
                    format!("quote it so YAML reads it as text: `{key}: \"…\"`"),
                ),
            }
        }
        labels
    }

    fn store(&mut self, value: &MarkedYaml) -> StoreConfig {
        let mut store = StoreConfig::default();
        let Some(entries) = self.mapping(value, STORE, &STORE_FIELDS) else {
            return store;
        };
        // Which keys were given, to check them against the type once it is known.
        let mut given = Vec::new();
        for (key, key_node, value) in entries {
            let field = format!("{STORE}.{key}");
            given.push((key, key_node));
            match key {
                TYPE => {
                    let names: Vec<&str> = StoreKind::ALL.iter().map(|k| k.as_str()).collect();
                    let Some(text) = self.text(value, &field, "the store's type") else {
                        continue;
                    };
                    match StoreKind::ALL.iter().find(|k| k.as_str() == text) {
                        Some(kind) => store.kind = *kind,
                        None => self.error(
                            value,
                            &field,
                            format!(
                                "unknown store type `{}`: pgtenant supports {}",
                                shown(text),
                                listed(&names, "and")
                            ),
                            match closest_word(text, &names) {
                                Some(meant) => format!("did you mean `{meant}`?"),
                                None => format!("use `type: {}`", StoreKind::File.as_str()),
                            },
                        ),
                    }
                }
                KEY_FILE => store.key_file = self.path(value, &field),
                REGION => store.region = self.aws_region(value, &field),
                PREFIX => store.prefix = self.secret_prefix(value, &field),
                ENDPOINT_URL => store.endpoint_url = self.endpoint_url(value, &field),
                KMS_KEY_ID => {
                    store.kms_key_id = self
                        .text(value, &field, "a KMS key id, ARN or alias")
                        .map(|t| t.trim().to_owned())
                }
                _ => unreachable!("only known keys are returned"),
            }
        }
        for (key, key_node) in given {
            let misplaced = match store.kind {
                StoreKind::File => AWS_STORE_FIELDS.contains(&key),
                StoreKind::AwsSecretsManager => key == KEY_FILE,
            };
            if misplaced {
                let (other, this) = match store.kind {
                    StoreKind::File => (StoreKind::AwsSecretsManager, StoreKind::File),
                    StoreKind::AwsSecretsManager => (StoreKind::File, StoreKind::AwsSecretsManager),
                };
                self.error(
                    key_node,
                    &format!("{STORE}.{key}"),
                    format!(
                        "`{key}` is a setting of the `{}` store, and this store's type is `{}`",
                        other.as_str(),
                        this.as_str()
                    ),
                    format!("remove it, or set `type: {}`", other.as_str()),
                );
            }
        }
        store
    }

    /// An AWS region name such as `eu-west-1`.
    fn aws_region(&mut self, value: &MarkedYaml, field: &str) -> Option<String> {
        let text = self
            .text(value, field, "an AWS region such as `eu-west-1`")?
            .trim();
        let valid = text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && text.contains('-');
        if !valid {
            self.error(
                value,
                field,
                format!("`{}` is not an AWS region name", shown(text)),
                "e.g. `eu-west-1`".to_owned(),
            );
            return None;
        }
        Some(text.to_owned())
    }

    /// What secret names start with: characters Secrets Manager allows in names, ending with `/`.
    fn secret_prefix(&mut self, value: &MarkedYaml, field: &str) -> Option<String> {
        let text = self.text(value, field, "a secret name prefix such as `customer/`")?;
        let valid = text.ends_with('/')
            && !text.starts_with('/')
            && !text.contains("//")
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/_+=.@-".contains(&b));
        if !valid {
            self.error(
                value,
                field,
                format!("`{}` is not a secret name prefix", shown(text)),
                "use letters, digits and `/_+=.@-`, ending with `/`, e.g. `customer/`".to_owned(),
            );
            return None;
        }
        Some(text.to_owned())
    }

    /// An http:// or https:// URL.
    fn endpoint_url(&mut self, value: &MarkedYaml, field: &str) -> Option<String> {
        let text = self.text(value, field, "an http(s):// URL")?.trim();
        let lower = text.to_ascii_lowercase();
        let rest = lower
            .strip_prefix("https://")
            .or_else(|| lower.strip_prefix("http://"));
        if rest.is_none_or(|host| host.is_empty() || host.starts_with('/')) {
            self.error(
                value,
                field,
                format!("`{}` is not an http(s):// URL", shown(text)),
                "e.g. `https://secretsmanager.eu-west-1.amazonaws.com` or `http://127.0.0.1:5000`"
                    .to_owned(),
            );
            return None;
        }
        Some(text.to_owned())
    }

    fn environment(&mut self, field: &str, value: &MarkedYaml) -> Option<Environment> {
        let names: Vec<&str> = Environment::ALL.iter().map(|e| e.as_str()).collect();
        let text = self.text(value, field, "a tier")?;
        if let Some(tier) = Environment::ALL.iter().find(|e| e.as_str() == text) {
            return Some(*tier);
        }
        self.error(
            value,
            field,
            format!(
                "unknown tier `{}`: the tiers are {}",
                shown(text),
                listed(&names, "and")
            ),
            match closest_word(text, &names) {
                Some(meant) => format!("did you mean `{meant}`?"),
                None => format!("use one of {}", listed(&names, "or")),
            },
        );
        None
    }

    fn retention(&mut self, value: &MarkedYaml) -> Vec<(Environment, u32)> {
        let names: Vec<&str> = Environment::ALL.iter().map(|e| e.as_str()).collect();
        let Some(entries) = self.mapping(value, RETENTION, &names) else {
            return Vec::new();
        };
        let mut days = Vec::new();
        for (key, _, value) in entries {
            let field = format!("{RETENTION}.{key}");
            let tier = Environment::ALL.into_iter().find(|e| e.as_str() == key);
            let Some(ms) = self.duration(value, &field, "35d") else {
                continue;
            };
            if ms % DAY_MS != 0 || ms == 0 {
                self.error(
                    value,
                    &field,
                    "retention is kept in whole days, at least one".to_owned(),
                    format!("e.g. `{key}: {}d`", (ms / DAY_MS).max(1)),
                );
                continue;
            }
            if let Some(tier) = tier {
                days.push((tier, u32::try_from(ms / DAY_MS).unwrap_or(u32::MAX)));
            }
        }
        days
    }

    /// A duration with a unit (`10s`, `10min`, `35d`), in milliseconds.
    fn duration(&mut self, value: &MarkedYaml, field: &str, example: &str) -> Option<u64> {
        let units = "`ms`, `s`, `min`, `h` or `d`";
        if let YamlData::Value(Scalar::Integer(number)) = &value.data {
            self.error(
                value,
                field,
                format!("`{number}` has no unit"),
                format!("write the unit ({units}), e.g. `{example}`"),
            );
            return None;
        }
        let text = self.text(value, field, &format!("a duration such as `{example}`"))?;
        let error = match parse_duration_ms_up_to(text, MAX_DURATION_MS) {
            Ok(_) if text.trim().chars().all(|c| c.is_ascii_digit()) => (
                format!("`{}` has no unit", shown(text)),
                format!("write the unit ({units}), e.g. `{example}`"),
            ),
            Ok(ms) => return Some(ms),
            Err(DurationError::NotADuration) => (
                format!(
                    "expected a duration such as `{example}`, found the string `{}`",
                    shown(text)
                ),
                format!("write a whole number with a unit {units}"),
            ),
            Err(DurationError::Negative) => (
                format!("`{}` is negative", shown(text)),
                format!("e.g. `{example}`"),
            ),
            Err(DurationError::Fraction { exact_ms }) => (
                format!("`{}` is not a whole number of its unit", shown(text)),
                match exact_ms {
                    Some(ms) => format!("write `{ms}ms`"),
                    None => "use a whole number of a smaller unit".to_owned(),
                },
            ),
            Err(DurationError::UnknownUnit { unit, meant }) => (
                format!(
                    "unknown unit `{}` in `{}`: the units are {units}",
                    shown(&unit),
                    shown(text)
                ),
                match meant {
                    Some(known) => format!(
                        "did you mean `{}{known}`?",
                        text.trim().trim_end_matches(unit.as_str()).trim_end()
                    ),
                    None => format!("use one of the units {units}"),
                },
            ),
            Err(DurationError::TooLarge) => (
                format!("`{}` is more than ten years", shown(text)),
                format!("e.g. `{example}`"),
            ),
        };
        self.error(value, field, error.0, error.1);
        None
    }

    fn backups(&mut self, value: &MarkedYaml) -> BackupSchedules {
        let mut schedules = BackupSchedules::default();
        let Some(entries) = self.mapping(value, BACKUPS, &BACKUP_FIELDS) else {
            return schedules;
        };
        for (key, _, value) in entries {
            let field = format!("{BACKUPS}.{key}");
            let Some(text) = self.text(value, &field, "a cron schedule such as \"0 2 * * 0\"")
            else {
                continue;
            };
            if let Err(why) = check_schedule(text) {
                self.error(
                    value,
                    &field,
                    format!("`{}` is not a schedule: {why}", shown(text)),
                    "write five fields, minute hour day-of-month month day-of-week, e.g. \
                     \"0 2 * * 0\" for Sundays at 02:00"
                        .to_owned(),
                );
                continue;
            }
            let slot = match key {
                "full" => &mut schedules.full,
                "diff" => &mut schedules.diff,
                _ => &mut schedules.incr,
            };
            *slot = Some(text.trim().to_owned());
        }
        schedules
    }

    fn serve(&mut self, value: &MarkedYaml) -> ServeConfig {
        let mut serve = ServeConfig::default();
        let Some(entries) = self.mapping(value, SERVE, &SERVE_FIELDS) else {
            return serve;
        };
        for (key, _, value) in entries {
            let field = format!("{SERVE}.{key}");
            match key {
                LISTEN => serve.listen = self.host_port(value, &field, "127.0.0.1:8432"),
                DRIFT_INTERVAL => {
                    serve.drift_interval = self.interval(value, &field, "10min");
                }
                POLL_INTERVAL => serve.poll_interval = self.interval(value, &field, "10s"),
                GIT => self.git(value, &mut serve),
                TOKEN_FILE => serve.token_file = self.path(value, &field),
                WEBHOOK_SECRET_FILE => serve.webhook_secret_file = self.path(value, &field),
                TLS => serve.tls = self.tls(value, &field),
                ROTATE_EVERY => serve.rotate_every = self.whole_days(value, &field, "90d"),
                _ => unreachable!("only known keys are returned"),
            }
        }
        serve
    }

    fn git(&mut self, value: &MarkedYaml, serve: &mut ServeConfig) {
        let path = format!("{SERVE}.{GIT}");
        let Some(entries) = self.mapping(value, &path, &GIT_FIELDS) else {
            return;
        };
        for (key, _, value) in entries {
            let field = format!("{path}.{key}");
            match key {
                REMOTE => {
                    let remote = self.text(value, &field, "a git remote URL");
                    serve.git_remote = remote.map(|r| r.trim().to_owned());
                }
                CA_FILE => serve.git_ca_file = self.path(value, &field),
                _ => {
                    let branch = self.text(value, &field, "a branch name such as `main`");
                    serve.git_branch = branch.map(|b| b.trim().to_owned());
                }
            }
        }
        if serve.git_remote.is_none() && serve.git_branch.is_some() {
            self.error(
                value,
                &path,
                "`branch` without `remote`".to_owned(),
                "add `remote: https://…/apps.git`".to_owned(),
            );
        }
    }

    fn tls(&mut self, value: &MarkedYaml, path: &str) -> Option<TlsConfig> {
        let entries = self.mapping(value, path, &TLS_FIELDS)?;
        let (mut cert_file, mut key_file) = (None, None);
        for (key, _, value) in entries {
            let field = format!("{path}.{key}");
            match key {
                CERT_FILE => cert_file = self.path(value, &field),
                _ => key_file = self.path(value, &field),
            }
        }
        match (cert_file, key_file) {
            (Some(cert_file), Some(key_file)) => Some(TlsConfig {
                cert_file,
                key_file,
            }),
            _ => {
                self.error(
                    value,
                    path,
                    "`tls` needs both `certFile` and `keyFile`".to_owned(),
                    "give the PEM certificate (chain) and its private key".to_owned(),
                );
                None
            }
        }
    }

    /// A duration of whole days, at least one.
    fn whole_days(&mut self, value: &MarkedYaml, field: &str, example: &str) -> Option<Duration> {
        let ms = self.duration(value, field, example)?;
        if ms < DAY_MS || ms % DAY_MS != 0 {
            self.error(
                value,
                field,
                "a rotation interval is a whole number of days, at least one".to_owned(),
                format!("e.g. `{example}`"),
            );
            return None;
        }
        Some(Duration::from_millis(ms))
    }

    fn interval(&mut self, value: &MarkedYaml, field: &str, example: &str) -> Option<Duration> {
        let ms = self.duration(value, field, example)?;
        if ms < 1_000 {
            self.error(
                value,
                field,
                "an interval is at least one second".to_owned(),
                format!("e.g. `{example}`"),
            );
            return None;
        }
        Some(Duration::from_millis(ms))
    }

    /// One of `options`' words, e.g. `run: local`.
    fn word<T: Copy>(
        &mut self,
        value: &MarkedYaml,
        field: &str,
        noun: &str,
        options: &[(T, &'static str)],
    ) -> Option<T> {
        let names: Vec<&str> = options.iter().map(|(_, name)| *name).collect();
        let text = self.text(value, field, &listed(&names, "or"))?;
        if let Some((choice, _)) = options.iter().find(|(_, name)| *name == text.trim()) {
            return Some(*choice);
        }
        self.error(
            value,
            field,
            format!(
                "unknown {noun} `{}`: expected {}",
                shown(text),
                listed(&names, "or")
            ),
            match closest_word(text, &names) {
                Some(meant) => format!("did you mean `{meant}`?"),
                None => format!("use {}", listed(&names, "or")),
            },
        );
        None
    }

    /// `pooling:`: the pool mode and size of tenant databases without their own, and whether the
    /// embedded cluster's pooler uses the server's socket (with the node of `serverSocket` when
    /// set, which a config listing clusters may not).
    fn pooling<'n>(
        &mut self,
        value: &'n MarkedYaml<'n>,
    ) -> (PoolingDefaults, Option<&'n MarkedYaml<'n>>) {
        let mut pooling = PoolingDefaults::default();
        let Some(entries) = self.mapping(value, POOLING, &POOLING_FIELDS) else {
            return (pooling, None);
        };
        let mut server_socket = None;
        for (key, _, value) in entries {
            let field = format!("{POOLING}.{key}");
            match key {
                SERVER_SOCKET => {
                    server_socket = Some(value);
                    match &value.data {
                        YamlData::Value(Scalar::Boolean(on)) => pooling.server_socket = *on,
                        _ => self.error(
                            value,
                            &field,
                            format!("expected true or false, found {}", describe(value)),
                            "`serverSocket: false` makes the pooler reach the embedded \
                             cluster over TCP + TLS"
                                .to_owned(),
                        ),
                    }
                }
                MODE => {
                    let options = PoolMode::ALL.map(|mode| (mode, mode.as_str()));
                    if let Some(mode) = self.word(value, &field, "pool mode", &options) {
                        pooling.mode = mode;
                    }
                }
                _ => {
                    if let Some(size) = self.pool_size(value, &field) {
                        pooling.size = size;
                    }
                }
            }
        }
        (pooling, server_socket)
    }

    /// `passwords:`: how pgtenant sets the passwords it generates.
    fn passwords(&mut self, value: &MarkedYaml) -> Passwords {
        let mut passwords = Passwords::default();
        let Some(entries) = self.mapping(value, PASSWORDS, &PASSWORDS_FIELDS) else {
            return passwords;
        };
        for (key, _, value) in entries {
            let field = format!("{PASSWORDS}.{key}");
            let range = Passwords::MIN_SCRAM_ITERATIONS..=Passwords::MAX_SCRAM_ITERATIONS;
            match &value.data {
                YamlData::Value(Scalar::Integer(number))
                    if u32::try_from(*number).is_ok_and(|n| range.contains(&n)) =>
                {
                    passwords.scram_iterations = *number as u32;
                }
                _ => self.error(
                    value,
                    &field,
                    format!(
                        "expected a SCRAM iteration count from {} to {}, found {}",
                        range.start(),
                        range.end(),
                        describe(value)
                    ),
                    format!(
                        "e.g. `{SCRAM_ITERATIONS}: {}` (PostgreSQL's default; docs/config.md says when fewer are safe)",
                        Passwords::DEFAULT_SCRAM_ITERATIONS
                    ),
                ),
            }
        }
        passwords
    }

    /// A pool size: 1 to [`Pooling::MAX_SIZE`] server connections.
    fn pool_size(&mut self, value: &MarkedYaml, field: &str) -> Option<u32> {
        let max = Pooling::MAX_SIZE;
        if let YamlData::Value(Scalar::Integer(number)) = &value.data {
            if let Some(size) = u32::try_from(*number)
                .ok()
                .filter(|size| (1..=max).contains(size))
            {
                return Some(size);
            }
        }
        self.error(
            value,
            field,
            format!(
                "expected a pool size from 1 to {max}, found {}",
                describe(value)
            ),
            format!("e.g. `{SIZE}: 10` (server connections per tenant database)"),
        );
        None
    }

    /// `clusters[].pooler:`, the pgbouncer in front of the cluster.
    fn pooler(&mut self, value: &MarkedYaml, path: &str) -> Option<PoolerConfig> {
        let entries = self.mapping(value, path, &POOLER_FIELDS)?;
        let (mut run, mut auth) = (PoolerRun::default(), PoolerAuth::default());
        let (mut listen, mut endpoint, mut config_dir, mut tls) = (None, None, None, None);
        let mut complete = true;
        for (key, _, value) in &entries {
            let field = format!("{path}.{key}");
            match *key {
                RUN => {
                    let options = PoolerRun::ALL.map(|run| (run, run.as_str()));
                    match self.word(value, &field, "way to run the pooler", &options) {
                        Some(given) => run = given,
                        None => complete = false,
                    }
                }
                AUTH => {
                    let options = PoolerAuth::ALL.map(|auth| (auth, auth.as_str()));
                    match self.word(value, &field, "pooler authentication", &options) {
                        Some(given) => auth = given,
                        None => complete = false,
                    }
                }
                LISTEN => {
                    listen = self.host_port(value, &field, "127.0.0.1:6432");
                    complete &= listen.is_some();
                }
                ENDPOINT => {
                    endpoint = self.host_port(value, &field, "pooler.internal:6432");
                    complete &= endpoint.is_some();
                }
                CONFIG_DIR => {
                    config_dir = self.path(value, &field);
                    complete &= config_dir.is_some();
                }
                _ => {
                    tls = self.tls(value, &field);
                    complete &= tls.is_some();
                }
            }
        }
        let Some(listen) = listen else {
            if !entries.iter().any(|(key, _, _)| *key == LISTEN) {
                self.error(
                    value,
                    path,
                    format!("a pooler needs `{LISTEN}`"),
                    format!("add `{LISTEN}: 127.0.0.1:6432`, where pgbouncer listens"),
                );
            }
            return None;
        };
        complete.then_some(PoolerConfig {
            run,
            listen,
            endpoint,
            config_dir,
            auth,
            tls,
        })
    }

    fn extensions(&mut self, value: &MarkedYaml) -> Vec<String> {
        let YamlData::Sequence(items) = &value.data else {
            self.error(
                value,
                SUPERUSER_EXTENSIONS,
                format!(
                    "expected a list of extension names, found {}",
                    describe(value)
                ),
                format!("e.g. `{SUPERUSER_EXTENSIONS}: [postgis]`"),
            );
            return Vec::new();
        };
        let mut names: Vec<String> = Vec::new();
        for (index, item) in items.iter().enumerate() {
            let field = format!("{SUPERUSER_EXTENSIONS}[{index}]");
            let Some(name) = self.text(item, &field, "an extension name") else {
                continue;
            };
            let valid = name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-".contains(c));
            if !valid {
                self.error(
                    item,
                    &field,
                    format!("`{}` is not an extension name", shown(name)),
                    "extension names are lowercase letters, digits, '_' and '-', e.g. `postgis`"
                        .to_owned(),
                );
            } else if names.iter().any(|n| n == name) {
                self.error(
                    item,
                    &field,
                    format!("`{name}` is listed twice"),
                    "remove one of them".to_owned(),
                );
            } else {
                names.push(name.to_owned());
            }
        }
        names
    }
}

fn string<'a>(node: &'a MarkedYaml) -> Option<&'a str> {
    match &node.data {
        YamlData::Value(Scalar::String(text)) => Some(text),
        _ => None,
    }
}

/// `https://…`, `ssh://…`, `file://…`, `git@host:path`: a git remote, not a directory.
fn looks_like_a_remote(text: &str) -> bool {
    let text = text.trim();
    let scp_like = text
        .split_once(':')
        .is_some_and(|(host, _)| host.contains('@') && !host.contains('/'));
    text.contains("://") || scp_like
}

#[cfg(test)]
mod tests;
