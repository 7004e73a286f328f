use std::fmt;

use serde::{Deserialize, Serialize};

/// What an application needs to connect as a tenant role.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    pub username: String,
    pub password: String,
    /// Host name or address of the PostgreSQL server.
    pub endpoint: String,
    pub port: u16,
    pub dbname: String,
    /// Where the tenant's pooler (pgbouncer) listens for it; None: not pooled, or the cluster
    /// has no pooler. Credentials stored before pooling existed read as None.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pooler: Option<PoolerAddress>,
}

/// The pooled endpoint of a credential: same user, password and database name, another host
/// and port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolerAddress {
    /// Host name or address of the pooler.
    pub endpoint: String,
    pub port: u16,
}

// Credentials end up in logs and error chains through `{:?}`; the password
// must never be among what gets printed.
impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("username", &self.username)
            .field("password", &"***")
            .field("endpoint", &self.endpoint)
            .field("port", &self.port)
            .field("dbname", &self.dbname)
            .field("pooler", &self.pooler)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_the_password() {
        let credential = Credential {
            username: "orders_app".into(),
            password: "hunter2-very-secret".into(),
            endpoint: "db.example.com".into(),
            port: 5432,
            dbname: "orders".into(),
            pooler: None,
        };
        for shown in [format!("{credential:?}"), format!("{credential:#?}")] {
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(shown.contains("***"), "{shown}");
            assert!(shown.contains("orders_app"), "{shown}");
            assert!(shown.contains("db.example.com"), "{shown}");
        }
    }
}
