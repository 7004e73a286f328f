//! Reading the cluster's catalog into [`Observed`]. Read only; every value reaches the server as a bind
//! parameter, and cluster-wide state is read in a few set-based queries sent together, whatever the
//! number of tenants.

use std::collections::{BTreeMap, BTreeSet};

use tokio_postgres::types::Type;
use tokio_postgres::{Client, Row};

use crate::desired::{alternate_name, DesiredTenant, Marker, RoleAttributes, RoleKind};
use crate::observed::{
    Acl, DatabaseCatalog, DatabaseStats, DefaultAcl, ForeignGrant, ObjectClass, ObservedDatabase,
    ObservedRelation, ObservedRole, ObservedSchema, ServerInfo, Statistics,
};
use crate::EngineError;

/// The backends are counted with `pg_stat_get_backend_idset()`, the rows `pg_stat_activity` is made
/// of, without its per-row check of whether the caller may see each backend's details: for a control
/// role that is a member of every tenant role, that check walks all its 3N memberships (~40 ms at
/// 1,000 tenants, on every run).
const SERVER: &str = "
SELECT current_user::text,
       pg_catalog.current_setting('server_version_num')::int4,
       r.rolsuper,
       pg_catalog.current_setting('max_connections')::int4,
       pg_catalog.current_setting('superuser_reserved_connections')::int4,
       (SELECT count(*) FROM pg_catalog.pg_stat_get_backend_idset())::int4
  FROM pg_catalog.pg_roles r
 WHERE r.rolname = current_user";

/// Comments joined, not looked up per row with `shobj_description` (a SQL function: 3,000 calls
/// cost ~50 ms at 1,000 tenants, the join ~5 ms).
const ROLES: &str = "
SELECT r.rolname::text, r.rolcanlogin, r.rolsuper, r.rolcreatedb, r.rolcreaterole, r.rolreplication,
       r.rolbypassrls, r.rolinherit, r.rolconnlimit, c.description, r.oid
  FROM pg_catalog.pg_roles r
  LEFT JOIN pg_catalog.pg_shdescription c
         ON c.objoid = r.oid AND c.classoid = 'pg_catalog.pg_authid'::pg_catalog.regclass
 WHERE $1::text[] IS NULL OR r.rolname = ANY($1) OR r.rolname = current_user";

/// Every row of `pg_db_role_setting`: a role's defaults for all databases (`ALTER ROLE … SET`, no
/// database), a database's defaults for all roles (`ALTER DATABASE … SET`, no role), and a role's
/// defaults in one database (`ALTER ROLE … IN DATABASE … SET`). One query for the whole cluster.
const SETTINGS: &str = "
SELECT r.rolname::text, d.datname::text, s.setconfig
  FROM pg_catalog.pg_db_role_setting s
  LEFT JOIN pg_catalog.pg_roles r ON r.oid = s.setrole
  LEFT JOIN pg_catalog.pg_database d ON d.oid = s.setdatabase
 WHERE (s.setrole = 0 OR r.oid IS NOT NULL) AND (s.setdatabase = 0 OR d.oid IS NOT NULL)
   AND ($1::text[] IS NULL OR r.rolname = ANY($1) OR (s.setrole = 0 AND d.datname = ANY($2::text[])))";

