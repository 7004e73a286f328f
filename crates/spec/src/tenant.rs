//! Tenant naming, in one place: a tenant is `(namespace, name)` ([`TenantId`]), and every name
//! derived from it — the database, the roles of its preset, their grace-rotation twins, the secret
//! path, the Kubernetes Secret, the directories of its backups — is defined here and nowhere else.
//! The role vocabulary ([`RoleKind`]) is the presets' ([`Preset::roles`](crate::Preset::roles)).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::validate::is_dns_label;
use crate::Preset;

/// A tenant role's suffix: `<namespace>-<name>-<suffix>`. Which ones a tenant has is its
/// preset's call ([`Preset::roles`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RoleKind {
    Admin,
    Migrator,
    Owner,
    Write,
    App,
    Read,
}

impl RoleKind {
    pub const ALL: [RoleKind; 6] = [
        RoleKind::Admin,
        RoleKind::Migrator,
        RoleKind::Owner,
        RoleKind::Write,
        RoleKind::App,
        RoleKind::Read,
    ];

    /// The suffix, as role names, secret paths, values files (`roles:`) and output spell it.
    pub const fn as_str(self) -> &'static str {
        match self {
            RoleKind::Admin => "admin",
            RoleKind::Migrator => "migrator",
            RoleKind::Owner => "owner",
            RoleKind::Write => "write",
            RoleKind::App => "app",
            RoleKind::Read => "read",
        }
    }

    pub fn parse(s: &str) -> Option<RoleKind> {
        RoleKind::ALL.into_iter().find(|kind| kind.as_str() == s)
    }

    /// The presets that have this role as a login, in [`Preset::ALL`] order.
    pub fn login_of(self) -> impl Iterator<Item = Preset> {
        Preset::ALL
            .into_iter()
            .filter(move |preset| preset.login_kinds().any(|kind| kind == self))
    }
}

impl AsRef<str> for RoleKind {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for RoleKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for RoleKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        RoleKind::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("unknown role `{s}`")))
    }
}

/// What a role of a preset is for; the engine turns it into privileges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RoleDuty {
    /// Owns the database and the tenant's schemas (exactly one per preset).
    Owner,
    /// Reads and writes data (DML), owns nothing.
    Write,
    /// Reads data only.
    Read,
    /// A login whose sessions act as the owner (seed 002), so every object has one owner.
    ActsAsOwner,
}

/// One role of a preset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PresetRole {
    pub kind: RoleKind,
    pub duty: RoleDuty,
    /// Logs in, and so has credentials.
    pub login: bool,
}

impl PresetRole {
    pub(crate) const fn new(kind: RoleKind, duty: RoleDuty, login: bool) -> Self {
        PresetRole { kind, duty, login }
    }
}

/// Every role that logs in in some preset, each once, in [`Preset::ALL`] order and then the
/// preset's own: the role vocabulary of the command line (`--role`).
pub const LOGIN_ROLES: [RoleKind; login_role_count()] = login_role_union();

/// How many distinct roles log in across the presets.
const fn login_role_count() -> usize {
    let (_, count) = login_roles_in_order();
    count
}

const fn login_role_union<const N: usize>() -> [RoleKind; N] {
    let (all, _) = login_roles_in_order();
    let mut out = [RoleKind::Admin; N];
    let mut i = 0;
    while i < N {
        out[i] = all[i];
        i += 1;
    }
    out
}

/// The logins of every preset, first occurrence only, padded to [`RoleKind::ALL`]'s length.
const fn login_roles_in_order() -> ([RoleKind; RoleKind::ALL.len()], usize) {
    let mut seen = [false; RoleKind::ALL.len()];
    let mut out = [RoleKind::Admin; RoleKind::ALL.len()];
    let mut count = 0;
    let mut p = 0;
    while p < Preset::ALL.len() {
        let roles = Preset::ALL[p].roles();
        let mut r = 0;
        while r < roles.len() {
            let role = roles[r];
            if role.login && !seen[role.kind as usize] {
                seen[role.kind as usize] = true;
                out[count] = role.kind;
                count += 1;
            }
            r += 1;
        }
        p += 1;
    }
    (out, count)
}

/// How every tenant secret path begins (`customer/<namespace>/<name>-<role>`).
pub const SECRET_PATH_PREFIX: &str = "customer/";

/// The name of `role` in the database `database` (`<database>-<role>`, the database being
/// `<namespace>-<name>`).
pub fn role_name(database: &str, role: &str) -> String {
    format!("{database}-{role}")
}

/// The second login that grace rotation alternates with for the role `role`: `<role>-alt`.
pub fn alternate_role_name(role: &str) -> String {
    format!("{role}-alt")
}

/// Why text is not a tenant's `NAMESPACE/DATABASE`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TenantIdError {
    #[error("`{0}` is not NAMESPACE/DATABASE (for example idp-dev/my-db)")]
    NoSlash(String),
    #[error("`{0}` is not NAMESPACE/DATABASE with lowercase letters, digits and '-' only")]
    NotLabels(String),
}

