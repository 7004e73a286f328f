use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::location::SourceLocation;
use crate::tenant::{PresetRole, RoleDuty, RoleKind, TenantId};

/// PostgreSQL's identifier limit (`NAMEDATALEN - 1`). Longer identifiers are silently
/// truncated by the server, so two long tenant names could end up as the same role.
pub const MAX_IDENTIFIER_BYTES: usize = 63;

/// Suffixes of the roles of the default preset ([`Preset::Idp`]), from its definition.
pub const ROLE_SUFFIXES: [&str; IDP.len()] = suffixes(IDP, false);

// The presets' role models (seeds 000, 004 and 002): the one definition every role list derives from.
const IDP: &[PresetRole] = &[
    PresetRole::new(RoleKind::Admin, RoleDuty::Owner, true),
    PresetRole::new(RoleKind::Write, RoleDuty::Write, true),
    PresetRole::new(RoleKind::Read, RoleDuty::Read, true),
];
const APP_MIGRATOR: &[PresetRole] = &[
    PresetRole::new(RoleKind::Migrator, RoleDuty::Owner, true),
    PresetRole::new(RoleKind::App, RoleDuty::Write, true),
];
const SCHEMA_OWNER: &[PresetRole] = &[
    PresetRole::new(RoleKind::Owner, RoleDuty::Owner, false),
    PresetRole::new(RoleKind::App, RoleDuty::ActsAsOwner, true),
    PresetRole::new(RoleKind::Write, RoleDuty::ActsAsOwner, true),
    PresetRole::new(RoleKind::Read, RoleDuty::Read, true),
];

const fn count(roles: &[PresetRole], logins_only: bool) -> usize {
    let (mut i, mut n) = (0, 0);
    while i < roles.len() {
        if roles[i].login || !logins_only {
            n += 1;
        }
        i += 1;
    }
    n
}

/// The suffixes of `roles` (only the logins' when `logins_only`), in order.
const fn suffixes<const N: usize>(roles: &[PresetRole], logins_only: bool) -> [&'static str; N] {
    let mut out = [""; N];
    let (mut i, mut n) = (0, 0);
    while i < roles.len() {
        if roles[i].login || !logins_only {
            out[n] = roles[i].kind.as_str();
            n += 1;
        }
        i += 1;
    }
    out
}

/// A `&'static` slice of the suffixes of a preset's roles, computed at compile time.
macro_rules! suffixes_of {
    ($roles:expr, $logins_only:expr) => {{
        static SUFFIXES: [&str; count($roles, $logins_only)] = suffixes($roles, $logins_only);
        &SUFFIXES
    }};
}

/// What the engine may do to a tenant database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Managed fully, including dropping it once it is no longer declared.
    #[default]
    Standard,
    /// Never dropped by the engine.
    Protected,
}

impl Mode {
    /// Every mode, in the order they are listed to users.
    pub(crate) const ALL: [Mode; 2] = [Mode::Standard, Mode::Protected];

    /// The spelling used in values files and in output.
    pub fn as_str(&self) -> &'static str {
        match self {
            Mode::Standard => "standard",
            Mode::Protected => "protected",
        }
    }
}

/// The role model of a database: which roles exist and what each may do (the engine holds the
/// privileges; the spec knows the names, so it can validate `roles:` keys and identifier lengths).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// Seed 000: login roles admin (owner), write, read.
    #[default]
    Idp,
    /// Seed 004: login roles migrator (owns the database and schema `app`, runs migrations) and app (DML only).
    AppMigrator,
    /// Seed 002: NOLOGIN owner owns the schemas; logins app and write assume it; login read has SELECT.
    SchemaOwner,
}

impl Preset {
    pub const ALL: [Preset; 3] = [Preset::Idp, Preset::AppMigrator, Preset::SchemaOwner];

