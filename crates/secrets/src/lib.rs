//! Credentials of pgtenant's tenant roles: the [`CredentialStore`] trait, the
//! embedded encrypted [`FileStore`], an in-memory [`MemoryStore`] for tests,
//! and [`generate_password`].
//!
//! # The embedded file store
//!
//! [`FileStore::open`] takes two locations chosen by the operator: a data
//! directory and a key file. They must be kept apart: the key file may not lie
//! inside the data directory, so that copying or backing up the data never
//! carries the key along with it.
//!
//! ## Data directory
//!
//! One file per secret. The [`SecretPath`] is mirrored as directories and its
//! last segment names the file, so `customer/shop/orders-app` is stored in
//! `<data_dir>/customer/shop/orders-app.secret`. Directories are created with
//! mode 0700 and secret files with mode 0600. A secret is replaced atomically
//! (temporary file, fsync, rename, fsync of the directory), so a crash leaves
//! either the old or the new credential, never a mix. The temporary file a
//! killed writer leaves behind (`.<file name>.<16 hex digits>.tmp`) is removed
//! by a later `open` once it is ten minutes old, when no live writer can own it.
//!
//! Each file is one line of JSON:
//!
//! ```text
//! {"version":1,"nonce":"<base64>","ciphertext":"<base64>"}
//! ```
//!
//! `ciphertext` is the XChaCha20-Poly1305 encryption (16-byte tag included)
//! of the JSON of a [`Credential`] under the store key, with `nonce` a fresh
//! random 24-byte nonce for every write and the secret path (UTF-8) as
//! associated data. Base64 is the standard alphabet with padding. Because the
//! path is authenticated, a file copied or moved to another secret path does
//! not decrypt: reading it fails with [`StoreError::WrongKeyOrTampered`], as
//! does any modified byte or a different key. [`FileStore::verify`] decrypts
//! every secret and lists the ones that fail.
//!
//! ## Key file
//!
//! The key file holds the base64 encoding (standard alphabet, padded) of 32
//! random bytes, followed by a newline — 45 bytes in all. It must be a
//! regular file with no permission bits for group or others (mode 0600 or
//! stricter); the store refuses to use it otherwise
//! ([`StoreError::InsecurePermissions`]).
//!
//! When the key file does not exist and the data directory is absent or
//! empty, `open` generates a new key from the OS random generator and writes
//! it with mode 0600, creating missing parent directories with mode 0700. To
//! provide a key of your own instead:
//!
//! ```text
//! (umask 077 && head -c 32 /dev/urandom | base64 > /path/to/key)
//! ```
//!
//! **Back the key file up, separately from the data directory.** A backup that
//! holds both gives the passwords to whoever reads it; a backup of the data
//! alone is useless without the key.
//!
//! ## Losing the key
//!
//! Without the key the stored secrets cannot be recovered; nothing else can
//! decrypt them. When the data directory holds secrets but the key file is
//! missing, `open` fails with [`StoreError::KeyMissing`] rather than starting
//! over with a new key, since a new key would quietly leave every existing
//! credential unreadable. Restore the key file from its backup. If it is lost
//! for good, move the data directory aside and rotate the password of every
//! tenant role: new credentials are then stored under a new key, and the
//! applications must be given their new passwords.

mod aws_store;
mod credential;
mod error;
pub mod export;
mod file_store;
pub mod manifest;
mod memory;
mod password;
mod path;

pub use aws_store::{secret_value, AwsSecretsManagerStore, AwsSettings};
pub use credential::{Credential, PoolerAddress, DEFAULT_SCRAM_ITERATIONS};
pub use error::StoreError;
pub use export::{ConnectionOptions, Export, ExportFormat, SslMode, TenantRole};
pub use file_store::FileStore;
pub use memory::MemoryStore;
pub use password::{generate_password, PASSWORD_LENGTH};
pub use path::SecretPath;

/// Where the engine journals a new password until the server is known to have it:
/// `pgtenant/pending/<namespace>/<database>-<role>` beside `customer/…`. The file store keeps it as
/// a secret of its own; the AWS Secrets Manager store as the `AWSPENDING` version of the role's
/// secret.
pub const PENDING_PREFIX: &str = "pgtenant/pending/";

/// Where credentials are kept, one per [`SecretPath`]. Async, so a network store (a cloud secrets
/// manager) is a drop-in; dyn-compatible (through `async_trait`), so callers hold an
/// `Arc<dyn CredentialStore>` and never know which store it is.
#[async_trait::async_trait]
pub trait CredentialStore: Send + Sync {
    /// `Ok(None)` only when no secret exists at `path`: a secret that exists
    /// but cannot be read is an error, so a caller never mistakes it for a
    /// missing one and overwrites a credential that applications still use.
    async fn get(&self, path: &SecretPath) -> Result<Option<Credential>, StoreError>;

    /// Creates or replaces the secret at `path`, atomically: readers see the
    /// old or the new credential, never a partial one.
    async fn put(&self, path: &SecretPath, credential: &Credential) -> Result<(), StoreError>;

    /// Deleting a missing secret is Ok.
    async fn delete(&self, path: &SecretPath) -> Result<(), StoreError>;

    /// Every stored secret path, sorted.
    async fn list(&self) -> Result<Vec<SecretPath>, StoreError>;

    /// The credentials at those of `paths` that exist, as [`get`](Self::get) would read them;
    /// a network store reads them in batches rather than one call each.
    async fn get_many(
        &self,
        paths: &[SecretPath],
    ) -> Result<std::collections::BTreeMap<SecretPath, Credential>, StoreError> {
        let mut found = std::collections::BTreeMap::new();
        for path in paths {
            if let Some(credential) = self.get(path).await? {
                found.insert(path.clone(), credential);
            }
        }
        Ok(found)
    }
}
