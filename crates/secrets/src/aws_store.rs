//! The AWS Secrets Manager store: one secret per tenant role, named `<prefix><namespace>/<database>-<role>`
//! (prefix `customer/` by default, the platform's naming), whose current value (`AWSCURRENT`) is the
//! JSON the platform's `ExternalSecret`s read: `username`, `password`, `endpoint`, `port`, plus
//! `dbname`, `sslmode` and `uri`.
//!
//! # Pending passwords are version stages
//!
//! The engine journals a new password at `pgtenant/pending/<namespace>/<database>-<role>` before the
//! server has it (see `pgtenant_engine::rotate`). Here that journal entry is not a secret of its own
//! but the `AWSPENDING` version of the role's secret:
//!
//! - `put(journal)` is `PutSecretValue` with stage `AWSPENDING` (a secret that does not exist yet is
//!   created first with a placeholder current value that names no credential, so that the pending
//!   password never becomes current by being the first version);
//! - `get(journal)` reads the `AWSPENDING` version;
//! - `put(secret)` writes the credential as the new `AWSCURRENT` version (Secrets Manager moves
//!   `AWSPREVIOUS` to the one it replaces), unless it is current already; when it is the pending
//!   credential, this is its *promotion*, and the `AWSPENDING` stage is then removed;
//! - `delete(journal)` removes the `AWSPENDING` stage (the rollback when the server never had it);
//! - `list()` names the journal path of every secret that has an `AWSPENDING` version.
//!
//! A crash at any step is settled by the next run as with the file store's journal.
//!
//! # Calls
//!
//! `list` is `ListSecrets` filtered by the prefix (100 per page); [`CredentialStore::get_many`] is
//! `BatchGetSecretValue` (20 per call). Throttling and transient errors are retried by the SDK's
//! standard retry strategy with exponential backoff. Every request is logged at debug level to
//! the `pgtenant_secrets::aws` target and counted ([`AwsSecretsManagerStore::requests`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_secretsmanager::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_secretsmanager::config::retry::RetryConfig;
use aws_sdk_secretsmanager::config::timeout::TimeoutConfig;
use aws_sdk_secretsmanager::config::{ConfigBag, Intercept, Region, RuntimeComponents};
use aws_sdk_secretsmanager::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_secretsmanager::types::{Filter, FilterNameStringType, Tag};
use aws_sdk_secretsmanager::Client;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{Credential, CredentialStore, PoolerAddress, SecretPath, StoreError, PENDING_PREFIX};

/// The stages Secrets Manager gives versions.
const CURRENT: &str = "AWSCURRENT";
const PENDING: &str = "AWSPENDING";

/// The current value of a secret created for a pending password: it names no credential.
const PLACEHOLDER_KEY: &str = "pgtenant";
const PLACEHOLDER: &str = r#"{"pgtenant":"no credential yet: the password is pending"}"#;

/// How long a deleted secret can be restored (`RestoreSecret`); 7 is Secrets Manager's minimum.
const RECOVERY_WINDOW_DAYS: i64 = 7;

/// `BatchGetSecretValue` takes at most 20 secret ids.
const BATCH: usize = 20;

/// Where the store is and how it writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsSettings {
    /// None: the SDK's (`AWS_REGION`, the profile).
    pub region: Option<String>,
    /// What secret names start with, ending with `/`.
    pub prefix: String,
    /// Another API endpoint (VPC endpoint, local emulator).
    pub endpoint_url: Option<String>,
    /// The KMS key new secrets are encrypted with; None: `aws/secretsmanager`.
    pub kms_key_id: Option<String>,
}

impl Default for AwsSettings {
    fn default() -> Self {
        AwsSettings {
            region: None,
            prefix: pgtenant_spec::SECRET_PATH_PREFIX.to_owned(),
            endpoint_url: None,
            kms_key_id: None,
        }
    }
}

/// The credential store in AWS Secrets Manager (see the module documentation).
pub struct AwsSecretsManagerStore {
    settings: AwsSettings,
    /// Made on first use: loading the SDK's configuration is async.
    client: tokio::sync::OnceCell<Client>,
    requests: Arc<AtomicU64>,
}

