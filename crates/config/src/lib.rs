//! The platform config of pgtenant: `pgtenant.yaml`, for what is not per tenant.
//!
//! It names the apps repo, the clusters (name, admin URL or a reference to it, the endpoint apps
//! connect to, CA, labels), the credential store, the platform tier, retention per tier, backup
//! schedules and server settings. Read strictly: every unknown key, wrong type or wrong value is
//! a [`Diagnostic`] located at its line and column (the spec crate's type), all of them in one
//! run. Relative paths in the file are relative to the file's own directory, so a command reads
//! the same config the same way from any current directory. `docs/config.md` is the reference.
//!
//! This crate never touches a database; [`AdminUrlSource::resolve`] reads the environment
//! variable or file an admin URL refers to.

mod cron;
mod model;
mod parse;
mod reference;
mod schema;

pub use cron::check_schedule;
pub use model::Passwords;
pub use model::{
    BackupSchedules, Capacity, ClusterConfig, Config, HostPort, PoolerAuth, PoolerConfig,
    PoolerRun, PoolingDefaults, ServeConfig, StoreConfig, StoreKind, TlsConfig, DEFAULT_CLUSTER,
    FILE_NAME,
};
pub use parse::{load, parse, Loaded};
pub use reference::{AdminUrlSource, ResolveError, Resolved};
pub use schema::{config_schema, config_schema_text};

pub use pgtenant_spec::{Diagnostic, Severity, SourceLocation};
