//! The planner: Desired × Observed → an ordered list of idempotent operations. Pure: no I/O, so every
//! decision is unit- and snapshot-tested. Statement text is built in [`crate::sql`].

use std::collections::{BTreeMap, BTreeSet};

use pgtenant_secrets::SecretPath;
use pgtenant_spec::{Environment, Mode};
use serde::Serialize;

use crate::desired::{
    policy::DefaultObject, Access, Desired, DesiredTenant, Marker, Privileges, RoleAttributes,
    RoleKind, MANAGED_ROLE_SETTINGS,
};
use crate::ident::Ident;
use crate::observed::{
    acl_from_pairs, Acl, DatabaseCatalog, ObjectClass, Observed, ObservedDatabase, ObservedSchema,
};
use crate::sql;

/// Operations run in this order within a tenant; drops of removed tenants run after every other tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// A password change that was interrupted (a journal entry in the store) is settled first, so
    /// the rest of the run starts from what the server really accepts.
    PasswordRecovery,
    Roles,
    Database,
    Schemas,
    DefaultPrivileges,
    Extensions,
    Credentials,
    /// Before a removed standard database's final backup: its logins stop and its sessions end.
    StopLogins,
    /// The final backup of a removed standard database, to the trash, right before its drop.
    FinalBackup,
    Drop,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::PasswordRecovery => "password-recovery",
            Phase::Roles => "roles",
            Phase::Database => "database",
            Phase::Schemas => "schemas",
            Phase::DefaultPrivileges => "default-privileges",
            Phase::Extensions => "extensions",
            Phase::Credentials => "credentials",
            Phase::StopLogins => "stop-logins",
            Phase::FinalBackup => "final-backup",
            Phase::Drop => "drop",
        }
    }

    /// The phases of a removed tenant: they run after every other tenant, one tenant at a time.
    pub fn is_removal(self) -> bool {
        matches!(self, Phase::StopLogins | Phase::FinalBackup | Phase::Drop)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Action {
    /// A statement on the control connection, or inside `database` as its admin role.
    Sql {
        sql: String,
        transactional: bool,
    },
    /// A statement whose [`sql::PASSWORD_PLACEHOLDER`] the executor replaces with the SCRAM verifier of
    /// the stored password (or of a new one, stored first).
    SetPassword {
        sql: String,
        role: Ident,
        secret_path: SecretPath,
        dbname: String,
    },
    /// Refresh the connection details of a stored credential; the password is kept.
    StoreCredential {
        secret_path: SecretPath,
        dbname: String,
    },
    DeleteCredential {
        secret_path: SecretPath,
    },
    /// Settle the interrupted password change of `role`: log in with the journalled password;
    /// accepted, it becomes the stored one; refused, the journal is dropped (nothing changed).
    FinishPasswordChange {
        role: Ident,
        secret_path: SecretPath,
    },
    /// `NOLOGIN` for `roles` and the end of every session on `database`, so the final backup holds
    /// the last write. The executor gives the logins back if the final backup then fails.
    StopLogins {
        database: Ident,
        roles: Vec<Ident>,
    },
    /// A logical dump of `database` into the trash, kept `retention_days` (its tier's retention),
    /// taken by the [`crate::execute::FinalBackups`] the caller provides. If it fails, the tenant
    /// stops there: nothing is dropped.
    FinalBackup {
        database: Ident,
        environment: Environment,
        retention_days: u32,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Operation {
    pub tenant: String,
    pub phase: Phase,
    /// Where it runs: None is the control connection; Some is inside that tenant database, as `run_as`.
    pub database: Option<Ident>,
    pub run_as: Option<Ident>,
    #[serde(flatten)]
    pub action: Action,
    pub why: String,
    pub destructive: bool,
}

impl Operation {
    /// The statement as a reviewer reads it: the SQL, or what is done to the credential store.
    pub fn display(&self) -> String {
        match &self.action {
            Action::Sql { sql, .. } | Action::SetPassword { sql, .. } => format!("{sql};"),
            Action::StoreCredential { secret_path, .. } => {
                format!("-- credential store: update connection details of {secret_path}")
            }
            Action::DeleteCredential { secret_path } => {
                format!("-- credential store: delete {secret_path}")
            }
            Action::FinishPasswordChange { role, secret_path } => format!(
                "-- finish the interrupted password change for {role}: log in with the password journalled beside \
                 {secret_path}; accepted, it is stored; refused, the journal is dropped"
            ),
            Action::StopLogins { database, roles } => format!(
                "-- stop the logins of {} (NOLOGIN) and end the sessions on {database}; given back if the final backup fails",
                names(roles)
            ),
            Action::FinalBackup {
                database,
                retention_days,
                ..
            } => format!(
                "-- final backup of {database} to the trash, kept {retention_days} day{}",
                if *retention_days == 1 { "" } else { "s" }
            ),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NoticeKind {
    /// A protected database removed from the repo: kept with its roles and credentials.
    Retained,
    /// A drop not made in this run, and why.
    Held,
    /// A declared database that exists but could not be inspected: its inside is not compared this run.
    Deferred,
    /// Something pgtenant will not do on its own and a person must decide (the notice says how).
    Blocked,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Notice {
    pub kind: NoticeKind,
    pub tenant: String,
    pub database: Option<String>,
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub operations: Vec<Operation>,
    pub notices: Vec<Notice>,
}

impl Plan {
    /// Nothing to run and nothing left unexamined.
    pub fn is_converged(&self) -> bool {
        self.operations.is_empty() && !self.has_unresolved()
    }

    /// Something was left undone that `apply` cannot do on its own (a database it could not
    /// inspect, a step it refuses to take, a drop a guard held back): it must not claim to have
    /// converged. Retained protected databases are the intended end state and do not count.
    pub fn has_unresolved(&self) -> bool {
        self.notices.iter().any(|n| {
            matches!(
                n.kind,
                NoticeKind::Deferred | NoticeKind::Blocked | NoticeKind::Held
            )
        })
    }

    /// The drops a guard held back in this plan.
    pub fn held(&self) -> impl Iterator<Item = &Notice> {
        self.notices.iter().filter(|n| n.kind == NoticeKind::Held)
    }

    pub fn destructive_count(&self) -> usize {
        self.operations.iter().filter(|op| op.destructive).count()
    }

    /// The operations grouped by tenant, in plan order.
    pub fn by_tenant(&self) -> Vec<(&str, Vec<&Operation>)> {
        let mut groups: Vec<(&str, Vec<&Operation>)> = Vec::new();
        for op in &self.operations {
            match groups.last_mut() {
                Some((tenant, ops)) if *tenant == op.tenant => ops.push(op),
                _ => groups.push((&op.tenant, vec![op])),
            }
        }
        groups
    }
}

/// What the planner needs to know besides desired and observed state.
#[derive(Debug, Clone)]
pub struct PlanContext {
    /// Host and port that applications connect to, written into stored credentials.
    pub endpoint_host: String,
    pub endpoint_port: u16,
    pub guard: DropGuard,
    /// Extensions that need superuser and that the platform allows (seed 004's `superuser_extensions`).
    pub superuser_extensions: BTreeSet<String>,
    /// The time of this run (RFC 3339, UTC), written where the plan records a moment.
    pub now: String,
    /// Tenants (`NS/DB`) to plan for; empty: all.
    pub scope: BTreeSet<String>,
    /// The platform's tier (`pgtenant backup --environment`): how long the final backup of a
    /// dropped database whose marker names no tier of its own is kept. None: the dev tier's.
    pub platform_environment: Option<Environment>,
}

impl PlanContext {
    pub fn in_scope(&self, tenant: &str) -> bool {
        self.scope.is_empty() || self.scope.contains(tenant)
    }
}

pub fn plan(desired: &Desired, observed: &Observed, context: &PlanContext) -> Plan {
    let mut plan = Plan::default();
    for tenant in desired.tenants.iter().filter(|t| context.in_scope(&t.id)) {
        let planner = TenantPlanner {
            tenant,
            observed,
            context,
            ops: Vec::new(),
            blocked: Vec::new(),
        };
        let (operations, blocked) = planner.run();
        plan.operations.extend(operations);
        plan.notices
            .extend(blocked.into_iter().map(|reason| Notice {
                kind: NoticeKind::Blocked,
                tenant: tenant.id.clone(),
                database: Some(tenant.database.to_string()),
                reason,
            }));
    }
    for (database, reason) in &observed.uninspected {
        let tenant = desired
            .tenants
            .iter()
            .find(|t| t.database.as_str() == database);
        plan.notices.push(Notice {
            kind: NoticeKind::Deferred,
            tenant: tenant.map_or_else(|| database.clone(), |t| t.id.clone()),
            database: Some(database.clone()),
            reason: format!("could not look inside the database ({reason}); its schemas and default privileges are compared on the next run"),
        });
    }
    plan_removals(desired, observed, context, &mut plan);
    // Scope before dedupe: a statement two tenants share must stay with the one in scope.
    plan.operations.retain(|op| context.in_scope(&op.tenant));
    plan.notices
        .retain(|notice| context.in_scope(&notice.tenant));
    dedupe(&mut plan.operations);
    plan
}

/// Keeps statements readable and well under any protocol limit.
const RELATIONS_PER_GRANT: usize = 500;

/// Two tenants can ask for the same statement (a membership between their roles is seen from both
/// sides): run it once.
fn dedupe(operations: &mut Vec<Operation>) {
    let mut seen = BTreeSet::new();
    operations.retain(|op| seen.insert((op.database.clone(), op.display())));
}

struct TenantPlanner<'a> {
    tenant: &'a DesiredTenant,
    observed: &'a Observed,
    context: &'a PlanContext,
    ops: Vec<Operation>,
    /// Reasons for [`NoticeKind::Blocked`] notices.
    blocked: Vec<String>,
}

impl TenantPlanner<'_> {
    fn run(mut self) -> (Vec<Operation>, Vec<String>) {
        self.interrupted_password_changes();
        if let Some(reason) = self.preset_changed() {
            return (self.ops, vec![reason]);
        }
        self.roles();
        let created = self.database();
        self.inside_database(created);
        self.ops.sort_by_key(|op| op.phase);
        (self.ops, self.blocked)
    }

    fn push(&mut self, phase: Phase, action: Action, why: impl Into<String>) {
        let inside = matches!(phase, Phase::Schemas | Phase::DefaultPrivileges);
        self.push_at(
            phase,
            inside.then(|| self.tenant.owner().clone()),
            action,
            why,
        );
    }

    /// `run_as`: inside the tenant database as that role (schemas, default privileges) — or, with
    /// `Phase::Extensions` and None, inside it as the control role itself.
    fn push_at(
        &mut self,
        phase: Phase,
        run_as: Option<Ident>,
        action: Action,
        why: impl Into<String>,
    ) {
        let inside = matches!(
            phase,
            Phase::Schemas | Phase::DefaultPrivileges | Phase::Extensions
        );
        self.ops.push(Operation {
            tenant: self.tenant.id.clone(),
            phase,
            database: inside.then(|| self.tenant.database.clone()),
            run_as,
            action,
            why: why.into(),
            destructive: false,
        });
    }

    fn push_sql(&mut self, phase: Phase, sql: String, why: impl Into<String>) {
        self.push(
            phase,
            Action::Sql {
                sql,
                transactional: true,
            },
            why,
        );
    }

    /// A password change of a login role that was started and not settled (its journal entry is in
    /// the store): apply settles it first; until then the stored credential may not log in.
    fn interrupted_password_changes(&mut self) {
        for role in self.tenant.login_roles() {
            let Some(secret_path) = role.secret_path.clone() else {
                continue;
            };
            if self
                .observed
                .stored_paths
                .contains(&crate::rotate::journal_path(&secret_path))
            {
                let why = format!(
                    "interrupted password change for {}: run `pgtenant apply`",
                    role.name
                );
                self.ops.push(Operation {
                    tenant: self.tenant.id.clone(),
                    phase: Phase::PasswordRecovery,
                    database: None,
                    run_as: None,
                    action: Action::FinishPasswordChange {
                        role: role.name.clone(),
                        secret_path,
                    },
                    why,
                    destructive: false,
                });
            }
        }
    }

    /// Roles of this tenant that its preset does not have: the database was made with another role
    /// model. Converting it would change ownership and logins under running applications, so the
    /// tenant is left alone and a person decides.
    fn preset_changed(&self) -> Option<String> {
        let tenant = self.tenant;
        let foreign: Vec<String> = RoleKind::ALL
            .into_iter()
            .filter(|kind| tenant.role(*kind).is_none())
            .map(|kind| crate::desired::role_name(tenant.database.as_str(), kind))
            .filter(|name| {
                self.observed
                    .roles
                    .get(name)
                    .and_then(|r| r.marker())
                    .is_some_and(|m| m.tenant == tenant.id)
            })
            .collect();
        (!foreign.is_empty()).then(|| {
            format!(
                "the database was created with another preset (its roles {} are not part of preset {}): \
                 pgtenant does not convert a database between role models; keep the previous preset, or \
                 declare a new database with this one and restore the data into it (`pgtenant restore --into`)",
                foreign.join(", "),
                tenant.preset.as_str()
            )
        })
    }

    /// The control role joins every tenant role: PostgreSQL lets a non-superuser create a database
    /// owned by the owner role, grant as it and end the tenant's sessions only as a member of those roles.
    fn control_members(&self) -> BTreeSet<String> {
        let server = &self.observed.server;
        if server.is_superuser {
            BTreeSet::new()
        } else {
            BTreeSet::from([server.current_user.clone()])
        }
    }

    fn roles(&mut self) {
        for role in self.tenant.roles.clone() {
            let alternate = self
                .observed
                .roles
                .get(role.alternate.as_str())
                .filter(|a| {
                    a.marker()
                        .is_some_and(|m| m == Marker::alternate(self.tenant, role.kind))
                });
            let mut members = self.control_members();
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
            if let (true, Some(secret_path)) = (exists, &role.secret_path) {
                self.credentials(&role.name, &role.alternate, secret_path);
            }
            if alternate.is_some() {
                // The grace-rotation twin: a login that holds the role's privileges through membership.
                let member_of = BTreeSet::from([role.name.as_str().to_string()]);
                let control = self.control_members();
                self.login_role(
                    &role.alternate,
                    Marker::alternate(self.tenant, role.kind),
                    &role.attributes,
                    &member_of,
                    &control,
                );
                self.role_config(&role.alternate, &role.alternate_config());
                self.role_database_config(&role.alternate);
            }
        }
    }

    /// Attributes, marker and memberships of one tenant role; a role that does not exist yet is
    /// taken as just created with `attributes` and no memberships.
    fn login_role(
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
        for member in members.difference(members_wanted) {
            for statement in self.revoke_membership(name.as_str(), member) {
                self.push_sql(
                    Phase::Roles,
                    statement,
                    format!("`{member}` must not hold the privileges of `{name}`"),
                );
            }
        }
        let control = &self.observed.server.current_user;
        if members_wanted.contains(control) && !members.contains(control) {
            self.push_sql(
                Phase::Roles,
                sql::grant_membership(name, &Ident::new(control.clone()), version),
                "the control role (not a superuser) acts for the tenant through membership",
            );
        }
    }

    /// REVOKE statements that end `member`'s membership in `role`: on PostgreSQL 16+ one per grantor,
    /// since a REVOKE only removes the revoker's own grant (and otherwise merely warns).
    fn revoke_membership(&self, role: &str, member: &str) -> Vec<String> {
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
    fn role_config(&mut self, name: &Ident, wanted: &BTreeMap<&'static str, String>) {
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
    fn role_database_config(&mut self, name: &Ident) {
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
    fn other_tenant_of(&self, role: &str) -> Option<String> {
        self.observed
            .roles
            .get(role)
            .and_then(|r| r.marker())
            .map(|m| m.tenant)
            .filter(|tenant| *tenant != self.tenant.id)
    }

    fn store_is_empty(&self) -> bool {
        !self
            .observed
            .stored_paths
            .iter()
            .any(|p| p.as_str().starts_with("customer/"))
    }

    /// The store must hold credentials for the role (or its grace-rotation alternate, whichever
    /// the last rotation switched to) with the current connection details.
    fn credentials(&mut self, role: &Ident, alternate: &Ident, secret_path: &SecretPath) {
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
                let current = (&stored.endpoint, stored.port, stored.dbname.as_str());
                let wanted = (
                    &self.context.endpoint_host,
                    self.context.endpoint_port,
                    dbname,
                );
                if current != wanted {
                    self.push(
                        Phase::Credentials,
                        Action::StoreCredential {
                            secret_path: secret_path.clone(),
                            dbname: dbname.to_string(),
                        },
                        format!(
                            "stored connection details ({}:{}/{}) differ from {}:{}/{}",
                            current.0, current.1, current.2, wanted.0, wanted.1, wanted.2
                        ),
                    );
                }
            }
        }
    }

    /// Returns whether this plan creates the database.
    fn database(&mut self) -> bool {
        let tenant = self.tenant;
        let owner = tenant.owner();
        let observed = self.observed.databases.get(tenant.database.as_str());
        let mut current = match observed {
            Some(db) => db.clone(),
            None => {
                self.push(
                    Phase::Database,
                    Action::Sql {
                        sql: sql::create_database(&tenant.database, owner),
                        transactional: false,
                    },
                    "declared in the spec; the database does not exist",
                );
                fresh_database(owner)
            }
        };
        if current.owner != owner.as_str() {
            self.push_sql(
                Phase::Database,
                sql::alter_database_owner(&tenant.database, owner),
                format!(
                    "owned by `{}`; the tenant's owner role `{owner}` must own it",
                    current.owner
                ),
            );
            // ALTER … OWNER hands the old owner's ACL entry to the new owner.
            current.acl = transfer_owner(current.acl, &current.owner, owner.as_str());
        }
        if !current.allow_connections {
            self.push_sql(
                Phase::Database,
                sql::alter_database(&tenant.database, "ALLOW_CONNECTIONS true"),
                "connections to the database were disabled; its roles must be able to connect",
            );
        }
        if current.connection_limit != tenant.connection_limit {
            self.push_sql(
                Phase::Database,
                sql::alter_database(
                    &tenant.database,
                    &format!("CONNECTION LIMIT {}", tenant.connection_limit),
                ),
                format!(
                    "connection limit is {}, the spec says {}",
                    current.connection_limit, tenant.connection_limit
                ),
            );
        }
        if !current.settings.is_empty() {
            self.push_sql(
                Phase::Database,
                sql::reset_database_settings(&tenant.database),
                format!(
                    "the database has session defaults ({}) that the spec does not declare: they apply to \
                     every session in it, pgtenant's and other tenants' roles included (`ALTER DATABASE … SET role` \
                     would make them act as another role)",
                    settings_list(&current.settings)
                ),
            );
        }
        let marker = Marker::database(tenant);
        if current.marker().as_ref() != Some(&marker) {
            let why = match (observed, current.marker()) {
                (None, _) => "mark the database as managed by pgtenant, with its mode",
                (Some(_), None) => "adopt the existing database: mark it as managed by pgtenant",
                (Some(_), Some(old)) if old.mode != marker.mode => "the deletion mode changed",
                (Some(_), Some(_)) => "the database's pgtenant marker is out of date",
            };
            self.push_sql(
                Phase::Database,
                sql::comment_on_database(&tenant.database, &marker),
                why,
            );
        }
        let wanted = role_acl(tenant, |access| &access.database);
        for change in diff_acl(&current.acl, &wanted, true) {
            let object = format!("DATABASE {}", tenant.database.quote());
            let (statement, why) = change.render(&object, "the database");
            self.push_sql(Phase::Database, statement, why);
        }
        observed.is_none()
    }

    fn inside_database(&mut self, created: bool) {
        let tenant = self.tenant;
        let owner = tenant.owner().as_str().to_string();
        let catalog = match self
            .observed
            .database_catalogs
            .get(tenant.database.as_str())
        {
            Some(catalog) => catalog.clone(),
            None if created => fresh_catalog(),
            // The reader inspects every declared database that exists; without it we cannot judge.
            None => return,
        };
        let reassigned = self.reassign_objects(&catalog);
        let mut catalog = catalog;
        for relation in &mut catalog.relations {
            if reassigned.contains(&relation.owner) {
                relation.owner = owner.clone();
            }
        }
        self.foreign_grants(&catalog, &reassigned);
        let mut schemas = catalog.schemas.clone();
        if let Some(public) = schemas.get_mut("public") {
            if public.owner != owner {
                self.push_sql(
                    Phase::Schemas,
                    sql::alter_schema_owner(&Ident::new("public"), tenant.owner()),
                    format!(
                        "schema public is owned by `{}`; the tenant's owner role must own it",
                        public.owner
                    ),
                );
                public.acl = transfer_owner(std::mem::take(&mut public.acl), &public.owner, &owner);
                public.owner = owner.clone();
            }
            if public.acl.contains_key(&None) {
                self.push_sql(
                    Phase::Schemas,
                    sql::revoke_all_on(
                        &format!("SCHEMA {}", Ident::new("public").quote()),
                        &[None],
                    ),
                    "PUBLIC must not use schema public: only the tenant's roles may",
                );
            }
        }
        for schema in &tenant.schemas {
            match schemas.get_mut(schema.as_str()) {
                None => {
                    self.push_sql(
                        Phase::Schemas,
                        sql::create_schema(schema, tenant.owner()),
                        format!("schema {schema} is declared and does not exist"),
                    );
                    // A new schema gets the owner's default privileges for schemas at once.
                    schemas.insert(
                        schema.as_str().to_string(),
                        self.new_schema_by_owner(&catalog, &owner),
                    );
                }
                Some(existing) if existing.owner != owner => {
                    self.push_sql(
                        Phase::Schemas,
                        sql::alter_schema_owner(schema, tenant.owner()),
                        format!(
                            "schema {schema} is owned by `{}`; the tenant's owner role must own it",
                            existing.owner
                        ),
                    );
                    existing.acl =
                        transfer_owner(std::mem::take(&mut existing.acl), &existing.owner, &owner);
                    existing.owner = owner.clone();
                }
                Some(_) => {}
            }
        }
        let wanted_schema = role_acl(tenant, |access| &access.schema);
        for (name, schema) in schemas.iter().filter(|(_, s)| s.owner == owner) {
            let object = format!("SCHEMA {}", Ident::new(name.clone()).quote());
            for change in diff_acl(&schema.acl, &wanted_schema, false) {
                let (statement, why) = change.render(&object, &format!("schema {name}"));
                self.push_sql(Phase::Schemas, statement, why);
            }
            self.existing_relations(&catalog, name);
        }
        self.default_privileges(&catalog);
        self.extensions(&catalog);
    }

    /// Objects owned by the tenant's roles other than its owner role go to the owner role (`REASSIGN
    /// OWNED`, as the control role, a member of both): one owner per tenant is what its read and
    /// write roles' grants and default privileges cover, in every preset. A login that owns a
    /// database too is left to a person, since REASSIGN OWNED would hand over that database as well.
    /// Returns the roles whose objects are reassigned.
    fn reassign_objects(&mut self, catalog: &DatabaseCatalog) -> BTreeSet<String> {
        let owner = self.tenant.owner().clone();
        let mut reassigned = BTreeSet::new();
        for (role, objects) in &catalog.owned_by_others {
            let objects: Vec<&str> = objects.iter().map(String::as_str).collect();
            let owned_databases: Vec<&str> = self
                .observed
                .databases
                .iter()
                .filter(|(_, d)| &d.owner == role)
                .map(|(name, _)| name.as_str())
                .collect();
            if !owned_databases.is_empty() {
                self.blocked.push(format!(
                    "`{role}` owns objects in the database ({}) that must belong to the owner role `{owner}`, and \
                     also owns database(s) {}: REASSIGN OWNED would hand those over too, so change the objects' \
                     owner yourself (ALTER … OWNER TO \"{owner}\")",
                    summarize(&objects),
                    owned_databases.join(", ")
                ));
                continue;
            }
            self.push_at(
                Phase::Schemas,
                None,
                Action::Sql {
                    sql: sql::reassign_owned(&Ident::new(role.clone()), &owner),
                    transactional: true,
                },
                format!(
                    "`{role}` owns {} object(s) here ({}): every object of the tenant belongs to its owner \
                     role `{owner}`, or the tenant's other roles get no grants on it (a session that left the \
                     owner role with SET ROLE NONE?)",
                    objects.len(),
                    summarize(&objects)
                ),
            );
            reassigned.insert(role.clone());
        }
        reassigned
    }

    /// Privileges another tenant's roles hold on this tenant's schemas, relations and routines break
    /// isolation (and keep that tenant's roles from being dropped): revoked, as the role that granted
    /// them. Grants to roles pgtenant does not manage are left alone.
    fn foreign_grants(&mut self, catalog: &DatabaseCatalog, reassigned: &BTreeSet<String>) {
        let owner = self.tenant.owner().as_str().to_string();
        let control = self.observed.server.current_user.clone();
        let own: BTreeSet<&str> = self
            .tenant
            .roles
            .iter()
            .flat_map(|r| [r.name.as_str(), r.alternate.as_str()])
            .collect();
        // (class, schema, grantee, run as) → (the grantee's tenant, [(name, arguments)]).
        type Key = (ObjectClass, String, String, Option<String>);
        type Objects<'c> = (String, Vec<(&'c str, &'c str)>);
        let mut grouped: BTreeMap<Key, Objects<'_>> = BTreeMap::new();
        for grant in &catalog.foreign_grants {
            let Some(other) = self.other_tenant_of(&grant.grantee) else {
                continue;
            };
            let grantor = if reassigned.contains(&grant.grantor) {
                owner.as_str()
            } else {
                grant.grantor.as_str()
            };
            let run_as = if own.contains(grantor) {
                Some(grantor.to_string())
            } else if grantor == control {
                None
            } else {
                self.blocked.push(format!(
                    "`{}` (a role of tenant {other}) holds privileges on {} {}.{} granted by `{grantor}`, \
                     which pgtenant cannot act as: revoke them as `{grantor}`",
                    grant.grantee,
                    grant.class.keyword().to_lowercase(),
                    grant.schema,
                    grant.name
                ));
                continue;
            };
            grouped
                .entry((
                    grant.class,
                    grant.schema.clone(),
                    grant.grantee.clone(),
                    run_as,
                ))
                .or_insert_with(|| (other, Vec::new()))
                .1
                .push((grant.name.as_str(), grant.arguments.as_str()));
        }
        for ((class, schema, grantee, run_as), (other, names)) in grouped {
            let schema_ident = Ident::new(schema.clone());
            let shown: Vec<&str> = names.iter().map(|(name, _)| *name).collect();
            let chunks: Vec<(String, String)> = match class {
                ObjectClass::Schema => vec![(
                    format!("SCHEMA {}", schema_ident.quote()),
                    format!("schema {schema}"),
                )],
                ObjectClass::Routine => names
                    .chunks(RELATIONS_PER_GRANT)
                    .map(|chunk| {
                        let named: Vec<&str> = chunk.iter().map(|(name, _)| *name).collect();
                        (
                            sql::routine_list(&schema_ident, chunk),
                            format!("routines of schema {schema} ({})", summarize(&named)),
                        )
                    })
                    .collect(),
                ObjectClass::Table | ObjectClass::Sequence => shown
                    .chunks(RELATIONS_PER_GRANT)
                    .map(|chunk| {
                        (
                            sql::relation_list(class.keyword(), &schema_ident, chunk),
                            format!(
                                "{}s of schema {schema} ({})",
                                class.keyword().to_lowercase(),
                                summarize(chunk)
                            ),
                        )
                    })
                    .collect(),
            };
            for (object, what) in chunks {
                self.push_at(
                    Phase::Schemas,
                    run_as.clone().map(Ident::new),
                    Action::Sql {
                        sql: sql::revoke_all_on(&object, &[Some(Ident::new(grantee.clone()))]),
                        transactional: true,
                    },
                    format!(
                        "`{grantee}` is a role of tenant {other} and holds privileges on {what}: tenants are \
                         isolated from each other (and the grant would keep that tenant's roles from being dropped)"
                    ),
                );
            }
        }
    }

    /// The ACL a schema gets when the owner creates it: the owner's rights plus its default
    /// privileges for schemas as they will be after this plan.
    fn new_schema_by_owner(&self, catalog: &DatabaseCatalog, owner: &str) -> ObservedSchema {
        let mut acl = acl_from_pairs([(Some(owner), "USAGE"), (Some(owner), "CREATE")]);
        let defaults = catalog
            .default_acls
            .get(&(owner.to_string(), "n".to_string()));
        if let Some(defaults) = defaults {
            for (grantee, privileges) in &defaults.acl {
                acl.entry(grantee.clone())
                    .or_default()
                    .extend(privileges.iter().cloned());
            }
        }
        ObservedSchema {
            owner: owner.to_string(),
            acl_text: None,
            acl,
        }
    }

    /// Objects created before the grants (or with grants revoked by hand) get them on the next apply.
    fn existing_relations(&mut self, catalog: &DatabaseCatalog, schema: &str) {
        let schema_ident = Ident::new(schema.to_string());
        for role in self.tenant.roles.clone() {
            for (is_sequence, wanted, keyword) in [
                (false, &role.access.table, "TABLE"),
                (true, &role.access.sequence, "SEQUENCE"),
            ] {
                if wanted.is_empty() {
                    continue;
                }
                let lacking: Vec<&str> = catalog
                    .relations
                    .iter()
                    .filter(|r| r.schema == schema && r.is_sequence == is_sequence)
                    .filter(|r| r.owner == self.tenant.owner().as_str())
                    .filter(|r| !missing_privileges(wanted, &r.acl, &role.name).is_empty())
                    .map(|r| r.name.as_str())
                    .collect();
                // Named one by one, not `ON ALL TABLES IN SCHEMA`: a relation someone else owns there
                // would make the whole GRANT fail on every run.
                for chunk in lacking.chunks(RELATIONS_PER_GRANT) {
                    self.push_sql(
                        Phase::Schemas,
                        sql::grant_on_relations(wanted, keyword, &schema_ident, chunk, &role.name),
                        format!(
                            "{}s of schema {schema} lack {} for the {} role: {}",
                            keyword.to_lowercase(),
                            join_privileges(wanted),
                            role.kind.as_str(),
                            summarize(chunk)
                        ),
                    );
                }
            }
        }
    }

    fn default_privileges(&mut self, catalog: &DatabaseCatalog) {
        let owner = self.tenant.owner().clone();
        for ((role, code), defaults) in &catalog.default_acls {
            if role != owner.as_str() {
                continue;
            }
            let Some(class) = default_object_keyword(code) else {
                continue;
            };
            for grantee in defaults.acl.keys().flatten() {
                if let Some(other) = self.other_tenant_of(grantee) {
                    self.push_sql(
                        Phase::DefaultPrivileges,
                        sql::revoke_default_privileges(&owner, class, &Ident::new(grantee.clone())),
                        format!(
                            "{} the owner creates later would grant `{grantee}`, a role of tenant {other}: \
                             tenants are isolated from each other",
                            class.to_lowercase()
                        ),
                    );
                }
            }
        }
        for object in DefaultObject::ALL {
            let current = catalog
                .default_acls
                .get(&(
                    owner.as_str().to_string(),
                    object.catalog_code().to_string(),
                ))
                .map(|d| d.acl.clone())
                .unwrap_or_default();
            for role in self.tenant.roles.clone().iter().filter(|r| !r.owner) {
                let missing = missing_privileges(object.grants(&role.access), &current, &role.name);
                if missing.is_empty() {
                    continue;
                }
                self.push_sql(
                    Phase::DefaultPrivileges,
                    sql::alter_default_privileges(&owner, &missing, object.sql_keyword(), &role.name),
                    format!(
                        "{} that the owner creates later must grant {} to the {} role automatically",
                        object.sql_keyword().to_lowercase(),
                        join_privileges(&missing),
                        role.kind.as_str()
                    ),
                );
            }
        }
    }

    /// Declared extensions that are missing: trusted ones created by the owner, others only when
    /// the platform allows them, by the control role; what cannot be created blocks this tenant only.
    fn extensions(&mut self, catalog: &DatabaseCatalog) {
        for name in &self.tenant.extensions {
            if catalog.extensions.contains(name) {
                continue;
            }
            let statement = sql::create_extension(&Ident::new(name.clone()), &Ident::new("public"));
            match self.observed.available_extensions.get(name) {
                None => self.blocked.push(format!(
                    "extension {name} is not available on this server (pg_available_extensions): install its \
                     package on the database host or remove it from the spec"
                )),
                Some(true) => {
                    let owner = self.tenant.owner().clone();
                    self.push_at(
                        Phase::Extensions,
                        Some(owner),
                        Action::Sql { sql: statement, transactional: true },
                        format!("extension {name} is declared (trusted: the owner may create it)"),
                    );
                }
                Some(false) if self.context.superuser_extensions.contains(name) => self.push_at(
                    Phase::Extensions,
                    None,
                    Action::Sql { sql: statement, transactional: true },
                    format!("extension {name} is declared and on the platform's superuser allowlist"),
                ),
                Some(false) => self.blocked.push(format!(
                    "extension {name} needs superuser to create and is not on the platform's allowlist \
                     (--superuser-extensions): ask the platform team to allow it, or create it in a migration \
                     if your managed service trusts it"
                )),
            }
        }
    }
}

/// The removal half of the plan: tenants the cluster marks as ours that the repo no longer declares.
fn plan_removals(desired: &Desired, observed: &Observed, context: &PlanContext, plan: &mut Plan) {
    let (guard, now) = (&context.guard, context.now.as_str());
    let declared: BTreeSet<&str> = desired.tenants.iter().map(|t| t.id.as_str()).collect();
    // Names a declared tenant derives are never dropped, whatever tenant their marker names: a
    // namespace/name split that changed (`a-b/c` → `a/b-c`) maps to the same database and adopts it.
    let derived: BTreeSet<&str> = desired
        .tenants
        .iter()
        .flat_map(|t| {
            std::iter::once(t.database.as_str()).chain(
                t.roles
                    .iter()
                    .flat_map(|r| [r.name.as_str(), r.alternate.as_str()]),
            )
        })
        .collect();
    let mut removed: BTreeMap<String, Removed> = BTreeMap::new();
    for (name, db) in observed
        .databases
        .iter()
        .filter(|(n, _)| !derived.contains(n.as_str()))
    {
        if let Some(marker) = db.marker() {
            let entry = removed.entry(marker.tenant.clone()).or_default();
            // A marker without a mode is not ours to judge: treat it as protected.
            entry.database = Some((name.clone(), marker.mode.unwrap_or(Mode::Protected)));
            entry.marker = Some(marker);
        }
    }
    for (name, role) in observed
        .roles
        .iter()
        .filter(|(n, _)| !derived.contains(n.as_str()))
    {
        if let Some(Marker {
            tenant,
            role: Some(kind),
            ..
        }) = role.marker()
        {
            removed
                .entry(tenant)
                .or_default()
                .roles
                .push((name.clone(), kind));
        }
    }
    removed.retain(|tenant, _| !declared.contains(tenant.as_str()));

    let dropping: Vec<&String> = removed
        .iter()
        .filter(|(_, found)| !matches!(found.database, Some((_, Mode::Protected))))
        .map(|(tenant, _)| tenant)
        .collect();
    let databases_dropping = removed
        .values()
        .filter(|found| matches!(found.database, Some((_, Mode::Standard))))
        .count();
    let declared_namespaces: BTreeSet<&str> = desired
        .tenants
        .iter()
        .map(|t| t.namespace.as_str())
        .collect();
    let hold_all = desired.drops_held_because.clone().or_else(|| {
        if desired.tenants.is_empty() && !dropping.is_empty() && !guard.allow_empty_repo {
            Some("no database is declared in the repo (the wrong directory?): nothing is dropped; \
                  pass --allow-empty-repo to remove every tenant"
                .to_string())
        } else if databases_dropping > guard.max_drops {
            Some(format!(
                "{databases_dropping} databases would be dropped, more than --max-drops {}: nothing is dropped; \
                 rerun with --max-drops {databases_dropping} if that is intended",
                guard.max_drops
            ))
        } else {
            None
        }
    });

    // Databases dropped in this run: nothing is left to clear inside them.
    let mut dropped_here: BTreeSet<String> = BTreeSet::new();
    for (tenant, found) in removed {
        let database = found.database.as_ref().map(|(name, _)| name.clone());
        let notice = |kind, reason: String| Notice {
            kind,
            tenant: tenant.clone(),
            database: database.clone(),
            reason,
        };
        // Not removed at all, as far as anyone can tell: its file may still declare it.
        if let Some(reason) = desired.undeclared_because_of_errors(&tenant) {
            plan.notices.push(notice(NoticeKind::Held, reason));
            continue;
        }
        if let Some((name, Mode::Protected)) = &found.database {
            // Only when the repo is trustworthy: a broken file may still declare it.
            let unmarked = found
                .marker
                .as_ref()
                .filter(|m| m.orphaned_since.is_none() && hold_all.is_none());
            if let Some(marker) = unmarked {
                let marked = Marker {
                    orphaned_since: Some(now.to_string()),
                    ..marker.clone()
                };
                plan.operations.push(Operation {
                    tenant: tenant.clone(),
                    phase: Phase::Database,
                    database: None,
                    run_as: None,
                    action: Action::Sql {
                        sql: sql::comment_on_database(&Ident::new(name.clone()), &marked),
                        transactional: true,
                    },
                    why: "record since when the protected database is no longer declared (`pgtenant list`)".into(),
                    destructive: false,
                });
            }
            plan.notices.push(notice(
                NoticeKind::Retained,
                "protected: removed from the repo, so no longer reconciled; the database, its roles and \
                 credentials are kept. Declare it again to adopt it with its data; to drop it, first set \
                 `mode: standard` and apply, then remove it."
                    .into(),
            ));
            continue;
        }
        if let Some(reason) = &hold_all {
            plan.notices.push(notice(NoticeKind::Held, reason.clone()));
            continue;
        }
        let namespace = tenant.split_once('/').map_or(tenant.as_str(), |(ns, _)| ns);
        let namespace_allowed =
            guard.allow_empty_repo || guard.allow_namespace_removal.iter().any(|n| n == namespace);
        if !declared_namespaces.contains(namespace) && !namespace_allowed {
            plan.notices.push(notice(
                NoticeKind::Held,
                format!(
                    "namespace {namespace} declares no database any more (a folder lost in a merge?): nothing in it \
                     is dropped; pass --allow-namespace-removal {namespace} if it is meant to go"
                ),
            ));
            continue;
        }
        let renamed_to: Vec<&str> = desired
            .tenants
            .iter()
            .filter(|t| {
                t.namespace == namespace && !observed.databases.contains_key(t.database.as_str())
            })
            .map(|t| t.id.as_str())
            .collect();
        let rename_hint = match renamed_to.as_slice() {
            [] => String::new(),
            new => format!(
                "; {} is new in the same namespace: if this is a rename, note that a rename is a drop and a create, \
                 the data is not moved (keep the old name, or restore the final backup into the new one)",
                new.join(", ")
            ),
        };
        let drop_in = |database: Option<Ident>, action: Action, why: String| Operation {
            tenant: tenant.clone(),
            phase: Phase::Drop,
            database,
            run_as: None,
            action,
            why,
            destructive: true,
        };
        let drop = |action: Action, why: String| drop_in(None, action, why);
        let mut roles = found.roles;
        roles.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
        if let Some((name, _)) = &found.database {
            let database = Ident::new(name.clone());
            let environment = found
                .marker
                .as_ref()
                .and_then(|m| m.environment)
                .or(context.platform_environment)
                .unwrap_or_default();
            let before_drop = |phase, action, why: &str| Operation {
                phase,
                destructive: false,
                ..drop(action, why.to_string())
            };
            plan.operations.push(before_drop(
                Phase::StopLogins,
                Action::StopLogins {
                    database: database.clone(),
                    roles: roles.iter().map(|(n, _)| Ident::new(n.clone())).collect(),
                },
                "the final backup must hold the last write: nothing may write between the dump and the drop",
            ));
            plan.operations.push(before_drop(
                Phase::FinalBackup,
                Action::FinalBackup {
                    database,
                    environment,
                    retention_days: environment.retention_days(),
                },
                &format!(
                    "a standard database is dropped only after its final backup (tier {}, `pgtenant trash list`, \
                     `pgtenant trash restore`); if the backup fails it is not dropped and its logins are given back",
                    environment.as_str()
                ),
            ));
            plan.operations.push(drop(
                Action::Sql { sql: sql::drop_database(&Ident::new(name.clone())), transactional: false },
                format!("mode standard and removed from the repo: its logins are stopped and a final backup is taken to the trash \
                         (kept for its tier's retention, `pgtenant trash list`), then it is dropped, open sessions terminated{rename_hint}"),
            ));
            dropped_here.insert(name.clone());
        }
        if !roles.is_empty() {
            let idents: Vec<Ident> = roles.iter().map(|(n, _)| Ident::new(n.clone())).collect();
            plan.operations.push(drop(
                Action::Sql { sql: sql::terminate_sessions_of(&idents), transactional: true },
                "the removed tenant's roles end their sessions on every database: a temporary table one of \
                 them holds (in `postgres`, say) would keep DROP ROLE from succeeding"
                    .into(),
            ));
        }
        // Where the roles still own or hold something outside their own database (another tenant
        // granted them a privilege, say): cleared there, in those databases only.
        let own_database = found.database.as_ref().map(|(name, _)| name.as_str());
        let mut elsewhere: BTreeMap<Option<String>, Vec<Ident>> = BTreeMap::new();
        for (name, _) in &roles {
            for database in observed.role_dependencies.get(name).into_iter().flatten() {
                if database.as_deref() != own_database {
                    elsewhere
                        .entry(database.clone())
                        .or_default()
                        .push(Ident::new(name.clone()));
                }
            }
        }
        for (database, holders) in elsewhere {
            let why = format!(
                "the roles {} still own objects or hold privileges {} (granted by another tenant?): DROP ROLE \
                 fails until they are cleared there",
                names(&holders),
                database.as_ref().map_or_else(
                    || "on shared objects (another database, a tablespace)".to_string(),
                    |d| format!("in database {d}")
                ),
            );
            plan.operations.push(drop_in(
                database.map(Ident::new),
                Action::Sql {
                    sql: sql::drop_owned(&holders),
                    transactional: true,
                },
                why,
            ));
        }
        for (name, _) in &roles {
            plan.operations.push(drop(
                Action::Sql {
                    sql: sql::drop_role(&Ident::new(name.clone())),
                    transactional: true,
                },
                "role of a removed standard database".into(),
            ));
        }
        if let Some((namespace, database)) = tenant.split_once('/') {
            let kinds: BTreeSet<RoleKind> = roles.iter().map(|(_, kind)| *kind).collect();
            for kind in kinds {
                let secret_path = SecretPath::for_role(namespace, database, kind.as_str());
                if observed.stored_paths.contains(&secret_path) {
                    plan.operations.push(drop(
                        Action::DeleteCredential { secret_path },
                        "credentials of a dropped role".into(),
                    ));
                }
            }
        }
    }
    plan.operations.retain(|op| {
        op.phase != Phase::Drop
            || op
                .database
                .as_ref()
                .is_none_or(|d| !dropped_here.contains(d.as_str()))
    });
}

/// Limits on what one run may drop (issue: a bad merge, a wrong directory, a mistyped key).
#[derive(Debug, Clone)]
pub struct DropGuard {
    /// At most this many databases dropped in one run; more holds every drop.
    pub max_drops: usize,
    /// Allow drops when the repo declares no database at all (and so of whole namespaces).
    pub allow_empty_repo: bool,
    /// Namespaces that may lose all their databases in this run.
    pub allow_namespace_removal: Vec<String>,
}

impl Default for DropGuard {
    fn default() -> Self {
        DropGuard {
            max_drops: 1,
            allow_empty_repo: false,
            allow_namespace_removal: Vec::new(),
        }
    }
}

#[derive(Default)]
struct Removed {
    marker: Option<Marker>,
    database: Option<(String, Mode)>,
    roles: Vec<(String, RoleKind)>,
}

/// What `CREATE DATABASE … OWNER admin` yields on PostgreSQL 15+: owner rights, plus CONNECT and TEMP for PUBLIC.
fn fresh_database(admin: &Ident) -> ObservedDatabase {
    ObservedDatabase {
        owner: admin.as_str().to_string(),
        comment: None,
        acl_text: None,
        acl: acl_from_pairs([
            (Some(admin.as_str()), "CREATE"),
            (Some(admin.as_str()), "TEMPORARY"),
            (Some(admin.as_str()), "CONNECT"),
            (None, "TEMPORARY"),
            (None, "CONNECT"),
        ]),
        allow_connections: true,
        connection_limit: -1,
        settings: BTreeMap::new(),
    }
}

/// A new database's catalog on PostgreSQL 15+: schema public owned by pg_database_owner, USAGE for PUBLIC.
fn fresh_catalog() -> DatabaseCatalog {
    let owner = "pg_database_owner";
    let public = ObservedSchema {
        owner: owner.into(),
        acl_text: None,
        acl: acl_from_pairs([
            (Some(owner), "USAGE"),
            (Some(owner), "CREATE"),
            (None, "USAGE"),
        ]),
    };
    DatabaseCatalog {
        schemas: BTreeMap::from([("public".to_string(), public)]),
        ..DatabaseCatalog::default()
    }
}

fn transfer_owner(mut acl: Acl, old: &str, new: &str) -> Acl {
    if let Some(privileges) = acl.remove(&Some(old.to_string())) {
        acl.entry(Some(new.to_string()))
            .or_default()
            .extend(privileges);
    }
    acl
}

/// The wanted ACL of an object: each tenant role with what the policy gives it.
fn role_acl(
    tenant: &DesiredTenant,
    access_of: fn(&Access) -> &Privileges,
) -> BTreeMap<Ident, Privileges> {
    tenant
        .roles
        .iter()
        .map(|role| (role.name.clone(), access_of(&role.access).clone()))
        .filter(|(_, privileges)| !privileges.is_empty())
        .collect()
}

/// One GRANT or REVOKE that moves an ACL towards the wanted one.
enum AclChange {
    Grant {
        privileges: BTreeSet<&'static str>,
        grantees: Vec<Ident>,
    },
    RevokeAll {
        grantee: Option<Ident>,
    },
    Revoke {
        privileges: BTreeSet<String>,
        grantee: Ident,
    },
}

impl AclChange {
    fn render(&self, object: &str, what: &str) -> (String, String) {
        match self {
            AclChange::Grant {
                privileges,
                grantees,
            } => (
                sql::grant_on(privileges, object, grantees),
                format!(
                    "{} on {what} missing for {}",
                    join_privileges(privileges),
                    names(grantees)
                ),
            ),
            AclChange::RevokeAll { grantee: None } => (
                sql::revoke_all_on(object, &[None]),
                format!(
                    "PUBLIC must have no access to {what}: tenants are isolated from each other"
                ),
            ),
            AclChange::RevokeAll {
                grantee: Some(role),
            } => (
                sql::revoke_all_on(object, &[Some(role.clone())]),
                format!(
                    "`{role}` is not one of this tenant's roles and must have no access to {what}"
                ),
            ),
            AclChange::Revoke {
                privileges,
                grantee,
            } => {
                let grant_options: BTreeSet<&str> = privileges
                    .iter()
                    .filter_map(|p| p.strip_suffix(GRANT_OPTION_SUFFIX))
                    .collect();
                let plain: BTreeSet<&str> = privileges
                    .iter()
                    .map(String::as_str)
                    .filter(|p| !p.ends_with(GRANT_OPTION_SUFFIX))
                    .collect();
                // CASCADE: whatever the role granted on with its option goes too (another tenant's
                // CONNECT, for one), which a REVOKE by the owner alone would leave in place.
                let statement = match (plain.is_empty(), grant_options.is_empty()) {
                    (false, _) => sql::revoke_on(
                        &plain.union(&grant_options).copied().collect(),
                        object,
                        grantee,
                    ),
                    (true, _) => sql::revoke_grant_option(&grant_options, object, grantee),
                };
                let held = privileges.iter().map(String::as_str).collect();
                (
                    statement,
                    format!(
                        "`{grantee}` holds {} on {what} beyond least privilege",
                        join_privileges(&held)
                    ),
                )
            }
        }
    }
}

const GRANT_OPTION_SUFFIX: &str = " WITH GRANT OPTION";

/// Grants missing privileges (roles lacking the same set share one GRANT). With `exact`, also revokes
/// what anyone else holds and what the tenant's roles hold beyond the policy.
fn diff_acl(
    current: &Acl,
    wanted: &BTreeMap<Ident, BTreeSet<&'static str>>,
    exact: bool,
) -> Vec<AclChange> {
    let mut changes = Vec::new();
    if exact {
        for (grantee, held) in current {
            let wanted_here = grantee
                .as_ref()
                .and_then(|g| wanted.get(&Ident::new(g.clone())));
            match wanted_here {
                None => changes.push(AclChange::RevokeAll {
                    grantee: grantee.clone().map(Ident::new),
                }),
                Some(wanted_here) => {
                    let extra: BTreeSet<String> = held
                        .iter()
                        .filter(|p| !wanted_here.contains(p.as_str()))
                        .cloned()
                        .collect();
                    if !extra.is_empty() {
                        changes.push(AclChange::Revoke {
                            privileges: extra,
                            grantee: Ident::new(grantee.clone().unwrap_or_default()),
                        });
                    }
                }
            }
        }
    }
    let mut missing_by_set: BTreeMap<BTreeSet<&'static str>, Vec<Ident>> = BTreeMap::new();
    for (grantee, wanted_here) in wanted {
        let missing = missing_privileges(wanted_here, current, grantee);
        if !missing.is_empty() {
            missing_by_set
                .entry(missing)
                .or_default()
                .push(grantee.clone());
        }
    }
    changes.extend(
        missing_by_set
            .into_iter()
            .map(|(privileges, grantees)| AclChange::Grant {
                privileges,
                grantees,
            }),
    );
    changes
}

/// What `grantee` lacks of `wanted` in `acl`.
fn missing_privileges(
    wanted: &BTreeSet<&'static str>,
    acl: &Acl,
    grantee: &Ident,
) -> BTreeSet<&'static str> {
    let held = acl.get(&Some(grantee.as_str().to_string()));
    wanted
        .iter()
        .copied()
        .filter(|p| !held.is_some_and(|h| h.contains(*p)))
        .collect()
}

/// Privileges for messages, in the order statements list them.
fn join_privileges(privileges: &BTreeSet<&str>) -> String {
    sql::privilege_list(privileges)
}

fn names(idents: &[Ident]) -> String {
    idents
        .iter()
        .map(|i| format!("`{i}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `key=value, …` for messages.
fn settings_list(settings: &BTreeMap<String, String>) -> String {
    settings
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `pg_default_acl.defaclobjtype` as `ALTER DEFAULT PRIVILEGES` names it.
fn default_object_keyword(code: &str) -> Option<&'static str> {
    match code {
        "r" => Some("TABLES"),
        "S" => Some("SEQUENCES"),
        "f" => Some("FUNCTIONS"),
        "T" => Some("TYPES"),
        "n" => Some("SCHEMAS"),
        _ => None,
    }
}

fn summarize(items: &[&str]) -> String {
    const SHOWN: usize = 5;
    let mut text = items
        .iter()
        .take(SHOWN)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > SHOWN {
        text.push_str(&format!(" and {} more", items.len() - SHOWN));
    }
    text
}

#[cfg(test)]
mod tests;
