//! What the cluster should look like: names, roles and privileges per tenant, derived from the spec.
//! Pure: no I/O. The privilege model of seed 000 lives here and nowhere else.

use std::collections::{BTreeMap, BTreeSet};

use pgtenant_secrets::SecretPath;
use pgtenant_spec::{DatabaseSpec, LoadedRepo, Mode};
use serde::Serialize;

use crate::ident::Ident;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RoleKind {
    Admin,
    Write,
    Read,
}

impl RoleKind {
    pub const ALL: [RoleKind; 3] = [RoleKind::Admin, RoleKind::Write, RoleKind::Read];

    pub fn as_str(self) -> &'static str {
        match self {
            RoleKind::Admin => "admin",
            RoleKind::Write => "write",
            RoleKind::Read => "read",
        }
    }

    pub fn parse(s: &str) -> Option<RoleKind> {
        RoleKind::ALL.into_iter().find(|kind| kind.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DesiredRole {
    pub kind: RoleKind,
    pub name: Ident,
    pub secret_path: SecretPath,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DesiredTenant {
    /// `<namespace>/<name>`, how users and reports name a tenant.
    pub id: String,
    pub namespace: String,
    pub name: String,
    pub database: Ident,
    pub mode: Mode,
    pub roles: [DesiredRole; 3],
}

impl DesiredTenant {
    pub fn from_spec(spec: &DatabaseSpec) -> Self {
        let database = spec.database_name();
        let role = |kind: RoleKind| DesiredRole {
            kind,
            name: Ident::new(role_name(&database, kind)),
            secret_path: SecretPath::for_role(&spec.namespace, &spec.name, kind.as_str()),
        };
        let roles = RoleKind::ALL.map(role);
        DesiredTenant {
            roles,
            id: spec.tenant_id(),
            namespace: spec.namespace.clone(),
            name: spec.name.clone(),
            database: Ident::new(database),
            mode: spec.mode,
        }
    }

    pub fn role(&self, kind: RoleKind) -> &DesiredRole {
        &self.roles[kind as usize]
    }

    pub fn admin(&self) -> &Ident {
        &self.role(RoleKind::Admin).name
    }
}

pub fn role_name(database: &str, kind: RoleKind) -> String {
    format!("{database}-{}", kind.as_str())
}

/// The desired state of every tenant whose spec file parsed and validated.
#[derive(Debug, Clone, Default)]
pub struct Desired {
    pub tenants: Vec<DesiredTenant>,
    /// Why no database may be dropped in this run (spec files failed: their tenants are unknown).
    pub drops_held_because: Option<String>,
}

impl Desired {
    pub fn from_repo(repo: &LoadedRepo) -> Self {
        let failed = repo.failed_files.len();
        Desired {
            tenants: repo.databases.iter().map(DesiredTenant::from_spec).collect(),
            drops_held_because: (failed > 0).then(|| {
                format!(
                    "{failed} spec file(s) failed to parse or validate: their databases are unknown, \
                     so nothing is dropped until every file is fixed"
                )
            }),
        }
    }
}

/// Privilege names as `aclexplode()` reports them, so observed and desired compare directly.
pub type Privileges = BTreeSet<&'static str>;

fn privileges(names: &[&'static str]) -> Privileges {
    names.iter().copied().collect()
}

/// The least-privilege role model of seed 000, extended to schemas admin creates later.
pub mod policy {
    use super::*;

    /// Owner rights on the database are the defaults; read and write may only connect and use temp tables.
    pub fn database(kind: RoleKind) -> Privileges {
        match kind {
            RoleKind::Admin => privileges(&["CREATE", "TEMPORARY", "CONNECT"]),
            RoleKind::Write | RoleKind::Read => privileges(&["CONNECT", "TEMPORARY"]),
        }
    }

    /// Read and write may look up objects in every schema admin owns; only admin may create.
    pub fn schema(kind: RoleKind) -> Privileges {
        match kind {
            RoleKind::Admin => privileges(&["USAGE", "CREATE"]),
            RoleKind::Write | RoleKind::Read => privileges(&["USAGE"]),
        }
    }

    /// Tables, views, materialized views, foreign and partitioned tables.
    pub fn table(kind: RoleKind) -> Privileges {
        match kind {
            RoleKind::Admin => Privileges::new(),
            RoleKind::Write => privileges(&["SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE"]),
            RoleKind::Read => privileges(&["SELECT"]),
        }
    }

    pub fn sequence(kind: RoleKind) -> Privileges {
        match kind {
            RoleKind::Admin => Privileges::new(),
            RoleKind::Write => privileges(&["SELECT", "UPDATE", "USAGE"]),
            RoleKind::Read => privileges(&["SELECT"]),
        }
    }

    /// The object classes covered by `ALTER DEFAULT PRIVILEGES FOR ROLE admin` (no `IN SCHEMA`, so
    /// schemas admin creates later, and their tables, are covered with no GRANT run by anyone).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
    #[serde(rename_all = "lowercase")]
    pub enum DefaultObject {
        Tables,
        Sequences,
        Schemas,
    }

    impl DefaultObject {
        pub const ALL: [DefaultObject; 3] = [
            DefaultObject::Tables,
            DefaultObject::Sequences,
            DefaultObject::Schemas,
        ];

        /// `pg_default_acl.defaclobjtype`.
        pub fn catalog_code(self) -> &'static str {
            match self {
                DefaultObject::Tables => "r",
                DefaultObject::Sequences => "S",
                DefaultObject::Schemas => "n",
            }
        }

        pub fn from_catalog_code(code: &str) -> Option<Self> {
            Self::ALL.into_iter().find(|o| o.catalog_code() == code)
        }

        pub fn sql_keyword(self) -> &'static str {
            match self {
                DefaultObject::Tables => "TABLES",
                DefaultObject::Sequences => "SEQUENCES",
                DefaultObject::Schemas => "SCHEMAS",
            }
        }

        pub fn grants(self, kind: RoleKind) -> Privileges {
            match self {
                DefaultObject::Tables => table(kind),
                DefaultObject::Sequences => sequence(kind),
                DefaultObject::Schemas => match kind {
                    RoleKind::Admin => Privileges::new(),
                    RoleKind::Write | RoleKind::Read => schema(kind),
                },
            }
        }
    }
}

/// Role attributes every tenant role must have: a login and nothing that reaches past its database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RoleAttributes {
    pub login: bool,
    pub superuser: bool,
    pub createdb: bool,
    pub createrole: bool,
    pub replication: bool,
    pub bypassrls: bool,
    pub inherit: bool,
    pub connection_limit: i32,
}

impl RoleAttributes {
    pub const TENANT: RoleAttributes = RoleAttributes {
        login: true,
        superuser: false,
        createdb: false,
        createrole: false,
        replication: false,
        bypassrls: false,
        inherit: true,
        connection_limit: -1,
    };

    /// The `CREATE/ALTER ROLE … WITH` options that turn `self` into `target`, all of them when `self` is None.
    pub fn options_towards(
        current: Option<&RoleAttributes>,
        target: &RoleAttributes,
    ) -> Vec<String> {
        let flag = |on: bool, name: &str| {
            if on {
                name.to_string()
            } else {
                format!("NO{name}")
            }
        };
        type Flag = fn(&RoleAttributes) -> bool;
        let pairs: [(Flag, &str); 7] = [
            (|a| a.login, "LOGIN"),
            (|a| a.superuser, "SUPERUSER"),
            (|a| a.createdb, "CREATEDB"),
            (|a| a.createrole, "CREATEROLE"),
            (|a| a.replication, "REPLICATION"),
            (|a| a.bypassrls, "BYPASSRLS"),
            (|a| a.inherit, "INHERIT"),
        ];
        let mut options: Vec<String> = pairs
            .iter()
            .filter(|(get, _)| current.is_none_or(|c| get(c) != get(target)))
            .map(|(get, name)| flag(get(target), name))
            .collect();
        if current.is_none_or(|c| c.connection_limit != target.connection_limit) {
            options.push(format!("CONNECTION LIMIT {}", target.connection_limit));
        }
        options
    }
}

/// What pgtenant writes into `COMMENT ON DATABASE/ROLE` so that a later run, on any machine, can tell
/// its own objects (and a protected database's mode) from everything else on a shared cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Marker {
    pub managed_by: String,
    pub tenant: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<RoleKind>,
}

