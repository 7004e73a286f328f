use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{Key, KeyInit, XChaCha20Poly1305, XNonce};
use rand::rngs::OsRng;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::error::Cause;
use crate::path::is_valid_segment;
use crate::{Credential, CredentialStore, SecretPath, StoreError};

const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;
const ENVELOPE_VERSION: u32 = 1;
const SECRET_SUFFIX: &str = ".secret";
/// Generous bound on a key file: 44 base64 characters plus a line ending.
const MAX_KEY_FILE_LEN: u64 = 64;
/// A temporary file lives from its creation to its rename, a few milliseconds (one fsync): one
/// older than this belongs to no live writer, only to a process killed mid-write.
const STALE_TEMP_AGE_SECS: u64 = 10 * 60;

/// The embedded credential store: one encrypted file per secret under a data
/// directory, keyed by a separate key file. See the crate documentation for
/// the layout and formats.
#[derive(Clone)]
pub struct FileStore {
    data_dir: PathBuf,
    key_file: PathBuf,
    cipher: XChaCha20Poly1305,
}

/// Read on its own first so that an envelope of a newer format is reported
/// as such rather than as a missing field.
#[derive(Deserialize)]
struct EnvelopeHeader {
    version: u32,
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    version: u32,
    nonce: String,
    ciphertext: String,
}

impl FileStore {
    /// Opens the store, creating the data directory (mode 0700) and a new
    /// random key (mode 0600) only when the key file is absent and the data
    /// directory is absent or empty. Data present without its key file is
    /// [`StoreError::KeyMissing`].
    pub fn open(data_dir: &Path, key_file: &Path) -> Result<Self, StoreError> {
        let data_abs = std::path::absolute(data_dir).map_err(|e| io_error(data_dir, e))?;
        let key_abs = std::path::absolute(key_file).map_err(|e| io_error(key_file, e))?;
        if key_abs.starts_with(&data_abs) {
            return Err(StoreError::KeyInDataDir {
                key_file: key_file.to_owned(),
                data_dir: data_dir.to_owned(),
            });
        }

        let cipher = match read_key(key_file)? {
            Some(cipher) => cipher,
            None if has_entries(data_dir)? => {
                return Err(StoreError::KeyMissing {
                    key_file: key_file.to_owned(),
                    data_dir: data_dir.to_owned(),
                })
            }
            None => create_key(key_file)?,
        };
        // Created after the key: a crash in between leaves a key and no data,
        // which the next open accepts, never data without a key.
        create_private_dir(data_dir)?;
        // Best effort: a store that works but holds litter is still a store.
        let age = Duration::from_secs(STALE_TEMP_AGE_SECS);
        remove_stale_temp_files(data_dir, age, None);
        // Beside the key, only the key's own (the directory may hold anything else).
        if let Some(key_name) = key_file.file_name().and_then(|n| n.to_str()) {
            remove_stale_temp_files(parent_dir(key_file), age, Some(key_name));
        }

        Ok(Self {
            data_dir: data_dir.to_owned(),
            key_file: key_file.to_owned(),
            cipher,
        })
    }

    /// Decrypts every secret and returns those that fail, with the reason
    /// ([`StoreError::WrongKeyOrTampered`] or [`StoreError::Corrupt`]). Other
    /// errors, such as an unreadable directory, abort the check.
    pub fn verify(&self) -> Result<Vec<(SecretPath, StoreError)>, StoreError> {
        let mut failures = Vec::new();
        for path in self.list_blocking()? {
            match self.get_blocking(&path) {
                Ok(_) => {}
                Err(e @ (StoreError::WrongKeyOrTampered { .. } | StoreError::Corrupt { .. })) => {
                    failures.push((path, e))
                }
                Err(e) => return Err(e),
            }
        }
        Ok(failures)
    }

    /// The directory holding the secret and the secret's file name.
    fn location(&self, path: &SecretPath) -> (PathBuf, String) {
        match path.as_str().rsplit_once('/') {
            Some((dirs, last)) => (self.data_dir.join(dirs), format!("{last}{SECRET_SUFFIX}")),
            None => (self.data_dir.clone(), format!("{path}{SECRET_SUFFIX}")),
        }
    }

