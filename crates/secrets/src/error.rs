use std::io;
use std::path::PathBuf;

/// The parse error behind a [`StoreError::Corrupt`] or [`StoreError::BadKeyFile`], where there is
/// one that cannot quote a secret (never for decrypted content).
#[derive(Debug, thiserror::Error)]
pub enum Cause {
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Base64(#[from] base64::DecodeError),
}

/// Why a store operation failed. Each message says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("I/O error on {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error(
        "the key file {} does not exist but the data directory {} already holds secrets; \
         restore the key file from its backup. Without that key the secrets cannot be \
         decrypted: if it is lost for good, move {} aside and rotate the passwords of all \
         tenant roles",
        key_file.display(),
        data_dir.display(),
        data_dir.display()
    )]
    KeyMissing {
        key_file: PathBuf,
        data_dir: PathBuf,
    },

    #[error(
        "the key file {} is inside the data directory {}; choose a key file path outside it, \
         so that copies and backups of the data do not carry the key",
        key_file.display(),
        data_dir.display()
    )]
    KeyInDataDir {
        key_file: PathBuf,
        data_dir: PathBuf,
    },

    #[error(
        "cannot decrypt {}: either the key file is not the key this secret was written with, \
         or the file was modified or copied from another secret path; check that the right key \
         file is configured, otherwise restore the file from a backup or rotate this role's \
         password",
        path.display()
    )]
    WrongKeyOrTampered { path: PathBuf },

    #[error(
        "{} is not a valid secret file ({reason}); restore it from a backup or rotate this \
         role's password",
        path.display()
    )]
    Corrupt {
        path: PathBuf,
        reason: String,
        #[source]
        source: Option<Cause>,
    },

    #[error(
        "invalid secret path {path:?}: expected non-empty segments of [a-z0-9-] separated by \
         '/', without a leading '/', e.g. customer/shop/orders-app"
    )]
    InvalidPath { path: String },

    #[error(
        "the key file {} is unusable ({reason}); it must hold the base64 encoding of 32 bytes \
         on one line: restore it from its backup",
        path.display()
    )]
    BadKeyFile {
        path: PathBuf,
        reason: String,
        #[source]
        source: Option<Cause>,
    },

    #[error(
        "the key file {} has mode {mode:04o}, which grants access to group or others; \
         run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    InsecurePermissions { path: PathBuf, mode: u32 },

    #[error("AWS Secrets Manager: {operation} of {name} failed: {message}")]
    Aws {
        operation: &'static str,
        name: String,
        message: String,
    },

    #[error("the {store} store does not keep {path:?}: it keeps tenant credentials only")]
    Unsupported { path: String, store: &'static str },

    #[error("the credential store's worker thread failed")]
    Worker {
        #[source]
        source: tokio::task::JoinError,
    },
}
