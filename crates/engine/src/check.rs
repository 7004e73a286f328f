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
    /// `datacl`, as [`AclEntry`] items (null: the default ACL).
    #[serde(serialize_with = "acl_json::optional")]
    pub database_acl: Option<String>,
    pub roles: Vec<RoleReport>,
    /// Each role's groups, comma-separated, as seed 004's role manager prints them.
    pub roles_with_groups: BTreeMap<String, String>,
    /// Each schema's `nspacl`, as [`AclEntry`] items (null: the default ACL).
    #[serde(serialize_with = "acl_json::by_name")]
    pub schema_privileges: BTreeMap<String, Option<String>>,
    pub default_privileges: Vec<DefaultPrivilegeReport>,
    pub drift: Vec<DriftItem>,
    /// How the state inside the database is known: `this-run` (read in this run; also when the
    /// database does not exist), `trusted` (from the last verification: nothing ran in the
    /// database since, by its statistics), null when it could not be inspected.
    pub verified: Option<&'static str>,
    /// When the database was last read (RFC 3339, UTC); null when it does not exist or could
    /// not be inspected.
    pub verified_at: Option<String>,
    /// How long ago that was, for the text report.
    #[serde(skip)]
    pub verified_age: Option<std::time::Duration>,
    /// The tenant's pool in the cluster's pgbouncer (filled by the caller that has one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pooler: Option<serde_json::Value>,
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
    #[serde(serialize_with = "acl_json::required")]
    pub acl: String,
}

/// One item of an ACL as the JSON report gives it (the text report shows the server's `aclitem[]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AclEntry {
    /// A role name, or `PUBLIC` (as `information_schema` names it).
    pub grantee: String,
    /// Privilege names as GRANT spells them (`SELECT`, `CONNECT`…).
    pub privileges: Vec<String>,
    pub grantor: String,
    /// Those of `privileges` held WITH GRANT OPTION; left out when none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub grantable: Vec<String>,
}

/// Parses the server's text form of an `aclitem[]` (`{"\"a-b\"=r*/owner",=c/owner}`).
pub fn parse_acl(text: &str) -> Vec<AclEntry> {
    array_elements(text)
        .iter()
        .map(|item| parse_aclitem(item))
        .collect()
}

/// The elements of an array literal: `{a,"b \"c\""}` → `a`, `b "c"`.
fn array_elements(text: &str) -> Vec<String> {
    let inner = text
        .trim()
        .strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .unwrap_or(text);
    let mut elements = Vec::new();
    let mut chars = inner.chars().peekable();
    while chars.peek().is_some() {
        let mut element = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => element.extend(chars.next()),
                    '"' => break,
                    c => element.push(c),
                }
            }
            // Up to the separator.
            for c in chars.by_ref() {
                if c == ',' {
                    break;
                }
            }
        } else {
            for c in chars.by_ref() {
                if c == ',' {
                    break;
                }
                element.push(c);
            }
        }
        elements.push(element);
    }
    elements
}

/// `grantee=privileges/grantor`, names double-quoted when they need it, `*` after a privilege
/// letter for its grant option.
fn parse_aclitem(item: &str) -> AclEntry {
    let mut chars = item.chars().peekable();
    let name = |chars: &mut std::iter::Peekable<std::str::Chars<'_>>, end: char| {
        let mut name = String::new();
        let mut quoted = false;
        while let Some(&c) = chars.peek() {
            chars.next();
            match c {
                '"' if quoted && chars.peek() == Some(&'"') => {
                    chars.next();
                    name.push('"');
                }
                '"' => quoted = !quoted,
                c if c == end && !quoted => break,
                c => name.push(c),
            }
        }
        name
    };
    let grantee = name(&mut chars, '=');
    let mut privileges = Vec::new();
    let mut grantable = Vec::new();
    while let Some(c) = chars.next() {
        if c == '/' {
            break;
        }
        let privilege = privilege_name(c);
        if chars.peek() == Some(&'*') {
            chars.next();
            grantable.push(privilege.clone());
        }
        privileges.push(privilege);
    }
    let grantor = name(&mut chars, '\0');
    AclEntry {
        grantee: if grantee.is_empty() {
            "PUBLIC".to_string()
        } else {
            grantee
        },
        privileges,
        grantor,
        grantable,
    }
}