    fn encrypt(&self, path: &SecretPath, credential: &Credential) -> Vec<u8> {
        let plaintext = Zeroizing::new(
            serde_json::to_vec(credential).expect("a Credential always serialises to JSON"),
        );
        let mut nonce = [0u8; NONCE_LEN];
        OsRng.fill_bytes(&mut nonce);
        let ciphertext = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &plaintext,
                    aad: path.as_str().as_bytes(),
                },
            )
            .expect("XChaCha20-Poly1305 accepts messages far larger than a credential");
        let envelope = Envelope {
            version: ENVELOPE_VERSION,
            nonce: STANDARD.encode(nonce),
            ciphertext: STANDARD.encode(ciphertext),
        };
        let mut bytes = serde_json::to_vec(&envelope).expect("an Envelope always serialises");
        bytes.push(b'\n');
        bytes
    }

    fn decrypt(
        &self,
        path: &SecretPath,
        file: &Path,
        bytes: &[u8],
    ) -> Result<Credential, StoreError> {
        let corrupt_by = |reason: String, source: Option<Cause>| StoreError::Corrupt {
            path: file.to_owned(),
            reason,
            source,
        };
        let corrupt = |reason: String| corrupt_by(reason, None);
        let header: EnvelopeHeader = serde_json::from_slice(bytes)
            .map_err(|e| corrupt_by(format!("not a secret envelope: {e}"), Some(e.into())))?;
        if header.version != ENVELOPE_VERSION {
            return Err(corrupt(format!(
                "envelope version {} is not supported, only {ENVELOPE_VERSION}; \
                 was it written by a newer pgtenant?",
                header.version
            )));
        }
        let envelope: Envelope = serde_json::from_slice(bytes)
            .map_err(|e| corrupt_by(format!("not a secret envelope: {e}"), Some(e.into())))?;
        let nonce = STANDARD
            .decode(&envelope.nonce)
            .map_err(|e| corrupt_by(format!("nonce is not base64: {e}"), Some(e.into())))?;
        if nonce.len() != NONCE_LEN {
            return Err(corrupt(format!(
                "nonce is {} bytes long instead of {NONCE_LEN}",
                nonce.len()
            )));
        }
        let ciphertext = STANDARD
            .decode(&envelope.ciphertext)
            .map_err(|e| corrupt_by(format!("ciphertext is not base64: {e}"), Some(e.into())))?;
        let plaintext = Zeroizing::new(
            self.cipher
                .decrypt(
                    XNonce::from_slice(&nonce),
                    Payload {
                        msg: &ciphertext,
                        aad: path.as_str().as_bytes(),
                    },
                )
                .map_err(|_| StoreError::WrongKeyOrTampered {
                    path: file.to_owned(),
                })?,
        );
        // Only the position is reported: serde's message may quote the
        // offending value, which could be the password.
        serde_json::from_slice(&plaintext).map_err(|e| {
            corrupt(format!(
                "decrypted content is not a credential (line {}, column {})",
                e.line(),
                e.column()
            ))
        })
    }
}

/// The store's blocking operations, for callers outside an async runtime (`store verify`) and
/// for the [`CredentialStore`] implementation, which runs them on tokio's blocking pool: a write
/// fsyncs the file and its directory.
impl FileStore {
    pub fn get_blocking(&self, path: &SecretPath) -> Result<Option<Credential>, StoreError> {
        let (dir, file_name) = self.location(path);
        let file = dir.join(file_name);
        match fs::read(&file) {
            Ok(bytes) => self.decrypt(path, &file, &bytes).map(Some),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error(&file, e)),
        }
    }

    pub fn put_blocking(
        &self,
        path: &SecretPath,
        credential: &Credential,
    ) -> Result<(), StoreError> {
        let (dir, file_name) = self.location(path);
        create_private_dir(&dir)?;
        let temp = write_temp_file(&dir, &file_name, &self.encrypt(path, credential))?;
        let file = dir.join(file_name);
        if let Err(e) = fs::rename(&temp, &file) {
            let _ = fs::remove_file(&temp);
            return Err(io_error(&file, e));
        }
        sync_dir(&dir)
    }

    pub fn delete_blocking(&self, path: &SecretPath) -> Result<(), StoreError> {
        let (dir, file_name) = self.location(path);
        let file = dir.join(file_name);
        match fs::remove_file(&file) {
            Ok(()) => sync_dir(&dir),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error(&file, e)),
        }
    }

    pub fn list_blocking(&self) -> Result<Vec<SecretPath>, StoreError> {
        let mut found = Vec::new();
        collect_secrets(&self.data_dir, &mut Vec::new(), &mut found)?;
        found.sort();
        Ok(found)
    }
}

