//! The JSON Schema of `pgtenant.yaml`, for editors (yaml-language-server) and linters; committed
//! as `docs/pgtenant-config.schema.json`. Written out by hand from the parser's own key lists;
//! the parser stays the authority (it also checks what a schema cannot: unique cluster names,
//! file references, whole days).

use std::borrow::Cow;

use pgtenant_spec::Environment;
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde_json::{Map, Value};

use pgtenant_spec::{PoolMode, Pooling};

use crate::model::Passwords;
use crate::model::{PoolerAuth, PoolerRun, PoolingDefaults, StoreKind};
use crate::parse::{
    ADMIN_URL, AUTH, BACKUPS, BACKUP_FIELDS, BRANCH, CAPACITY, CA_FILE, CERT_FILE, CLUSTERS,
    CONFIG_DIR, DRIFT_INTERVAL, ENDPOINT, ENDPOINT_URL, ENVIRONMENT, FAILOVER_TIMEOUT, GIT,
    KEY_FILE, KMS_KEY_ID, LABELS, LISTEN, MAX_SIZE, MAX_TENANTS, MODE, NAME, PATRONI,
    POLL_INTERVAL, POOLER, POOLING, PREFIX, REGION, REMOTE, REPO, RETENTION, ROTATE_EVERY, RUN,
    SERVE, SERVER_SOCKET, SIZE, STORE, SUPERUSER_EXTENSIONS, TLS, TOKEN_FILE, TYPE,
    WEBHOOK_SECRET_FILE,
};
use crate::parse::{PASSWORDS, SCRAM_ITERATIONS};

const DNS_LABEL_PATTERN: &str = "^[a-z0-9]([a-z0-9-]*[a-z0-9])?$";
const HOST_PORT_PATTERN: &str = r"^(\[[0-9A-Fa-f:.]+\]|[^\s:/\[\]]+):[0-9]{1,5}$";
const ADMIN_URL_PATTERN: &str =
    r"^(env:\s*[A-Za-z_][A-Za-z0-9_]*\s*$|file:\s*\S|postgres(ql)?://|.*=)";
const DURATION_PATTERN: &str = r"^\s*\+?[0-9]+\s*(ms|s|min|h|d)\s*$";
const DAYS_PATTERN: &str = r"^\s*\+?[0-9]*[1-9][0-9]*\s*d\s*$";
const SCHEDULE_PATTERN: &str = r"^\s*\S+(\s+\S+){4}\s*$";
const EXTENSION_PATTERN: &str = "^[a-z0-9_][a-z0-9_-]*$";

struct ConfigFile;

