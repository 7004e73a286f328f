//! The JSON Schema of a values file, for editors (yaml-language-server) and linters.
//!
//! Generated with schemars from the "file format" types below, which mirror the YAML (camelCase)
//! rather than the validated model; their enumerated values come from the model's own lists
//! (`Mode::ALL`, `Preset::ALL`, …). The parser stays the authority: the schema cannot express
//! everything it checks (collisions across files, identifier lengths that depend on the
//! namespace folder), but whatever the schema rejects, the parser rejects too (tested).

use std::borrow::Cow;
use std::collections::BTreeMap;

use schemars::generate::SchemaSettings;
use schemars::transform::RecursiveTransform;
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde_json::{Map, Value};

use crate::duration::{MAX_TIMEOUT_MS, UNITS};
use crate::model::{
    Environment, LogStatements, Mode, PoolMode, Pooling, Preset, API_VERSION_V1,
    MAX_IDENTIFIER_BYTES,
};
use crate::parse::{API_VERSION_KEY, DATABASES_KEY};

/// A DNS-1123 label, as database names and namespace folders must be.
const DNS_LABEL_PATTERN: &str = "^[a-z0-9]([a-z0-9-]*[a-z0-9])?$";
const SCHEMA_PATTERN: &str = "^[a-z_][a-z0-9_]*$";
const EXTENSION_PATTERN: &str = "^[a-z0-9_][a-z0-9_-]*$";

/// A whole values file: the chart's own values are allowed next to the keys pgtenant reads.
struct ValuesFile;

impl JsonSchema for ValuesFile {
    fn schema_name() -> Cow<'static, str> {
        "ValuesFile".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let v1 = generator.subschema_for::<Database>();
        let legacy = generator.subschema_for::<LegacyDatabase>();
        json_schema!({
            "title": "pgtenant values file",
            "description": "Tenant databases declared in an apps repo (`<namespace>/<folder>/values.yaml`). Only `apiVersion` and `postgresqlDatabases` are read by pgtenant; the rest of the file belongs to the application's chart.",
            "type": "object",
            "properties": {
                API_VERSION_KEY: {
                    "description": format!("The format of `postgresqlDatabases`: `{API_VERSION_V1}`. Without it the file is read in the legacy (chart 1.0.1) format, which knows only `name`, `mode` and `deletionProtection`; `pgtenant spec upgrade` converts it."),
                    "type": "string",
                    "enum": [API_VERSION_V1],
                },
                DATABASES_KEY: {
                    "description": "The tenant databases of this folder's namespace (its first-level folder in the apps repo).",
                    "type": ["array", "null"],
                },
            },
            "additionalProperties": true,
            "if": {
                "properties": { API_VERSION_KEY: { "const": API_VERSION_V1 } },
                "required": [API_VERSION_KEY],
            },
            "then": {
                "properties": { DATABASES_KEY: { "items": v1 } },
            },
            "else": {
                "properties": { DATABASES_KEY: { "items": legacy } },
            },
        })
    }
}

