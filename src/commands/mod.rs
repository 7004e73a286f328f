//! One module per command group; `main.rs` only parses and dispatches.

pub mod backup;
pub mod cluster;
pub mod config;
pub mod connect;
pub mod credentials;
pub mod list;
pub mod reconcile;
pub mod rotate;
pub mod spec;
pub mod store;
pub mod trash;

use anyhow::{bail, Result};

/// `NAMESPACE/DATABASE` as users type it, checked the way the spec checks names.
pub fn parse_tenant(tenant: &str) -> Result<(&str, &str)> {
    let Some((namespace, database)) = tenant.split_once('/') else {
        bail!("`{tenant}` is not NAMESPACE/DATABASE (for example idp-dev/my-db)");
    };
    if !pgtenant_spec::is_dns_label(namespace) || !pgtenant_spec::is_dns_label(database) {
        bail!("`{tenant}` is not NAMESPACE/DATABASE with lowercase letters, digits and '-' only");
    }
    Ok((namespace, database))
}
