//! Statement text for everything the planner changes. Identifiers only through [`Ident::quote`],
//! literals only through [`quote_literal`]; privilege keywords come from the policy, never from input.

use std::collections::BTreeSet;

use crate::desired::{Marker, RoleAttributes};
use crate::ident::{quote_list, quote_literal, Ident};

/// Stands where the SCRAM verifier goes; the executor substitutes it. Plans show it as is, so no
/// secret (not even a verifier) appears in plan output or snapshots.
pub const PASSWORD_PLACEHOLDER: &str = "'<scram-sha-256 verifier>'";

pub fn create_role(role: &Ident, attributes: &RoleAttributes) -> String {
    format!(
        "CREATE ROLE {} WITH {} PASSWORD {PASSWORD_PLACEHOLDER}",
        role.quote(),
        RoleAttributes::options_towards(None, attributes).join(" ")
    )
}

pub fn create_nologin_role(role: &Ident, attributes: &RoleAttributes) -> String {
    format!(
        "CREATE ROLE {} WITH {}",
        role.quote(),
        RoleAttributes::options_towards(None, attributes).join(" ")
    )
}

/// `key` is one of pgtenant's managed settings, never input; the value is a literal.
pub fn set_role_config(role: &Ident, key: &str, value: &str) -> String {
    format!(
        "ALTER ROLE {} SET {key} = {}",
        role.quote(),
        quote_literal(value)
    )
}

pub fn reset_role_config(role: &Ident, key: &str) -> String {
    format!("ALTER ROLE {} RESET {key}", role.quote())
}

pub fn create_schema(schema: &Ident, owner: &Ident) -> String {
    format!(
        "CREATE SCHEMA {} AUTHORIZATION {}",
        schema.quote(),
        owner.quote()
    )
}

/// Into `schema` explicitly: control sessions run with `search_path = pg_catalog`, where an
/// extension's objects must never land.
pub fn create_extension(extension: &Ident, schema: &Ident) -> String {
    format!(
        "CREATE EXTENSION {} SCHEMA {}",
        extension.quote(),
        schema.quote()
    )
}

pub fn alter_role(role: &Ident, options: &[String]) -> String {
    format!("ALTER ROLE {} WITH {}", role.quote(), options.join(" "))
}

pub fn set_password(role: &Ident) -> String {
    format!(
        "ALTER ROLE {} WITH PASSWORD {PASSWORD_PLACEHOLDER}",
        role.quote()
    )
}

/// [`set_password`] with the verifier itself, for a statement sent at once rather than shown in
/// a plan (a password set again after a failover, a pooler's re-set).
pub fn set_password_to(role: &Ident, verifier: &str) -> String {
    set_password(role).replace(PASSWORD_PLACEHOLDER, &quote_literal(verifier))
}

pub fn comment_on_role(role: &Ident, marker: &Marker) -> String {
    format!(
        "COMMENT ON ROLE {} IS {}",
        role.quote(),
        quote_literal(&marker.to_comment())
    )
}

/// PostgreSQL 16+ takes the options explicitly, so the membership conveys privileges whatever the
/// member's INHERIT attribute and `createrole_self_grant` say.
pub fn grant_membership(role: &Ident, member: &Ident, server_version: i32) -> String {
    let options = if server_version >= 160_000 {
        " WITH INHERIT TRUE, SET TRUE"
    } else {
        ""
    };
    format!("GRANT {} TO {}{options}", role.quote(), member.quote())
}

/// On PostgreSQL 16+ a membership exists once per grantor; each is revoked `GRANTED BY` it.
pub fn revoke_membership(role: &Ident, member: &Ident, grantor: Option<&Ident>) -> String {
    match grantor {
        Some(grantor) => format!(
            "REVOKE {} FROM {} GRANTED BY {}",
            role.quote(),
            member.quote(),
            grantor.quote()
        ),
        None => format!("REVOKE {} FROM {}", role.quote(), member.quote()),
    }
}

pub fn drop_role(role: &Ident) -> String {
    format!("DROP ROLE {}", role.quote())
}

/// A database the control role creates for itself (a non-superuser may name another owner only
/// as a member of it, and holds no standing memberships): handed to its owner right after, with
/// [`alter_database_owner`] in a transaction that borrows the owner ([`lend`]).
pub fn create_database_owned_by_creator(database: &Ident) -> String {
    format!("CREATE DATABASE {}", database.quote())
}

