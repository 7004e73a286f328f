use std::fmt;

use pgtenant_spec::{RoleKind, TenantId};
use serde::{Deserialize, Serialize};

use crate::StoreError;

/// Where a credential lives: `customer/<namespace>/<database>-<role>`, the
/// naming the platform already uses for its AWS Secrets Manager paths.
///
/// Every segment is non-empty and made of `[a-z0-9-]` only. The file store
/// mirrors the path as directories, so this rule is what keeps a secret path
/// from escaping the data directory (no `.`, hence no `..`) or colliding with
/// the store's own `*.secret` and temporary file names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
// Deserialising goes through `parse` so a path read from JSON upholds the same
// invariant as one built in code.
#[serde(try_from = "String", into = "String")]
pub struct SecretPath(String);

impl SecretPath {
    /// The path of the credential of `role` in `database` of tenant `namespace`
    /// ([`TenantId::secret_path`], which defines the naming).
    ///
    /// # Panics
    ///
    /// If a component is empty or has a character outside `[a-z0-9-]`. Names
    /// come from the validated tenant spec; accepting anything else here would
    /// silently create paths that no other tool of the platform produces.
    pub fn for_role(namespace: &str, database: &str, role: &str) -> Self {
        for (what, value) in [
            ("namespace", namespace),
            ("database", database),
            ("role", role),
        ] {
            assert!(
                is_valid_segment(value),
                "SecretPath::for_role: {what} {value:?} is not a valid secret path segment \
                 (non-empty, [a-z0-9-] only); validate names before building secret paths"
            );
        }
        Self(TenantId::new(namespace, database).secret_path(role))
    }

    /// The path of the credential of the login `role` of `tenant`.
    ///
    /// # Panics
    ///
    /// As [`for_role`](Self::for_role).
    pub fn for_tenant(tenant: &TenantId, role: RoleKind) -> Self {
        Self::for_role(&tenant.namespace, &tenant.name, role.as_str())
    }

    pub fn parse(s: &str) -> Result<Self, StoreError> {
        if s.split('/').all(is_valid_segment) {
            Ok(Self(s.to_owned()))
        } else {
            Err(StoreError::InvalidPath { path: s.to_owned() })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

pub(crate) fn is_valid_segment(segment: &str) -> bool {
    !segment.is_empty()
        && segment
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

impl fmt::Display for SecretPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for SecretPath {
    type Error = StoreError;

    fn try_from(s: String) -> Result<Self, StoreError> {
        Self::parse(&s)
    }
}

impl From<SecretPath> for String {
    fn from(path: SecretPath) -> Self {
        path.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn for_role_uses_platform_naming() {
        let path = SecretPath::for_role("shop", "orders", "app");
        assert_eq!(path.as_str(), "customer/shop/orders-app");
        assert_eq!(path.to_string(), "customer/shop/orders-app");
        assert_eq!(SecretPath::parse(path.as_str()).unwrap(), path);
    }

    #[test]
    fn for_tenant_is_for_role() {
        let tenant = TenantId::new("shop", "orders");
        assert_eq!(
            SecretPath::for_tenant(&tenant, RoleKind::App),
            SecretPath::for_role("shop", "orders", "app")
        );
    }

    #[test]
    #[should_panic(expected = "database \"a/b\"")]
    fn for_role_rejects_a_slash_in_a_name() {
        SecretPath::for_role("shop", "a/b", "app");
    }

    #[test]
    #[should_panic(expected = "role \"\"")]
    fn for_role_rejects_an_empty_name() {
        SecretPath::for_role("shop", "orders", "");
    }

    #[test]
    fn parse_accepts_lowercase_segments() {
        for ok in ["a", "customer/shop/orders-app", "a/b/c", "0-9/x-"] {
            assert_eq!(SecretPath::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn parse_rejects_unsafe_or_malformed_paths() {
        for bad in [
            "../x", "/a", "a//b", "A/b", "", "a/", "a/./b", "a/..", "a\\b", "a b", "a_b", "é",
            "a.secret",
        ] {
            match SecretPath::parse(bad) {
                Err(StoreError::InvalidPath { path }) => assert_eq!(path, bad),
                other => panic!("{bad:?} was not rejected: {other:?}"),
            }
        }
    }

    #[test]
    fn serde_round_trips_and_validates() {
        let path = SecretPath::for_role("shop", "orders", "app");
        let json = serde_json::to_string(&path).unwrap();
        assert_eq!(json, "\"customer/shop/orders-app\"");
        assert_eq!(serde_json::from_str::<SecretPath>(&json).unwrap(), path);
        assert!(serde_json::from_str::<SecretPath>("\"../etc/passwd\"").is_err());
    }
}