/// A tenant: the first-level folder of its values file (the namespace) and the entry's `name`.
/// Shown and parsed as `NAMESPACE/NAME` ([`fmt::Display`], [`TenantId::parse`]).
///
/// [`TenantId::new`] takes the parts as they are; [`TenantId::parse`] and [`TenantId::checked`]
/// accept DNS-1123 labels only (what the spec accepts), so every derived name is a valid
/// identifier, secret path segment and Kubernetes object name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId {
    pub namespace: String,
    /// The declared database name, without the namespace.
    pub name: String,
}

impl TenantId {
    pub fn new(namespace: &str, name: &str) -> Self {
        TenantId {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }

    /// The tenant `namespace`/`name` when both are DNS-1123 labels.
    pub fn checked(namespace: &str, name: &str) -> Result<Self, TenantIdError> {
        if is_dns_label(namespace) && is_dns_label(name) {
            Ok(TenantId::new(namespace, name))
        } else {
            Err(TenantIdError::NotLabels(format!("{namespace}/{name}")))
        }
    }

    /// `NAMESPACE/DATABASE` as users type it, checked the way the spec checks names.
    pub fn parse(text: &str) -> Result<Self, TenantIdError> {
        let Some((namespace, name)) = text.split_once('/') else {
            return Err(TenantIdError::NoSlash(text.to_owned()));
        };
        if !is_dns_label(namespace) || !is_dns_label(name) {
            return Err(TenantIdError::NotLabels(text.to_owned()));
        }
        Ok(TenantId::new(namespace, name))
    }

    /// `NAMESPACE/NAME`, how users and reports name a tenant (the [`fmt::Display`] form).
    pub fn id(&self) -> String {
        self.to_string()
    }

    /// The PostgreSQL database: `<namespace>-<name>`.
    pub fn database(&self) -> String {
        format!("{}-{}", self.namespace, self.name)
    }

    /// The tenant's role `role`: `<namespace>-<name>-<role>`.
    pub fn role(&self, role: impl AsRef<str>) -> String {
        role_name(&self.database(), role.as_ref())
    }

    /// The grace-rotation twin of the tenant's role `role`: `<namespace>-<name>-<role>-alt`.
    pub fn alternate_role(&self, role: impl AsRef<str>) -> String {
        alternate_role_name(&self.role(role))
    }

    /// The role that owns the database and its schemas under `preset`.
    pub fn owner_role(&self, preset: Preset) -> String {
        self.role(preset.owner())
    }

    /// Every role of `preset`, in the preset's order.
    pub fn roles(&self, preset: Preset) -> Vec<String> {
        preset.roles().iter().map(|r| self.role(r.kind)).collect()
    }

    /// Where the credentials of the login `role` live: `customer/<namespace>/<name>-<role>`, the
    /// platform's AWS Secrets Manager naming. (`-` both joins name and role and may occur inside
    /// them, so `a-b`+`c` and `a`+`b-c` share a path: the existing naming, kept.)
    pub fn secret_path(&self, role: impl AsRef<str>) -> String {
        format!(
            "{SECRET_PATH_PREFIX}{}/{}-{}",
            self.namespace,
            self.name,
            role.as_ref()
        )
    }

    /// The Kubernetes Secret holding the credentials of `role`: named like the role's login.
    pub fn secret_name(&self, role: impl AsRef<str>) -> String {
        self.role(role)
    }

    /// The tenant's directory below a per-tenant tree (logical backups, the trash): `<namespace>/<name>`.
    pub fn dir(&self) -> PathBuf {
        PathBuf::from(&self.namespace).join(&self.name)
    }

    /// The longest role name of the tenant under `preset` ([`Preset::longest_role_suffix`]): it
    /// decides whether every identifier fits in [`MAX_IDENTIFIER_BYTES`](crate::MAX_IDENTIFIER_BYTES).
    pub fn longest_role(&self, preset: Preset) -> String {
        self.role(preset.longest_role_suffix())
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl FromStr for TenantId {
    type Err = TenantIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TenantId::parse(s)
    }
}

impl Serialize for TenantId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TenantId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        TenantId::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MAX_IDENTIFIER_BYTES;

    #[test]
    fn parses_and_shows_namespace_slash_name() {
        let id = TenantId::parse("idp-dev/my-db").unwrap();
        assert_eq!(id, TenantId::new("idp-dev", "my-db"));
        assert_eq!(id.to_string(), "idp-dev/my-db");
        assert_eq!(id.id(), "idp-dev/my-db");
        assert_eq!("idp-dev/my-db".parse::<TenantId>().unwrap(), id);
        assert_eq!(
            TenantId::parse(&id.to_string()).unwrap(),
            id,
            "display round-trips"
        );
    }

    #[test]
    fn parse_refuses_what_the_spec_refuses() {
        assert_eq!(
            TenantId::parse("idp-dev").unwrap_err().to_string(),
            "`idp-dev` is not NAMESPACE/DATABASE (for example idp-dev/my-db)"
        );
        for bad in [
            "/db", "ns/", "NS/db", "ns/my_db", "ns/a/b", "-ns/db", "ns/db-", "ns/d b", "ns/é",
        ] {
            assert_eq!(
                TenantId::parse(bad).unwrap_err(),
                TenantIdError::NotLabels(bad.to_owned()),
                "{bad}"
            );
        }
        let long = "a".repeat(64);
        assert!(TenantId::parse(&format!("ns/{long}")).is_err());
        assert!(TenantId::checked("ns", "db").is_ok());
        assert!(TenantId::checked("ns", "a/b").is_err());
    }

    #[test]
    fn serde_uses_the_display_form_and_validates() {
        let id = TenantId::new("shop", "cart");
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"shop/cart\"");
        assert_eq!(serde_json::from_str::<TenantId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<TenantId>("\"../x\"").is_err());
        let kind: RoleKind = serde_json::from_str("\"migrator\"").unwrap();
        assert_eq!(kind, RoleKind::Migrator);
        assert_eq!(serde_json::to_string(&kind).unwrap(), "\"migrator\"");
        assert!(serde_json::from_str::<RoleKind>("\"root\"").is_err());
    }

