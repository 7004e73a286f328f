//! What the cluster looks like, as read from its catalog. Plain data: the catalog reader fills it,
//! the planner and the check report read it, tests build it by hand.

use std::collections::{BTreeMap, BTreeSet};

use pgtenant_secrets::SecretPath;
use serde::{Deserialize, Serialize};

use crate::desired::{Marker, RoleAttributes};

/// Privileges per grantee as `aclexplode()` reports them; `None` is PUBLIC.
pub type Acl = BTreeMap<Option<String>, BTreeSet<String>>;

#[derive(Debug, Clone, Default, Serialize)]
pub struct Observed {
    pub server: ServerInfo,
    pub roles: BTreeMap<String, ObservedRole>,
    pub databases: BTreeMap<String, ObservedDatabase>,
    /// Inside each tenant database that exists and was inspected.
    pub database_catalogs: BTreeMap<String, DatabaseCatalog>,
    /// Every secret the store holds.
    pub stored_paths: BTreeSet<SecretPath>,
    /// Connection details of the stored credentials of the tenants looked at (never the passwords:
    /// the planner doesn't need them).
    pub stored_credentials: BTreeMap<SecretPath, StoredCredential>,
    /// Declared databases that exist but could not be inspected, with the reason.
    pub uninspected: BTreeMap<String, String>,
    /// Extensions the server could install, and whether they are trusted (a database owner may create them).
    pub available_extensions: BTreeMap<String, bool>,
    /// Where roles with a pgtenant marker still own objects or hold privileges outside their own
    /// tenant database (`pg_shdepend`): by role, the databases (None: shared objects, such as another
    /// database's ACL). What keeps `DROP ROLE` from succeeding once the tenant's database is gone.
    pub role_dependencies: BTreeMap<String, BTreeSet<Option<String>>>,
    /// The server's activity counters, read with the cluster-wide catalog: what tells a database
    /// that cannot have changed since its catalog was last verified.
    pub statistics: Statistics,
    /// How each catalog of `database_catalogs` was obtained: read in this run, or trusted from
    /// the last verification (by database).
    pub verifications: BTreeMap<String, Verification>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ServerInfo {
    pub version_num: i32,
    pub current_user: String,
    pub is_superuser: bool,
    pub max_connections: i32,
    pub reserved_connections: i32,
    pub connections_in_use: i32,
}

impl ServerInfo {
    /// Connections a non-superuser could still open: `max_connections` less the superuser's reserve
    /// and those in use when the catalog was read.
    pub fn free_connections(&self) -> i32 {
        self.max_connections - self.reserved_connections - self.connections_in_use
    }

