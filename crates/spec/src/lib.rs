//! The apps-repo spec of pgtenant.
//!
//! An apps repo declares tenant databases in Helm values files laid out as
//! `<namespace>/<folder…>/values.yaml`, under the top-level key `postgresqlDatabases`.
//! This crate reads such a repo, keeps the source position of every value, validates it and
//! converts legacy fields. It never touches a database.
//!
//! Two formats: legacy files (no `apiVersion`: the chart's `name`, `mode` and 0.5.0's
//! `deletionProtection`) and v1 files (`apiVersion: pgtenant.io/v1`: presets, schemas,
//! extensions, limits, environment, role settings). [`upgrade()`] turns a legacy file into v1 as a
//! minimal textual edit; [`values_file_schema`] is the JSON Schema of a values file for editors.
//! `docs/spec.md` is the user-facing reference.
//!
//! The contract with the engine: a file with any error contributes no databases and is listed
//! in [`LoadedRepo::failed_files`]; the tenants it declares are unknown and must be left alone.
//! Every problem of a repo is reported in one run, so a user fixes everything at once.

mod diagnostic;
mod duration;
mod file;
mod location;
mod model;
mod parse;
mod repo;
mod schema;
mod suggest;
mod tenant;
mod upgrade;
mod validate;

pub use diagnostic::{shown, Diagnostic, Severity};
pub use duration::{parse_duration_ms_up_to, DurationError};
pub use file::parse_file;
pub use location::SourceLocation;
pub use model::{
    is_label_key, ApiVersion, ClusterChoice, DatabaseSpec, Environment, LogStatements, Mode,
    PoolMode, Pooling, Preset, RoleSettings, API_VERSION_V1, LABEL_KEY_HINT, MAX_IDENTIFIER_BYTES,
    ROLE_SUFFIXES,
};
pub use parse::{describe, listed, syntax_error};
pub use repo::{
    find_values_files, load_repo, load_repo_from_checked, load_repo_from_texts, load_repo_scoped,
    load_repo_with, read_values_file, read_values_file_with, CheckedValuesFile, LoadOptions,
    LoadedRepo, SpecError, DEFAULT_MAX_VALUES_FILE_BYTES, MAX_VALUES_FILE_BYTES_ENV, VALUES_FILES,
};
pub use schema::{draft07_schema_for, schema_text, values_file_schema, values_file_schema_text};
pub use suggest::{closest, closest_word};
pub use tenant::{
    alternate_role_name, role_name, PresetRole, RoleDuty, RoleKind, TenantId, TenantIdError,
    LOGIN_ROLES, SECRET_PATH_PREFIX,
};
pub use upgrade::{upgrade, Change, Unchanged, Upgrade};
pub use validate::is_dns_label;