/// A tenant database in a v1 file (`apiVersion: pgtenant.io/v1`).
#[derive(JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(title = "Database (v1)", transform = roles_of_the_preset)]
#[allow(dead_code)]
struct Database {
    /// The database is `<namespace>-<name>`, its roles `<namespace>-<name>-<role>`. A DNS-1123
    /// label: lowercase letters, digits and `-`, starting and ending with a letter or digit.
    #[schemars(schema_with = "dns_label")]
    name: String,
    /// `standard` (default): dropped with its roles and credentials once removed from the repo.
    /// `protected`: never dropped; removing it from the repo only stops reconciling it.
    #[serde(default)]
    #[schemars(schema_with = "mode")]
    mode: Mode,
    /// The role model. `idp` (default): logins admin (owns the database), write, read.
    /// `app-migrator`: logins migrator (owns the database and schema `app`, runs migrations)
    /// and app (reads and writes data). `schema-owner`: a NOLOGIN owner owns the schemas;
    /// logins app and write act as it; login read has SELECT.
    #[serde(default)]
    #[schemars(schema_with = "preset")]
    preset: Preset,
    /// Schemas besides `public`, owned and granted like it. Lowercase identifiers; not
    /// `public`, `information_schema` or `pg_*`. Preset app-migrator always has `app`.
    #[serde(default)]
    #[schemars(schema_with = "schemas")]
    schemas: Vec<String>,
    /// Extensions to create in the database, e.g. `pgcrypto`, `uuid-ossp`.
    #[serde(default)]
    #[schemars(schema_with = "extensions")]
    extensions: Vec<String>,
    /// Most concurrent connections to the database (`-1`: no limit).
    #[serde(default)]
    #[schemars(schema_with = "connection_limit")]
    connection_limit: Option<i32>,
    /// The environment tier: decides backup retention (production and staging 35 days, test
    /// and dev 7).
    #[serde(default)]
    #[schemars(schema_with = "environment")]
    environment: Option<Environment>,
    /// Settings of the preset's login roles, by role (`admin`, `write`, `read`, `migrator`,
    /// `app`).
    #[serde(default)]
    roles: BTreeMap<String, RoleSettings>,
    /// The database's pool in the cluster's pooler (pgbouncer): `none` opts out (no pool entry,
    /// no pooled endpoint in the credentials); `{mode, size}` overrides the platform's defaults
    /// (`pooling:` in pgtenant.yaml: transaction mode, 10 server connections).
    #[serde(default)]
    #[schemars(schema_with = "pooling")]
    pooling: Option<String>,
    /// The cluster of the platform config (`clusters[].name` in pgtenant.yaml) a new tenant
    /// goes to. Placement is sticky: a tenant that exists stays on its cluster; a different
    /// `cluster` is reported, never acted on (`pgtenant move` moves it).
    #[serde(default)]
    #[schemars(schema_with = "dns_label")]
    cluster: Option<String>,
    /// Where a new tenant goes when `cluster` is not set: `labels` the cluster must have
    /// (default: `tier` is the tenant's environment, when some cluster has a `tier` label);
    /// among those, the cluster with the most headroom.
    #[serde(default)]
    placement: Option<PlacementSettings>,
}

/// `placement:` of a tenant database.
#[derive(JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(title = "Placement")]
#[allow(dead_code)]
struct PlacementSettings {
    /// Labels the cluster must have, e.g. `{region: eu}`.
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// A tenant database in a legacy file (no `apiVersion`): chart 1.0.1's fields, and chart
/// 0.5.0's `deletionProtection`.
#[derive(JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(title = "Database (legacy)")]
#[allow(dead_code)]
struct LegacyDatabase {
    /// The database is `<namespace>-<name>`, its roles `<namespace>-<name>-admin|write|read`.
    #[schemars(schema_with = "dns_label")]
    name: String,
    /// `standard` (default) or `protected` (never dropped).
    #[serde(default)]
    #[schemars(schema_with = "mode")]
    mode: Mode,
    /// Chart 0.5.0's spelling of `mode`: `true` is `mode: protected`. Not together with `mode`.
    /// Removed in v1 (`pgtenant spec upgrade` replaces it).
    #[serde(default)]
    deletion_protection: bool,
}

/// Settings of one login role; unset ones keep the server's defaults.
#[derive(JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(title = "Role settings")]
#[allow(dead_code)]
struct RoleSettings {
    /// Most concurrent connections of the role (`-1`: no limit).
    #[serde(default)]
    #[schemars(schema_with = "connection_limit")]
    connection_limit: Option<i32>,
    /// PostgreSQL's `statement_timeout` for the role: a whole number with a unit `ms`, `s`,
    /// `min`, `h` or `d` (`250ms`, `30s`, `5min`), or a number of milliseconds; `0` disables it.
    #[serde(default)]
    #[schemars(schema_with = "statement_timeout")]
    statement_timeout: Option<String>,
    /// PostgreSQL's `log_statement` for the role: which of its statements the server logs.
    #[serde(default)]
    #[schemars(schema_with = "log_statements")]
    log_statements: Option<LogStatements>,
}

fn dns_label(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "pattern": DNS_LABEL_PATTERN,
        "minLength": 1,
        "maxLength": 63,
    })
}

/// One of `words`; the default, if any, comes from the field's `#[serde(default)]`.
fn words(words: &[&str]) -> Schema {
    json_schema!({ "type": "string", "enum": words })
}

fn mode(_: &mut SchemaGenerator) -> Schema {
    words(&Mode::ALL.map(|mode| mode.as_str()))
}

fn preset(_: &mut SchemaGenerator) -> Schema {
    words(&Preset::ALL.map(|preset| preset.as_str()))
}

fn environment(_: &mut SchemaGenerator) -> Schema {
    words(&Environment::ALL.map(|environment| environment.as_str()))
}

fn log_statements(_: &mut SchemaGenerator) -> Schema {
    words(&LogStatements::ALL.map(|level| level.as_str()))
}

