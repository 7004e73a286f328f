use rand::distributions::Alphanumeric;
use rand::rngs::OsRng;
use rand::Rng;

/// 40 characters out of 62 give about 238 bits of entropy.
pub const PASSWORD_LENGTH: usize = 40;

/// A new random password of [`PASSWORD_LENGTH`] characters of `[A-Za-z0-9]`.
///
/// The alphabet needs no escaping in connection URIs, shell snippets, YAML or
/// SQL literals. The OS CSPRNG is used directly so that no user-space RNG
/// state (which could be duplicated by a fork) is involved.
pub fn generate_password() -> String {
    OsRng
        .sample_iter(&Alphanumeric)
        .take(PASSWORD_LENGTH)
        .map(char::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn has_the_documented_length_and_charset() {
        let password = generate_password();
        assert_eq!(password.len(), PASSWORD_LENGTH);
        assert!(
            password.bytes().all(|b| b.is_ascii_alphanumeric()),
            "{password}"
        );
    }

    #[test]
    fn passwords_are_distinct() {
        let passwords: HashSet<String> = (0..1000).map(|_| generate_password()).collect();
        assert_eq!(passwords.len(), 1000);
    }

    #[test]
    fn uses_the_whole_alphabet() {
        let seen: HashSet<u8> = (0..200)
            .flat_map(|_| generate_password().into_bytes())
            .collect();
        // 8000 draws over 62 symbols: missing one has probability ~1e-54.
        assert_eq!(seen.len(), 62);
    }
}
