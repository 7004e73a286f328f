//! The apps-repo spec of pgtenant.
//!
//! An apps repo declares tenant databases in Helm values files laid out as
//! `<namespace>/<folder…>/values.yaml`, under the top-level key `postgresqlDatabases`.
//! This crate reads such a repo, keeps the source position of every value, validates it and
//! converts legacy fields. It never touches a database.
//!
//! The contract with the engine: a file with any error contributes no databases and is listed
//! in [`LoadedRepo::failed_files`]; the tenants it declares are unknown and must be left alone.
//! Every problem of a repo is reported in one run, so a user fixes everything at once.

mod diagnostic;
mod file;
mod location;
mod model;
mod parse;
mod repo;
mod suggest;
mod validate;

pub use diagnostic::{Diagnostic, Severity};
pub use file::parse_file;
pub use location::SourceLocation;
pub use model::{
    ApiVersion, DatabaseSpec, Environment, LogStatements, Mode, Preset, RoleSettings, API_VERSION_V1,
    MAX_IDENTIFIER_BYTES, ROLE_SUFFIXES,
};
pub use repo::{load_repo, LoadedRepo, SpecError};
pub use validate::is_dns_label;
