//! Reading the cluster's catalog into [`Observed`]. Read only; every value reaches the server as a bind
//! parameter, and cluster-wide state is read in a few set-based queries sent together, whatever the
//! number of tenants.

use std::collections::BTreeMap;

use tokio_postgres::{Client, Row};

use crate::desired::RoleAttributes;
use crate::observed::{
    Acl, DatabaseCatalog, DefaultAcl, ObservedDatabase, ObservedRelation, ObservedRole,
    ObservedSchema, ServerInfo,
};
use crate::EngineError;

const SERVER: &str = "
SELECT current_user::text,
       pg_catalog.current_setting('server_version_num')::int4,
       r.rolsuper,
       pg_catalog.current_setting('max_connections')::int4,
       pg_catalog.current_setting('superuser_reserved_connections')::int4,
       (SELECT count(*) FROM pg_catalog.pg_stat_activity)::int4
  FROM pg_catalog.pg_roles r
 WHERE r.rolname = current_user";

const ROLES: &str = "
SELECT r.rolname::text, r.rolcanlogin, r.rolsuper, r.rolcreatedb, r.rolcreaterole, r.rolreplication,
       r.rolbypassrls, r.rolinherit, r.rolconnlimit, pg_catalog.shobj_description(r.oid, 'pg_authid')
  FROM pg_catalog.pg_roles r";

/// Settings for every database (`setdatabase = 0`): what `ALTER ROLE … SET` wrote.
const ROLE_SETTINGS: &str = "
SELECT r.rolname::text, s.setconfig
  FROM pg_catalog.pg_db_role_setting s
  JOIN pg_catalog.pg_roles r ON r.oid = s.setrole
 WHERE s.setdatabase = 0";

/// Trusted extensions may be created by a database owner (PostgreSQL 13+).
const AVAILABLE_EXTENSIONS: &str = "
SELECT e.name::text, COALESCE(v.trusted, false)
  FROM pg_catalog.pg_available_extensions e
  LEFT JOIN pg_catalog.pg_available_extension_versions v ON v.name = e.name AND v.version = e.default_version";

const EXTENSIONS: &str = "SELECT extname::text FROM pg_catalog.pg_extension";

/// PostgreSQL 16 records a grantor and INHERIT/SET options per membership (and gives a CREATEROLE
/// creator an ADMIN-only membership that conveys no privileges). Read through `to_jsonb`, one query
/// serves 15 (no such columns: every membership is a full one) and 16+.
const MEMBERSHIPS: &str = "
SELECT pg_catalog.pg_get_userbyid(m.roleid)::text, pg_catalog.pg_get_userbyid(m.member)::text,
       pg_catalog.pg_get_userbyid(m.grantor)::text,
       COALESCE((pg_catalog.to_jsonb(m) ->> 'inherit_option')::bool, true)
         AND COALESCE((pg_catalog.to_jsonb(m) ->> 'set_option')::bool, true)
  FROM pg_catalog.pg_auth_members m";

const DATABASES: &str = "
SELECT d.datname::text, pg_catalog.pg_get_userbyid(d.datdba)::text,
       pg_catalog.shobj_description(d.oid, 'pg_database'), d.datacl::text, d.datallowconn, d.datconnlimit
  FROM pg_catalog.pg_database d";

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
 WHERE p.privilege IS NOT NULL";

const SCHEMAS: &str = "
SELECT n.nspname::text, pg_catalog.pg_get_userbyid(n.nspowner)::text, n.nspacl::text,
       CASE WHEN a.grantee = 0 THEN NULL ELSE pg_catalog.pg_get_userbyid(a.grantee)::text END,
       a.privilege_type
  FROM pg_catalog.pg_namespace n
  LEFT JOIN LATERAL pg_catalog.aclexplode(COALESCE(n.nspacl, pg_catalog.acldefault('n', n.nspowner))) a ON true
 WHERE n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'";

/// Database-wide defaults only (`defaclnamespace = 0`): the ones pgtenant sets.
const DEFAULT_ACLS: &str = "
SELECT pg_catalog.pg_get_userbyid(d.defaclrole)::text, d.defaclobjtype::text, d.defaclacl::text,
       CASE WHEN a.grantee = 0 THEN NULL ELSE pg_catalog.pg_get_userbyid(a.grantee)::text END,
       a.privilege_type
  FROM pg_catalog.pg_default_acl d
  LEFT JOIN LATERAL pg_catalog.aclexplode(d.defaclacl) a ON true
 WHERE d.defaclnamespace = 0";