pub const MANAGED_BY: &str = "pgtenant";

impl Marker {
    pub fn database(tenant: &DesiredTenant) -> Self {
        Marker {
            managed_by: MANAGED_BY.into(),
            tenant: tenant.id.clone(),
            mode: Some(tenant.mode),
            role: None,
        }
    }

    pub fn role(tenant: &DesiredTenant, kind: RoleKind) -> Self {
        Marker {
            managed_by: MANAGED_BY.into(),
            tenant: tenant.id.clone(),
            mode: None,
            role: Some(kind),
        }
    }

    /// A comment that is not our JSON is simply not a marker: someone else's comment.
    pub fn parse(comment: &str) -> Option<Self> {
        serde_json::from_str::<Marker>(comment)
            .ok()
            .filter(|m| m.managed_by == MANAGED_BY)
    }

    pub fn to_comment(&self) -> String {
        serde_json::to_string(self).expect("marker serializes")
    }
}

impl<'de> serde::Deserialize<'de> for RoleKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        RoleKind::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("unknown role `{s}`")))
    }
}

/// Desired tenants by database name, for the planner's lookups.
pub fn by_database(desired: &Desired) -> BTreeMap<&str, &DesiredTenant> {
    desired
        .tenants
        .iter()
        .map(|t| (t.database.as_str(), t))
        .collect()
}