#[async_trait::async_trait]
impl CredentialStore for FileStore {
    async fn get(&self, path: &SecretPath) -> Result<Option<Credential>, StoreError> {
        let (store, path) = (self.clone(), path.clone());
        blocking(move || store.get_blocking(&path)).await
    }

    async fn put(&self, path: &SecretPath, credential: &Credential) -> Result<(), StoreError> {
        let (store, path, credential) = (self.clone(), path.clone(), credential.clone());
        blocking(move || store.put_blocking(&path, &credential)).await
    }

    async fn delete(&self, path: &SecretPath) -> Result<(), StoreError> {
        let (store, path) = (self.clone(), path.clone());
        blocking(move || store.delete_blocking(&path)).await
    }

    async fn list(&self) -> Result<Vec<SecretPath>, StoreError> {
        let store = self.clone();
        blocking(move || store.list_blocking()).await
    }
}

/// Runs file I/O (reads, renames, fsyncs) on tokio's blocking pool, off the async workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|source| StoreError::Worker { source })?
}

impl fmt::Debug for FileStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileStore")
            .field("data_dir", &self.data_dir)
            .field("key_file", &self.key_file)
            .finish_non_exhaustive()
    }
}

/// Walks `dir`, whose path below the data directory is `prefix`. Entries that
/// cannot be a secret (temporary files, which start with a dot, names outside
/// the segment alphabet, symbolic links) are skipped rather than reported, so
/// that leftovers of a crash do not break listing.
fn collect_secrets(
    dir: &Path,
    prefix: &mut Vec<String>,
    found: &mut Vec<SecretPath>,
) -> Result<(), StoreError> {
    for entry in fs::read_dir(dir).map_err(|e| io_error(dir, e))? {
        let entry = entry.map_err(|e| io_error(dir, e))?;
        let file_type = entry.file_type().map_err(|e| io_error(&entry.path(), e))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if file_type.is_dir() && is_valid_segment(&name) {
            prefix.push(name);
            collect_secrets(&entry.path(), prefix, found)?;
            prefix.pop();
        } else if let Some(last) = name.strip_suffix(SECRET_SUFFIX) {
            if file_type.is_file() && is_valid_segment(last) {
                let mut path = prefix.join("/");
                if !path.is_empty() {
                    path.push('/');
                }
                path.push_str(last);
                found.push(SecretPath::parse(&path)?);
            }
        }
    }
    Ok(())
}

/// `Ok(None)` when the key file does not exist.
fn read_key(key_file: &Path) -> Result<Option<XChaCha20Poly1305>, StoreError> {
    let bad_by = |reason: String, source: Option<Cause>| StoreError::BadKeyFile {
        path: key_file.to_owned(),
        reason,
        source,
    };
    let bad = |reason: String| bad_by(reason, None);
    let mut file = match File::open(key_file) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(key_file, e)),
    };
    // Checked on the open file, not the path, so the file judged is the one read.
    let metadata = file.metadata().map_err(|e| io_error(key_file, e))?;
    if !metadata.is_file() {
        return Err(bad("not a regular file".into()));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = metadata.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(StoreError::InsecurePermissions {
                path: key_file.to_owned(),
                mode,
            });
        }
    }
    let mut contents = Zeroizing::new(Vec::with_capacity(MAX_KEY_FILE_LEN as usize + 1));
    (&mut file)
        .take(MAX_KEY_FILE_LEN + 1)
        .read_to_end(&mut contents)
        .map_err(|e| io_error(key_file, e))?;
    if contents.len() as u64 > MAX_KEY_FILE_LEN {
        return Err(bad("longer than a key".into()));
    }
    let key = Zeroizing::new(
        STANDARD
            .decode(contents.trim_ascii())
            .map_err(|e| bad_by(format!("not base64: {e}"), Some(e.into())))?,
    );
    if key.len() != KEY_LEN {
        return Err(bad(format!(
            "decodes to {} bytes instead of {KEY_LEN}",
            key.len()
        )));
    }
    Ok(Some(XChaCha20Poly1305::new(Key::from_slice(&key))))
}

