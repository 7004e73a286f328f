//! Password rotation, crash-safe, with an optional grace mode.
//!
//! PostgreSQL keeps one password per role, so a plain rotation has an instant where the server and the
//! credential store disagree. pgtenant makes that instant as short as one local file rename and makes
//! it survivable: the new password is written to a *journal* entry first, then set on the server, then
//! promoted into the store, then the journal is removed. A crash at any step leaves a journal that
//! the next `rotate` or `apply` resolves by logging in with the journalled password: accepted means the
//! server has it (finish the promotion), rejected means it does not (drop the journal; nothing changed).
//!
//! Grace mode removes the instant altogether for roles running applications use: each role gets a
//! second login, `<role>-alt`, a member of the role (so it holds exactly its privileges; the admin's
//! twin also assumes the admin role at login so objects keep one owner). A grace rotation sets a new
//! password on the login the store does *not* currently name and switches the store to it, so the
//! credentials apps already hold stay valid until the next grace rotation.

use pgtenant_secrets::{generate_password, Credential, CredentialStore, SecretPath};
use serde::Serialize;
use tokio_postgres::error::SqlState;

use crate::connect::Connector;
use std::collections::BTreeMap;

use crate::desired::{
    alternate_name, role_name, DesiredTenant, Marker, RoleAttributes, RoleKind,
    MANAGED_ROLE_SETTINGS,
};
use crate::ident::{quote_literal, Ident};
use crate::sql;
use crate::EngineError;

/// Where a new password for `secret_path` waits until the server is known to have it (rotation,
/// and the executor's new and adopted roles).
pub fn journal_path(secret_path: &SecretPath) -> SecretPath {
    let rest = secret_path
        .as_str()
        .strip_prefix(pgtenant_spec::SECRET_PATH_PREFIX)
        .unwrap_or(secret_path.as_str());
    SecretPath::parse(&format!("{JOURNAL_PREFIX}{rest}"))
        .expect("journal path is derived from a valid path")
}

const JOURNAL_PREFIX: &str = pgtenant_secrets::PENDING_PREFIX;

/// Whether a password change of `secret_path` was started and not settled: the server may hold
/// the journalled password or the stored one, so the stored credential cannot be trusted until
/// the next `apply` (or `rotate`) settles it.
pub async fn is_pending(
    store: &dyn CredentialStore,
    secret_path: &SecretPath,
) -> Result<bool, pgtenant_secrets::StoreError> {
    Ok(store.get(&journal_path(secret_path)).await?.is_some())
}

/// What a tool that hands out a pending credential must say instead.
pub fn pending_message(tenant: &str, role: &str) -> String {
    format!(
        "interrupted password change for the {role} role of {tenant}: the stored password may \
         already be refused by the server; run `pgtenant apply` (or `pgtenant rotate {tenant} \
         --role {role}`) to settle it, then fetch the credentials again"
    )
}

#[derive(Debug, Clone, Serialize)]
pub struct Rotated {
    pub tenant: String,
    pub role: RoleKind,
    /// The login the store names now (the role itself, or its grace twin).
    pub username: String,
    pub grace: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Recovered {
    pub secret_path: String,
    /// true: the server had the new password, the store was updated; false: it did not, nothing changed.
    pub completed: bool,
    /// Why it could not be settled this time (the journal is kept for the next run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unresolved: Option<String>,
}

impl std::fmt::Display for Recovered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = &self.secret_path;
        match (&self.unresolved, self.completed) {
            (Some(reason), _) => write!(
                f,
                "an interrupted password change of {path} could not be settled yet ({reason}); the next run tries again"
            ),
            (None, true) => write!(f, "an interrupted password change of {path} was completed"),
            (None, false) => write!(
                f,
                "an interrupted password change of {path} was rolled back (the server never had it)"
            ),
        }
    }
}

/// Test hook for crash-safety tests: `PGTENANT_FAILPOINT=<name>` aborts the process right there,
/// exactly as a kill between two steps would.
pub fn failpoint(name: &str) {
    if std::env::var("PGTENANT_FAILPOINT").is_ok_and(|v| v == name) {
        eprintln!("failpoint {name}: aborting");
        std::process::abort();
    }
}

