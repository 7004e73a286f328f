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
    /// The iteration count of the SCRAM verifier pgtenant set on the server for this password,
    /// when it is not [`DEFAULT_SCRAM_ITERATIONS`]; None: the default, which is what every
    /// credential stored before the platform setting existed was set with. Read it with
    /// [`Credential::scram_iterations`], set it with [`Credential::with_scram_iterations`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scram_iterations: Option<u32>,
}

/// PostgreSQL's default SCRAM iteration count (`scram_iterations`), and RFC 7677's minimum.
pub const DEFAULT_SCRAM_ITERATIONS: u32 = 4096;

impl Credential {
    /// The iteration count of the verifier the server has for this password.
    pub fn scram_iterations(&self) -> u32 {
        self.scram_iterations.unwrap_or(DEFAULT_SCRAM_ITERATIONS)
    }

    /// This credential, recording that the server's verifier has `iterations` rounds (the
    /// default is recorded as None, so a default credential is stored as before).
    pub fn with_scram_iterations(self, iterations: u32) -> Self {
        Credential {
            scram_iterations: (iterations != DEFAULT_SCRAM_ITERATIONS).then_some(iterations),
            ..self
        }
    }
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
            .field("scram_iterations", &self.scram_iterations)
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
            scram_iterations: None,
        };
        for shown in [format!("{credential:?}"), format!("{credential:#?}")] {
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(shown.contains("***"), "{shown}");
            assert!(shown.contains("orders_app"), "{shown}");
            assert!(shown.contains("db.example.com"), "{shown}");
        }
    }
}