impl std::fmt::Debug for AwsSecretsManagerStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsSecretsManagerStore")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Where a [`SecretPath`] lives in Secrets Manager.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Location {
    /// The current value of the secret `name`.
    Current(String),
    /// The `AWSPENDING` version of the secret `name` (an engine journal path).
    Pending(String),
}

/// The JSON of a secret's value, as read back (extra keys ignored; `port` a number or a string).
#[derive(Deserialize)]
struct StoredValue {
    username: String,
    password: String,
    endpoint: String,
    port: Port,
    dbname: String,
    /// Written only for pooled credentials.
    #[serde(default)]
    pooler_endpoint: Option<String>,
    #[serde(default)]
    pooler_port: Option<Port>,
    /// Written only when the password's verifier has another count than the default.
    #[serde(default)]
    scram_iterations: Option<u32>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Port {
    Number(u16),
    Text(String),
}

impl AwsSecretsManagerStore {
    pub fn new(settings: AwsSettings) -> Self {
        AwsSecretsManagerStore {
            settings,
            client: tokio::sync::OnceCell::new(),
            requests: Arc::new(AtomicU64::new(0)),
        }
    }

    pub fn settings(&self) -> &AwsSettings {
        &self.settings
    }

    /// How many HTTP requests this store sent (retries included).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// The secret name of a credential path: `customer/shop/orders-app` → `<prefix>shop/orders-app`.
    pub fn secret_name(&self, path: &SecretPath) -> String {
        match self.location(path) {
            Ok(Location::Current(name) | Location::Pending(name)) => name,
            Err(_) => path.as_str().to_owned(),
        }
    }

    fn location(&self, path: &SecretPath) -> Result<Location, StoreError> {
        let path = path.as_str();
        if let Some(rest) = path.strip_prefix(pgtenant_spec::SECRET_PATH_PREFIX) {
            return Ok(Location::Current(format!("{}{rest}", self.settings.prefix)));
        }
        if let Some(rest) = path.strip_prefix(PENDING_PREFIX) {
            return Ok(Location::Pending(format!("{}{rest}", self.settings.prefix)));
        }
        Err(StoreError::Unsupported {
            path: path.to_owned(),
            store: "aws-secrets-manager",
        })
    }

    /// The credential path of a secret name under the prefix, if it is one.
    fn path_of(&self, name: &str) -> Option<(SecretPath, SecretPath)> {
        let rest = name.strip_prefix(&self.settings.prefix)?;
        let current =
            SecretPath::parse(&format!("{}{rest}", pgtenant_spec::SECRET_PATH_PREFIX)).ok()?;
        let pending = SecretPath::parse(&format!("{PENDING_PREFIX}{rest}")).ok()?;
        // Only `<namespace>/<database>-<role>`.
        (rest.split('/').count() == 2).then_some((current, pending))
    }

