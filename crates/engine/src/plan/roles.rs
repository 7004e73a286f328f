//! The planner, per tenant: its roles — existence, attributes, memberships, settings — and their
//! stored credentials.

use super::*;
use crate::observed::StoredCredential;

impl TenantPlanner<'_> {
    pub(super) fn roles(&mut self) {
        for role in self.tenant.roles.clone() {
            let alternate = self
                .observed
                .roles
                .get(role.alternate.as_str())
                .filter(|a| {
                    a.marker()
                        .is_some_and(|m| m == Marker::alternate(self.tenant, role.kind))
                });
            let mut members = BTreeSet::new();
            if alternate.is_some() {
                members.insert(role.alternate.as_str().to_string());
            }
            members.extend(
                self.tenant
                    .roles
                    .iter()
                    .filter(|other| other.member_of.contains(&role.name))
                    .map(|other| other.name.as_str().to_string()),
            );
            let exists = self.observed.roles.contains_key(role.name.as_str());
            if !exists {
                match &role.secret_path {
                    Some(secret_path) => self.push(
                        Phase::Roles,
                        Action::SetPassword {
                            sql: sql::create_role(&role.name, &role.attributes),
                            role: role.name.clone(),
                            secret_path: secret_path.clone(),
                            dbname: self.tenant.database.as_str().to_string(),
                            pooler: self.context.pooler_for(self.tenant),
                        },
                        "declared in the spec; the role does not exist",
                    ),
                    None => self.push_sql(
                        Phase::Roles,
                        sql::create_nologin_role(&role.name, &role.attributes),
                        "the preset's owner role (no login) does not exist",
                    ),
                }
            }
            let member_of: BTreeSet<String> = role
                .member_of
                .iter()
                .map(|r| r.as_str().to_string())
                .collect();
            self.login_role(
                &role.name,
                Marker::role(self.tenant, role.kind),
                &role.attributes,
                &member_of,
                &members,
            );
            self.role_config(&role.name, &role.config());
            self.role_database_config(&role.name);
            match (exists, &role.secret_path) {
                (true, Some(secret_path)) => {
                    self.credentials(&role.name, &role.alternate, secret_path)
                }
                (false, Some(secret_path)) => self.credentials_of_new_role(&role.name, secret_path),
                (_, None) => {}
            }
            if alternate.is_some() {
                // The grace-rotation twin: a login that holds the role's privileges through membership.
                let member_of = BTreeSet::from([role.name.as_str().to_string()]);
                self.login_role(
                    &role.alternate,
                    Marker::alternate(self.tenant, role.kind),
                    &role.attributes,
                    &member_of,
                    &BTreeSet::new(),
                );
                self.role_config(&role.alternate, &role.alternate_config());
                self.role_database_config(&role.alternate);
            }
        }
    }

    /// Attributes, marker and memberships of one tenant role; a role that does not exist yet is
    /// taken as just created with `attributes` and no memberships.
    pub(super) fn login_role(
        &mut self,
        name: &Ident,
        marker: Marker,
        attributes: &RoleAttributes,
        member_of_wanted: &BTreeSet<String>,
        members_wanted: &BTreeSet<String>,
    ) {
        let observed = self.observed.roles.get(name.as_str());
        let empty = BTreeSet::new();
        let (member_of, members) = match observed {
            None => {
                self.push_sql(
                    Phase::Roles,
                    sql::comment_on_role(name, &marker),
                    "mark the role as managed by pgtenant",
                );
                (&empty, &empty)
            }
            Some(existing) => {
                let options =
                    RoleAttributes::options_towards(Some(&existing.attributes), attributes);
                if !options.is_empty() {
                    let why = format!("attributes differ; setting {}", options.join(", "));
                    self.push_sql(Phase::Roles, sql::alter_role(name, &options), why);
                }
                if existing.marker().as_ref() != Some(&marker) {
                    let why = match existing.marker() {
                        None => "adopt the existing role: mark it as managed by pgtenant",
                        Some(_) => "the role's pgtenant marker is out of date",
                    };
                    self.push_sql(Phase::Roles, sql::comment_on_role(name, &marker), why);
                }
                (&existing.member_of, &existing.members)
            }
        };
        let version = self.observed.server.version_num;
        for other in member_of.difference(member_of_wanted) {
            for statement in self.revoke_membership(other, name.as_str()) {
                self.push_sql(
                    Phase::Roles,
                    statement,
                    format!("a tenant role must not hold the privileges of `{other}`"),
                );
            }
        }
        for other in member_of_wanted.difference(member_of) {
            self.push_sql(
                Phase::Roles,
                sql::grant_membership(&Ident::new(other.clone()), name, version),
                format!("`{name}` holds the privileges of `{other}` through membership"),
            );
        }
        let control = &self.observed.server.current_user;
        for member in members.difference(members_wanted) {
            let why = if member == control {
                // Not drift: pgtenant's own (an earlier version's, or a run that ended between a
                // final backup's grant and its revoke), taken back once.
                format!(
                    "pgtenant's own: the control role holds no standing membership in tenant roles (every \
                     connection and privilege check would walk them all); it is granted `{name}` only inside \
                     the transactions that need it"
                )
            } else {
                format!("`{member}` must not hold the privileges of `{name}`")
            };
            for statement in self.revoke_membership(name.as_str(), member) {
                self.push_sql(Phase::Roles, statement, why.clone());
            }
        }
    }

    /// REVOKE statements that end `member`'s membership in `role`: on PostgreSQL 16+ one per grantor,
    /// since a REVOKE only removes the revoker's own grant (and otherwise merely warns).
    pub(super) fn revoke_membership(&self, role: &str, member: &str) -> Vec<String> {
        let (role_ident, member_ident) =
            (Ident::new(role.to_string()), Ident::new(member.to_string()));
        let grantors = self
            .observed
            .roles
            .get(member)
            .and_then(|m| m.membership_grantors.get(role))
            .filter(|_| self.observed.server.version_num >= 160_000);
        match grantors {
            Some(grantors) if !grantors.is_empty() => grantors
                .iter()
                .map(|g| {
                    sql::revoke_membership(&role_ident, &member_ident, Some(&Ident::new(g.clone())))
                })
                .collect(),
            _ => vec![sql::revoke_membership(&role_ident, &member_ident, None)],
        }
    }

    /// `ALTER ROLE … SET/RESET` for the settings pgtenant manages; others are left alone.
    pub(super) fn role_config(&mut self, name: &Ident, wanted: &BTreeMap<&'static str, String>) {
        let current = self.observed.roles.get(name.as_str()).map(|r| &r.config);
        for key in MANAGED_ROLE_SETTINGS {
            let have = current.and_then(|c| c.get(key));
            match (wanted.get(key), have) {
                (Some(value), have) if have != Some(value) => self.push_sql(
                    Phase::Roles,
                    sql::set_role_config(name, key, value),
                    match have {
                        None => format!("sessions of `{name}` get {key} = {value}"),
                        Some(old) => format!("{key} is {old}, the spec says {value}"),
                    },
                ),
                (None, Some(old)) => self.push_sql(
                    Phase::Roles,
                    sql::reset_role_config(name, key),
                    format!("{key} = {old} is not in the spec"),
                ),
                _ => {}
            }
        }
    }

    /// Settings of a tenant role for one database only are not pgtenant's (it sets a role's
    /// defaults for every database): a login could give itself `statement_timeout = 1ms` where
    /// another of the tenant's sessions, or pgtenant, works. Reset whole.
    pub(super) fn role_database_config(&mut self, name: &Ident) {
        let Some(observed) = self.observed.roles.get(name.as_str()) else {
            return;
        };
        for (database, config) in &observed.database_config {
            self.push_sql(
                Phase::Roles,
                sql::reset_role_database_settings(name, &Ident::new(database.clone())),
                format!(
                    "`{name}` has settings in database {database} ({}) that the spec does not declare: \
                     only the spec's settings, for every database, are kept",
                    settings_list(config)
                ),
            );
        }
    }

    /// A role of another pgtenant tenant (its marker names that tenant): it must hold nothing here.
    pub(super) fn other_tenant_of(&self, role: &str) -> Option<String> {
        self.observed
            .roles
            .get(role)
            .and_then(|r| r.marker())
            .map(|m| m.tenant)
            .filter(|tenant| *tenant != self.tenant.id)
    }

    pub(super) fn store_is_empty(&self) -> bool {
        !self
            .observed
            .stored_paths
            .iter()
            .any(|p| p.as_str().starts_with(pgtenant_spec::SECRET_PATH_PREFIX))
    }

    /// The store must hold credentials for the role (or its grace-rotation alternate, whichever
    /// the last rotation switched to) with the current connection details.
    pub(super) fn credentials(
        &mut self,
        role: &Ident,
        alternate: &Ident,
        secret_path: &SecretPath,
    ) {
        let dbname = self.tenant.database.as_str();
        let stored = self.observed.stored_credentials.get(secret_path);
        let usable = stored.filter(|s| {
            s.username == role.as_str()
                || (s.username == alternate.as_str()
                    && self.observed.roles.contains_key(alternate.as_str()))
        });
        let managed = self
            .observed
            .roles
            .get(role.as_str())
            .and_then(|r| r.marker())
            .is_some();
        if usable.is_none() && managed && self.store_is_empty() {
            self.blocked.push(format!(
                "no credentials for `{role}` in the credential store, and the store holds no tenant credentials at all \
                 (a different --state-dir or machine?): issuing new passwords would lock applications out, so none \
                 is issued. Point pgtenant at the store that has them, or run `pgtenant rotate {} --all` to issue new ones",
                self.tenant.id
            ));
            return;
        }
        match (stored, usable) {
            (_, None) => self.push(
                Phase::Roles,
                Action::SetPassword {
                    sql: sql::set_password(role),
                    role: role.clone(),
                    secret_path: secret_path.clone(),
                    dbname: dbname.to_string(),
                    pooler: self.context.pooler_for(self.tenant),
                },
                match stored {
                    None => "no stored credentials for this existing role: issuing a new password"
                        .to_string(),
                    Some(s) => format!(
                        "stored credentials name `{}`, not this role: issuing a new password",
                        s.username
                    ),
                },
            ),
            (_, Some(stored)) => {
                if stored.scram_iterations != self.context.scram_iterations {
                    // The same password, set again: applications and sessions are unaffected.
                    self.push(
                        Phase::Roles,
                        Action::SetPassword {
                            sql: sql::set_password(&Ident::new(stored.username.as_str())),
                            role: Ident::new(stored.username.as_str()),
                            secret_path: secret_path.clone(),
                            dbname: dbname.to_string(),
                            pooler: self.context.pooler_for(self.tenant),
                        },
                        format!(
                            "the stored password's SCRAM verifier has {} iterations, the platform's \
                             passwords.scramIterations is {}: setting the same password again",
                            stored.scram_iterations,
                            self.context.scram_iterations
                        ),
                    );
                }
                let stored = stored.clone();
                self.connection_details(&stored, secret_path);
            }
        }
    }

    /// A role created here whose stored credentials it takes over (same username: the executor
    /// sets the stored password, and writes nothing else) must still get this cluster's
    /// connection details — a tenant moved here, or a cluster rebuilt with the same store.
    pub(super) fn credentials_of_new_role(&mut self, role: &Ident, secret_path: &SecretPath) {
        if let Some(stored) = self
            .observed
            .stored_credentials
            .get(secret_path)
            .filter(|s| s.username == role.as_str())
            .cloned()
        {
            self.connection_details(&stored, secret_path);
        }
    }

    /// The stored endpoint, port, database name and pooled endpoint are this cluster's.
    fn connection_details(&mut self, stored: &StoredCredential, secret_path: &SecretPath) {
        let dbname = self.tenant.database.as_str();
        let current = (&stored.endpoint, stored.port, stored.dbname.as_str());
        let wanted = (
            &self.context.endpoint_host,
            self.context.endpoint_port,
            dbname,
        );
        let pooler = self.context.pooler_for(self.tenant);
        let pooled = |address: &Option<PoolerAddress>| match address {
            Some(p) => format!("{}:{}", p.endpoint, p.port),
            None => "none".to_owned(),
        };
        let why = if current != wanted {
            format!(
                "stored connection details ({}:{}/{}) differ from {}:{}/{}",
                current.0, current.1, current.2, wanted.0, wanted.1, wanted.2
            )
        } else if stored.pooler != pooler {
            format!(
                "stored pooled endpoint ({}) differs from {}",
                pooled(&stored.pooler),
                pooled(&pooler)
            )
        } else {
            return;
        };
        self.push(
            Phase::Credentials,
            Action::StoreCredential {
                secret_path: secret_path.clone(),
                dbname: dbname.to_string(),
                pooler,
            },
            why,
        );
    }
}