/// The control role borrows `role` for one transaction: granted right after BEGIN, taken back by
/// [`take_back`] before COMMIT, so the membership is never committed (a failure rolls it back).
/// `control` None: the session's login (`SESSION_USER`), whatever the current role is. Plain
/// `GRANT` on every version: on PostgreSQL 16 SET and INHERIT default to true, and the grantor is
/// the control role, which holds ADMIN OPTION on the roles it created.
pub fn lend(role: &Ident, control: Option<&Ident>) -> String {
    format!("GRANT {} TO {}", role.quote(), session_or(control))
}

/// Ends what [`lend`] granted (on PostgreSQL 16, only the control role's own grant).
pub fn take_back(role: &Ident, control: Option<&Ident>) -> String {
    format!("REVOKE {} FROM {}", role.quote(), session_or(control))
}

fn session_or(control: Option<&Ident>) -> String {
    control.map_or_else(|| "SESSION_USER".to_string(), Ident::quote)
}

/// For the rest of the transaction only (it ends at COMMIT or ROLLBACK).
pub fn set_local_role(role: &Ident) -> String {
    format!("SET LOCAL ROLE {}", role.quote())
}

pub fn create_database(database: &Ident, owner: &Ident) -> String {
    format!(
        "CREATE DATABASE {} OWNER {}",
        database.quote(),
        owner.quote()
    )
}

pub fn alter_database_owner(database: &Ident, owner: &Ident) -> String {
    format!(
        "ALTER DATABASE {} OWNER TO {}",
        database.quote(),
        owner.quote()
    )
}

/// `setting` is pgtenant's own text (`ALLOW_CONNECTIONS true`, `CONNECTION LIMIT 20`), never input.
pub fn alter_database(database: &Ident, setting: &str) -> String {
    format!("ALTER DATABASE {} WITH {setting}", database.quote())
}

pub fn comment_on_database(database: &Ident, marker: &Marker) -> String {
    format!(
        "COMMENT ON DATABASE {} IS {}",
        database.quote(),
        quote_literal(&marker.to_comment())
    )
}

/// `WITH (FORCE)` terminates the database's sessions in the same step (PostgreSQL 13+); the control
/// role may do so as the database's owner (the plan hands it the database first) with the
/// privileges of the roles whose sessions it ends (borrowed, or a superuser's).
pub fn drop_database(database: &Ident) -> String {
    format!("DROP DATABASE {} WITH (FORCE)", database.quote())
}

pub fn alter_schema_owner(schema: &Ident, owner: &Ident) -> String {
    format!("ALTER SCHEMA {} OWNER TO {}", schema.quote(), owner.quote())
}

/// `object` is a keyword plus a quoted name, e.g. `DATABASE "x"`.
pub fn grant_on(privileges: &BTreeSet<&str>, object: &str, grantees: &[Ident]) -> String {
    format!(
        "GRANT {} ON {object} TO {}",
        privilege_list(privileges),
        quote_list(grantees)
    )
}

/// With CASCADE: grants the grantee made with a grant option are revoked along with it.
pub fn revoke_on(privileges: &BTreeSet<&str>, object: &str, grantee: &Ident) -> String {
    format!(
        "REVOKE {} ON {object} FROM {} CASCADE",
        privilege_list(privileges),
        grantee.quote()
    )
}

pub fn revoke_grant_option(privileges: &BTreeSet<&str>, object: &str, grantee: &Ident) -> String {
    format!(
        "REVOKE GRANT OPTION FOR {} ON {object} FROM {} CASCADE",
        privilege_list(privileges),
        grantee.quote()
    )
}

/// `None` is PUBLIC.
pub fn revoke_all_on(object: &str, grantees: &[Option<Ident>]) -> String {
    let grantees = grantees
        .iter()
        .map(|g| {
            g.as_ref()
                .map_or_else(|| "PUBLIC".to_string(), Ident::quote)
        })
        .collect::<Vec<_>>()
        .join(", ");
    format!("REVOKE ALL ON {object} FROM {grantees} CASCADE")
}

/// `class` is `TABLE` or `SEQUENCE`; `relations` are names inside `schema`.
pub fn grant_on_relations(
    privileges: &BTreeSet<&str>,
    class: &str,
    schema: &Ident,
    relations: &[&str],
    grantee: &Ident,
) -> String {
    format!(
        "GRANT {} ON {} TO {}",
        privilege_list(privileges),
        relation_list(class, schema, relations),
        grantee.quote()
    )
}