impl JsonSchema for ConfigFile {
    fn schema_name() -> Cow<'static, str> {
        "PlatformConfig".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let tiers: Vec<&str> = Environment::ALL.iter().map(|e| e.as_str()).collect();
        let stores: Vec<&str> = StoreKind::ALL.iter().map(|k| k.as_str()).collect();
        let duration = |description: &str| {
            json_schema!({
                "description": description,
                "type": "string",
                "pattern": DURATION_PATTERN,
            })
        };
        let retention: Map<String, Value> = tiers
            .iter()
            .map(|tier| {
                let days = json_schema!({
                    "description": format!("Days backups of `{tier}` tenants are kept, e.g. `35d`."),
                    "type": "string",
                    "pattern": DAYS_PATTERN,
                });
                (tier.to_string(), days.to_value())
            })
            .collect();
        let schedules: Map<String, Value> = BACKUP_FIELDS
            .iter()
            .map(|kind| {
                let schedule = json_schema!({
                    "description": format!("When the {kind} backup of the cluster runs: minute hour day-of-month month day-of-week."),
                    "type": "string",
                    "pattern": SCHEDULE_PATTERN,
                });
                (kind.to_string(), schedule.to_value())
            })
            .collect();
        let pooler = json_schema!({
            "description": "The cluster's pgbouncer: pgtenant renders its databases from the declared tenants and writes the pooled endpoint into their credentials.",
            "type": "object",
            "additionalProperties": false,
            "required": [LISTEN],
            "properties": {
                RUN: {
                    "description": "`local` (default): pgtenant (`serve`, `up`) runs pgbouncer; `files`: pgtenant only writes its files and reloads it through the admin console (pgbouncer run by systemd, Kubernetes, …).",
                    "type": "string",
                    "enum": PoolerRun::ALL.map(PoolerRun::as_str),
                },
                LISTEN: {
                    "description": "HOST:PORT pgbouncer listens on (and its admin console answers on).",
                    "type": "string",
                    "pattern": HOST_PORT_PATTERN,
                },
                ENDPOINT: {
                    "description": "HOST:PORT applications connect to through the pooler, written into credentials [default: listen].",
                    "type": "string",
                    "pattern": HOST_PORT_PATTERN,
                },
                CONFIG_DIR: {
                    "description": "Where pgbouncer.ini and the auth file are written [default: <state-dir>/pooler/<cluster>/].",
                    "type": "string",
                    "minLength": 1,
                },
                AUTH: {
                    "description": "`file` (default): an auth_file of the SCRAM verifiers pgtenant computes; `query`: auth_query through pgtenant.pooler_lookup in every tenant database (needs a control role that can read pg_authid).",
                    "type": "string",
                    "enum": PoolerAuth::ALL.map(PoolerAuth::as_str),
                },
                TLS: tls_schema("The certificate and key (PEM) pgbouncer presents to clients [default: one from the embedded CA]."),
            },
        });
        let pooling = json_schema!({
            "description": "The pool of a tenant database that sets no `pooling` of its own, on clusters with a pooler.",
            "type": "object",
            "additionalProperties": false,
            "properties": {
                MODE: {
                    "description": format!("`transaction` (default): a server connection per transaction; `session`: one per client session [default: {}].", PoolingDefaults::default().mode.as_str()),
                    "type": "string",
                    "enum": PoolMode::ALL.map(|mode| mode.as_str()),
                },
                SIZE: {
                    "description": format!("Server connections per tenant database (pgbouncer's pool_size) [default: {}].", PoolingDefaults::DEFAULT_SIZE),
                    "type": "integer",
                    "minimum": 1,
                    "maximum": Pooling::MAX_SIZE,
                },
                SERVER_SOCKET: {
                    "description": "The embedded cluster's pgbouncer reaches the server over its private Unix socket (SCRAM, no TLS needed: only the server's account can enter the directory) instead of TCP + TLS; clients still reach pgbouncer with TLS only. Not allowed in a config that lists clusters [default: true].",
                    "type": "boolean",
                },
            },
        });
        json_schema!({
            "title": "pgtenant platform config",
            "description": "pgtenant.yaml: what is not per tenant (the apps repo, the clusters, the credential store, retention, schedules, server settings). Relative paths are taken from the file's directory.",
            "type": "object",
            "additionalProperties": false,
            "properties": {
                REPO: {
                    "description": "The apps repo: a local directory (git remotes come with `pgtenant serve`).",
                    "type": "string",
                    "minLength": 1,
                    "not": { "pattern": "://" },
                },
                CLUSTERS: {
                    "description": "The PostgreSQL clusters pgtenant manages. With several, `--cluster NAME` chooses one.",
                    "type": ["array", "null"],
                    "items": {
                        "type": "object",
                        "additionalProperties": false,
                        "required": [NAME, ADMIN_URL],
                        "properties": {
                            NAME: {
                                "description": "The cluster's name (a DNS-1123 label), unique in the file.",
                                "type": "string",
                                "pattern": DNS_LABEL_PATTERN,
                                "maxLength": 63,
                            },
                            ADMIN_URL: {
                                "description": "The control role's libpq URL: `env:VARIABLE`, `file:/path` (a file of mode 0600 holding the URL), or the URL itself (better without a password in it).",
                                "type": "string",
                                "pattern": ADMIN_URL_PATTERN,
                            },
                            ENDPOINT: {
                                "description": "HOST:PORT that applications connect to, written into credentials [default: the admin URL's host and port].",
                                "type": "string",
                                "pattern": HOST_PORT_PATTERN,
                            },
                            CA_FILE: {
                                "description": "CA bundle (PEM) that verifies the server certificate.",
                                "type": "string",
                                "minLength": 1,
                            },
                            LABELS: {
                                "description": "Free-form labels of the cluster, e.g. `{tier: production}`.",
                                "type": "object",
                                "additionalProperties": { "type": "string" },
                            },
                            POOLER: pooler,
                            PATRONI: {
                                "description": "The REST API base URLs of a Patroni cluster's members (`http://HOST:PORT`): pgtenant writes to the member whose `/primary` answers 200, and follows a failover to the new one.",
                                "type": "array",
                                "minItems": 1,
                                "items": { "type": "string", "pattern": r"^http://(\[[0-9A-Fa-f:.]+\]|[^\s:/\[\]]+):[0-9]{1,5}/?$" },
                            },
                            FAILOVER_TIMEOUT: {
                                "description": "How long a run waits for a new primary after losing the one it wrote to (at least Patroni's ttl + retry_timeout) [default: 60s on an HA cluster].",
                                "type": "string",
                                "pattern": DURATION_PATTERN,
                            },
                            CAPACITY: {
                                "description": "The most the fleet's placement puts on the cluster: a cluster at either limit gets no new tenant (tenants already on it stay).",
                                "type": "object",
                                "additionalProperties": false,
                                "properties": {
                                    MAX_TENANTS: {
                                        "description": "Tenant databases on the cluster.",
                                        "type": "integer",
                                        "minimum": 0,
                                        "maximum": u32::MAX,
                                    },
                                    MAX_SIZE: {
                                        "description": "Total size of the cluster's tenant databases: a whole number with a 1024-based unit, B, kB, MB, GB or TB (`50GB`).",
                                        "type": "string",
                                        "pattern": r"^\s*[0-9]+\s*([kKmMgGtT]?[bB])\s*$",
                                    },
                                },
                            },
                        },
                    },
                },
                STORE: {
                    "description": "The credential store.",
                    "type": "object",
                    "additionalProperties": false,
                    "properties": {
                        TYPE: {
                            "description": "The kind of store.",
                            "type": "string",
                            "enum": stores,
                        },
                        KEY_FILE: {
                            "description": "The file store's key file, kept apart from the data [default: <state-dir>/keys/store.key].",
                            "type": "string",
                            "minLength": 1,
                        },
                        REGION: {
                            "description": "aws-secrets-manager: the AWS region [default: the AWS SDK's, from AWS_REGION or the profile].",
                            "type": "string",
                            "pattern": "^[a-z0-9-]+-[a-z0-9-]+$",
                        },
                        PREFIX: {
                            "description": "aws-secrets-manager: what secret names start with [default: customer/].",
                            "type": "string",
                            "pattern": "^[A-Za-z0-9_+=.@-]+(/[A-Za-z0-9_+=.@-]+)*/$",
                        },
                        ENDPOINT_URL: {
                            "description": "aws-secrets-manager: another API endpoint (a VPC endpoint, a local emulator) [default: the region's].",
                            "type": "string",
                            "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://[^/]",
                        },
                        KMS_KEY_ID: {
                            "description": "aws-secrets-manager: the KMS key (id, ARN or alias) that encrypts new secrets [default: aws/secretsmanager].",
                            "type": "string",
                            "minLength": 1,
                        },
                    },
                },
                ENVIRONMENT: {
                    "description": "The platform's tier.",
                    "type": "string",
                    "enum": tiers,
                },
                RETENTION: {
                    "description": "Days that backups are kept, per tier, where the defaults (35 days for production and staging, 7 for test and dev) do not fit.",
                    "type": "object",
                    "additionalProperties": false,
                    "properties": retention,
                },
                BACKUPS: {
                    "description": "Cron schedules of the cluster's backups (used by `pgtenant serve`).",
                    "type": "object",
                    "additionalProperties": false,
                    "properties": schedules,
                },
                SERVE: {
                    "description": "Settings of the long-running service (`pgtenant serve`).",
                    "type": "object",
                    "additionalProperties": false,
                    "properties": {
                        LISTEN: {
                            "description": "HOST:PORT the service listens on.",
                            "type": "string",
                            "pattern": HOST_PORT_PATTERN,
                        },
                        DRIFT_INTERVAL: duration("How often the cluster is checked for drift, e.g. `10min`."),
                        POLL_INTERVAL: duration("How often the repo is polled for changes (a git remote fetched), e.g. `10s`."),
                        GIT: {
                            "description": "The apps repo as a git remote, read from the fetched commit (instead of `repo`'s directory).",
                            "type": "object",
                            "additionalProperties": false,
                            "required": [REMOTE],
                            "properties": {
                                REMOTE: {
                                    "description": "The remote: `https://…` (credentials as `https://user:token@host/…`), `ssh://…`, `git@host:path`, `file://…` or a local path.",
                                    "type": "string",
                                    "minLength": 1,
                                },
                                BRANCH: {
                                    "description": "The branch served [default: main].",
                                    "type": "string",
                                    "minLength": 1,
                                },
                                CA_FILE: {
                                    "description": "CA bundle (PEM) that verifies an `https://` remote, besides the system's.",
                                    "type": "string",
                                    "minLength": 1,
                                },
                            },
                        },
                        TOKEN_FILE: {
                            "description": "File holding the bearer token of the mutating endpoints (none: they answer 403).",
                            "type": "string",
                            "minLength": 1,
                        },
                        WEBHOOK_SECRET_FILE: {
                            "description": "File holding the git webhook's secret (GitHub X-Hub-Signature-256 or GitLab X-Gitlab-Token).",
                            "type": "string",
                            "minLength": 1,
                        },
                        TLS: tls_schema("Serve HTTPS with this certificate and key (PEM)."),
                        ROTATE_EVERY: {
                            "description": "New passwords for every tenant's logins this often, with grace (zero downtime), e.g. `90d`.",
                            "type": "string",
                            "pattern": DAYS_PATTERN,
                        },
                    },
                },
                POOLING: pooling,
                PASSWORDS: {
                    "description": "How pgtenant sets the passwords it generates for tenant logins.",
                    "type": "object",
                    "additionalProperties": false,
                    "properties": {
                        SCRAM_ITERATIONS: {
                            "description": format!("The iteration count of each tenant login's SCRAM-SHA-256 verifier, which every client runs PBKDF2 for on every new connection; a change is applied to every login by the next apply, with the same passwords. Fewer than 4096 breaks pgjdbc (Java) clients [default: {}].", Passwords::DEFAULT_SCRAM_ITERATIONS),
                            "type": "integer",
                            "minimum": Passwords::MIN_SCRAM_ITERATIONS,
                            "maximum": Passwords::MAX_SCRAM_ITERATIONS,
                        },
                    },
                },
                SUPERUSER_EXTENSIONS: {
                    "description": "Extensions that need superuser and that tenants may still declare.",
                    "type": "array",
                    "uniqueItems": true,
                    "items": { "type": "string", "pattern": EXTENSION_PATTERN },
                },
            },
        })
    }
}