    /// The SDK client, configured as the store uses it (made on first use).
    pub async fn client(&self) -> Result<&Client, StoreError> {
        self.client
            .get_or_try_init(|| async {
                let http = aws_smithy_http_client::Builder::new()
                    .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                        aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
                    ))
                    .build_https();
                let mut loader =
                    aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(http);
                if let Some(region) = &self.settings.region {
                    loader = loader.region(Region::new(region.clone()));
                }
                if let Some(url) = &self.settings.endpoint_url {
                    loader = loader.endpoint_url(url);
                }
                let shared = loader.load().await;
                if shared.region().is_none() {
                    return Err(StoreError::Aws {
                        operation: "configure",
                        name: self.settings.prefix.clone(),
                        message: "no AWS region: set `store.region` in pgtenant.yaml or AWS_REGION"
                            .to_owned(),
                    });
                }
                let config = aws_sdk_secretsmanager::config::Builder::from(&shared)
                    .retry_config(
                        RetryConfig::standard()
                            .with_max_attempts(8)
                            .with_initial_backoff(Duration::from_millis(100))
                            .with_max_backoff(Duration::from_secs(10)),
                    )
                    .timeout_config(
                        TimeoutConfig::builder()
                            .connect_timeout(Duration::from_secs(5))
                            .operation_attempt_timeout(Duration::from_secs(20))
                            .build(),
                    )
                    .interceptor(CountRequests(self.requests.clone()))
                    .build();
                Ok(Client::from_conf(config))
            })
            .await
    }

    /// The `AWSPENDING` version of `name`: its id, stages and credential.
    async fn pending(
        &self,
        name: &str,
    ) -> Result<Option<(String, Vec<String>, Credential)>, StoreError> {
        let result = self
            .client()
            .await?
            .get_secret_value()
            .secret_id(name)
            .version_stage(PENDING)
            .send()
            .await;
        match result {
            Ok(output) => {
                let Some(credential) = self.parse(name, output.secret_string())? else {
                    return Ok(None);
                };
                let id = output.version_id().unwrap_or_default().to_owned();
                Ok(Some((id, output.version_stages().to_vec(), credential)))
            }
            Err(e) if absent(&e) || scheduled_for_deletion(&e) => Ok(None),
            Err(e) => Err(aws_error("GetSecretValue", name, e)),
        }
    }

    /// The credential in a secret's value; None for the placeholder of a pending-only secret.
    fn parse(&self, name: &str, value: Option<&str>) -> Result<Option<Credential>, StoreError> {
        let corrupt = |reason: &str, source: Option<serde_json::Error>| StoreError::Corrupt {
            path: name.into(),
            reason: reason.to_owned(),
            source: source.map(Into::into),
        };
        let value = value.ok_or_else(|| corrupt("the secret has no string value", None))?;
        let json: Value = serde_json::from_str(value)
            .map_err(|e| corrupt("the secret's value is not JSON", Some(e)))?;
        if json.get(PLACEHOLDER_KEY).is_some() && json.get("username").is_none() {
            return Ok(None);
        }
        let stored: StoredValue = serde_json::from_value(json).map_err(|e| {
            corrupt(
                "the secret's value lacks username, password, endpoint, port or dbname",
                Some(e),
            )
        })?;
        let port_of = |port: Port| match port {
            Port::Number(port) => Ok(port),
            Port::Text(text) => text
                .parse()
                .map_err(|_| corrupt("the secret's port is not a port number", None)),
        };
        let port = port_of(stored.port)?;
        let pooler = match (stored.pooler_endpoint, stored.pooler_port) {
            (Some(endpoint), Some(port)) => Some(PoolerAddress {
                endpoint,
                port: port_of(port)?,
            }),
            _ => None,
        };
        Ok(Some(Credential {
            username: stored.username,
            password: stored.password,
            endpoint: stored.endpoint,
            port,
            dbname: stored.dbname,
            pooler,
            scram_iterations: stored.scram_iterations,
        }))
    }

    /// Creates `name` (tagged as pgtenant's) with `value` as its current version; a secret of that
    /// name scheduled for deletion is restored instead and false returned (the value is not written).
    async fn create(&self, name: &str, value: &str) -> Result<bool, StoreError> {
        let mut request = self
            .client()
            .await?
            .create_secret()
            .name(name)
            .secret_string(value)
            .description("Credentials of a tenant role, managed by pgtenant")
            .tags(Tag::builder().key("managed-by").value("pgtenant").build());
        if let Some(tenant) = self.tenant_of(name) {
            request = request.tags(Tag::builder().key("pgtenant/tenant").value(tenant).build());
        }
        if let Some(key) = &self.settings.kms_key_id {
            request = request.kms_key_id(key);
        }
        match request.send().await {
            Ok(_) => Ok(true),
            Err(e) if scheduled_for_deletion(&e) => {
                self.restore(name).await?;
                Ok(false)
            }
            Err(e) => Err(aws_error("CreateSecret", name, e)),
        }
    }

    /// `NS/DB` of `<prefix>NS/DB-ROLE`.
    fn tenant_of(&self, name: &str) -> Option<String> {
        let rest = name.strip_prefix(&self.settings.prefix)?;
        let (namespace, database_role) = rest.split_once('/')?;
        let (database, _) = database_role.rsplit_once('-')?;
        Some(format!("{namespace}/{database}"))
    }

    /// `PutSecretValue` of `value` with `stages` (None: Secrets Manager's default, `AWSCURRENT`),
    /// creating or restoring the secret first as needed. `initial` is what a new secret starts with.
    async fn put_value(
        &self,
        name: &str,
        value: &str,
        stages: Option<&str>,
        initial: &str,
    ) -> Result<(), StoreError> {
        if self.ensure_exists(name, initial).await? && initial == value {
            return Ok(());
        }
        let mut request = self
            .client()
            .await?
            .put_secret_value()
            .secret_id(name)
            .secret_string(value);
        if let Some(stage) = stages {
            request = request.version_stages(stage);
        }
        request
            .send()
            .await
            .map_err(|e| aws_error("PutSecretValue", name, e))?;
        Ok(())
    }

    /// Takes secret `name` out of its recovery window.
    async fn restore(&self, name: &str) -> Result<(), StoreError> {
        self.client()
            .await?
            .restore_secret()
            .secret_id(name)
            .send()
            .await
            .map_err(|e| aws_error("RestoreSecret", name, e))?;
        Ok(())
    }

    /// Makes sure secret `name` exists and is not deleted: created with `initial` (true returned),
    /// or restored from its recovery window. Asked first rather than learnt from a failed write,
    /// since not every implementation refuses writes to a deleted secret (moto does not).
    async fn ensure_exists(&self, name: &str, initial: &str) -> Result<bool, StoreError> {
        let described = self
            .client()
            .await?
            .describe_secret()
            .secret_id(name)
            .send()
            .await;
        match described {
            Ok(d) if d.deleted_date().is_some() => {
                self.restore(name).await?;
                Ok(false)
            }
            Ok(_) => Ok(false),
            Err(e) if absent(&e) => self.create(name, initial).await,
            Err(e) => Err(aws_error("DescribeSecret", name, e)),
        }
    }

    /// Moves `stage` to `to` (from whichever version has it) or removes it from `from`.
    async fn move_stage(
        &self,
        name: &str,
        stage: &str,
        to: Option<&str>,
        from: Option<&str>,
    ) -> Result<(), StoreError> {
        self.client()
            .await?
            .update_secret_version_stage()
            .secret_id(name)
            .version_stage(stage)
            .set_move_to_version_id(to.map(str::to_owned))
            .set_remove_from_version_id(from.map(str::to_owned))
            .send()
            .await
            .map_err(|e| aws_error("UpdateSecretVersionStage", name, e))?;
        Ok(())
    }

    /// The credential in the `AWSCURRENT` version of `name` (named explicitly: moto answers a
    /// request without a stage with the last version written, not the current one).
    async fn current(&self, name: &str) -> Result<Option<Credential>, StoreError> {
        let result = self
            .client()
            .await?
            .get_secret_value()
            .secret_id(name)
            .version_stage(CURRENT)
            .send()
            .await;
        match result {
            Ok(output) => self.parse(name, output.secret_string()),
            Err(e) if absent(&e) || scheduled_for_deletion(&e) => Ok(None),
            Err(e) => Err(aws_error("GetSecretValue", name, e)),
        }
    }
}