fn pooling(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "oneOf": [
            { "type": "string", "enum": [Pooling::NONE] },
            {
                "type": "object",
                "additionalProperties": false,
                "properties": {
                    "mode": {
                        "description": "`transaction` (default): a server connection per transaction; `session`: one per client session.",
                        "type": "string",
                        "enum": PoolMode::ALL.map(|mode| mode.as_str()),
                    },
                    "size": {
                        "description": "Server connections of the pool (pgbouncer's `pool_size`).",
                        "type": "integer",
                        "minimum": 1,
                        "maximum": Pooling::MAX_SIZE,
                    },
                },
            },
        ],
    })
}

fn schemas(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "uniqueItems": true,
        "items": {
            "type": "string",
            "pattern": SCHEMA_PATTERN,
            "maxLength": MAX_IDENTIFIER_BYTES,
            "not": {
                "anyOf": [
                    { "enum": ["public", "information_schema"] },
                    { "pattern": "^pg_" },
                ],
            },
        },
    })
}

fn extensions(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "uniqueItems": true,
        "items": {
            "type": "string",
            "pattern": EXTENSION_PATTERN,
            "maxLength": MAX_IDENTIFIER_BYTES,
        },
    })
}

fn connection_limit(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "integer",
        "minimum": -1,
        "maximum": i32::MAX,
    })
}

fn statement_timeout(_: &mut SchemaGenerator) -> Schema {
    let units: Vec<&str> = UNITS.iter().map(|(unit, _)| *unit).collect();
    json_schema!({
        "oneOf": [
            {
                "description": "milliseconds",
                "type": "integer",
                "minimum": 0,
                "maximum": MAX_TIMEOUT_MS,
            },
            {
                "description": "a whole number with a unit",
                "type": "string",
                "pattern": format!("^\\s*\\+?[0-9]+\\s*({})?\\s*$", units.join("|")),
            },
        ],
    })
}

/// `roles` keys are the login roles of the entry's preset: one `if`/`then` per preset.
fn roles_of_the_preset(schema: &mut Schema) {
    let rules: Vec<Value> = Preset::ALL
        .iter()
        .map(|preset| {
            let this_preset = serde_json::json!({
                "properties": { "preset": { "const": preset.as_str() } },
                "required": ["preset"],
            });
            let condition = if *preset == Preset::default() {
                serde_json::json!({ "anyOf": [{ "not": { "required": ["preset"] } }, this_preset] })
            } else {
                this_preset
            };
            serde_json::json!({
                "if": condition,
                "then": {
                    "properties": {
                        "roles": { "propertyNames": { "enum": preset.login_roles() } },
                    },
                },
            })
        })
        .collect();
    schema.insert("allOf".to_owned(), Value::Array(rules));
}

/// The JSON Schema of a values file (draft-07, which every editor plugin reads).
pub fn values_file_schema() -> serde_json::Value {
    draft07_schema_for::<ValuesFile>()
}

/// [`values_file_schema`] as the text of `docs/pgtenant.schema.json`.
pub fn values_file_schema_text() -> String {
    schema_text(&values_file_schema())
}

/// The draft-07 JSON Schema of `T`, tidied for editors and with sorted keys: how pgtenant writes
/// the schemas of its files (values files here, the platform config in pgtenant-config).
pub fn draft07_schema_for<T: JsonSchema>() -> serde_json::Value {
    // An optional field without a default value gets `"default": null` from `#[serde(default)]`,
    // which editors would offer to insert; null is not a valid value of any of them.
    // Doc comments are wrapped at 100 columns; hovers wrap descriptions themselves.
    let tidy = RecursiveTransform(|schema: &mut Schema| {
        if schema.get("default") == Some(&Value::Null) {
            schema.remove("default");
        }
        if let Some(Value::String(description)) = schema.get_mut("description") {
            *description = description.replace('\n', " ");
        }
    });
    let generator = SchemaSettings::draft07()
        .with_transform(tidy)
        .into_generator();
    let schema = generator.into_root_schema_for::<T>();
    sorted(schema.to_value())
}

/// A schema as the text of a committed `docs/*.schema.json`: pretty-printed with sorted keys, so
/// the output does not depend on serde_json's features, and a final newline.
pub fn schema_text(schema: &serde_json::Value) -> String {
    let mut text =
        serde_json::to_string_pretty(&sorted(schema.clone())).expect("a JSON value serializes");
    text.push('\n');
    text
}

/// Keys in sorted order at every level. With serde_json's `preserve_order` feature (which any
/// crate in a build may turn on) maps keep insertion order, so it is sorted here explicitly.
fn sorted(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(key, value)| (key, sorted(value)))
                    .collect::<Map<String, Value>>(),
            )
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}
