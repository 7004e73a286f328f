//! The `check` report: per tenant, what the cluster holds (roles with attributes and memberships,
//! database ACL, schema ACLs, default ACLs) and the drift items, shaped after the role manager's report
//! that seed 004 shows (`roles`, `roles_with_groups`, `schema_privileges`).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::desired::{Desired, RoleAttributes};
use crate::observed::Observed;
use crate::plan::{Notice, Plan};

#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub in_sync: bool,
    pub tenants: Vec<TenantReport>,
    /// Removed tenants: retained (protected), held back, or pending a drop (`drift` of the tenant).
    pub notices: Vec<Notice>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TenantReport {
    pub tenant: String,
    pub database: String,
    /// `in-sync`, `drift`, `missing` (the database does not exist yet) or `deferred` (it could not be inspected).
    pub status: &'static str,
    pub mode: Option<String>,
    pub database_owner: Option<String>,
    pub database_acl: Option<String>,
    pub roles: Vec<RoleReport>,
    /// Each role's groups, comma-separated, as seed 004's role manager prints them.
    pub roles_with_groups: BTreeMap<String, String>,
    pub schema_privileges: BTreeMap<String, Option<String>>,
    pub default_privileges: Vec<DefaultPrivilegeReport>,
    pub drift: Vec<DriftItem>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RoleReport {
    pub name: String,
    pub exists: bool,
    #[serde(flatten)]
    pub attributes: Option<RoleAttributes>,
    pub member_of: Vec<String>,
    pub members: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DefaultPrivilegeReport {
    pub role: String,
    pub object: &'static str,
    pub acl: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct DriftItem {
    pub phase: &'static str,
    pub what: String,
    pub fix: String,
}

pub fn report(desired: &Desired, observed: &Observed, plan: &Plan) -> CheckReport {
    let mut tenants = Vec::new();
    for tenant in &desired.tenants {
        let database = observed.databases.get(tenant.database.as_str());
        let catalog = observed.database_catalogs.get(tenant.database.as_str());
        let drift: Vec<DriftItem> = plan
            .operations
            .iter()
            .filter(|op| op.tenant == tenant.id)
            .map(|op| DriftItem {
                phase: op.phase.as_str(),
                what: op.why.clone(),
                fix: op.display(),
            })
            .collect();
        let roles: Vec<RoleReport> = tenant
            .roles
            .iter()
            .map(|role| {
                let observed_role = observed.roles.get(role.name.as_str());
                RoleReport {
                    name: role.name.to_string(),
                    exists: observed_role.is_some(),
                    attributes: observed_role.map(|r| r.attributes),
                    member_of: observed_role
                        .map(|r| r.member_of.iter().cloned().collect())
                        .unwrap_or_default(),
                    members: observed_role
                        .map(|r| r.members.iter().cloned().collect())
                        .unwrap_or_default(),
                }
            })
            .collect();
        let roles_with_groups = roles
            .iter()
            .filter(|r| r.exists)
            .map(|r| (r.name.clone(), r.member_of.join(",")))
            .collect();
        let default_privileges = catalog
            .map(|c| {
                c.default_acls
                    .iter()
                    .filter(|((role, _), _)| role == tenant.owner().as_str())
                    .map(|((role, code), acl)| DefaultPrivilegeReport {
                        role: role.clone(),
                        object: object_name(code),
                        acl: acl.acl_text.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        tenants.push(TenantReport {
            tenant: tenant.id.clone(),
            database: tenant.database.to_string(),
            status: match (database, drift.is_empty()) {
                (None, _) => "missing",
                _ if observed.uninspected.contains_key(tenant.database.as_str()) => "deferred",
                (Some(_), true) => "in-sync",
                (Some(_), false) => "drift",
            },
            mode: database
                .and_then(|d| d.marker())
                .and_then(|m| m.mode)
                .map(|m| m.as_str().to_string()),
            database_owner: database.map(|d| d.owner.clone()),
            database_acl: database.and_then(|d| d.acl_text.clone()),
            roles,
            roles_with_groups,
            schema_privileges: catalog
                .map(|c| {
                    c.schemas
                        .iter()
                        .map(|(name, s)| (name.clone(), s.acl_text.clone()))
                        .collect()
                })
                .unwrap_or_default(),
            default_privileges,
            drift,
        });
    }
    CheckReport {
        in_sync: plan.is_converged(),
        tenants,
        notices: plan.notices.clone(),
    }
}

fn object_name(code: &str) -> &'static str {
    match code {
        "r" => "tables",
        "S" => "sequences",
        "n" => "schemas",
        "f" => "functions",
        "T" => "types",
        _ => "other",
    }
}
