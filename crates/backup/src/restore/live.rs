//! What a restore does on the live cluster: checking the target database, ending its sessions,
//! reading its objects, and running pg_restore into it in one transaction.

use std::path::Path;
use std::process::Command;

use pgtenant_engine::{sql as engine_sql, Ident};

use crate::libpq::{clear_pg_env, ServerAddress};
use crate::{process, sql, BackupError, Backups, Login, TenantName};

use super::prelude::{check_into_contents, check_into_rules, newer_objects_prelude, Objects};
use super::steps::Steps;
use super::RestoreRequest;

impl Backups {
    /// The live database must exist: a restore fills a database, it does not create one.
    pub(super) fn require_database(&self, tenant: &TenantName) -> Result<(), BackupError> {
        let database = tenant.database();
        let exists = sql::block_on(async {
            let client = sql::connect(&self.control_url, None).await?;
            client
                .query_opt(
                    "SELECT 1 FROM pg_catalog.pg_database WHERE datname OPERATOR(pg_catalog.=) $1",
                    &[&database],
                )
                .await
                .map_err(|e| sql::sql_error("looking up the database", e))
                .map(|row| row.is_some())
        })??;
        if !exists {
            return Err(BackupError::Restore(format!(
                "database {database} does not exist on the cluster: declare {} in the apps repo \
                 and run `pgtenant apply` first",
                tenant.id()
            )));
        }
        Ok(())
    }

    /// The rules of a restore into another database than the tenant's own, checked before
    /// anything is touched: the same namespace unless `--allow-cross-namespace`; a database with no
    /// objects of its own, and not a protected one, unless `--replace`.
    pub(super) fn check_into(&self, request: &RestoreRequest) -> Result<(), BackupError> {
        if !check_into_rules(request)? {
            return Ok(());
        }
        let database = request.into.database();
        let (comment, objects) = sql::block_on(async {
            let client = sql::connect(&self.control_url, None).await?;
            let comment: Option<String> = client
                .query_one(
                    "SELECT pg_catalog.shobj_description(oid, 'pg_database') \
                     FROM pg_catalog.pg_database WHERE datname OPERATOR(pg_catalog.=) $1",
                    &[&database],
                )
                .await
                .map_err(|e| sql::sql_error("reading the database's comment", e))?
                .get(0);
            let objects =
                user_objects(&sql::connect(&self.control_url, Some(&database)).await?).await?;
            Ok::<_, BackupError>((comment, objects))
        })??;
        check_into_contents(request, comment.as_deref(), &objects)
    }

    /// Ends the sessions on `database` that the control role may end (those of the tenant's
    /// roles, `<database>-…`); returns how many. The control role holds no standing membership in
    /// them: the transaction that ends the sessions borrows the roles that have one (granted first,
    /// revoked before COMMIT, never committed).
    pub(super) fn terminate_sessions(&self, database: &str) -> Result<u64, BackupError> {
        let database = database.to_string();
        sql::block_on(async {
            let mut client = sql::connect(&self.control_url, None).await?;
            let failed = |e| sql::sql_error("terminating sessions", e);
            let transaction = client.transaction().await.map_err(failed)?;
            let roles: Vec<Ident> = transaction
                .query(
                    "SELECT DISTINCT r.rolname::text FROM pg_catalog.pg_stat_activity a \
                     JOIN pg_catalog.pg_roles r ON r.oid OPERATOR(pg_catalog.=) a.usesysid \
                     WHERE a.datname OPERATOR(pg_catalog.=) $1 AND NOT r.rolsuper \
                     AND pg_catalog.starts_with(r.rolname, $1 OPERATOR(pg_catalog.||) '-')",
                    &[&database],
                )
                .await
                .map_err(failed)?
                .iter()
                .map(|row| Ident::new(row.get::<_, String>(0)))
                .collect();
            for role in &roles {
                transaction
                    .batch_execute(&engine_sql::lend(role, None))
                    .await
                    .map_err(failed)?;
            }
            let row = transaction
                .query_one(
                    "SELECT count(*) FILTER (WHERE pg_catalog.pg_terminate_backend(pid)) \
                     FROM pg_catalog.pg_stat_activity \
                     WHERE datname OPERATOR(pg_catalog.=) $1 \
                     AND pid OPERATOR(pg_catalog.<>) pg_catalog.pg_backend_pid() \
                     AND pg_catalog.pg_has_role(usesysid, 'MEMBER')",
                    &[&database],
                )
                .await
                .map_err(failed)?;
            for role in &roles {
                transaction
                    .batch_execute(&engine_sql::take_back(role, None))
                    .await
                    .map_err(failed)?;
            }
            transaction.commit().await.map_err(failed)?;
            Ok(row.get::<_, i64>(0) as u64)
        })?
    }