    #[test]
    fn derives_every_name_of_every_preset() {
        let id = TenantId::new("shop", "cart");
        assert_eq!(id.database(), "shop-cart");
        assert_eq!(id.dir(), PathBuf::from("shop/cart"));
        let expected: [(Preset, &str, &[&str], &[&str]); 3] = [
            (
                Preset::Idp,
                "admin",
                &["admin", "write", "read"],
                &["admin", "write", "read"],
            ),
            (
                Preset::AppMigrator,
                "migrator",
                &["migrator", "app"],
                &["migrator", "app"],
            ),
            (
                Preset::SchemaOwner,
                "owner",
                &["owner", "app", "write", "read"],
                &["app", "write", "read"],
            ),
        ];
        for (preset, owner, roles, logins) in expected {
            assert_eq!(preset.role_suffixes(), roles, "{preset:?}");
            assert_eq!(preset.login_roles(), logins, "{preset:?}");
            assert_eq!(preset.owner().as_str(), owner, "{preset:?}");
            assert_eq!(id.owner_role(preset), format!("shop-cart-{owner}"));
            let owner_login = preset.owner_login();
            assert!(logins.contains(&owner_login.as_str()), "{preset:?}");
            let names: Vec<String> = roles.iter().map(|r| format!("shop-cart-{r}")).collect();
            assert_eq!(id.roles(preset), names, "{preset:?}");
            for kind in preset.login_kinds() {
                let role = kind.as_str();
                assert_eq!(id.role(kind), format!("shop-cart-{role}"));
                assert_eq!(id.alternate_role(kind), format!("shop-cart-{role}-alt"));
                assert_eq!(id.secret_path(kind), format!("customer/shop/cart-{role}"));
                assert_eq!(id.secret_name(kind), format!("shop-cart-{role}"));
            }
            assert_eq!(
                preset
                    .roles()
                    .iter()
                    .filter(|r| r.duty == RoleDuty::Owner)
                    .count(),
                1,
                "{preset:?} has one owner"
            );
        }
    }

    #[test]
    fn the_command_line_vocabulary_is_the_union_of_the_presets_logins() {
        assert_eq!(
            LOGIN_ROLES,
            [
                RoleKind::Admin,
                RoleKind::Write,
                RoleKind::Read,
                RoleKind::Migrator,
                RoleKind::App
            ]
        );
        for kind in RoleKind::ALL {
            let in_some_preset = Preset::ALL
                .iter()
                .any(|p| p.login_roles().contains(&kind.as_str()));
            assert_eq!(LOGIN_ROLES.contains(&kind), in_some_preset, "{kind}");
        }
        assert_eq!(
            RoleKind::App.login_of().collect::<Vec<_>>(),
            [Preset::AppMigrator, Preset::SchemaOwner]
        );
        assert_eq!(RoleKind::Owner.login_of().count(), 0);
        for kind in RoleKind::ALL {
            assert!(
                Preset::ALL
                    .iter()
                    .any(|p| p.roles().iter().any(|r| r.kind == kind)),
                "{kind} is a role of some preset"
            );
        }
        let owner_logins: Vec<RoleKind> = Preset::ALL.iter().map(|p| p.owner_login()).collect();
        assert_eq!(
            owner_logins,
            [RoleKind::Admin, RoleKind::Migrator, RoleKind::App]
        );
    }

    #[test]
    fn longest_role_is_the_one_the_identifier_limit_checks() {
        // 63 bytes exactly: `<ns>-<name>-migrator` fits; one more byte does not.
        let name = "n".repeat(MAX_IDENTIFIER_BYTES - "ns--migrator".len());
        let id = TenantId::new("ns", &name);
        assert_eq!(
            id.longest_role(Preset::AppMigrator).len(),
            MAX_IDENTIFIER_BYTES
        );
        assert!(id.longest_role(Preset::AppMigrator).ends_with("-migrator"));
        assert_eq!(id.longest_role(Preset::Idp).len(), MAX_IDENTIFIER_BYTES - 3);
        for preset in Preset::ALL {
            let longest = id.longest_role(preset).len();
            assert!(id.roles(preset).iter().all(|r| r.len() <= longest));
        }
    }
}