fn create_key(key_file: &Path) -> Result<XChaCha20Poly1305, StoreError> {
    let file_name = key_file
        .file_name()
        .and_then(|name| name.to_str())
        .ok_or_else(|| StoreError::BadKeyFile {
            path: key_file.to_owned(),
            reason: "the path does not end in a UTF-8 file name".into(),
            source: None,
        })?;
    let dir = parent_dir(key_file);
    create_private_dir(dir)?;

    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    OsRng.fill_bytes(key.as_mut());
    let mut encoded = Zeroizing::new(String::with_capacity(MAX_KEY_FILE_LEN as usize));
    STANDARD.encode_string(key.as_ref(), &mut encoded);
    encoded.push('\n');

    let temp = write_temp_file(dir, file_name, encoded.as_bytes())?;
    // A hard link, unlike a rename, never replaces an existing file: if
    // another process created a key meanwhile, both must end up using that
    // one, or secrets written by one could not be read by the other.
    let linked = fs::hard_link(&temp, key_file);
    let _ = fs::remove_file(&temp);
    match linked {
        Ok(()) => {
            sync_dir(dir)?;
            Ok(XChaCha20Poly1305::new(Key::from_slice(key.as_ref())))
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            read_key(key_file)?.ok_or_else(|| io_error(key_file, e))
        }
        Err(e) => Err(io_error(key_file, e)),
    }
}

fn has_entries(dir: &Path) -> Result<bool, StoreError> {
    match fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_some()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_error(dir, e)),
    }
}

fn parent_dir(file: &Path) -> &Path {
    match file.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// The final name of one of [`write_temp_file`]'s names, `.<final name>.<16 hex digits>.tmp`.
fn temp_file_target(name: &str) -> Option<&str> {
    let inner = name.strip_prefix('.')?.strip_suffix(".tmp")?;
    let (final_name, random) = inner.rsplit_once('.')?;
    let ours = !final_name.is_empty()
        && random.len() == 16
        && random.bytes().all(|b| b.is_ascii_hexdigit());
    ours.then_some(final_name)
}

/// Removes the temporary files (see [`write_temp_file`]) that were last written more than `age`
/// ago: a process killed between writing one and renaming it into place leaves it behind.
/// Younger ones may belong to a writer at work and are kept. `only`: in `dir` alone, those of
/// that final name; otherwise all, in the store's subdirectories too. Errors are ignored: the
/// files are litter, not secrets the store relies on.
fn remove_stale_temp_files(dir: &Path, age: Duration, only: Option<&str>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut removed = false;
    for entry in entries.flatten() {
        let Ok(file_type) = entry.file_type() else {
            continue;
        };
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        let target = temp_file_target(name);
        if file_type.is_dir() && only.is_none() && is_valid_segment(name) {
            remove_stale_temp_files(&entry.path(), age, None);
        } else if file_type.is_file() && target.is_some() && only.is_none_or(|o| target == Some(o))
        {
            let stale = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|modified| SystemTime::now().duration_since(modified).ok())
                .is_some_and(|elapsed| elapsed > age);
            if stale && fs::remove_file(entry.path()).is_ok() {
                removed = true;
            }
        }
    }
    if removed {
        let _ = sync_dir(dir);
    }
}

/// Writes `contents` to a new mode-0600 file in `dir` and flushes it to disk,
/// so that renaming or linking it into place publishes complete contents.
/// The name starts with a dot, which no secret path segment can, so a file
/// left behind by a crash is never taken for a secret.
fn write_temp_file(dir: &Path, final_name: &str, contents: &[u8]) -> Result<PathBuf, StoreError> {
    let temp = dir.join(format!(".{final_name}.{:016x}.tmp", OsRng.next_u64()));
    let written = create_private_file(&temp).and_then(|mut file| {
        file.write_all(contents)?;
        file.sync_all()
    });
    if let Err(e) = written {
        let _ = fs::remove_file(&temp);
        return Err(io_error(&temp, e));
    }
    Ok(temp)
}

fn create_private_file(path: &Path) -> io::Result<File> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|e| io_error(dir, e))
}

/// Makes a rename, link or unlink in `dir` durable: until the directory is
/// flushed, a crash can bring back the previous entry.
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    #[cfg(unix)]
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error(dir, e))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

