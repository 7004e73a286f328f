use serde::{Deserialize, Serialize};

use crate::location::SourceLocation;

/// PostgreSQL's identifier limit (`NAMEDATALEN - 1`). Longer identifiers are silently
/// truncated by the server, so two long tenant names could end up as the same role.
pub const MAX_IDENTIFIER_BYTES: usize = 63;

/// Suffixes of the roles created for each database (`<namespace>-<name>-<suffix>`). The longest
/// one decides whether a tenant's identifiers fit in [`MAX_IDENTIFIER_BYTES`].
pub const ROLE_SUFFIXES: [&str; 3] = ["admin", "write", "read"];

/// What the engine may do to a tenant database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Managed fully, including dropping it once it is no longer declared.
    #[default]
    Standard,
    /// Never dropped by the engine.
    Protected,
}

impl Mode {
    /// Every mode, in the order they are listed to users.
    pub(crate) const ALL: [Mode; 2] = [Mode::Standard, Mode::Protected];

    /// The spelling used in values files and in output.
    pub fn as_str(&self) -> &'static str {
        match self {
            Mode::Standard => "standard",
            Mode::Protected => "protected",
        }
    }
}

/// One tenant database declared in the apps repo, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DatabaseSpec {
    /// The first-level folder of the values file.
    pub namespace: String,
    /// The entry's `name`.
    pub name: String,
    pub mode: Mode,
    /// Where the entry's `name` value is.
    pub location: SourceLocation,
}

impl DatabaseSpec {
    /// The PostgreSQL database name, `<namespace>-<name>`.
    pub fn database_name(&self) -> String {
        format!("{}-{}", self.namespace, self.name)
    }

    /// The tenant's identity in the repo, `<namespace>/<name>`.
    pub fn tenant_id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn names_a_tenant() {
        let spec = DatabaseSpec {
            namespace: "idp-dev".into(),
            name: "my-db".into(),
            mode: Mode::Protected,
            location: SourceLocation {
                file: PathBuf::from("idp-dev/my-db/values.yaml"),
                line: 2,
                column: 11,
            },
        };
        assert_eq!(spec.database_name(), "idp-dev-my-db");
        assert_eq!(spec.tenant_id(), "idp-dev/my-db");
    }

    #[test]
    fn mode_spelling_matches_serde() {
        for mode in Mode::ALL {
            assert_eq!(
                serde_json::to_value(mode).unwrap(),
                serde_json::Value::String(mode.as_str().to_owned())
            );
            let back: Mode = serde_json::from_value(serde_json::json!(mode.as_str())).unwrap();
            assert_eq!(back, mode);
        }
        assert_eq!(Mode::default(), Mode::Standard);
    }
}
