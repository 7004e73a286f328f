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
        };
        for shown in [format!("{credential:?}"), format!("{credential:#?}")] {
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(shown.contains("***"), "{shown}");
            assert!(shown.contains("orders_app"), "{shown}");
            assert!(shown.contains("db.example.com"), "{shown}");
        }
    }
}