fn io_error(path: &Path, source: io::Error) -> StoreError {
    StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

// The tests check Unix permission bits throughout.
#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use tempfile::TempDir;

    use super::*;

    struct Fixture {
        _temp: TempDir,
        data_dir: PathBuf,
        key_file: PathBuf,
    }

    impl Fixture {
        fn new() -> Self {
            let temp = tempfile::tempdir().unwrap();
            Self {
                data_dir: temp.path().join("data"),
                key_file: temp.path().join("keys").join("store.key"),
                _temp: temp,
            }
        }

        fn open(&self) -> Result<FileStore, StoreError> {
            FileStore::open(&self.data_dir, &self.key_file)
        }

        fn secret_file(&self, path: &str) -> PathBuf {
            self.data_dir.join(format!("{path}{SECRET_SUFFIX}"))
        }
    }

    fn credential(password: &str) -> Credential {
        Credential {
            username: "orders_app".into(),
            password: password.into(),
            endpoint: "db.example.com".into(),
            port: 5432,
            dbname: "orders".into(),
            pooler: None,
            scram_iterations: None,
        }
    }

    fn path(s: &str) -> SecretPath {
        SecretPath::parse(s).unwrap()
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    fn set_mode(path: &Path, mode: u32) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    fn flip_ciphertext_byte(file: &Path) {
        let mut envelope: Envelope = serde_json::from_slice(&fs::read(file).unwrap()).unwrap();
        let mut ciphertext = STANDARD.decode(&envelope.ciphertext).unwrap();
        ciphertext[3] ^= 0x01;
        envelope.ciphertext = STANDARD.encode(ciphertext);
        fs::write(file, serde_json::to_vec(&envelope).unwrap()).unwrap();
    }

    #[test]
    fn round_trip_put_get_list_delete() {
        let fixture = Fixture::new();
        let store = fixture.open().unwrap();
        let app = SecretPath::for_role("shop", "orders", "app");
        let admin = SecretPath::for_role("shop", "orders", "admin");
        let other = SecretPath::for_role("acme", "billing", "app");
        let top = path("top");

        assert_eq!(store.get_blocking(&app).unwrap(), None);
        assert_eq!(store.list_blocking().unwrap(), vec![]);

        store.put_blocking(&app, &credential("first")).unwrap();
        store.put_blocking(&admin, &credential("admin")).unwrap();
        store.put_blocking(&other, &credential("other")).unwrap();
        store.put_blocking(&top, &credential("top")).unwrap();
        store.put_blocking(&app, &credential("second")).unwrap();

        assert_eq!(
            store.get_blocking(&app).unwrap(),
            Some(credential("second"))
        );
        assert_eq!(
            store.get_blocking(&admin).unwrap(),
            Some(credential("admin"))
        );
        assert_eq!(
            store.list_blocking().unwrap(),
            vec![other.clone(), admin.clone(), app.clone(), top.clone()]
        );
        assert!(fixture.secret_file("customer/shop/orders-app").is_file());

        store.delete_blocking(&app).unwrap();
        store.delete_blocking(&app).unwrap();
        assert_eq!(store.get_blocking(&app).unwrap(), None);
        assert_eq!(store.list_blocking().unwrap(), vec![other, admin, top]);

        drop(store);
        let reopened = fixture.open().unwrap();
        assert_eq!(
            reopened.get_blocking(&path("top")).unwrap(),
            Some(credential("top"))
        );
    }

    #[test]
    fn files_and_directories_are_private() {
        let fixture = Fixture::new();
        let store = fixture.open().unwrap();
        store
            .put_blocking(&path("customer/shop/orders-app"), &credential("x"))
            .unwrap();

        assert_eq!(mode(&fixture.data_dir), 0o700);
        assert_eq!(mode(&fixture.data_dir.join("customer")), 0o700);
        assert_eq!(mode(&fixture.data_dir.join("customer/shop")), 0o700);
        assert_eq!(
            mode(&fixture.secret_file("customer/shop/orders-app")),
            0o600
        );
        assert_eq!(mode(&fixture.key_file), 0o600);
        assert_eq!(mode(fixture.key_file.parent().unwrap()), 0o700);
    }

    #[test]
    fn key_file_is_one_line_of_base64() {
        let fixture = Fixture::new();
        fixture.open().unwrap();
        let contents = fs::read_to_string(&fixture.key_file).unwrap();
        assert_eq!(contents.len(), 45);
        assert!(contents.ends_with('\n'));
        assert_eq!(STANDARD.decode(contents.trim_end()).unwrap().len(), KEY_LEN);
    }

    #[test]
    fn a_key_written_by_hand_is_used() {
        let fixture = Fixture::new();
        fs::create_dir_all(fixture.key_file.parent().unwrap()).unwrap();
        // No trailing newline, as `echo -n` or an editor might leave it.
        fs::write(&fixture.key_file, STANDARD.encode([7u8; KEY_LEN])).unwrap();
        set_mode(&fixture.key_file, 0o400);
        let store = fixture.open().unwrap();
        store.put_blocking(&path("a"), &credential("x")).unwrap();
        assert_eq!(
            fs::read_to_string(&fixture.key_file).unwrap(),
            STANDARD.encode([7u8; KEY_LEN])
        );
        assert_eq!(
            fixture.open().unwrap().get_blocking(&path("a")).unwrap(),
            Some(credential("x"))
        );
    }

    #[test]
    fn every_write_uses_a_fresh_nonce() {
        let fixture = Fixture::new();
        let store = fixture.open().unwrap();
        let file = fixture.secret_file("a");
        store.put_blocking(&path("a"), &credential("same")).unwrap();
        let first: Envelope = serde_json::from_slice(&fs::read(&file).unwrap()).unwrap();
        store.put_blocking(&path("a"), &credential("same")).unwrap();
        let second: Envelope = serde_json::from_slice(&fs::read(&file).unwrap()).unwrap();
        assert_eq!(first.version, 1);
        assert_ne!(first.nonce, second.nonce);
        assert_ne!(first.ciphertext, second.ciphertext);
        assert!(!String::from_utf8(fs::read(&file).unwrap())
            .unwrap()
            .contains("same"));
    }

    #[test]
    fn a_flipped_ciphertext_byte_is_detected() {
        let fixture = Fixture::new();
        let store = fixture.open().unwrap();
        store
            .put_blocking(&path("customer/shop/orders-app"), &credential("x"))
            .unwrap();
        let file = fixture.secret_file("customer/shop/orders-app");
        flip_ciphertext_byte(&file);

        match store.get_blocking(&path("customer/shop/orders-app")) {
            Err(StoreError::WrongKeyOrTampered { path }) => assert_eq!(path, file),
            other => panic!("tampering not detected: {other:?}"),
        }
    }

    #[test]
    fn a_file_copied_to_another_path_does_not_decrypt() {
        let fixture = Fixture::new();
        let store = fixture.open().unwrap();
        store
            .put_blocking(&path("customer/shop/orders-admin"), &credential("admin"))
            .unwrap();
        store
            .put_blocking(&path("customer/shop/orders-app"), &credential("app"))
            .unwrap();
        fs::copy(
            fixture.secret_file("customer/shop/orders-admin"),
            fixture.secret_file("customer/shop/orders-app"),
        )
        .unwrap();
        fs::create_dir_all(fixture.data_dir.join("customer/evil")).unwrap();
        fs::copy(
            fixture.secret_file("customer/shop/orders-admin"),
            fixture.secret_file("customer/evil/orders-admin"),
        )
        .unwrap();

        for copy in ["customer/shop/orders-app", "customer/evil/orders-admin"] {
            assert!(
                matches!(
                    store.get_blocking(&path(copy)),
                    Err(StoreError::WrongKeyOrTampered { .. })
                ),
                "{copy}"
            );
        }
        assert_eq!(
            store
                .get_blocking(&path("customer/shop/orders-admin"))
                .unwrap(),
            Some(credential("admin"))
        );
    }

    #[test]
    fn a_wrong_key_is_an_error_not_a_missing_secret() {
        let fixture = Fixture::new();
        fixture
            .open()
            .unwrap()
            .put_blocking(&path("a/b"), &credential("x"))
            .unwrap();
        let other = Fixture::new();
        other.open().unwrap();

        let store = FileStore::open(&fixture.data_dir, &other.key_file).unwrap();
        assert!(matches!(
            store.get_blocking(&path("a/b")),
            Err(StoreError::WrongKeyOrTampered { .. })
        ));
        assert_eq!(store.list_blocking().unwrap(), vec![path("a/b")]);
    }

    #[test]
    fn data_without_its_key_is_refused() {
        let fixture = Fixture::new();
        fixture
            .open()
            .unwrap()
            .put_blocking(&path("a"), &credential("x"))
            .unwrap();
        fs::remove_file(&fixture.key_file).unwrap();

        match fixture.open() {
            Err(StoreError::KeyMissing { key_file, data_dir }) => {
                assert_eq!(key_file, fixture.key_file);
                assert_eq!(data_dir, fixture.data_dir);
            }
            other => panic!("expected KeyMissing, got {other:?}"),
        }
        assert!(!fixture.key_file.exists(), "a new key must not be created");
    }

    #[test]
    fn an_existing_empty_data_dir_gets_a_new_key() {
        let fixture = Fixture::new();
        fs::create_dir(&fixture.data_dir).unwrap();
        fixture.open().unwrap();
        assert!(fixture.key_file.is_file());
    }

    #[test]
    fn a_key_file_open_to_others_is_refused() {
        let fixture = Fixture::new();
        fixture.open().unwrap();
        for insecure in [0o644, 0o640, 0o604, 0o620] {
            set_mode(&fixture.key_file, insecure);
            match fixture.open() {
                Err(StoreError::InsecurePermissions { path, mode }) => {
                    assert_eq!(path, fixture.key_file);
                    assert_eq!(mode, insecure);
                }
                other => panic!("mode {insecure:o} accepted: {other:?}"),
            }
        }
    }

    #[test]
    fn a_malformed_key_file_is_refused() {
        let fixture = Fixture::new();
        fixture.open().unwrap();
        let short = format!("{}\n", STANDARD.encode([1u8; 16]));
        let long = "A".repeat(100);
        for contents in ["", "not base64!\n", short.as_str(), long.as_str()] {
            fs::write(&fixture.key_file, contents).unwrap();
            assert!(
                matches!(fixture.open(), Err(StoreError::BadKeyFile { .. })),
                "{contents:?}"
            );
        }
    }

    #[test]
    fn the_key_may_not_live_in_the_data_dir() {
        let fixture = Fixture::new();
        let inside = fixture.data_dir.join("store.key");
        assert!(matches!(
            FileStore::open(&fixture.data_dir, &inside),
            Err(StoreError::KeyInDataDir { .. })
        ));
        assert!(!inside.exists());
    }

    #[test]
    fn malformed_envelopes_are_corrupt() {
        let fixture = Fixture::new();
        let store = fixture.open().unwrap();
        store.put_blocking(&path("a"), &credential("x")).unwrap();
        let file = fixture.secret_file("a");
        let good: Envelope = serde_json::from_slice(&fs::read(&file).unwrap()).unwrap();

        let cases = [
            ("not json".to_owned(), "not a secret envelope"),
            (
                format!(
                    r#"{{"version":2,"nonce":"{}","ciphertext":"{}"}}"#,
                    good.nonce, good.ciphertext
                ),
                "version 2",
            ),
            (
                format!(
                    r#"{{"version":1,"nonce":"AAAA","ciphertext":"{}"}}"#,
                    good.ciphertext
                ),
                "nonce is 3 bytes",
            ),
            (
                format!(
                    r#"{{"version":1,"nonce":"{}","ciphertext":"%%"}}"#,
                    good.nonce
                ),
                "ciphertext is not base64",
            ),
        ];
        for (contents, expected) in cases {
            fs::write(&file, &contents).unwrap();
            match store.get_blocking(&path("a")) {
                Err(StoreError::Corrupt { reason, source, .. }) => {
                    assert!(reason.contains(expected), "{reason:?} for {contents}");
                    // A parse error stays the source; a wrong length has none.
                    let parsed = expected.starts_with("not") || expected.ends_with("base64");
                    assert_eq!(source.is_some(), parsed, "{reason:?}");
                }
                other => panic!("{contents}: {other:?}"),
            }
        }
    }

    #[test]
    fn verify_reports_the_tampered_paths() {
        let fixture = Fixture::new();
        let store = fixture.open().unwrap();
        for name in [
            "customer/shop/orders-app",
            "customer/shop/orders-admin",
            "b",
        ] {
            store.put_blocking(&path(name), &credential(name)).unwrap();
        }
        assert!(store.verify().unwrap().is_empty());

        flip_ciphertext_byte(&fixture.secret_file("customer/shop/orders-app"));
        fs::write(fixture.secret_file("b"), "garbage").unwrap();

        let failures = store.verify().unwrap();
        let failed: Vec<_> = failures.iter().map(|(path, _)| path.as_str()).collect();
        assert_eq!(failed, ["b", "customer/shop/orders-app"]);
        assert!(matches!(failures[0].1, StoreError::Corrupt { .. }));
        assert!(matches!(
            failures[1].1,
            StoreError::WrongKeyOrTampered { .. }
        ));
    }

    #[test]
    fn list_skips_files_that_are_not_secrets() {
        let fixture = Fixture::new();
        let store = fixture.open().unwrap();
        store
            .put_blocking(&path("customer/shop/orders-app"), &credential("x"))
            .unwrap();
        let shop = fixture.data_dir.join("customer/shop");
        fs::write(
            shop.join(".orders-app.secret.0123456789abcdef.tmp"),
            "partial",
        )
        .unwrap();
        fs::write(shop.join("README"), "notes").unwrap();
        fs::write(shop.join("Upper.secret"), "x").unwrap();
        fs::create_dir(shop.join("Not_A_Segment")).unwrap();
        fs::write(shop.join("Not_A_Segment/x.secret"), "x").unwrap();

        assert_eq!(
            store.list_blocking().unwrap(),
            vec![path("customer/shop/orders-app")]
        );
    }

    #[test]
    fn temporary_files_left_by_a_kill_are_removed_when_the_store_opens() {
        let fixture = Fixture::new();
        let store = fixture.open().unwrap();
        let journal = path("pgtenant/pending/shop/orders-app");
        store.put_blocking(&journal, &credential("x")).unwrap();
        drop(store);
        let pending = fixture.data_dir.join("pgtenant/pending/shop");
        let old = SystemTime::now() - Duration::from_secs(STALE_TEMP_AGE_SECS + 60);
        let stale = pending.join(".orders-app.secret.0123456789abcdef.tmp");
        let fresh = pending.join(".orders-app.secret.fedcba9876543210.tmp");
        let stale_key = fixture
            .key_file
            .with_file_name(".store.key.00000000000000aa.tmp");
        let not_ours = pending.join(".notes.tmp");
        let other_beside_key = fixture
            .key_file
            .with_file_name(".other.00000000000000aa.tmp");
        for file in [&stale, &fresh, &stale_key, &not_ours, &other_beside_key] {
            fs::write(file, "partial").unwrap();
        }
        for file in [&stale, &stale_key, &not_ours, &other_beside_key] {
            File::options()
                .write(true)
                .open(file)
                .unwrap()
                .set_modified(old)
                .unwrap();
        }

        let store = fixture.open().unwrap();
        assert!(!stale.exists(), "a stale temporary file is removed");
        assert!(!stale_key.exists(), "also beside the key file");
        assert!(fresh.exists(), "a young one may belong to a live writer");
        assert!(not_ours.exists(), "only the store's own temporary names");
        assert!(
            other_beside_key.exists(),
            "beside the key file only the key's own"
        );
        assert_eq!(store.get_blocking(&journal).unwrap(), Some(credential("x")));
    }

    #[test]
    fn temporary_names_are_recognised_exactly() {
        assert_eq!(
            temp_file_target(".a-b.secret.0123456789abcdef.tmp"),
            Some("a-b.secret")
        );
        assert_eq!(
            temp_file_target(".store.key.0123456789ABCDEF.tmp"),
            Some("store.key")
        );
        for other in [
            "a.secret",
            ".a.secret.tmp",
            ".a.secret.0123.tmp",
            "..0123456789abcdef.tmp",
            ".a.secret.0123456789abcdeg.tmp",
            "x.a.secret.0123456789abcdef.tmp",
        ] {
            assert_eq!(temp_file_target(other), None, "{other}");
        }
    }

    #[test]
    fn put_leaves_no_temporary_file() {
        let fixture = Fixture::new();
        let store = fixture.open().unwrap();
        store.put_blocking(&path("a/b"), &credential("x")).unwrap();
        store.put_blocking(&path("a/b"), &credential("y")).unwrap();
        let names: Vec<_> = fs::read_dir(fixture.data_dir.join("a"))
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(names, ["b.secret"]);
        let key_dir: Vec<_> = fs::read_dir(fixture.key_file.parent().unwrap())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(key_dir, ["store.key"]);
    }

    #[test]
    fn concurrent_first_opens_agree_on_one_key() {
        let fixture = Fixture::new();
        std::thread::scope(|scope| {
            for i in 0..8 {
                let fixture = &fixture;
                scope.spawn(move || {
                    let store = fixture.open().unwrap();
                    store
                        .put_blocking(&path(&format!("s{i}")), &credential("x"))
                        .unwrap();
                });
            }
        });
        let store = fixture.open().unwrap();
        assert_eq!(store.list_blocking().unwrap().len(), 8);
        assert!(store.verify().unwrap().is_empty());
    }

    #[test]
    fn debug_shows_no_key() {
        let fixture = Fixture::new();
        let shown = format!("{:?}", fixture.open().unwrap());
        assert!(
            shown.contains("data_dir") && shown.contains("key_file"),
            "{shown}"
        );
        assert!(!shown.contains("cipher"), "{shown}");
    }
}
