//! The planner: Desired × Observed → an ordered list of idempotent operations. Pure: no I/O, so every
//! decision is unit- and snapshot-tested. Statement text is built in [`crate::sql`].

use std::collections::{BTreeMap, BTreeSet};

use pgtenant_secrets::{PoolerAddress, SecretPath};
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

mod acl;
mod database;
mod inside;
mod removals;
mod roles;

use acl::*;
pub use removals::DropGuard;
use removals::*;

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
        /// The pooled endpoint written into a new credential (a pooled tenant on a cluster with a
        /// pooler).
        #[serde(skip_serializing_if = "Option::is_none")]
        pooler: Option<PoolerAddress>,
    },
    /// Refresh the connection details of a stored credential; the password is kept.
    StoreCredential {
        secret_path: SecretPath,
        dbname: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        pooler: Option<PoolerAddress>,
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
    /// Where applications connect through the cluster's pooler; None: no pooler.
    pub pooler: Option<PoolerAddress>,
    /// The pooler authenticates with `auth_query` (`pooler.auth: query`): every tenant database
    /// needs the lookup function ([`sql::pooler_lookup`]).
    pub pooler_lookup: bool,
    pub guard: DropGuard,
    /// Extensions that need superuser and that the platform allows (seed 004's `superuser_extensions`).
    pub superuser_extensions: BTreeSet<String>,
    /// The iteration count tenant logins' SCRAM verifiers must have (`passwords.scramIterations`).
    pub scram_iterations: u32,
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

    /// The pooled endpoint of `tenant`'s credentials: the cluster's pooler unless the tenant
    /// opted out (`pooling: none`).
    pub fn pooler_for(&self, tenant: &DesiredTenant) -> Option<PoolerAddress> {
        let opted_out = tenant.pooling == Some(pgtenant_spec::Pooling::Off);
        self.pooler.clone().filter(|_| !opted_out)
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
/// sides): run it once. Not the pooler's lookup role: each tenant's later grant to it needs it to
/// exist, and tenants run concurrently, so each creates it itself (the statement is idempotent).
fn dedupe(operations: &mut Vec<Operation>) {
    let lookup_role = sql::pooler_lookup_role();
    let is_lookup_role =
        |op: &Operation| matches!(&op.action, Action::Sql { sql, .. } if *sql == lookup_role);
    let mut seen = BTreeSet::new();
    operations.retain(|op| {
        is_borrow(op) || is_lookup_role(op) || seen.insert((op.database.clone(), op.display()))
    });
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
        if let Some(reason) = self.pooler_lookup_refused() {
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

    /// The control role when it is not a superuser: it is given `CONNECT` on every tenant database
    /// directly, so that connecting needs no walk over its memberships (a superuser needs none).
    fn control_role(&self) -> Option<Ident> {
        let server = &self.observed.server;
        (!server.is_superuser).then(|| Ident::new(server.current_user.clone()))
    }

    /// `statements` in `phase` as the control role itself (on its own connection, or inside the
    /// tenant database for the inside phases), borrowing `roles` for their one transaction: see
    /// [`borrowing`].
    fn push_borrowing(&mut self, phase: Phase, roles: &[Ident], statements: Vec<(String, String)>) {
        let ops: Vec<Operation> = statements
            .into_iter()
            .map(|(sql, why)| {
                self.push_at(
                    phase,
                    None,
                    Action::Sql {
                        sql,
                        transactional: true,
                    },
                    why,
                );
                self.ops.pop().expect("just pushed")
            })
            .collect();
        let control = self.control_role();
        self.ops.extend(borrowing(control.as_ref(), roles, ops));
    }
}

/// Why a [`sql::lend`] operation is in the plan.
pub(crate) const LEND_WHY: &str =
    "pgtenant's own: the control role holds no standing membership in tenant roles; it is granted \
     this one for the transaction of the next statements only";
/// Why a [`sql::take_back`] operation is in the plan.
pub(crate) const TAKE_BACK_WHY: &str =
    "pgtenant's own: taken back before COMMIT, so the membership is never committed";

/// `ops` (transactional, on one connection) wrapped in `GRANT role TO control` … `REVOKE role FROM
/// control`: the executor runs consecutive transactional statements of one connection as one
/// transaction, so the control role has the roles' privileges for exactly that transaction and a
/// failure rolls the grant back with everything else. A superuser control role (`control` None)
/// needs no membership: `ops` unchanged.
pub(crate) fn borrowing(
    control: Option<&Ident>,
    roles: &[Ident],
    ops: Vec<Operation>,
) -> Vec<Operation> {
    let (Some(control), Some(first)) = (control, ops.first()) else {
        return ops;
    };
    if roles.is_empty() {
        return ops;
    }
    let around = |sql: String, why: &str| Operation {
        action: Action::Sql {
            sql,
            transactional: true,
        },
        why: why.to_string(),
        destructive: false,
        run_as: None,
        ..first.clone()
    };
    let mut wrapped: Vec<Operation> = roles
        .iter()
        .map(|role| around(sql::lend(role, Some(control)), LEND_WHY))
        .collect();
    let back: Vec<Operation> = roles
        .iter()
        .map(|role| around(sql::take_back(role, Some(control)), TAKE_BACK_WHY))
        .collect();
    wrapped.extend(ops);
    wrapped.extend(back);
    wrapped
}

/// A [`borrowing`] grant or revoke: never deduplicated (each pairs with the statements beside it).
fn is_borrow(op: &Operation) -> bool {
    op.why == LEND_WHY || op.why == TAKE_BACK_WHY
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
