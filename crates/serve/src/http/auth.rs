//! Who may change things: the bearer token of the mutating endpoints and the git webhook's
//! signature. Secrets are read from their files on every request (a rotated file takes effect
//! at once) and compared in constant time.

use std::path::Path;

use axum::http::HeaderMap;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Why a request was refused; the handlers turn it into 401, 403 or 404.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// No credential presented (401).
    Missing(&'static str),
    /// A credential presented but wrong (403).
    Wrong(&'static str),
    /// The feature is not configured (403 for the token, 404 for the webhook).
    NotConfigured(&'static str),
    /// The secret file could not be read (503).
    Unreadable(String),
}

/// The secret in `file`, without the trailing line break editors add.
fn read_secret(file: &Path) -> Result<Vec<u8>, Refused> {
    let text = std::fs::read(file).map_err(|e| {
        Refused::Unreadable(format!("reading the secret file {}: {e}", file.display()))
    })?;
    let secret = text.trim_ascii_end().to_vec();
    if secret.is_empty() {
        return Err(Refused::Unreadable(format!(
            "the secret file {} is empty",
            file.display()
        )));
    }
    Ok(secret)
}

fn equal(a: &[u8], b: &[u8]) -> bool {
    // ConstantTimeEq on slices of different lengths answers false without comparing.
    a.ct_eq(b).into()
}

/// `Authorization: Bearer TOKEN` against the token file.
pub(crate) fn bearer(headers: &HeaderMap, token_file: Option<&Path>) -> Result<(), Refused> {
    let Some(file) = token_file else {
        return Err(Refused::NotConfigured(
            "mutating endpoints are disabled: the service has no token file",
        ));
    };
    let Some(value) = headers.get(axum::http::header::AUTHORIZATION) else {
        return Err(Refused::Missing(
            "an Authorization: Bearer token is required",
        ));
    };
    let value = value.as_bytes();
    let presented = value
        .strip_prefix(b"Bearer ")
        .or_else(|| value.strip_prefix(b"bearer "))
        .ok_or(Refused::Missing(
            "the Authorization header is not a Bearer token",
        ))?;
    let expected = read_secret(file)?;
    if equal(presented.trim_ascii(), &expected) {
        Ok(())
    } else {
        Err(Refused::Wrong("the bearer token is wrong"))
    }
}

/// A git webhook: GitHub's `X-Hub-Signature-256: sha256=HEX` (HMAC-SHA256 of the raw body) or
/// GitLab's `X-Gitlab-Token: SECRET`.
pub(crate) fn webhook(
    headers: &HeaderMap,
    body: &[u8],
    secret_file: Option<&Path>,
) -> Result<(), Refused> {
    let Some(file) = secret_file else {
        return Err(Refused::NotConfigured(
            "the git webhook is disabled: the service has no webhook secret file",
        ));
    };
    if let Some(signature) = headers.get("x-hub-signature-256") {
        let secret = read_secret(file)?;
        let signature = signature
            .as_bytes()
            .strip_prefix(b"sha256=")
            .and_then(|hex_digest| hex::decode(hex_digest).ok())
            .ok_or(Refused::Wrong(
                "X-Hub-Signature-256 is not of the form sha256=HEX",
            ))?;
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&secret)
            .expect("HMAC takes keys of any length");
        mac.update(body);
        // verify_slice compares in constant time.
        return mac
            .verify_slice(&signature)
            .map_err(|_| Refused::Wrong("X-Hub-Signature-256 does not match the body"));
    }
    if let Some(token) = headers.get("x-gitlab-token") {
        let secret = read_secret(file)?;
        return if equal(token.as_bytes(), &secret) {
            Ok(())
        } else {
            Err(Refused::Wrong("X-Gitlab-Token is wrong"))
        };
    }
    Err(Refused::Missing(
        "a signed webhook needs X-Hub-Signature-256 (GitHub) or X-Gitlab-Token (GitLab)",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn secret_file(secret: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), format!("{secret}\n")).unwrap();
        file
    }

    #[test]
    fn github_signature_is_hmac_sha256_of_the_raw_body() {
        // The example of GitHub's documentation ("Validating webhook deliveries").
        let file = secret_file("It's a Secret to Everybody");
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-hub-signature-256",
            HeaderValue::from_static(
                "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
            ),
        );
        assert_eq!(
            webhook(&headers, b"Hello, World!", Some(file.path())),
            Ok(())
        );
        assert!(matches!(
            webhook(&headers, b"Hello, World?", Some(file.path())),
            Err(Refused::Wrong(_))
        ));
    }

    #[test]
    fn gitlab_token_and_bearer_are_compared_whole() {
        let file = secret_file("tok");
        let mut headers = HeaderMap::new();
        headers.insert("x-gitlab-token", HeaderValue::from_static("to"));
        assert!(matches!(
            webhook(&headers, b"", Some(file.path())),
            Err(Refused::Wrong(_))
        ));
        headers.insert("x-gitlab-token", HeaderValue::from_static("tok"));
        assert_eq!(webhook(&headers, b"", Some(file.path())), Ok(()));
        let mut headers = HeaderMap::new();
        assert!(matches!(
            bearer(&headers, Some(file.path())),
            Err(Refused::Missing(_))
        ));
        headers.insert("authorization", HeaderValue::from_static("Bearer tokk"));
        assert!(matches!(
            bearer(&headers, Some(file.path())),
            Err(Refused::Wrong(_))
        ));
        headers.insert("authorization", HeaderValue::from_static("Bearer tok"));
        assert_eq!(bearer(&headers, Some(file.path())), Ok(()));
        assert!(matches!(
            bearer(&headers, None),
            Err(Refused::NotConfigured(_))
        ));
    }
}