    /// How many tenant databases to work on at once: see [`parallelism_for`], with the cores of the
    /// machine pgtenant runs on.
    pub fn parallelism(&self) -> usize {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        parallelism_for(self.max_connections, self.free_connections(), cores)
    }
}

/// Connections always left to applications: a tenth of `max_connections`, at least this many.
const MIN_APPLICATION_HEADROOM: i32 = 10;

/// Concurrent tenant databases never exceed this, however large the machine.
const MAX_PARALLELISM: usize = 64;

/// How many tenant databases to work on at once, from the server's free connections and the cores:
///
/// - connections: a tenth of `max_connections` (at least [`MIN_APPLICATION_HEADROOM`]) of the free
///   ones stays for applications, and each worker may hold two of the rest (its control connection
///   and one inside the tenant database while applying);
/// - cores: two workers per core. Each inspection is CPU work on both ends (TLS handshake, SCRAM,
///   backend start, one catalog query) with short waits between the round trips, so two per core
///   keep every core busy; more only queue on the same cores. The cores counted are those of the
///   machine pgtenant runs on: the server does not report its own, and for the embedded cluster (and
///   any server on the same host) they are the server's too; for a remote server the connection
///   bound is what protects it.
///
/// Always at least one, at most [`MAX_PARALLELISM`].
pub fn parallelism_for(max_connections: i32, free_connections: i32, cores: usize) -> usize {
    let headroom = (max_connections / 10).max(MIN_APPLICATION_HEADROOM);
    let by_connections = usize::try_from((free_connections - headroom) / 2).unwrap_or(0);
    by_connections
        .min(cores.saturating_mul(2))
        .clamp(1, MAX_PARALLELISM)
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ObservedRole {
    pub attributes: RoleAttributes,
    pub comment: Option<String>,
    /// Roles this role is a member of.
    pub member_of: BTreeSet<String>,
    /// Roles that are members of this role.
    pub members: BTreeSet<String>,
    /// Session defaults (`ALTER ROLE … SET`) for all databases, by setting name.
    pub config: BTreeMap<String, String>,
    /// Who granted each of this role's memberships (PostgreSQL 16 revokes per grantor).
    pub membership_grantors: BTreeMap<String, BTreeSet<String>>,
    /// Session defaults for one database only (`ALTER ROLE … IN DATABASE … SET`), by database.
    pub database_config: BTreeMap<String, BTreeMap<String, String>>,
}

impl ObservedRole {
    pub fn marker(&self) -> Option<Marker> {
        self.comment.as_deref().and_then(Marker::parse)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ObservedDatabase {
    pub owner: String,
    pub comment: Option<String>,
    /// `datacl` as the server prints it, for humans.
    pub acl_text: Option<String>,
    /// Effective privileges (the default ACL when `datacl` is NULL).
    pub acl: Acl,
    pub allow_connections: bool,
    pub connection_limit: i32,
    /// Session defaults for every role in this database (`ALTER DATABASE … SET`).
    pub settings: BTreeMap<String, String>,
}

impl ObservedDatabase {
    pub fn marker(&self) -> Option<Marker> {
        self.comment.as_deref().and_then(Marker::parse)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DatabaseCatalog {
    /// The comment of `pgtenant.pooler_lookup(text)` (SECURITY DEFINER) when the database has it
    /// ([`crate::sql::POOLER_LOOKUP_MARKER`] for the current version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pooler_lookup: Option<String>,
    pub schemas: BTreeMap<String, ObservedSchema>,
    /// Database-wide default privileges (`FOR ROLE r` without `IN SCHEMA`), by owner role and object class code.
    #[serde(with = "pairs")]
    pub default_acls: BTreeMap<(String, String), DefaultAcl>,
    /// Relations outside the system schemas, with what the tenant's roles hold on each.
    pub relations: Vec<ObservedRelation>,
    pub extensions: BTreeSet<String>,
    /// Privileges on schemas, relations and routines held by roles that are not the tenant's own
    /// (nor the object's owner, nor PUBLIC): the planner decides which of them break isolation.
    pub foreign_grants: Vec<ForeignGrant>,
    /// Objects (relations, routines) owned by the tenant's roles other than its owner role, by role:
    /// `schema.name` of each.
    pub owned_by_others: BTreeMap<String, BTreeSet<String>>,
}

/// The kind of object a [`ForeignGrant`] is on, as GRANT/REVOKE name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectClass {
    Schema,
    Table,
    Sequence,
    /// Functions and procedures (`ROUTINE` covers both).
    Routine,
}

impl ObjectClass {
    /// As GRANT and REVOKE name a single object of the class.
    pub fn keyword(self) -> &'static str {
        match self {
            ObjectClass::Schema => "SCHEMA",
            ObjectClass::Table => "TABLE",
            ObjectClass::Sequence => "SEQUENCE",
            ObjectClass::Routine => "ROUTINE",
        }
    }
}

/// One entry of an object's ACL whose grantee is not one of the tenant's roles.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ForeignGrant {
    pub class: ObjectClass,
    pub schema: String,
    /// The relation or routine; the schema's own name for [`ObjectClass::Schema`].
    pub name: String,
    /// A routine's argument types as the server formats them (`integer, "my type"`), which name
    /// one overload; empty for other classes.
    pub arguments: String,
    pub grantee: String,
    pub grantor: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObservedSchema {
    pub owner: String,
    pub acl_text: Option<String>,
    #[serde(with = "pairs")]
    pub acl: Acl,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DefaultAcl {
    pub acl_text: String,
    #[serde(with = "pairs")]
    pub acl: Acl,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObservedRelation {
    pub schema: String,
    pub name: String,
    pub is_sequence: bool,
    pub owner: String,
    /// Privileges per grantee, only for the grantees the reader was asked about.
    #[serde(with = "pairs")]
    pub acl: Acl,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredCredential {
    pub username: String,
    pub endpoint: String,
    pub port: u16,
    pub dbname: String,
    /// The pooled endpoint written with it, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pooler: Option<pgtenant_secrets::PoolerAddress>,
    /// The iteration count of the verifier set with its password
    /// ([`pgtenant_secrets::Credential::scram_iterations`]).
    #[serde(skip)]
    pub scram_iterations: u32,
}

/// Builds an [`Acl`] from `(grantee, privilege)` pairs; an empty grantee is PUBLIC.
pub fn acl_from_pairs<'a>(pairs: impl IntoIterator<Item = (Option<&'a str>, &'a str)>) -> Acl {
    let mut acl = Acl::new();
    for (grantee, privilege) in pairs {
        acl.entry(grantee.map(str::to_string))
            .or_default()
            .insert(privilege.to_string());
    }
    acl
}

/// `pg_stat_database` and what it needs to be believed, from the cluster-wide read.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Statistics {
    /// `track_counts` of the control session (off: no counter is trusted).
    pub track_counts: bool,
    /// By database name.
    pub databases: BTreeMap<String, DatabaseStats>,
    /// Every role's name by OID: a renamed role changes the names inside every database's ACLs
    /// without a transaction in that database.
    pub role_names: BTreeMap<u32, String>,
}

/// One database's identity and the counters that move with every row written in it, catalog rows
/// included: every change the planner compares (a GRANT, a REVOKE, an owner, a schema, default
/// privileges, an extension) writes one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseStats {
    /// The database's OID: another database of the same name is another database.
    pub oid: u32,
    pub tup_inserted: i64,
    pub tup_updated: i64,
    pub tup_deleted: i64,
    /// When the counters were last reset (microseconds since the epoch; None: never).
    pub stats_reset: Option<i64>,
}

/// How one database's catalog was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Verification {
    /// From the last verification, its counters unchanged since: not read in this run.
    pub trusted: bool,
    /// When the catalog was read from the database.
    pub at: std::time::SystemTime,
}

/// A map with tuple or optional keys as a list of `[key, value]` pairs (JSON keys must be strings).
mod pairs {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<K: Serialize, V: Serialize, S: Serializer>(
        map: &BTreeMap<K, V>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(map.iter())
    }

    pub fn deserialize<'de, K, V, D>(deserializer: D) -> Result<BTreeMap<K, V>, D::Error>
    where
        K: Deserialize<'de> + Ord,
        V: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        Ok(Vec::<(K, V)>::deserialize(deserializer)?
            .into_iter()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallelism_is_sized_by_cores_and_free_connections() {
        // Two per core while connections are plenty (the default max_connections = 100).
        assert_eq!(parallelism_for(100, 92, 2), 4);
        assert_eq!(parallelism_for(100, 92, 8), 16);
        // Connections: 10 (at least) stay for applications, two per worker of the rest.
        assert_eq!(parallelism_for(100, 92, 64), 41);
        assert_eq!(parallelism_for(100, 20, 64), 5);
        // A tenth of a large max_connections stays free.
        assert_eq!(parallelism_for(1000, 300, 1000), 64);
        assert_eq!(parallelism_for(1000, 150, 1000), 25);
        // A busy or small server still gets one worker; a huge machine no more than the cap.
        assert_eq!(parallelism_for(100, 10, 16), 1);
        assert_eq!(parallelism_for(100, -3, 16), 1);
        assert_eq!(parallelism_for(10_000, 9_000, 256), MAX_PARALLELISM);
        assert_eq!(parallelism_for(100, 92, 0), 1);
    }

    #[test]
    fn parallelism_counts_what_the_server_reported() {
        let server = ServerInfo {
            max_connections: 100,
            reserved_connections: 3,
            connections_in_use: 85,
            ..ServerInfo::default()
        };
        assert_eq!(server.free_connections(), 12);
        assert_eq!(server.parallelism(), 1);
    }
}
