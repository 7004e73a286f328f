//! What a server error means for the caller, by SQLSTATE (never by message text).

use tokio_postgres::error::SqlState;

/// The classes of server errors callers act on differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The statement did not take effect and the same statement may succeed when retried:
    /// serialization failure (40001), deadlock (40P01), lock not available (55P03).
    Transient,
    /// The server went away or cannot take writes (shutdown 57P01/57P02, starting up 57P03,
    /// read-only transaction on a standby 25006, connection exceptions class 08): reconnect,
    /// perhaps to another server, and re-read what happened.
    Failover,
    /// Authentication or privileges: insufficient privilege (42501), invalid authorization
    /// (28000), wrong password (28P01). A person must fix a grant or a credential.
    Permission,
    /// The server is out of something (class 53: connections 53300, disk 53100, memory 53200):
    /// waiting may help, retrying at once does not.
    Resources,
    /// The object does not exist: database (3D000), role or object (42704), relation (42P01),
    /// schema (3F000), function (42883).
    Missing,
    /// The object exists already: database (42P04), object (42710), unique violation (23505).
    Duplicate,
    /// Anything else: a bug in the statement, a constraint, a cancelled statement.
    Other,
}

impl ErrorClass {
    /// The class of `code`.
    pub fn of(code: &SqlState) -> ErrorClass {
        let text = code.code();
        let class = &text[..2.min(text.len())];
        if [
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::T_R_DEADLOCK_DETECTED,
            SqlState::LOCK_NOT_AVAILABLE,
        ]
        .contains(code)
        {
            ErrorClass::Transient
        } else if class == "08"
            || [
                SqlState::ADMIN_SHUTDOWN,
                SqlState::CRASH_SHUTDOWN,
                SqlState::CANNOT_CONNECT_NOW,
                SqlState::READ_ONLY_SQL_TRANSACTION,
            ]
            .contains(code)
        {
            ErrorClass::Failover
        } else if class == "28" || *code == SqlState::INSUFFICIENT_PRIVILEGE {
            ErrorClass::Permission
        } else if class == "53" {
            ErrorClass::Resources
        } else if [
            SqlState::INVALID_CATALOG_NAME,
            SqlState::UNDEFINED_OBJECT,
            SqlState::UNDEFINED_TABLE,
            SqlState::INVALID_SCHEMA_NAME,
            SqlState::UNDEFINED_FUNCTION,
        ]
        .contains(code)
        {
            ErrorClass::Missing
        } else if [
            SqlState::DUPLICATE_DATABASE,
            SqlState::DUPLICATE_OBJECT,
            SqlState::UNIQUE_VIOLATION,
        ]
        .contains(code)
        {
            ErrorClass::Duplicate
        } else {
            ErrorClass::Other
        }
    }
}

/// The class of a server-reported error; None when the server reported none (the connection
/// broke, TLS failed): then whether a statement took effect is unknown.
pub fn classify(error: &tokio_postgres::Error) -> Option<ErrorClass> {
    error.code().map(ErrorClass::of)
}

/// Whether `error` is [`ErrorClass::Transient`] as the server itself reported it, so the
/// statement certainly did not take effect and may be retried.
pub fn is_transient(error: &tokio_postgres::Error) -> bool {
    classify(error) == Some(ErrorClass::Transient)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(code: &str) -> ErrorClass {
        ErrorClass::of(&SqlState::from_code(code))
    }

    #[test]
    fn sqlstates_fall_into_their_classes() {
        for code in ["40001", "40P01", "55P03"] {
            assert_eq!(class(code), ErrorClass::Transient, "{code}");
        }
        for code in [
            "57P01", "57P02", "57P03", "25006", "08000", "08006", "08P01", "08999",
        ] {
            assert_eq!(class(code), ErrorClass::Failover, "{code}");
        }
        for code in ["42501", "28000", "28P01"] {
            assert_eq!(class(code), ErrorClass::Permission, "{code}");
        }
        for code in ["53300", "53100", "53200"] {
            assert_eq!(class(code), ErrorClass::Resources, "{code}");
        }
        for code in ["3D000", "42704", "42P01", "3F000", "42883"] {
            assert_eq!(class(code), ErrorClass::Missing, "{code}");
        }
        for code in ["42P04", "42710", "23505"] {
            assert_eq!(class(code), ErrorClass::Duplicate, "{code}");
        }
        // Not transient: retrying a syntax error, a cancel or a check violation changes nothing.
        for code in [
            "42601", "57014", "23514", "40000", "55000", "XX000", "ZZ999",
        ] {
            assert_eq!(class(code), ErrorClass::Other, "{code}");
        }
    }
}