/// Without `IN SCHEMA`: the defaults cover every schema, including those admin creates later.
pub fn alter_default_privileges(
    owner: &Ident,
    privileges: &BTreeSet<&str>,
    class: &str,
    grantee: &Ident,
) -> String {
    format!(
        "ALTER DEFAULT PRIVILEGES FOR ROLE {} GRANT {} ON {class} TO {}",
        owner.quote(),
        privilege_list(privileges),
        grantee.quote()
    )
}

/// Privileges in the order PostgreSQL documents them, so statements read naturally and stay stable.
pub fn privilege_list(privileges: &BTreeSet<&str>) -> String {
    const ORDER: [&str; 10] = [
        "SELECT",
        "INSERT",
        "UPDATE",
        "DELETE",
        "TRUNCATE",
        "USAGE",
        "CREATE",
        "CONNECT",
        "TEMPORARY",
        "EXECUTE",
    ];
    let mut sorted: Vec<&str> = privileges.iter().copied().collect();
    sorted.sort_by_key(|p| ORDER.iter().position(|o| o == p).unwrap_or(ORDER.len()));
    sorted.join(", ")
}

/// Removes every `ALTER DATABASE … SET` default of `database` (pgtenant sets none).
pub fn reset_database_settings(database: &Ident) -> String {
    format!("ALTER DATABASE {} RESET ALL", database.quote())
}

/// Removes every `ALTER ROLE … IN DATABASE … SET` default of `role` in `database` (pgtenant's own
/// settings are for all databases, `ALTER ROLE … SET`).
pub fn reset_role_database_settings(role: &Ident, database: &Ident) -> String {
    format!(
        "ALTER ROLE {} IN DATABASE {} RESET ALL",
        role.quote(),
        database.quote()
    )
}

/// Inside the current database only (and the shared objects `role` owns: the caller makes sure
/// it owns no database).
pub fn reassign_owned(role: &Ident, owner: &Ident) -> String {
    format!("REASSIGN OWNED BY {} TO {}", role.quote(), owner.quote())
}

/// Drops what `roles` own in the current database and revokes what they hold there and on shared
/// objects (RESTRICT: an object someone else's depends on stops it, for a person to look at).
pub fn drop_owned(roles: &[Ident]) -> String {
    format!("DROP OWNED BY {}", quote_list(roles))
}

/// Ends the sessions of `roles` on every database, waiting up to 5 s for each to exit so its
/// temporary objects are gone (`pg_terminate_backend` with a timeout, PostgreSQL 14+).
pub fn terminate_sessions_of(roles: &[Ident]) -> String {
    let names = roles
        .iter()
        .map(|r| quote_literal(r.as_str()))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "SELECT pg_catalog.pg_terminate_backend(pid, 5000) FROM pg_catalog.pg_stat_activity \
         WHERE usename IN ({names}) AND pid <> pg_catalog.pg_backend_pid()"
    )
}

/// `relations` are names inside `schema`; `class` is `TABLE` or `SEQUENCE`.
pub fn relation_list(class: &str, schema: &Ident, relations: &[&str]) -> String {
    let names = relations
        .iter()
        .map(|r| format!("{}.{}", schema.quote(), Ident::new(*r).quote()))
        .collect::<Vec<_>>()
        .join(", ");
    format!("{class} {names}")
}