/// Where roles carrying a pgtenant marker (their comment starts with $1) own objects or hold
/// privileges, except inside their own tenant database and on it (a role is named
/// `<database>-<suffix>`, the suffixes are $2): what blocks `DROP ROLE` once that database is
/// dropped. The database is NULL for shared objects other than a database (a tablespace, a
/// parameter). Normally empty, whatever the number of tenants.
/// Joined from the marked roles' comments to their dependencies by index, whatever the catalog's
/// statistics say (about 20 ms for 3000 tenant roles and 30000 dependencies).
const ROLE_DEPENDENCIES: &str = "
SELECT m.rolname::text, d.datname::text
  FROM (SELECT DISTINCT r.rolname, CASE
                 WHEN s.dbid <> 0 THEN s.dbid
                 WHEN s.classid = 'pg_catalog.pg_database'::pg_catalog.regclass THEN s.objid END AS database
          FROM pg_catalog.pg_shdescription c
          JOIN pg_catalog.pg_roles r ON r.oid = c.objoid
          JOIN pg_catalog.pg_shdepend s
            ON s.refclassid = 'pg_catalog.pg_authid'::pg_catalog.regclass AND s.refobjid = c.objoid
         WHERE c.classoid = 'pg_catalog.pg_authid'::pg_catalog.regclass
           AND pg_catalog.starts_with(c.description, $1)
           AND ($3::text[] IS NULL OR r.rolname = ANY($3))) m
  LEFT JOIN pg_catalog.pg_database d ON d.oid = m.database
 WHERE NOT (d.datname IS NOT NULL
            AND pg_catalog.starts_with(m.rolname, d.datname || '-')
            AND pg_catalog.substr(m.rolname, pg_catalog.length(d.datname) + 2) = ANY($2))";

/// Trusted extensions may be created by a database owner (PostgreSQL 13+).
const AVAILABLE_EXTENSIONS: &str = "
SELECT e.name::text, COALESCE(v.trusted, false)
  FROM pg_catalog.pg_available_extensions e
  LEFT JOIN pg_catalog.pg_available_extension_versions v ON v.name = e.name AND v.version = e.default_version";

/// PostgreSQL 16 records a grantor and INHERIT/SET options per membership (and gives a CREATEROLE
/// creator an ADMIN-only membership that conveys no privileges). Read through `to_jsonb` (built
/// once per row), one query serves 15 (no such columns: every membership is a full one) and 16+.
const MEMBERSHIPS: &str = "
SELECT pg_catalog.pg_get_userbyid(m.roleid)::text, pg_catalog.pg_get_userbyid(m.member)::text,
       pg_catalog.pg_get_userbyid(m.grantor)::text,
       COALESCE((j.membership ->> 'inherit_option')::bool, true) AND COALESCE((j.membership ->> 'set_option')::bool, true)
  FROM pg_catalog.pg_auth_members m
 CROSS JOIN LATERAL pg_catalog.to_jsonb(m) j(membership)
 WHERE $1::text[] IS NULL
    OR m.roleid IN (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = ANY($1))
    OR m.member IN (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = ANY($1))";

/// Comments joined, as in [`ROLES`].
const DATABASES: &str = "
SELECT d.datname::text, pg_catalog.pg_get_userbyid(d.datdba)::text,
       c.description, d.datacl::text, d.datallowconn, d.datconnlimit
  FROM pg_catalog.pg_database d
  LEFT JOIN pg_catalog.pg_shdescription c
         ON c.objoid = d.oid AND c.classoid = 'pg_catalog.pg_database'::pg_catalog.regclass
 WHERE $1::text[] IS NULL OR d.datname = ANY($1)
    OR d.datdba IN (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = ANY($2::text[]))";

/// Each database's OID and the `pg_stat_database` counters of rows written in it (catalog rows
/// included; see [`crate::verified`]), when they were last reset, and whether the server counts.
const STATISTICS: &str = "
SELECT d.datname::text, d.oid, s.tup_inserted, s.tup_updated, s.tup_deleted,
       (EXTRACT(EPOCH FROM s.stats_reset) * 1000000)::int8,
       pg_catalog.current_setting('track_counts')::bool
  FROM pg_catalog.pg_database d
  JOIN pg_catalog.pg_stat_database s ON s.datid = d.oid
 WHERE $1::text[] IS NULL OR d.datname = ANY($1)
    OR d.datdba IN (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = ANY($2::text[]))";