    /// `prelude`: statements dropping what exists in `database` but did not exist in the snapshot
    /// (tables created after the target time), so that the result equals the snapshot; it runs
    /// in the same transaction as the restore.
    pub(super) fn drop_newer_objects(
        &self,
        database: &str,
        owner: &str,
        snapshot: &Objects,
        steps: &mut Steps<'_>,
    ) -> Result<String, BackupError> {
        let live = sql::block_on(async {
            objects_at(sql::connect(&self.control_url, Some(database))).await
        })??;
        let (prelude, kept) = newer_objects_prelude(&live, snapshot, owner);
        if !kept.is_empty() {
            steps.progress.warn(&format!(
                "kept objects created after the restore target that {owner} does not own: {}",
                kept.join(", ")
            ));
        }
        Ok(prelude)
    }

    /// `pg_restore --clean --if-exists` of `dump` into `database` as `admin`, in one transaction
    /// that starts with `prelude`.
    ///
    /// pg_restore writes the script and psql runs it with `--single-transaction`, after the
    /// prelude; the transaction commits only if the whole script arrived (a sentinel line that
    /// pgtenant appends once pg_restore has succeeded), so a failure or a kill at any point
    /// rolls everything back.
    ///
    /// `--no-owner`: everything restored is owned by the admin role, which is what the tenant
    /// model wants, and a dump of another tenant names owners that do not apply here. Privileges
    /// (`GRANT`s, default privileges) are kept for an in-place restore, where they name the same
    /// roles and reproduce the snapshot exactly, and dropped (`--no-acl`) into another tenant's
    /// database, where they would grant the source tenant's roles; the engine's re-apply then
    /// gives the target tenant's roles what they should have.
    pub(super) fn pg_restore(
        &self,
        dump: &Path,
        database: &str,
        admin: &Login,
        other_tenant: bool,
        prelude: &str,
    ) -> Result<(), BackupError> {
        let binaries = self.client_binaries()?;
        let address = ServerAddress::from_admin_url(&self.control_url)?;
        let work = tempfile::Builder::new()
            .prefix("restore-sql-")
            .tempdir_in(&self.root)
            .map_err(|source| BackupError::Io {
                path: self.root.clone(),
                source,
            })?;
        let prelude_file = work.path().join("prelude.sql");
        let finish_file = work.path().join("finish.sql");
        crate::write_private_file(
            &prelude_file,
            format!("-- pgtenant: objects newer than the restore target\n{prelude}").as_bytes(),
        )?;
        crate::write_private_file(&finish_file, FINISH_SQL.as_bytes())?;

        let mut script = Command::new(binaries.program("pg_restore"));
        clear_pg_env(&mut script);
        script.args(["--clean", "--if-exists", "--no-owner"]);
        if other_tenant {
            script.arg("--no-acl");
        }
        script.args(["-f", "-"]).arg(dump);

        let mut psql = Command::new(binaries.program("psql"));
        clear_pg_env(&mut psql);
        address.apply(&mut psql, &admin.user, &admin.password, database);
        psql.env("PGOPTIONS", "-c client_min_messages=warning")
            .args([
                "-X",
                "-q",
                "--no-password",
                "-v",
                "ON_ERROR_STOP=1",
                "--single-transaction",
            ])
            .arg("-f")
            .arg(&prelude_file)
            .args(["-f", "-", "-f"])
            .arg(&finish_file);
        process::pipe_script(&mut script, &mut psql, SENTINEL).map_err(|source| {
            BackupError::RolledBack {
                database: database.to_string(),
                source: Box::new(source),
            }
        })
    }
}

/// Appended to the script once pg_restore has written all of it; [`FINISH_SQL`] refuses to commit
/// without it.
const SENTINEL: &[u8] = b"\n\\set pgtenant_restore_complete on\n";

const FINISH_SQL: &str = "\\if :{?pgtenant_restore_complete}
\\else
DO $$BEGIN RAISE EXCEPTION 'the restore script was cut short; rolling back'; END$$;
\\endif
";