    pub fn as_str(&self) -> &'static str {
        match self {
            Preset::Idp => "idp",
            Preset::AppMigrator => "app-migrator",
            Preset::SchemaOwner => "schema-owner",
        }
    }

    /// The preset's roles, owner first: what each is for and whether it logs in.
    pub const fn roles(&self) -> &'static [PresetRole] {
        match self {
            Preset::Idp => IDP,
            Preset::AppMigrator => APP_MIGRATOR,
            Preset::SchemaOwner => SCHEMA_OWNER,
        }
    }

    /// The role that owns the database and its schemas.
    pub fn owner(&self) -> RoleKind {
        self.roles()
            .iter()
            .find(|r| r.duty == RoleDuty::Owner)
            .expect("every preset has an owner")
            .kind
    }

    /// The login that acts as the owner: the owner itself when it logs in, else the first login
    /// whose sessions assume it (what pg_dump and pg_restore of the tenant run as).
    pub fn owner_login(&self) -> RoleKind {
        let roles = self.roles();
        roles
            .iter()
            .find(|r| r.duty == RoleDuty::Owner && r.login)
            .or_else(|| {
                roles
                    .iter()
                    .find(|r| r.duty == RoleDuty::ActsAsOwner && r.login)
            })
            .expect("every preset has a login that acts as its owner")
            .kind
    }

    /// The roles that log in and so have credentials, in the preset's order.
    pub fn login_kinds(&self) -> impl Iterator<Item = RoleKind> {
        self.roles().iter().filter(|r| r.login).map(|r| r.kind)
    }

    /// Every role suffix of the preset, login or not (`<namespace>-<name>-<suffix>`).
    pub fn role_suffixes(&self) -> &'static [&'static str] {
        match self {
            Preset::Idp => suffixes_of!(IDP, false),
            Preset::AppMigrator => suffixes_of!(APP_MIGRATOR, false),
            Preset::SchemaOwner => suffixes_of!(SCHEMA_OWNER, false),
        }
    }

    /// The roles that log in and so have credentials.
    pub fn login_roles(&self) -> &'static [&'static str] {
        match self {
            Preset::Idp => suffixes_of!(IDP, true),
            Preset::AppMigrator => suffixes_of!(APP_MIGRATOR, true),
            Preset::SchemaOwner => suffixes_of!(SCHEMA_OWNER, true),
        }
    }

    /// Schemas every database of the preset has besides `public` (app-migrator's `app`, seed
    /// 004). [`DatabaseSpec::schemas`] always starts with them.
    pub fn implied_schemas(&self) -> &'static [&'static str] {
        match self {
            Preset::AppMigrator => &["app"],
            Preset::Idp | Preset::SchemaOwner => &[],
        }
    }

    /// The longest of [`role_suffixes`](Self::role_suffixes), the first one on a tie: it decides
    /// whether `<namespace>-<name>-<suffix>` fits in [`MAX_IDENTIFIER_BYTES`].
    pub fn longest_role_suffix(&self) -> &'static str {
        let suffixes = self.role_suffixes();
        suffixes.iter().fold(suffixes[0], |longest, &suffix| {
            if suffix.len() > longest.len() {
                suffix
            } else {
                longest
            }
        })
    }
}

/// Environment tier: decides backup retention and similar defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    Production,
    Staging,
    Test,
    #[default]
    Dev,
}

impl Environment {
    pub const ALL: [Environment; 4] = [
        Environment::Production,
        Environment::Staging,
        Environment::Test,
        Environment::Dev,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Environment::Production => "production",
            Environment::Staging => "staging",
            Environment::Test => "test",
            Environment::Dev => "dev",
        }
    }

    /// Production and staging keep 35 days, test and dev 7 (seed 000).
    pub fn retention_days(&self) -> u32 {
        match self {
            Environment::Production | Environment::Staging => 35,
            Environment::Test | Environment::Dev => 7,
        }
    }
}

/// PostgreSQL's `log_statement` values: which statements of a role the server logs (seed 002 logs
/// every query of human roles).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogStatements {
    #[default]
    None,
    Ddl,
    Mod,
    All,
}