/// `acldefault` stands in for a NULL ACL, so the owner's implicit rights and PUBLIC's defaults show.
/// A grant option shows as a second entry, `<privilege> WITH GRANT OPTION`: a tenant role holding
/// one could let other tenants in.
const DATABASE_ACLS: &str = "
SELECT d.datname::text,
       CASE WHEN a.grantee = 0 THEN NULL ELSE pg_catalog.pg_get_userbyid(a.grantee)::text END,
       p.privilege
  FROM pg_catalog.pg_database d
 CROSS JOIN LATERAL pg_catalog.aclexplode(COALESCE(d.datacl, pg_catalog.acldefault('d', d.datdba))) a
 CROSS JOIN LATERAL (VALUES (a.privilege_type),
                            (CASE WHEN a.is_grantable THEN a.privilege_type || ' WITH GRANT OPTION' END)) p(privilege)
 WHERE p.privilege IS NOT NULL
   AND ($1::text[] IS NULL OR d.datname = ANY($1)
        OR d.datdba IN (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = ANY($2::text[])))";

/// Everything [`read_database`] reads inside one tenant database, in one statement: one row per
/// item, its kind in column 0 and, from column 1 on, the columns of that kind (unused ones NULL):
///
/// - `schema`: name, owner, `nspacl` text, then one ACL entry per row (`acldefault` for a NULL ACL):
///   grantee (NULL: PUBLIC), privilege, grantor. System schemas left out.
/// - `default`: database-wide default privileges only (`defaclnamespace = 0`, the ones pgtenant sets):
///   role, object class code, `defaclacl` text, grantee (NULL: PUBLIC), privilege.
/// - `object`: relations outside system schemas with their owner, and the ACL entries of the roles
///   named in $1 (those the policy grants table or sequence privileges) and of every grantee that is
///   none of the tenant's roles ($2), nor the owner, nor PUBLIC; then routines, only those owned by
///   one of the tenant's roles other than its owner ($3) or with such a foreign grantee (grantee NULL
///   when none). Columns: schema, name, `table` (any relation but a sequence) / `sequence` /
///   `routine`, owner, grantee, privilege, grantor, whether the grantee is one of the tenant's roles,
///   a routine's argument types (the server's `format_type`, identifiers quoted).
/// - `extension`: its name.
///
/// Every inspection is a fresh backend with cold catalog caches, so the statement touches as few
/// catalogs and functions as it can: roles are compared by name through `pg_get_userbyid` (a lookup
/// in the shared role cache) instead of subqueries on the `pg_roles` view (whose rewrite and
/// planning cost ~3 ms of server CPU per database), and system schemas are left out with
/// `starts_with` instead of a regular expression (compiled in every backend).
const DATABASE_CATALOG: &str = "
SELECT 'schema', n.nspname::text, pg_catalog.pg_get_userbyid(n.nspowner)::text, n.nspacl::text,
       CASE WHEN a.grantee = 0 THEN NULL ELSE pg_catalog.pg_get_userbyid(a.grantee)::text END,
       a.privilege_type, pg_catalog.pg_get_userbyid(a.grantor)::text, NULL::text, NULL::bool, NULL::text
  FROM pg_catalog.pg_namespace n
  LEFT JOIN LATERAL pg_catalog.aclexplode(COALESCE(n.nspacl, pg_catalog.acldefault('n', n.nspowner))) a ON true
 WHERE NOT pg_catalog.starts_with(n.nspname, 'pg_') AND n.nspname <> 'information_schema'
UNION ALL
SELECT 'default', pg_catalog.pg_get_userbyid(d.defaclrole)::text, d.defaclobjtype::text, d.defaclacl::text,
       CASE WHEN a.grantee = 0 THEN NULL ELSE pg_catalog.pg_get_userbyid(a.grantee)::text END,
       a.privilege_type, NULL, NULL, NULL, NULL
  FROM pg_catalog.pg_default_acl d
  LEFT JOIN LATERAL pg_catalog.aclexplode(d.defaclacl) a ON true
 WHERE d.defaclnamespace = 0