/// The JSON the platform's `ExternalSecret`s read (see the module documentation).
pub fn secret_value(credential: &Credential) -> String {
    let options = crate::ConnectionOptions::default();
    // `uri` needs only the credential and the options; the tenant names no part of it.
    let export = crate::Export {
        tenant: crate::TenantRole {
            namespace: "",
            database: "",
            role: "",
        },
        credential,
        options: &options,
    };
    let mut value = json!({
        "username": credential.username,
        "password": credential.password,
        "endpoint": credential.endpoint,
        "port": credential.port,
        "dbname": credential.dbname,
        "sslmode": options.sslmode.as_str(),
        "uri": export.uri(),
    });
    export.add_pooler_keys(&mut value);
    if let Some(iterations) = credential.scram_iterations {
        value["scram_iterations"] = json!(iterations);
    }
    value.to_string()
}

#[async_trait::async_trait]
impl CredentialStore for AwsSecretsManagerStore {
    async fn get(&self, path: &SecretPath) -> Result<Option<Credential>, StoreError> {
        match self.location(path)? {
            Location::Pending(name) => Ok(self.pending(&name).await?.map(|(_, _, c)| c)),
            Location::Current(name) => self.current(&name).await,
        }
    }

    async fn put(&self, path: &SecretPath, credential: &Credential) -> Result<(), StoreError> {
        let value = secret_value(credential);
        match self.location(path)? {
            Location::Pending(name) => {
                self.put_value(&name, &value, Some(PENDING), PLACEHOLDER)
                    .await
            }
            Location::Current(name) => {
                let pending = self.pending(&name).await?;
                // Written only when it differs: a promotion settled twice leaves one version.
                if self.current(&name).await?.as_ref() != Some(credential) {
                    self.put_value(&name, &value, None, &value).await?;
                }
                match pending {
                    // The promotion of the pending password: it is current now.
                    Some((version, _, pending)) if pending == *credential => {
                        self.move_stage(&name, PENDING, None, Some(&version)).await
                    }
                    _ => Ok(()),
                }
            }
        }
    }