pub struct Rotator<'a> {
    pub connector: &'a Connector,
    pub store: &'a dyn CredentialStore,
}

impl Rotator<'_> {
    /// Resolves every unconfirmed password change left in the store. One that cannot be settled now
    /// (the server unreachable as that role for another reason) stays journalled and is reported,
    /// without stopping the run for every other tenant.
    pub async fn recover_all(&self) -> Result<Vec<Recovered>, EngineError> {
        let mut recovered = Vec::new();
        for journal in self
            .store
            .list()
            .await?
            .into_iter()
            .filter(|p| p.as_str().starts_with(JOURNAL_PREFIX))
        {
            let rest = &journal.as_str()[JOURNAL_PREFIX.len()..];
            let secret_path =
                SecretPath::parse(&format!("{}{rest}", pgtenant_spec::SECRET_PATH_PREFIX))?;
            recovered.push(match self.recover(&secret_path, &journal).await {
                Ok(done) => done,
                Err(error) => Recovered {
                    secret_path: secret_path.to_string(),
                    completed: false,
                    unresolved: Some(crate::error_chain(&error)),
                },
            });
        }
        Ok(recovered)
    }

    /// Settles the interrupted password change of `secret_path` (a no-op without a journal entry);
    /// one that cannot be settled now is returned with the reason in `unresolved`.
    pub async fn recover_one(&self, secret_path: &SecretPath) -> Recovered {
        let journal = journal_path(secret_path);
        self.recover(secret_path, &journal)
            .await
            .unwrap_or_else(|error| Recovered {
                secret_path: secret_path.to_string(),
                completed: false,
                unresolved: Some(crate::error_chain(&error)),
            })
    }

    async fn recover(
        &self,
        secret_path: &SecretPath,
        journal: &SecretPath,
    ) -> Result<Recovered, EngineError> {
        let Some(pending) = self.store.get(journal).await? else {
            return Ok(Recovered {
                secret_path: secret_path.to_string(),
                completed: false,
                unresolved: None,
            });
        };
        let accepted = match self
            .connector
            .with_login(&pending.username, &pending.password)
            .connect(Some(&pending.dbname))
            .await
        {
            Ok(_) => true,
            // PostgreSQL checks the password first: any later refusal (no such database yet, no
            // CONNECT, connections disallowed or exhausted) means the password was accepted.
            Err(EngineError::Connect { source, .. }) => match source.code() {
                Some(code) if *code == SqlState::INVALID_PASSWORD => false,
                Some(code)
                    if [
                        SqlState::INVALID_CATALOG_NAME,
                        SqlState::INSUFFICIENT_PRIVILEGE,
                        SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE,
                        SqlState::TOO_MANY_CONNECTIONS,
                    ]
                    .contains(code) =>
                {
                    true
                }
                _ => {
                    return Err(EngineError::Connect {
                        database: Some(pending.dbname.clone()),
                        source,
                    })
                }
            },
            Err(other) => return Err(other),
        };
        if accepted {
            self.store.put(secret_path, &pending).await?;
        }
        self.store.delete(journal).await?;
        Ok(Recovered {
            secret_path: secret_path.to_string(),
            completed: accepted,
            unresolved: None,
        })
    }

    pub async fn rotate(
        &self,
        tenant: &DesiredTenant,
        kind: RoleKind,
        grace: bool,
    ) -> Result<Rotated, EngineError> {
        // Names follow from the tenant and the role alone, whatever the preset: `rotate` needs no repo.
        let role = Ident::new(role_name(tenant.database.as_str(), kind));
        let alternate = Ident::new(alternate_name(role.as_str()));
        let secret_path = SecretPath::for_role(&tenant.namespace, &tenant.name, kind.as_str());
        let journal = journal_path(&secret_path);
        if self.store.get(&journal).await?.is_some() {
            self.recover(&secret_path, &journal).await?;
        }
        let current = self.store.get(&secret_path).await?.ok_or_else(|| {
            EngineError::Rotation(format!(
                "no stored credentials for the {} role of {}: is that a login role of its preset, and has \
                 `pgtenant apply` run?",
                kind.as_str(),
                tenant.id
            ))
        })?;
        let control = self.connector.connect(None).await?;
        let catalog_error = |source| EngineError::Catalog {
            database: None,
            source,
        };
        let row = control
            .query_one(
                "SELECT current_user::text, r.rolsuper,
                        EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1),
                        COALESCE((SELECT s.setconfig FROM pg_catalog.pg_db_role_setting s
                                   WHERE s.setdatabase = 0
                                     AND s.setrole = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = $2)),
                                 '{}'::text[]),
                        EXISTS (SELECT 1 FROM pg_catalog.pg_database
                                 WHERE datname = $3
                                   AND datdba = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = $2)),
                        pg_catalog.current_setting('server_version_num')::int4
                   FROM pg_catalog.pg_roles r WHERE r.rolname = current_user",
                &[&alternate.as_str(), &role.as_str(), &tenant.database.as_str()],
            )
            .await
            .map_err(catalog_error)?;
        // Columns 0 and 1 (the control role, superuser or not): the control role holds no
        // standing membership in a new twin either (see `sql::lend`).
        let alternate_exists: bool = row.get(2);
        let role_config: Vec<String> = row.get(3);
        let owns_database: bool = row.get(4);
        let version: i32 = row.get(5);

        let target = match grace {
            false => Ident::new(current.username.clone()),
            true if current.username == alternate.as_str() => role.clone(),
            true => alternate.clone(),
        };
        if grace
            && target == alternate
            && alternate.as_str().len() > pgtenant_spec::MAX_IDENTIFIER_BYTES
        {
            return Err(EngineError::Rotation(format!(
                "grace rotation needs the login `{alternate}` ({} bytes), longer than PostgreSQL's {}-byte limit; \
                 rotate without --grace",
                alternate.as_str().len(),
                pgtenant_spec::MAX_IDENTIFIER_BYTES
            )));
        }
        let next = Credential {
            username: target.as_str().to_string(),
            password: generate_password(),
            ..current
        };
        self.store.put(&journal, &next).await?;
        failpoint("rotate:after-journal");

        // The count the login has now: a rotation changes the password, not the count; the next
        // apply moves it to the platform's (`passwords.scramIterations`), as it does every login.
        let verifier = quote_literal(&crate::pooler::scram_verifier(
            target.as_str(),
            &next.password,
            next.scram_iterations(),
        ));
        let statements = if target == alternate && !alternate_exists {
            let mut statements = vec![
                sql::create_role(&target, &RoleAttributes::TENANT),
                sql::comment_on_role(&target, &Marker::alternate(tenant, kind)),
                sql::grant_membership(&role, &target, version),
            ];
            // The twin behaves like the role: same managed session settings, and an owner's twin
            // acts as the owner so what it creates keeps one owner.
            let mut config: BTreeMap<String, String> = role_config
                .iter()
                .filter_map(|entry| entry.split_once('='))
                .filter(|(key, _)| MANAGED_ROLE_SETTINGS.contains(key))
                .map(|(key, value)| (key.to_string(), value.to_string()))
                .collect();
            if owns_database {
                config
                    .entry("role".to_string())
                    .or_insert_with(|| role.as_str().to_string());
            }
            statements.extend(
                config
                    .iter()
                    .map(|(key, value)| sql::set_role_config(&target, key, value)),
            );
            statements
        } else {
            vec![sql::set_password(&target)]
        };
        // One simple query: several statements commit together or not at all.
        let batch = statements
            .join(";\n")
            .replace(sql::PASSWORD_PLACEHOLDER, &verifier);
        control.batch_execute(&batch).await.map_err(catalog_error)?;
        failpoint("rotate:after-server");

        self.store.put(&secret_path, &next).await?;
        failpoint("rotate:after-store");
        self.store.delete(&journal).await?;
        Ok(Rotated {
            tenant: tenant.id.clone(),
            role: kind,
            username: next.username,
            grace,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_lives_beside_the_platform_paths() {
        let path = SecretPath::for_role("idp-dev", "my-db", "write");
        assert_eq!(
            journal_path(&path).as_str(),
            "pgtenant/pending/idp-dev/my-db-write"
        );
    }
}