UNION ALL
SELECT 'object', n.nspname::text, c.relname::text, CASE WHEN c.relkind = 'S' THEN 'sequence' ELSE 'table' END,
       pg_catalog.pg_get_userbyid(c.relowner)::text,
       pg_catalog.pg_get_userbyid(a.grantee)::text, a.privilege_type,
       pg_catalog.pg_get_userbyid(a.grantor)::text,
       pg_catalog.pg_get_userbyid(a.grantee) = ANY($2), NULL
  FROM pg_catalog.pg_class c
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN LATERAL pg_catalog.aclexplode(COALESCE(c.relacl, pg_catalog.acldefault(
           CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END::\"char\", c.relowner))) a
         ON pg_catalog.pg_get_userbyid(a.grantee) = ANY($1)
            OR (a.grantee <> 0 AND a.grantee <> c.relowner
                AND NOT pg_catalog.pg_get_userbyid(a.grantee) = ANY($2))
 WHERE c.relkind IN ('r', 'v', 'm', 'f', 'p', 'S')
   AND NOT pg_catalog.starts_with(n.nspname, 'pg_') AND n.nspname <> 'information_schema'
UNION ALL
SELECT 'object', n.nspname::text, p.proname::text, 'routine', pg_catalog.pg_get_userbyid(p.proowner)::text,
       pg_catalog.pg_get_userbyid(a.grantee)::text, a.privilege_type,
       pg_catalog.pg_get_userbyid(a.grantor)::text, false, pg_catalog.oidvectortypes(p.proargtypes)
  FROM pg_catalog.pg_proc p
  JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
  LEFT JOIN LATERAL pg_catalog.aclexplode(p.proacl) a
         ON a.grantee <> 0 AND a.grantee <> p.proowner
            AND NOT pg_catalog.pg_get_userbyid(a.grantee) = ANY($2)
 WHERE NOT pg_catalog.starts_with(n.nspname, 'pg_') AND n.nspname <> 'information_schema'
   AND (a.grantee IS NOT NULL
        OR (pg_catalog.pg_get_userbyid(p.proowner) = ANY($2)
            AND pg_catalog.pg_get_userbyid(p.proowner) <> $3))
UNION ALL
SELECT 'extension', extname::text, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
  FROM pg_catalog.pg_extension
UNION ALL
SELECT 'lookup', pg_catalog.obj_description(p.oid, 'pg_proc')::text, NULL, NULL, NULL, NULL, NULL, NULL,
       NULL, NULL
  FROM pg_catalog.pg_proc p
  JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = 'pgtenant' AND p.proname = 'pooler_lookup' AND p.prosecdef
   AND pg_catalog.oidvectortypes(p.proargtypes) = 'text'";

pub struct ClusterCatalog {
    pub server: ServerInfo,
    pub roles: BTreeMap<String, ObservedRole>,
    pub databases: BTreeMap<String, ObservedDatabase>,
    pub available_extensions: BTreeMap<String, bool>,
    pub role_dependencies: BTreeMap<String, BTreeSet<Option<String>>>,
    pub statistics: Statistics,
}

/// Which roles and databases a cluster-wide read covers: all of them, or only those named (and
/// the control role itself, and every database one of those roles owns), for a run scoped to
/// declared tenants.
#[derive(Debug, Clone, Default)]
pub struct Only {
    pub roles: Vec<String>,
    pub databases: Vec<String>,
    /// Whether one of those tenants declares an extension: only then are the server's available
    /// extensions read (`pg_available_extensions` reads every control file on the server's disk).
    pub extensions: bool,
}

/// The cluster-wide half: server facts, every role with its memberships, every database with its ACL.
/// The queries go out together on one connection (pipelined), so this is one round trip.
pub async fn read_cluster(client: &Client) -> Result<ClusterCatalog, EngineError> {
    read_cluster_of(client, None).await
}

/// [`read_cluster`], of the roles and databases `only` names when given: their rows, the
/// memberships either side of which is one of those roles, their settings and dependencies —
/// what planning those tenants compares, in a read that does not grow with the cluster.
pub async fn read_cluster_of(
    client: &Client,
    only: Option<&Only>,
) -> Result<ClusterCatalog, EngineError> {
    let marker_prefix = Marker::comment_prefix();
    let suffixes: Vec<String> = RoleKind::ALL
        .into_iter()
        .flat_map(|kind| [kind.as_str().to_string(), alternate_name(kind.as_str())])
        .collect();
    let roles_only = only.map(|o| o.roles.clone());
    let databases_only = only.map(|o| o.databases.clone());
    type Params<'a, const N: usize> = [&'a (dyn tokio_postgres::types::ToSql + Sync); N];
    let dependency_params: Params<3> = [&marker_prefix, &suffixes, &roles_only];
    let by_role: Params<1> = [&roles_only];
    // A tenant role owning another database is what keeps the planner from REASSIGN OWNED.
    let by_database: Params<2> = [&databases_only, &roles_only];
    let settings_params: Params<2> = [&roles_only, &databases_only];
    let (
        server,
        roles,
        memberships,
        databases,
        database_acls,
        settings,
        extensions,
        dependencies,
        statistics,
    ) = tokio::try_join!(
        client.query_one(SERVER, &[]),
        client.query(ROLES, &by_role),
        client.query(MEMBERSHIPS, &by_role),
        client.query(DATABASES, &by_database),
        client.query(DATABASE_ACLS, &by_database),
        client.query(SETTINGS, &settings_params),
        async {
            match only.is_none_or(|only| only.extensions) {
                true => client.query(AVAILABLE_EXTENSIONS, &[]).await,
                false => Ok(Vec::new()),
            }
        },
        client.query(ROLE_DEPENDENCIES, &dependency_params),
        client.query(STATISTICS, &by_database),
    )
    .map_err(|source| EngineError::Catalog {
        database: None,
        source,
    })?;

    let server = ServerInfo {
        current_user: server.get(0),
        version_num: server.get(1),
        is_superuser: server.get(2),
        max_connections: server.get(3),
        reserved_connections: server.get(4),
        connections_in_use: server.get(5),
    };

    let mut observed_roles: BTreeMap<String, ObservedRole> = roles
        .iter()
        .map(|row| {
            let attributes = RoleAttributes {
                login: row.get(1),
                superuser: row.get(2),
                createdb: row.get(3),
                createrole: row.get(4),
                replication: row.get(5),
                bypassrls: row.get(6),
                inherit: row.get(7),
                connection_limit: row.get(8),
            };
            let role = ObservedRole {
                attributes,
                comment: row.get(9),
                member_of: Default::default(),
                members: Default::default(),
                config: Default::default(),
                membership_grantors: Default::default(),
                database_config: Default::default(),
            };
            (row.get::<_, String>(0), role)
        })
        .collect();
    for row in &memberships {
        let (role, member, grantor, conveys): (String, String, String, bool) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        if let Some(r) = observed_roles.get_mut(&member) {
            if conveys {
                r.member_of.insert(role.clone());
            }
            r.membership_grantors
                .entry(role.clone())
                .or_default()
                .insert(grantor.clone());
        }
        if let Some(r) = observed_roles.get_mut(&role) {
            if conveys {
                r.members.insert(member);
            }
        }
    }

    let mut database_settings: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for row in &settings {
        let (role, database): (Option<String>, Option<String>) = (row.get(0), row.get(1));
        let config: BTreeMap<String, String> = row
            .get::<_, Option<Vec<String>>>(2)
            .unwrap_or_default()
            .iter()
            .filter_map(|entry| entry.split_once('='))
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect();
        match (role, database) {
            (Some(role), None) => {
                if let Some(role) = observed_roles.get_mut(&role) {
                    role.config.extend(config);
                }
            }
            (Some(role), Some(database)) => {
                if let Some(role) = observed_roles.get_mut(&role) {
                    role.database_config.insert(database, config);
                }
            }
            (None, Some(database)) => {
                database_settings.insert(database, config);
            }
            (None, None) => {}
        }
    }
    let mut role_dependencies: BTreeMap<String, BTreeSet<Option<String>>> = BTreeMap::new();
    for row in &dependencies {
        role_dependencies
            .entry(row.get(0))
            .or_default()
            .insert(row.get(1));
    }
    let available_extensions = extensions
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();

    let statistics = Statistics {
        track_counts: statistics.first().is_some_and(|row| row.get(6)),
        databases: statistics
            .iter()
            .map(|row| {
                let stats = DatabaseStats {
                    oid: row.get(1),
                    tup_inserted: row.get(2),
                    tup_updated: row.get(3),
                    tup_deleted: row.get(4),
                    stats_reset: row.get(5),
                };
                (row.get(0), stats)
            })
            .collect(),
        role_names: roles.iter().map(|row| (row.get(10), row.get(0))).collect(),
    };

    let mut acls: BTreeMap<String, Acl> = BTreeMap::new();
    for row in &database_acls {
        add_acl_row(acls.entry(row.get(0)).or_default(), row, 1);
    }
    let databases = databases
        .iter()
        .map(|row| {
            let name: String = row.get(0);
            let database = ObservedDatabase {
                owner: row.get(1),
                comment: row.get(2),
                acl_text: row.get(3),
                acl: acls.remove(&name).unwrap_or_default(),
                allow_connections: row.get(4),
                connection_limit: row.get(5),
                settings: database_settings.remove(&name).unwrap_or_default(),
            };
            (name, database)
        })
        .collect();

    Ok(ClusterCatalog {
        server,
        roles: observed_roles,
        databases,
        available_extensions,
        role_dependencies,
        statistics,
    })
}

/// [`read_database`] for `tenant`'s database: its owner, the roles the policy grants table or
/// sequence privileges, and every role of the tenant (grace-rotation twins included).
pub async fn read_tenant_database(
    client: &Client,
    tenant: &DesiredTenant,
) -> Result<DatabaseCatalog, EngineError> {
    let grantees: Vec<&str> = tenant
        .roles
        .iter()
        .filter(|r| !r.access.table.is_empty() || !r.access.sequence.is_empty())
        .map(|r| r.name.as_str())
        .collect();
    let own: Vec<&str> = tenant
        .roles
        .iter()
        .flat_map(|r| [r.name.as_str(), r.alternate.as_str()])
        .collect();
    read_database(
        client,
        tenant.database.as_str(),
        tenant.owner().as_str(),
        &grantees,
        &own,
    )
    .await
}

/// Inside one tenant database: schemas, database-wide default privileges, the relations with what
/// `grantees` hold on each, routines owned by the tenant's roles besides `owner`, and every grant to
/// a role that is none of `tenant_roles`. One statement ([`DATABASE_CATALOG`]), its parameter types
/// given, so it is one round trip with no separate prepare.
pub async fn read_database(
    client: &Client,
    database: &str,
    owner: &str,
    grantees: &[&str],
    tenant_roles: &[&str],
) -> Result<DatabaseCatalog, EngineError> {
    let grantees: Vec<String> = grantees.iter().map(|g| g.to_string()).collect();
    let own: Vec<String> = tenant_roles.iter().map(|g| g.to_string()).collect();
    let rows = client
        .query_typed(
            DATABASE_CATALOG,
            &[
                (&grantees, Type::NAME_ARRAY),
                (&own, Type::NAME_ARRAY),
                (&owner, Type::NAME),
            ],
        )
        .await
        .map_err(|source| EngineError::Catalog {
            database: Some(database.to_string()),
            source,
        })?;
    let [mut schemas, mut default_acls, mut objects, mut extensions] = [(); 4].map(|_| Vec::new());
    let mut lookup = None;
    for row in &rows {
        match row.get::<_, &str>(0) {
            "schema" => schemas.push(Columns(row)),
            "default" => default_acls.push(Columns(row)),
            "object" => objects.push(Columns(row)),
            "extension" => extensions.push(Columns(row)),
            "lookup" => lookup = Some(row.get::<_, Option<String>>(1).unwrap_or_default()),
            other => unreachable!("DATABASE_CATALOG has no rows of kind `{other}`"),
        }
    }

    let is_own = |role: &str| tenant_roles.contains(&role);
    let mut catalog = DatabaseCatalog {
        pooler_lookup: lookup,
        ..DatabaseCatalog::default()
    };
    let mut foreign = BTreeSet::new();
    for row in &schemas {
        let name: String = row.get(0);
        let schema = catalog
            .schemas
            .entry(name.clone())
            .or_insert_with(|| ObservedSchema {
                owner: row.get(1),
                acl_text: row.get(2),
                acl: Acl::new(),
            });
        row.add_acl(&mut schema.acl, 3);
        if let (Some(grantee), Some(grantor)) =
            (row.get::<Option<String>>(3), row.get::<Option<String>>(5))
        {
            if !is_own(&grantee) && grantee != schema.owner {
                foreign.insert(ForeignGrant {
                    class: ObjectClass::Schema,
                    schema: name.clone(),
                    name,
                    arguments: String::new(),
                    grantee,
                    grantor,
                });
            }
        }
    }
    for row in &default_acls {
        let key = (row.get::<String>(0), row.get::<String>(1));
        let entry = catalog
            .default_acls
            .entry(key)
            .or_insert_with(|| DefaultAcl {
                acl_text: row.get::<Option<String>>(2).unwrap_or_default(),
                acl: Acl::new(),
            });
        row.add_acl(&mut entry.acl, 3);
    }
    let mut by_relation: BTreeMap<(String, String), ObservedRelation> = BTreeMap::new();
    let mut owned_by_others = |role: &str, object: String| {
        if role != owner && is_own(role) {
            catalog
                .owned_by_others
                .entry(role.to_string())
                .or_default()
                .insert(object);
        }
    };
    for row in &objects {
        let (schema, name, kind, object_owner): (String, String, &str, String) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        let grantee: Option<String> = row.get(4);
        if kind == "routine" {
            let arguments: String = row.get(8);
            owned_by_others(&object_owner, format!("{schema}.{name}({arguments})"));
            if let Some(grantee) = grantee {
                foreign.insert(ForeignGrant {
                    class: ObjectClass::Routine,
                    schema,
                    name,
                    arguments,
                    grantee,
                    grantor: row.get(6),
                });
            }
            continue;
        }
        let relation = by_relation
            .entry((schema.clone(), name.clone()))
            .or_insert_with(|| ObservedRelation {
                schema: schema.clone(),
                name: name.clone(),
                is_sequence: kind == "sequence",
                owner: object_owner.clone(),
                acl: Acl::new(),
            });
        match (grantee, row.get::<Option<bool>>(7)) {
            (Some(grantee), Some(false)) if grantee != relation.owner => {
                foreign.insert(ForeignGrant {
                    class: if relation.is_sequence {
                        ObjectClass::Sequence
                    } else {
                        ObjectClass::Table
                    },
                    schema,
                    name,
                    arguments: String::new(),
                    grantee,
                    grantor: row.get(6),
                });
            }
            (Some(grantee), _) => {
                if let Some(privilege) = row.get::<Option<String>>(5) {
                    relation
                        .acl
                        .entry(Some(grantee))
                        .or_default()
                        .insert(privilege);
                }
            }
            (None, _) => {}
        }
    }
    for relation in by_relation.values() {
        owned_by_others(
            &relation.owner,
            format!("{}.{}", relation.schema, relation.name),
        );
    }
    catalog.relations = by_relation.into_values().collect();
    catalog.foreign_grants = foreign.into_iter().collect();
    catalog.extensions = extensions.iter().map(|row| row.get(0)).collect();
    Ok(catalog)
}

/// One row of [`DATABASE_CATALOG`] without its kind column: column `i` of its kind is column `i + 1`.
struct Columns<'r>(&'r Row);

impl<'r> Columns<'r> {
    fn get<T: tokio_postgres::types::FromSql<'r>>(&self, index: usize) -> T {
        self.0.get(index + 1)
    }

    fn add_acl(&self, acl: &mut Acl, at: usize) {
        add_acl_row(acl, self.0, at + 1);
    }
}

/// Columns `at` (grantee, NULL for PUBLIC) and `at + 1` (privilege, NULL when the LEFT JOIN found none).
fn add_acl_row(acl: &mut Acl, row: &Row, at: usize) {
    let grantee: Option<String> = row.get(at);
    if let Some(privilege) = row.get::<_, Option<String>>(at + 1) {
        acl.entry(grantee).or_default().insert(privilege);
    }
}