/// The objects users made in the database `client` is in (what `CREATE` made, not what initdb or
/// an extension did; empty schemas, as apply creates them, do not count): relations, routines,
/// types of their own, as `kind schema.name`, at most a few hundred.
async fn user_objects(client: &tokio_postgres::Client) -> Result<Vec<String>, BackupError> {
    let rows = client
        .query(
            "WITH user_schema AS ( \
               SELECT n.oid, n.nspname FROM pg_catalog.pg_namespace n \
               WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') \
               AND n.nspname !~ '^pg_(toast|temp_)'), \
             object AS ( \
               SELECT 'pg_catalog.pg_class'::pg_catalog.regclass AS classid, c.oid, \
                 CASE c.relkind WHEN 'S' THEN 'sequence' WHEN 'v' THEN 'view' \
                   WHEN 'm' THEN 'materialized view' WHEN 'f' THEN 'foreign table' \
                   WHEN 'c' THEN 'type' ELSE 'table' END AS kind, s.nspname, c.relname::text AS name \
               FROM pg_catalog.pg_class c JOIN user_schema s ON s.oid OPERATOR(pg_catalog.=) c.relnamespace \
               WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S', 'c') \
               UNION ALL \
               SELECT 'pg_catalog.pg_proc'::pg_catalog.regclass, p.oid, 'routine', s.nspname, p.proname::text \
               FROM pg_catalog.pg_proc p JOIN user_schema s ON s.oid OPERATOR(pg_catalog.=) p.pronamespace \
               UNION ALL \
               SELECT 'pg_catalog.pg_type'::pg_catalog.regclass, t.oid, 'type', s.nspname, t.typname::text \
               FROM pg_catalog.pg_type t JOIN user_schema s ON s.oid OPERATOR(pg_catalog.=) t.typnamespace \
               WHERE t.typrelid OPERATOR(pg_catalog.=) 0 AND t.typtype OPERATOR(pg_catalog.<>) 'm' \
               AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_type e \
                 WHERE e.typarray OPERATOR(pg_catalog.=) t.oid)) \
             SELECT o.kind || ' ' || o.nspname || '.' || o.name FROM object o \
             WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d \
               WHERE d.classid OPERATOR(pg_catalog.=) o.classid \
               AND d.objid OPERATOR(pg_catalog.=) o.oid \
               AND d.deptype OPERATOR(pg_catalog.=) 'e') \
             ORDER BY 1 LIMIT 500",
            &[],
        )
        .await
        .map_err(|e| sql::sql_error("listing the database's objects", e))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// The user-made schemas and relations (not extension members) of the database `client` is in.
pub(super) async fn objects_at(
    client: impl std::future::Future<Output = Result<tokio_postgres::Client, BackupError>>,
) -> Result<Objects, BackupError> {
    let client = client.await?;
    let not_extension = "NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d \
         WHERE d.classid OPERATOR(pg_catalog.=) {table}::pg_catalog.regclass \
         AND d.objid OPERATOR(pg_catalog.=) {oid} AND d.deptype OPERATOR(pg_catalog.=) 'e')";
    let user_schema = "{name} NOT IN ('pg_catalog', 'information_schema') \
         AND {name} !~ '^pg_(toast|temp_)'";
    let schemas = client
        .query(
            &format!(
                "SELECT n.nspname::text, pg_catalog.pg_get_userbyid(n.nspowner)::text \
                 FROM pg_catalog.pg_namespace n WHERE {} AND {}",
                user_schema.replace("{name}", "n.nspname"),
                not_extension
                    .replace("{table}", "'pg_catalog.pg_namespace'")
                    .replace("{oid}", "n.oid")
            ),
            &[],
        )
        .await
        .map_err(|e| sql::sql_error("listing schemas", e))?;
    let relations = client
        .query(
            &format!(
                "SELECT n.nspname::text, c.relname::text, c.relkind::text, \
                 pg_catalog.pg_get_userbyid(c.relowner)::text \
                 FROM pg_catalog.pg_class c \
                 JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace \
                 WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') AND {} AND {}",
                user_schema.replace("{name}", "n.nspname"),
                not_extension
                    .replace("{table}", "'pg_catalog.pg_class'")
                    .replace("{oid}", "c.oid")
            ),
            &[],
        )
        .await
        .map_err(|e| sql::sql_error("listing relations", e))?;
    Ok(Objects {
        schemas: schemas.iter().map(|r| (r.get(0), r.get(1))).collect(),
        relations: relations
            .iter()
            .map(|r| ((r.get(0), r.get(1)), (r.get(2), r.get(3))))
            .collect(),
    })
}