/// Relations owned by $1 outside system schemas, with what the roles named in $2 hold on each.
const RELATIONS: &str = "
SELECT n.nspname::text, c.relname::text, c.relkind = 'S',
       pg_catalog.pg_get_userbyid(a.grantee)::text, a.privilege_type
  FROM pg_catalog.pg_class c
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN LATERAL pg_catalog.aclexplode(COALESCE(c.relacl, pg_catalog.acldefault(
           CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END::\"char\", c.relowner))) a
         ON a.grantee IN (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = ANY($2))
 WHERE c.relkind IN ('r', 'v', 'm', 'f', 'p', 'S')
   AND c.relowner = (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = $1)
   AND n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'";

pub struct ClusterCatalog {
    pub server: ServerInfo,
    pub roles: BTreeMap<String, ObservedRole>,
    pub databases: BTreeMap<String, ObservedDatabase>,
    pub available_extensions: BTreeMap<String, bool>,
}

/// The cluster-wide half: server facts, every role with its memberships, every database with its ACL.
/// The five queries go out together on one connection (pipelined), so this is one round trip.
pub async fn read_cluster(client: &Client) -> Result<ClusterCatalog, EngineError> {
    let (server, roles, memberships, databases, database_acls, settings, extensions) =
        tokio::try_join!(
            client.query_one(SERVER, &[]),
            client.query(ROLES, &[]),
            client.query(MEMBERSHIPS, &[]),
            client.query(DATABASES, &[]),
            client.query(DATABASE_ACLS, &[]),
            client.query(ROLE_SETTINGS, &[]),
            client.query(AVAILABLE_EXTENSIONS, &[]),
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

    for row in &settings {
        if let Some(role) = observed_roles.get_mut(&row.get::<_, String>(0)) {
            for entry in row.get::<_, Vec<String>>(1) {
                if let Some((key, value)) = entry.split_once('=') {
                    role.config.insert(key.to_string(), value.to_string());
                }
            }
        }
    }
    let available_extensions = extensions
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();

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
            };
            (name, database)
        })
        .collect();

    Ok(ClusterCatalog {
        server,
        roles: observed_roles,
        databases,
        available_extensions,
    })
}

/// Inside one tenant database: schemas, database-wide default privileges, and the relations `owner`
/// owns with what `grantees` hold on them. Three queries, sent together.
pub async fn read_database(
    client: &Client,
    database: &str,
    owner: &str,
    grantees: &[&str],
) -> Result<DatabaseCatalog, EngineError> {
    let grantees: Vec<String> = grantees.iter().map(|g| g.to_string()).collect();
    let relation_params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&owner, &grantees];
    let (schemas, default_acls, relations, extensions) = tokio::try_join!(
        client.query(SCHEMAS, &[]),
        client.query(DEFAULT_ACLS, &[]),
        client.query(RELATIONS, &relation_params),
        client.query(EXTENSIONS, &[]),
    )
    .map_err(|source| EngineError::Catalog {
        database: Some(database.to_string()),
        source,
    })?;

    let mut catalog = DatabaseCatalog::default();
    for row in &schemas {
        let schema = catalog
            .schemas
            .entry(row.get(0))
            .or_insert_with(|| ObservedSchema {
                owner: row.get(1),
                acl_text: row.get(2),
                acl: Acl::new(),
            });
        add_acl_row(&mut schema.acl, row, 3);
    }
    for row in &default_acls {
        let key = (row.get::<_, String>(0), row.get::<_, String>(1));
        let entry = catalog
            .default_acls
            .entry(key)
            .or_insert_with(|| DefaultAcl {
                acl_text: row.get::<_, Option<String>>(2).unwrap_or_default(),
                acl: Acl::new(),
            });
        add_acl_row(&mut entry.acl, row, 3);
    }
    let mut by_relation: BTreeMap<(String, String), ObservedRelation> = BTreeMap::new();
    for row in &relations {
        let key = (row.get::<_, String>(0), row.get::<_, String>(1));
        let relation = by_relation
            .entry(key.clone())
            .or_insert_with(|| ObservedRelation {
                schema: key.0,
                name: key.1,
                is_sequence: row.get(2),
                acl: Acl::new(),
            });
        add_acl_row(&mut relation.acl, row, 3);
    }
    catalog.relations = by_relation.into_values().collect();
    catalog.extensions = extensions.iter().map(|row| row.get(0)).collect();
    Ok(catalog)
}

/// Columns `at` (grantee, NULL for PUBLIC) and `at + 1` (privilege, NULL when the LEFT JOIN found none).
fn add_acl_row(acl: &mut Acl, row: &Row, at: usize) {
    let grantee: Option<String> = row.get(at);
    if let Some(privilege) = row.get::<_, Option<String>>(at + 1) {
        acl.entry(grantee).or_default().insert(privilege);
    }
}
