//! SCRAM-SHA-256 arithmetic (RFC 5802, RFC 7677) and PostgreSQL's verifier format, in a crate of
//! its own so that debug builds can optimise it (`[profile.dev.package.pgtenant-scram]`): its
//! generic HMAC code is instantiated here, not in the crates that call it, and 4,096 rounds of
//! Hi() unoptimised take ~65 ms, against ~1 ms optimised. Every tenant login's verifier goes
//! through [`hi`] twice.

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// HMAC-SHA-256 of `message` under `key`.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("any key length");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// PBKDF2-HMAC-SHA-256 with one block: SCRAM's Hi(). The keyed HMAC state is made once and
/// cloned for each round, which halves the hashing of keying it every round.
pub fn hi(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let keyed = <Hmac<Sha256> as KeyInit>::new_from_slice(password).expect("any key length");
    let round = |message: &[u8]| -> [u8; 32] {
        let mut mac = keyed.clone();
        mac.update(message);
        mac.finalize().into_bytes().into()
    };
    let mut first = salt.to_vec();
    first.extend_from_slice(&1u32.to_be_bytes());
    let mut u = round(&first);
    let mut out = u;
    for _ in 1..iterations {
        u = round(&u);
        out.iter_mut().zip(u.iter()).for_each(|(o, x)| *o ^= x);
    }
    out
}

/// The verifier PostgreSQL stores for `password` with `salt` and `iterations` rounds:
/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`, base64.
pub fn verifier(password: &[u8], salt: &[u8], iterations: u32) -> String {
    let salted = hi(password, salt, iterations);
    let client_key = hmac_sha256(&salted, b"Client Key");
    let stored_key = Sha256::digest(client_key);
    let server_key = hmac_sha256(&salted, b"Server Key");
    let b64 = base64::engine::general_purpose::STANDARD;
    format!(
        "SCRAM-SHA-256${iterations}:{}${}:{}",
        b64.encode(salt),
        b64.encode(stored_key),
        b64.encode(server_key)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hi() as RFC 5802 writes it, re-keying the HMAC every round: the keyed-once loop must give
    /// the very same bytes, or every verifier recorded before would stop matching the server's.
    #[test]
    fn hi_keyed_once_is_the_textbook_hi() {
        fn textbook(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
            let mut first = salt.to_vec();
            first.extend_from_slice(&1u32.to_be_bytes());
            let mut u = hmac_sha256(password, &first);
            let mut out = u;
            for _ in 1..iterations {
                u = hmac_sha256(password, &u);
                out.iter_mut().zip(u.iter()).for_each(|(o, x)| *o ^= x);
            }
            out
        }
        for (password, salt, rounds) in [
            (&b"pencil"[..], &b"salt"[..], 4096),
            (b"", b"", 1),
            (
                &[7u8; 100][..],
                b"a longer salt than a block of sixty-four bytes, to be sure of it",
                3,
            ),
        ] {
            assert_eq!(hi(password, salt, rounds), textbook(password, salt, rounds));
        }
    }

    /// RFC 7677's test vector: user "user", password "pencil", salt and 4,096 rounds as given
    /// there; the server's signature in its server-final message is made from ServerKey.
    #[test]
    fn verifier_gives_rfc_7677s_server_signature() {
        let b64 = base64::engine::general_purpose::STANDARD;
        let salt = b64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let verifier = verifier(b"pencil", &salt, 4096);
        let server_key = b64.decode(verifier.rsplit_once(':').unwrap().1).unwrap();
        let auth_message = "n=user,r=rOprNGfwEbeRWgbNEkqO,\
                            r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                            s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,\
                            c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let signature = hmac_sha256(&server_key, auth_message.as_bytes());
        assert_eq!(
            b64.encode(signature),
            "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
    }

    /// The same computation as the server's (and postgres-protocol's), checked by logging in with
    /// it: the SCRAM client proof made from the password must match the verifier's stored key.
    #[test]
    fn verifier_matches_the_scram_client_computation() {
        for iterations in [4096, 16] {
            verifier_matches_the_scram_client_at(iterations);
        }
    }

    fn verifier_matches_the_scram_client_at(iterations: u32) {
        let b64 = base64::engine::general_purpose::STANDARD;
        let salt = b"sixteen byte slt";
        let verifier = verifier(b"pencil", salt, iterations);
        let expected_start = format!("SCRAM-SHA-256${iterations}:{}$", b64.encode(salt));
        assert!(verifier.starts_with(&expected_start), "{verifier}");
        let (_, keys) = verifier.rsplit_once('$').unwrap();
        let (stored, _) = keys.split_once(':').unwrap();
        // An independent Hi(): postgres-protocol's client, driven through a full exchange.
        let mut scram = postgres_protocol::authentication::sasl::ScramSha256::new(
            b"pencil",
            postgres_protocol::authentication::sasl::ChannelBinding::unsupported(),
        );
        let client_first = String::from_utf8(scram.message().to_vec()).unwrap();
        let client_nonce = client_first.rsplit_once("r=").unwrap().1.to_string();
        let server_first = format!("r={client_nonce}srv,s={},i={iterations}", b64.encode(salt));
        scram.update(server_first.as_bytes()).unwrap();
        let client_final = String::from_utf8(scram.message().to_vec()).unwrap();
        let proof = b64
            .decode(client_final.rsplit_once("p=").unwrap().1)
            .unwrap();
        // ClientSignature = HMAC(StoredKey, AuthMessage); ClientKey = proof XOR signature.
        let without_proof = client_final.rsplit_once(",p=").unwrap().0;
        let auth_message = format!(
            "{},{server_first},{without_proof}",
            client_first.trim_start_matches("n,,")
        );
        let stored = b64.decode(stored).unwrap();
        let signature = hmac_sha256(&stored, auth_message.as_bytes());
        let client_key: Vec<u8> = proof.iter().zip(signature).map(|(p, s)| p ^ s).collect();
        assert_eq!(Sha256::digest(&client_key).to_vec(), stored);
    }
}