    async fn delete(&self, path: &SecretPath) -> Result<(), StoreError> {
        match self.location(path)? {
            Location::Pending(name) => match self.pending(&name).await? {
                Some((version, _, _)) => {
                    self.move_stage(&name, PENDING, None, Some(&version)).await
                }
                None => Ok(()),
            },
            Location::Current(name) => {
                let result = self
                    .client()
                    .await?
                    .delete_secret()
                    .secret_id(&name)
                    .recovery_window_in_days(RECOVERY_WINDOW_DAYS)
                    .send()
                    .await;
                match result {
                    Ok(_) => Ok(()),
                    Err(e) if absent(&e) || scheduled_for_deletion(&e) => Ok(()),
                    Err(e) => Err(aws_error("DeleteSecret", &name, e)),
                }
            }
        }
    }

    async fn list(&self) -> Result<Vec<SecretPath>, StoreError> {
        let client = self.client().await?;
        let mut paths = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = client
                .list_secrets()
                .filters(
                    Filter::builder()
                        .key(FilterNameStringType::Name)
                        .values(&self.settings.prefix)
                        .build(),
                )
                .max_results(100)
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| aws_error("ListSecrets", &self.settings.prefix, e))?;
            for entry in page.secret_list() {
                let Some((current, pending)) = entry.name().and_then(|n| self.path_of(n)) else {
                    continue;
                };
                let stages = entry.secret_versions_to_stages();
                let has = |stage: &str| {
                    stages.is_some_and(|versions| {
                        versions.values().any(|s| s.iter().any(|s| s == stage))
                    })
                };
                if has(CURRENT) {
                    paths.push(current);
                }
                if has(PENDING) {
                    paths.push(pending);
                }
            }
            token = page.next_token().map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        paths.sort();
        paths.dedup();
        Ok(paths)
    }

    async fn get_many(
        &self,
        paths: &[SecretPath],
    ) -> Result<BTreeMap<SecretPath, Credential>, StoreError> {
        let mut found = BTreeMap::new();
        let mut by_name = BTreeMap::new();
        for path in paths {
            match self.location(path)? {
                Location::Current(name) => {
                    by_name.insert(name, path.clone());
                }
                Location::Pending(_) => {
                    if let Some(credential) = self.get(path).await? {
                        found.insert(path.clone(), credential);
                    }
                }
            }
        }
        let names: Vec<&String> = by_name.keys().collect();
        for chunk in names.chunks(BATCH) {
            let mut token: Option<String> = None;
            loop {
                let page = self
                    .client()
                    .await?
                    .batch_get_secret_value()
                    .set_secret_id_list(Some(chunk.iter().map(|n| n.to_string()).collect()))
                    .set_next_token(token.take())
                    .send()
                    .await
                    .map_err(|e| aws_error("BatchGetSecretValue", chunk[0], e))?;
                for error in page.errors() {
                    let code = error.error_code().unwrap_or_default();
                    let deleted = code == "InvalidRequestException"
                        && error
                            .message()
                            .is_some_and(|m| m.contains("deletion") || m.contains("deleted"));
                    if code != "ResourceNotFoundException" && !deleted {
                        return Err(StoreError::Aws {
                            operation: "BatchGetSecretValue",
                            name: error.secret_id().unwrap_or_default().to_owned(),
                            message: format!("{code}: {}", error.message().unwrap_or("no message")),
                        });
                    }
                }
                for value in page.secret_values() {
                    let name = value.name().unwrap_or_default();
                    let Some(path) = by_name.get(name) else {
                        continue;
                    };
                    if let Some(credential) = self.parse(name, value.secret_string())? {
                        found.insert(path.clone(), credential);
                    }
                }
                token = page.next_token().map(str::to_owned);
                if token.is_none() {
                    break;
                }
            }
        }
        Ok(found)
    }
}