impl LogStatements {
    pub const ALL: [LogStatements; 4] = [
        LogStatements::None,
        LogStatements::Ddl,
        LogStatements::Mod,
        LogStatements::All,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            LogStatements::None => "none",
            LogStatements::Ddl => "ddl",
            LogStatements::Mod => "mod",
            LogStatements::All => "all",
        }
    }
}

/// How a pooler (pgbouncer) shares server connections among a database's clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    /// A server connection per transaction: the most sharing; session state does not survive
    /// a transaction.
    #[default]
    Transaction,
    /// A server connection per client session.
    Session,
}

impl PoolMode {
    pub const ALL: [PoolMode; 2] = [PoolMode::Transaction, PoolMode::Session];

    /// The spelling of values files, the platform config and pgbouncer's `pool_mode`.
    pub fn as_str(&self) -> &'static str {
        match self {
            PoolMode::Transaction => "transaction",
            PoolMode::Session => "session",
        }
    }
}

/// A database's `pooling:`: `none` opts out of the cluster's pooler; `{mode, size}` overrides
/// the platform's defaults (unset fields keep them). An absent `pooling:` is
/// [`DatabaseSpec::pooling`] `None`: pooled with the platform's defaults when the cluster has a
/// pooler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pooling {
    /// `pooling: none`: no pool entry, no pooled endpoint in the credentials.
    Off,
    Pooled {
        mode: Option<PoolMode>,
        /// pgbouncer's `pool_size`: server connections for the database (per user).
        size: Option<u32>,
    },
}

impl Pooling {
    /// The word of `pooling: none`.
    pub const NONE: &'static str = "none";
    /// The largest `pooling.size` taken.
    pub const MAX_SIZE: u32 = 10_000;
}

/// As written in a values file: `"none"`, or `{"mode": …, "size": …}` of the fields given.
impl Serialize for Pooling {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self {
            Pooling::Off => serializer.serialize_str(Self::NONE),
            Pooling::Pooled { mode, size } => {
                let mut map = serializer.serialize_map(None)?;
                if let Some(mode) = mode {
                    map.serialize_entry("mode", mode)?;
                }
                if let Some(size) = size {
                    map.serialize_entry("size", size)?;
                }
                map.end()
            }
        }
    }
}

/// Per-role settings (`roles: {write: {...}}`); unset fields keep the server's defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct RoleSettings {
    /// `CONNECTION LIMIT`; None is unlimited (-1).
    pub connection_limit: Option<i32>,
    /// `statement_timeout` in milliseconds (the spec accepts `30s`, `5min`, `250ms`, `1h` or a number of ms).
    pub statement_timeout_ms: Option<u64>,
    pub log_statements: Option<LogStatements>,
}

/// The format a values file is written in: no `apiVersion` (the chart's 0.5/1.0 fields only), or v1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ApiVersion {
    #[default]
    Legacy,
    V1,
}

/// The `apiVersion` value of v1 files.
pub const API_VERSION_V1: &str = "pgtenant.io/v1";

/// One tenant database declared in the apps repo, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct DatabaseSpec {
    /// The first-level folder of the values file.
    pub namespace: String,
    /// The entry's `name`.
    pub name: String,
    pub mode: Mode,
    /// Where the entry's `name` value is.
    pub location: SourceLocation,
    pub api_version: ApiVersion,
    pub preset: Preset,
    /// Extra schemas, owned like `public` and with the same grants: the preset's
    /// [`implied_schemas`](Preset::implied_schemas) first, then the declared ones in file order,
    /// each once. Never `public`.
    pub schemas: Vec<String>,
    /// Extensions created in the database, in file order, each once.
    pub extensions: Vec<String>,
    /// Database `CONNECTION LIMIT`; None is unlimited.
    pub connection_limit: Option<i32>,
    /// Overrides the platform's environment tier for this database.
    pub environment: Option<Environment>,
    /// By role suffix of the preset (`admin`, `write`, `app`, …).
    pub roles: BTreeMap<String, RoleSettings>,
    /// `pooling:`; None: the platform's defaults (pooled when the cluster has a pooler).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pooling: Option<Pooling>,
    /// `cluster:`, the cluster of the platform config a new tenant goes to; None: placement
    /// decides. Only a name here: the config says whether it exists ([`ClusterChoice`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterChoice>,
    /// `placement.labels`: the labels a new tenant's cluster must have; empty: the default (the
    /// cluster's `tier` is the tenant's environment, when some cluster has a `tier` label).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub placement_labels: BTreeMap<String, String>,
}

