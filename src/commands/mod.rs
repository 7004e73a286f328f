//! One module per command group; `main.rs` only parses and dispatches.

pub mod backup;
pub mod cluster;
pub mod config;
pub mod connect;
pub mod credentials;
pub mod list;
pub mod r#move;
pub mod reconcile;
pub mod rotate;
pub mod serve;
pub mod spec;
pub mod store;
pub mod trash;

use anyhow::Result;

/// `NAMESPACE/DATABASE` as users type it, checked the way the spec checks names
/// ([`pgtenant_spec::TenantId::parse`]); the parts borrow from `tenant`.
pub fn parse_tenant(tenant: &str) -> Result<(&str, &str)> {
    pgtenant_spec::TenantId::parse(tenant)?;
    let (namespace, database) = tenant
        .split_once('/')
        .expect("TenantId::parse accepted it, so it has a slash");
    Ok((namespace, database))
}

#[cfg(test)]
mod tests {
    use clap::ValueEnum;

    use super::credentials::RoleArg;
    use super::*;

    #[test]
    fn parse_tenant_keeps_its_shape_and_messages() {
        assert_eq!(parse_tenant("idp-dev/my-db").unwrap(), ("idp-dev", "my-db"));
        assert_eq!(
            parse_tenant("idp-dev").unwrap_err().to_string(),
            "`idp-dev` is not NAMESPACE/DATABASE (for example idp-dev/my-db)"
        );
        assert_eq!(
            parse_tenant("idp-dev/My_Db").unwrap_err().to_string(),
            "`idp-dev/My_Db` is not NAMESPACE/DATABASE with lowercase letters, digits and '-' only"
        );
    }

    #[test]
    fn role_arguments_are_the_presets_logins() {
        let names: Vec<&str> = RoleArg::ALL.iter().map(|r| r.as_str()).collect();
        let logins: Vec<&str> = pgtenant_spec::LOGIN_ROLES
            .iter()
            .map(|k| k.as_str())
            .collect();
        assert_eq!(names, logins);
        for role in RoleArg::ALL {
            assert_eq!(RoleArg::from_str(role.as_str(), false).unwrap(), role);
        }
        assert!(
            RoleArg::from_str("owner", false).is_err(),
            "owner never logs in"
        );
        for preset in pgtenant_spec::Preset::ALL {
            let of: Vec<&str> = RoleArg::of_preset(preset)
                .iter()
                .map(|r| r.as_str())
                .collect();
            assert_eq!(of, preset.login_roles());
        }
        assert_eq!(RoleArg::Read.as_str(), "read");
        assert_eq!(RoleArg::Admin.as_str(), "admin");
    }
}