/// The JSON Schema of `pgtenant.yaml` (draft-07).
/// A `tls:` object (serve's, a pooler's): a certificate and its key, PEM files.
fn tls_schema(description: &str) -> Value {
    serde_json::json!({
        "description": description,
        "type": "object",
        "additionalProperties": false,
        "required": [CERT_FILE, KEY_FILE],
        "properties": {
            CERT_FILE: { "description": "The certificate (chain), PEM.", "type": "string", "minLength": 1 },
            KEY_FILE: { "description": "Its private key, PEM.", "type": "string", "minLength": 1 },
        },
    })
}

pub fn config_schema() -> Value {
    pgtenant_spec::draft07_schema_for::<ConfigFile>()
}

/// [`config_schema`] as the text of `docs/pgtenant-config.schema.json`.
pub fn config_schema_text() -> String {
    pgtenant_spec::schema_text(&config_schema())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::{
        CLUSTER_FIELDS, POOLER_FIELDS, POOLING_FIELDS, SERVE_FIELDS, STORE_FIELDS, TOP_LEVEL,
    };

    fn keys(schema: &Value) -> Vec<String> {
        let mut keys: Vec<String> = schema["properties"]
            .as_object()
            .expect("properties")
            .keys()
            .cloned()
            .collect();
        keys.sort();
        keys
    }

    fn sorted(names: &[&str]) -> Vec<String> {
        let mut names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        names.sort();
        names
    }

    /// The schema names exactly the keys the parser knows, at every level.
    #[test]
    fn the_schema_knows_the_parsers_keys() {
        let schema = config_schema();
        assert_eq!(keys(&schema), sorted(&TOP_LEVEL));
        let properties = &schema["properties"];
        assert_eq!(
            keys(&properties[CLUSTERS]["items"]),
            sorted(&CLUSTER_FIELDS)
        );
        assert_eq!(
            keys(&properties[CLUSTERS]["items"]["properties"][POOLER]),
            sorted(&POOLER_FIELDS)
        );
        assert_eq!(keys(&properties[POOLING]), sorted(&POOLING_FIELDS));
        assert_eq!(keys(&properties[STORE]), sorted(&STORE_FIELDS));
        assert_eq!(keys(&properties[SERVE]), sorted(&SERVE_FIELDS));
        assert_eq!(keys(&properties[BACKUPS]), sorted(&BACKUP_FIELDS));
        let tiers: Vec<&str> = Environment::ALL.iter().map(|e| e.as_str()).collect();
        assert_eq!(keys(&properties[RETENTION]), sorted(&tiers));
        assert_eq!(schema["$schema"], "http://json-schema.org/draft-07/schema#");
    }
}