/// A database's `cluster: NAME`, with where it is written so that an unknown name is reported
/// there once the platform config is known.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClusterChoice {
    pub name: String,
    /// Where the value is.
    pub location: SourceLocation,
    /// Its field path, e.g. `postgresqlDatabases[0].cluster`.
    pub field: String,
}

impl Serialize for ClusterChoice {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.name)
    }
}

/// How to write a name [`is_label_key`] accepts: the hint of every error about one.
pub const LABEL_KEY_HINT: &str =
    "use letters, digits, '-', '_', '.' and '/', starting and ending with a \
     letter or digit, e.g. `tier`";

/// A label name of the platform config's `clusters[].labels` and a values file's
/// `placement.labels`: letters, digits, `-`, `_`, `.` and `/`, starting and ending with a letter
/// or digit, at most 63 characters.
pub fn is_label_key(key: &str) -> bool {
    key.len() <= 63
        && key
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && key
            .chars()
            .last()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
}

impl DatabaseSpec {
    /// The tenant: its namespace and name, from which every name of it derives.
    pub fn tenant(&self) -> TenantId {
        TenantId::new(&self.namespace, &self.name)
    }

    /// The PostgreSQL database name, `<namespace>-<name>` ([`TenantId::database`]).
    pub fn database_name(&self) -> String {
        self.tenant().database()
    }

    /// The tenant's identity in the repo, `<namespace>/<name>` ([`TenantId`]'s display form).
    pub fn tenant_id(&self) -> String {
        self.tenant().to_string()
    }

    /// Whether the database goes through the cluster's pooler (when it has one): all but
    /// `pooling: none`.
    pub fn is_pooled(&self) -> bool {
        self.pooling != Some(Pooling::Off)
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn names_a_tenant() {
        let spec = DatabaseSpec {
            namespace: "idp-dev".into(),
            name: "my-db".into(),
            mode: Mode::Protected,
            location: SourceLocation {
                file: PathBuf::from("idp-dev/my-db/values.yaml"),
                line: 2,
                column: 11,
            },
            ..DatabaseSpec::default()
        };
        assert_eq!(spec.database_name(), "idp-dev-my-db");
        assert_eq!(spec.tenant_id(), "idp-dev/my-db");
    }

    #[test]
    fn pooling_serializes_as_written() {
        assert_eq!(serde_json::to_value(Pooling::Off).unwrap(), "none");
        let pooled = Pooling::Pooled {
            mode: Some(PoolMode::Session),
            size: None,
        };
        assert_eq!(
            serde_json::to_value(pooled).unwrap(),
            serde_json::json!({"mode": "session"})
        );
        for mode in PoolMode::ALL {
            assert_eq!(serde_json::to_value(mode).unwrap(), mode.as_str());
        }
    }

    #[test]
    fn mode_spelling_matches_serde() {
        for mode in Mode::ALL {
            assert_eq!(
                serde_json::to_value(mode).unwrap(),
                serde_json::Value::String(mode.as_str().to_owned())
            );
            let back: Mode = serde_json::from_value(serde_json::json!(mode.as_str())).unwrap();
            assert_eq!(back, mode);
        }
        assert_eq!(Mode::default(), Mode::Standard);
    }
}