/// `ROUTINE "s"."f"(integer), …`: `routines` are names inside `schema` with their argument types as
/// the server formats them (`oidvectortypes`, whose type names are quoted where they need it), the
/// one piece of statement text taken from the catalog rather than quoted here.
pub fn routine_list(schema: &Ident, routines: &[(&str, &str)]) -> String {
    let names = routines
        .iter()
        .map(|(name, arguments)| {
            format!(
                "{}.{}({arguments})",
                schema.quote(),
                Ident::new(*name).quote()
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    format!("ROUTINE {names}")
}

/// `class` is a default-privileges object keyword (`TABLES`, `FUNCTIONS`…), never input.
pub fn revoke_default_privileges(owner: &Ident, class: &str, grantee: &Ident) -> String {
    format!(
        "ALTER DEFAULT PRIVILEGES FOR ROLE {} REVOKE ALL ON {class} FROM {} CASCADE",
        owner.quote(),
        grantee.quote()
    )
}

/// The schema of pgtenant's own objects inside a tenant database (the pooler's lookup function).
pub const POOLER_SCHEMA: &str = "pgtenant";
/// The function pgbouncer's `auth_query` calls: `SELECT usename, passwd FROM pgtenant.pooler_lookup($1)`.
pub const POOLER_LOOKUP_FUNCTION: &str = "pooler_lookup";
/// The role pgbouncer's `auth_user` logs in as to call the lookup function; it may do nothing else.
pub const POOLER_LOOKUP_ROLE: &str = "pgtenant_pooler_lookup";
/// The comment of the lookup function, naming its version: another (or none) means it is
/// replaced, so a database pgtenant did not create gets it too.
pub const POOLER_LOOKUP_MARKER: &str = "pgtenant: pooler lookup v1";

/// Creates the pooler's lookup role when it does not exist (NOLOGIN: the pooler's sync gives it
/// its login and password); an existing one is left as it is. Cluster-wide, so any session may
/// run it; two tenants' sessions creating it at once end with one role (the loser's
/// `unique_violation` is swallowed too).
pub fn pooler_lookup_role() -> String {
    let role = Ident::new(POOLER_LOOKUP_ROLE).quote();
    format!(
        "DO $do$ BEGIN CREATE ROLE {role} WITH NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE \
         NOINHERIT NOREPLICATION NOBYPASSRLS; EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; \
         END $do$"
    )
}

/// `role`, the pooler's lookup role, as the login pgbouncer's `auth_user` uses (`auth: query`): no attribute
/// but LOGIN, a small connection limit, never expiring.
pub fn pooler_lookup_login(role: &Ident, connection_limit: i32) -> String {
    format!(
        "ALTER ROLE {} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION \
         NOBYPASSRLS CONNECTION LIMIT {connection_limit} VALID UNTIL 'infinity'",
        role.quote()
    )
}

/// Whether the lookup login is as [`pooler_lookup_login`] and [`set_password_to`] left it (`$1` its
/// name, `$2` the connection limit, `$3` the verifier); read from `pg_authid`, which `auth: query`'s
/// superuser control role may read.
pub const POOLER_LOOKUP_LOGIN_IS_SET: &str =
    "SELECT rolcanlogin AND NOT rolsuper AND NOT rolcreatedb AND NOT rolcreaterole \
     AND NOT rolinherit AND NOT rolreplication AND NOT rolbypassrls \
     AND rolconnlimit = $2 AND (rolvaliduntil IS NULL OR rolvaliduntil = 'infinity') \
     AND rolpassword = $3 \
     FROM pg_catalog.pg_authid WHERE rolname = $1";

/// The statements that give a tenant database the pooler's lookup function, run inside it as a
/// superuser (only a superuser's SECURITY DEFINER function may read `pg_authid`, where the SCRAM
/// verifiers are). It returns the verifier of one of `logins` (the tenant's login roles and their
/// grace twins) only: never another tenant's role, a superuser, a replication role, a role that
/// cannot log in (the control role is none of the tenant's), nor one whose `VALID UNTIL` has
/// passed (pgbouncer CVE-2025-2291). `search_path` is pinned, so no object a tenant creates can
/// stand in for a catalog one.
pub fn pooler_lookup(logins: &[Ident]) -> Vec<String> {
    let schema = Ident::new(POOLER_SCHEMA).quote();
    let role = Ident::new(POOLER_LOOKUP_ROLE).quote();
    let function = format!(
        "{schema}.{}(text)",
        Ident::new(POOLER_LOOKUP_FUNCTION).quote()
    );
    let names: Vec<String> = logins.iter().map(|l| quote_literal(l.as_str())).collect();
    vec![
        pooler_lookup_role(),
        format!("CREATE SCHEMA IF NOT EXISTS {schema}"),
        format!("REVOKE ALL ON SCHEMA {schema} FROM PUBLIC"),
        format!(
            "CREATE OR REPLACE FUNCTION {function} RETURNS TABLE (usename name, passwd text) \
             LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$ \
             SELECT a.rolname, a.rolpassword FROM pg_catalog.pg_authid a \
             WHERE a.rolname = $1 AND a.rolname = ANY (ARRAY[{}]::name[]) \
             AND a.rolcanlogin AND NOT a.rolsuper AND NOT a.rolreplication AND NOT a.rolbypassrls \
             AND (a.rolvaliduntil IS NULL OR a.rolvaliduntil > pg_catalog.now()) $fn$",
            names.join(", ")
        ),
        format!("REVOKE ALL ON FUNCTION {function} FROM PUBLIC"),
        format!("GRANT USAGE ON SCHEMA {schema} TO {role}"),
        format!("GRANT EXECUTE ON FUNCTION {function} TO {role}"),
        format!(
            "COMMENT ON FUNCTION {function} IS {}",
            quote_literal(POOLER_LOOKUP_MARKER)
        ),
    ]
}
