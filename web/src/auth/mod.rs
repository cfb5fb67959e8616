//! Authentication: argon2id passwords, users and API tokens in SQLite, in-memory sessions with
//! CSRF tokens, and login lockout with backoff.

mod lockout;
mod password;
mod sessions;
mod users;

pub use lockout::Throttle;
pub use password::{PasswordError, hash_password, verify_password};
pub use sessions::{Session, SessionStore};
pub use users::{
    ApiToken, NewToken, TokenRecord, UserError, UserStore, UserView, parse_token, token_matches,
};

use rand::RngCore;
use subtle::ConstantTimeEq;

/// Checks a user name: 1-64 characters, lowercase ASCII letters, digits, `.`, `_`, `-`,
/// starting with a letter.
pub fn validate_username(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 64 {
        return Err("must be 1 to 64 characters");
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err("must start with a lowercase letter");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
    {
        return Err("may only contain a-z, 0-9, '.', '_' and '-'");
    }
    Ok(())
}

/// Checks a new password: 12 to 256 characters.
pub fn validate_password(password: &str) -> Result<(), &'static str> {
    let n = password.chars().count();
    if n < 12 {
        return Err("must be at least 12 characters");
    }
    if n > 256 {
        return Err("must be at most 256 characters");
    }
    Ok(())
}

/// `n` random bytes from the OS-seeded CSPRNG, hex encoded.
pub fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

/// A random password for the initial admin: 20 characters from an unambiguous alphabet.
pub fn generate_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::thread_rng();
    (0..20)
        .map(|_| {
            let i = (rng.next_u32() as usize) % ALPHABET.len();
            char::from(ALPHABET[i])
        })
        .collect()
}

/// Constant-time equality of two secrets.
pub fn secrets_equal(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        assert!(validate_username("alice").is_ok());
        assert!(validate_username("ops-1.b_c").is_ok());
        for bad in ["", "Alice", "1abc", "a b", "a/b", &"a".repeat(65)] {
            assert!(validate_username(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn passwords_and_secrets() {
        assert!(validate_password("short").is_err());
        assert!(validate_password("long enough passphrase").is_ok());
        let p = generate_password();
        assert_eq!(p.len(), 20);
        assert!(validate_password(&p).is_ok());
        assert_ne!(generate_password(), p);
        assert!(secrets_equal(b"abc", b"abc"));
        assert!(!secrets_equal(b"abc", b"abd"));
        assert!(!secrets_equal(b"abc", b"abcd"));
        assert_eq!(random_hex(16).len(), 32);
    }
}
