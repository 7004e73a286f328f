//! The ACL diff: what a new database and its catalog hold, the wanted ACL of an object, and the
//! GRANTs and REVOKEs that move an observed ACL to it.

use super::*;

/// What `CREATE DATABASE … OWNER admin` yields on PostgreSQL 15+: owner rights, plus CONNECT and TEMP for PUBLIC.
pub(super) fn fresh_database(admin: &Ident) -> ObservedDatabase {
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
pub(super) fn fresh_catalog() -> DatabaseCatalog {
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

pub(super) fn transfer_owner(mut acl: Acl, old: &str, new: &str) -> Acl {
    if let Some(privileges) = acl.remove(&Some(old.to_string())) {
        acl.entry(Some(new.to_string()))
            .or_default()
            .extend(privileges);
    }
    acl
}

/// The wanted ACL of an object: each tenant role with what the policy gives it.
pub(super) fn role_acl(
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
pub(super) enum AclChange {
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
    pub(super) fn render(&self, object: &str, what: &str) -> (String, String) {
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

pub(super) const GRANT_OPTION_SUFFIX: &str = " WITH GRANT OPTION";

/// Grants missing privileges (roles lacking the same set share one GRANT). With `exact`, also revokes
/// what anyone else holds and what the tenant's roles hold beyond the policy.
pub(super) fn diff_acl(
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
pub(super) fn missing_privileges(
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
pub(super) fn join_privileges(privileges: &BTreeSet<&str>) -> String {
    sql::privilege_list(privileges)
}