/// The letters of `aclitem` output (PostgreSQL's `ACL_ALL_RIGHTS_STR`).
fn privilege_name(letter: char) -> String {
    match letter {
        'r' => "SELECT",
        'w' => "UPDATE",
        'a' => "INSERT",
        'd' => "DELETE",
        'D' => "TRUNCATE",
        'x' => "REFERENCES",
        't' => "TRIGGER",
        'X' => "EXECUTE",
        'U' => "USAGE",
        'C' => "CREATE",
        'T' => "TEMPORARY",
        'c' => "CONNECT",
        's' => "SET",
        'A' => "ALTER SYSTEM",
        'm' => "MAINTAIN",
        other => return other.to_string(),
    }
    .to_string()
}

/// `serialize_with` helpers: the report keeps the server's text, JSON gets [`AclEntry`] arrays.
mod acl_json {
    use std::collections::BTreeMap;

    use serde::ser::SerializeMap;
    use serde::Serializer;

    use super::parse_acl;

    pub fn required<S: Serializer>(acl: &str, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(parse_acl(acl))
    }

    pub fn optional<S: Serializer>(acl: &Option<String>, serializer: S) -> Result<S::Ok, S::Error> {
        match acl {
            Some(acl) => required(acl, serializer),
            None => serializer.serialize_none(),
        }
    }

    pub fn by_name<S: Serializer>(
        acls: &BTreeMap<String, Option<String>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(acls.len()))?;
        for (name, acl) in acls {
            map.serialize_entry(name, &acl.as_deref().map(parse_acl))?;
        }
        map.end()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct DriftItem {
    pub phase: &'static str,
    pub what: String,
    pub fix: String,
}

pub fn report(desired: &Desired, observed: &Observed, plan: &Plan) -> CheckReport {
    let now = std::time::SystemTime::now();
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
        let verification = observed.verifications.get(tenant.database.as_str());
        let verified = match (database, verification) {
            (_, Some(v)) if v.trusted => Some("trusted"),
            (_, Some(_)) | (None, None) => Some("this-run"),
            (Some(_), None) => None,
        };
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
            verified,
            verified_at: verification.map(|v| humantime::format_rfc3339_seconds(v.at).to_string()),
            verified_age: verification.map(|v| now.duration_since(v.at).unwrap_or_default()),
            pooler: None,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acls_are_given_as_grantee_privileges_grantor() {
        let text =
            r#"{"\"shop-cart-admin\"=C*Tc/\"shop-cart-admin\"",=Tc/postgres,"\"we\"\"ird\"=r/x"}"#;
        let entries = parse_acl(text);
        assert_eq!(
            entries,
            [
                AclEntry {
                    grantee: "shop-cart-admin".into(),
                    privileges: vec!["CREATE".into(), "TEMPORARY".into(), "CONNECT".into()],
                    grantor: "shop-cart-admin".into(),
                    grantable: vec!["CREATE".into()],
                },
                AclEntry {
                    grantee: "PUBLIC".into(),
                    privileges: vec!["TEMPORARY".into(), "CONNECT".into()],
                    grantor: "postgres".into(),
                    grantable: vec![],
                },
                AclEntry {
                    grantee: "we\"ird".into(),
                    privileges: vec!["SELECT".into()],
                    grantor: "x".into(),
                    grantable: vec![],
                },
            ]
        );
        assert_eq!(parse_acl("{}"), []);
        let json = serde_json::to_value(DefaultPrivilegeReport {
            role: "a".into(),
            object: "tables",
            acl: "{b=arwdD/a}".into(),
        })
        .unwrap();
        assert_eq!(
            json["acl"],
            serde_json::json!([{"grantee": "b", "privileges": ["INSERT", "SELECT", "UPDATE", "DELETE", "TRUNCATE"], "grantor": "a"}])
        );
    }
}