/// Counts and logs every request sent (each retry too).
#[derive(Debug)]
struct CountRequests(Arc<AtomicU64>);

impl Intercept for CountRequests {
    fn name(&self) -> &'static str {
        "pgtenant::CountRequests"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), aws_sdk_secretsmanager::error::BoxError> {
        let count = self.0.fetch_add(1, Ordering::Relaxed) + 1;
        let operation = context
            .request()
            .headers()
            .get("x-amz-target")
            .and_then(|t| t.rsplit('.').next())
            .unwrap_or("unknown");
        tracing::debug!(target: "pgtenant_secrets::aws", operation, count, "Secrets Manager request");
        Ok(())
    }
}

/// The secret (or the version asked for) does not exist.
fn absent<E: ProvideErrorMetadata, R>(error: &SdkError<E, R>) -> bool {
    error.code() == Some("ResourceNotFoundException")
}

/// The secret was deleted and can still be restored.
fn scheduled_for_deletion<E: ProvideErrorMetadata, R>(error: &SdkError<E, R>) -> bool {
    error.code() == Some("InvalidRequestException")
        && error
            .message()
            .is_some_and(|m| m.contains("deletion") || m.contains("deleted"))
}

fn aws_error<E, R>(operation: &'static str, name: &str, error: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let hint = match error.code() {
        Some("AccessDeniedException") => {
            "; grant the caller the IAM actions listed in docs/store.md on the prefix's secrets"
        }
        Some("UnrecognizedClientException" | "InvalidSignatureException" | "ExpiredTokenException") => {
            "; check the AWS credentials (AWS_PROFILE, AWS_ACCESS_KEY_ID, the instance or task role)"
        }
        Some(_) => "",
        None => "; is the endpoint reachable and are AWS credentials configured?",
    };
    // The service's own words where it answered; the whole chain (connection, timeout) otherwise.
    let said = match (error.code(), error.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_owned(),
        _ => DisplayErrorContext(&error).to_string(),
    };
    StoreError::Aws {
        operation,
        name: name.to_owned(),
        message: format!("{said}{hint}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(prefix: &str) -> AwsSecretsManagerStore {
        AwsSecretsManagerStore::new(AwsSettings {
            prefix: prefix.to_owned(),
            ..AwsSettings::default()
        })
    }

    #[test]
    fn paths_map_to_secret_names_and_pending_stages() {
        let s = store("prod/customer/");
        let path = SecretPath::for_role("shop", "orders-db", "app");
        assert_eq!(
            s.location(&path).unwrap(),
            Location::Current("prod/customer/shop/orders-db-app".into())
        );
        let journal = SecretPath::parse("pgtenant/pending/shop/orders-db-app").unwrap();
        assert_eq!(
            s.location(&journal).unwrap(),
            Location::Pending("prod/customer/shop/orders-db-app".into())
        );
        assert_eq!(
            s.path_of("prod/customer/shop/orders-db-app"),
            Some((path, journal))
        );
        assert_eq!(s.path_of("customer/shop/orders-db-app"), None);
        assert_eq!(s.path_of("prod/customer/Shop/x"), None);
        assert_eq!(
            s.tenant_of("prod/customer/shop/orders-db-app").as_deref(),
            Some("shop/orders-db")
        );
        assert!(s
            .location(&SecretPath::parse("other/thing").unwrap())
            .is_err());
    }

    #[test]
    fn the_value_has_the_seeds_keys_and_reads_back() {
        let credential = Credential {
            username: "shop-orders-app".into(),
            password: "p@ss/word".into(),
            endpoint: "db.internal".into(),
            port: 5432,
            dbname: "shop-orders".into(),
            pooler: None,
            scram_iterations: None,
        };
        let value = secret_value(&credential);
        let json: Value = serde_json::from_str(&value).unwrap();
        for key in [
            "username", "password", "endpoint", "port", "dbname", "sslmode", "uri",
        ] {
            assert!(json.get(key).is_some(), "{key} in {value}");
        }
        assert_eq!(
            json["uri"],
            "postgresql://shop-orders-app:p%40ss%2Fword@db.internal:5432/shop-orders?sslmode=require"
        );
        let s = store("customer/");
        assert_eq!(
            s.parse("n", Some(&value)).unwrap(),
            Some(credential.clone())
        );
        assert_eq!(s.parse("n", Some(PLACEHOLDER)).unwrap(), None);
        let text_port =
            r#"{"username":"u","password":"p","endpoint":"h","port":"6432","dbname":"d"}"#;
        assert_eq!(s.parse("n", Some(text_port)).unwrap().unwrap().port, 6432);
        assert!(matches!(
            s.parse("n", Some("not json")),
            Err(StoreError::Corrupt { .. })
        ));
        assert!(json.get("pooler_endpoint").is_none(), "{value}");

        // A pooled credential keeps its pooled endpoint, and the pooler's keys say it.
        let pooled = Credential {
            pooler: Some(PoolerAddress {
                endpoint: "pooler.internal".into(),
                port: 6432,
            }),
            ..credential.clone()
        };
        let value = secret_value(&pooled);
        let json: Value = serde_json::from_str(&value).unwrap();
        assert_eq!(json["pooler_endpoint"], "pooler.internal");
        assert_eq!(json["pooler_port"], 6432);
        assert_eq!(
            json["pooler_uri"],
            "postgresql://shop-orders-app:p%40ss%2Fword@pooler.internal:6432/shop-orders?sslmode=require"
        );
        assert!(json["pooler_jdbc"]
            .as_str()
            .unwrap()
            .starts_with("jdbc:postgresql://pooler.internal:6432/shop-orders?"));
        assert_eq!(s.parse("n", Some(&value)).unwrap(), Some(pooled));
        assert!(matches!(
            s.parse("n", Some(r#"{"username":"u"}"#)),
            Err(StoreError::Corrupt { .. })
        ));
    }

    /// A Secrets Manager stand-in that answers the first `throttled` requests with
    /// `ThrottlingException` and the others with `answer`; returns its URL and request counter.
    fn throttling_server(throttled: usize, answer: &'static str) -> (String, Arc<AtomicU64>) {
        use std::io::{BufRead as _, BufReader, Read as _, Write as _};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(AtomicU64::new(0));
        let counter = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap();
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0; length];
                let _ = reader.read_exact(&mut body);
                let n = counter.fetch_add(1, Ordering::Relaxed) as usize;
                let (status, body) = if n < throttled {
                    (
                        "400 Bad Request",
                        r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#,
                    )
                } else {
                    ("200 OK", answer)
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Type: application/x-amz-json-1.1\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        (url, seen)
    }

    #[tokio::test]
    async fn throttling_is_retried_with_backoff() {
        // Dummy credentials: the SDK signs every request (this test binary reads no other AWS_*).
        std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
        let answer = r#"{"Name":"customer/shop/orders-app","VersionId":"v1","VersionStages":["AWSCURRENT"],"SecretString":"{\"username\":\"u\",\"password\":\"p\",\"endpoint\":\"h\",\"port\":5432,\"dbname\":\"d\"}"}"#;
        let (url, seen) = throttling_server(3, answer);
        let store = AwsSecretsManagerStore::new(AwsSettings {
            region: Some("eu-west-1".into()),
            endpoint_url: Some(url),
            ..AwsSettings::default()
        });
        let path = SecretPath::for_role("shop", "orders", "app");
        let credential = store.get(&path).await.unwrap().expect("read after retries");
        assert_eq!(credential.username, "u");
        assert_eq!(
            seen.load(Ordering::Relaxed),
            4,
            "three throttled, one answered"
        );
        assert_eq!(store.requests(), 4);

        // Beyond the attempts it gives up with the service's error, never "no secret".
        let (url, _) = throttling_server(usize::MAX, answer);
        let store = AwsSecretsManagerStore::new(AwsSettings {
            region: Some("eu-west-1".into()),
            endpoint_url: Some(url),
            ..AwsSettings::default()
        });
        let error = store.get(&path).await.unwrap_err().to_string();
        assert!(error.contains("ThrottlingException"), "{error}");
        assert_eq!(store.requests(), 8);
    }
}
