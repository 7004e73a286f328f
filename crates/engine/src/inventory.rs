//! `pgtenant list`: every database on the cluster and what pgtenant makes of it, from the markers
//! alone (no repo needed), so an operator can see what is managed, kept as an orphan, or foreign.

use serde::Serialize;

use crate::catalog::ClusterCatalog;

/// Databases every cluster has that are nobody's tenant (pgtenant's own control database is
/// left out as well).
const SYSTEM_DATABASES: [&str; 3] = ["postgres", "template0", "template1"];

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListedDatabase {
    pub database: String,
    /// `managed`, `orphaned-protected` (removed from the repo, kept) or `unmanaged`.
    pub state: &'static str,
    pub tenant: Option<String>,
    pub mode: Option<String>,
    pub orphaned_since: Option<String>,
    pub owner: String,
}

pub fn list(catalog: &ClusterCatalog) -> Vec<ListedDatabase> {
    catalog
        .databases
        .iter()
        .filter(|(name, _)| {
            !SYSTEM_DATABASES.contains(&name.as_str()) && name.as_str() != crate::CONTROL_DATABASE
        })
        .map(|(name, db)| {
            let marker = db.marker();
            let state = match &marker {
                None => "unmanaged",
                Some(m) if m.orphaned_since.is_some() => "orphaned-protected",
                Some(_) => "managed",
            };
            ListedDatabase {
                database: name.clone(),
                state,
                tenant: marker.as_ref().map(|m| m.tenant.clone()),
                mode: marker
                    .as_ref()
                    .and_then(|m| m.mode)
                    .map(|m| m.as_str().to_string()),
                orphaned_since: marker.and_then(|m| m.orphaned_since),
                owner: db.owner.clone(),
            }
        })
        .collect()
}
