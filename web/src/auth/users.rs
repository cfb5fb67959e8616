//! Users and API tokens in SQLite. Passwords are stored as argon2id PHC strings; API token
//! secrets as SHA-256 (they are 256-bit random, so a fast hash suffices), compared in constant time.

use crate::rbac::Role;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::Mutex;

/// A user as shown by the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserView {
    /// Name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// RFC 3339 creation time.
    pub created_at: String,
}

/// An API token as shown by the API (never the secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiToken {
    /// Public id (also the prefix of the token string).
    pub id: String,
    /// Owner's user name.
    pub owner: String,
    /// Label.
    pub name: String,
    /// Role the token acts with.
    pub role: Role,
    /// RFC 3339 creation time.
    pub created_at: String,
    /// RFC 3339 expiry.
    pub expires_at: String,
    /// RFC 3339 revocation time, if revoked.
    pub revoked_at: Option<String>,
}

/// A freshly issued token: the only time the secret is visible.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NewToken {
    /// The stored metadata.
    #[serde(flatten)]
    pub token: ApiToken,
    /// `skt_<id>_<secret>`: send as `Authorization: Bearer ...`.
    pub secret: String,
}

/// What token authentication needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// Metadata.
    pub token: ApiToken,
    secret_sha256: Vec<u8>,
}

/// A user or token operation failed.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    /// The user exists already.
    #[error("user {0:?} exists already")]
    Exists(String),
    /// No such user.
    #[error("no user {0:?}")]
    NoSuchUser(String),
    /// No such token.
    #[error("no token {0:?}")]
    NoSuchToken(String),
    /// Deleting the last admin would lock everyone out.
    #[error("cannot delete the last admin")]
    LastAdmin,
    /// A stored value is not what this version writes.
    #[error("corrupt user database: {0}")]
    Corrupt(&'static str),
    /// SQLite failed.
    #[error("user database failure")]
    Db(#[from] rusqlite::Error),
}

/// The user and token database. Token lookups (every API request) are served from a memory
/// cache that every token or user change clears.
#[derive(Debug)]
pub struct UserStore {
    conn: Mutex<Connection>,
    tokens: std::sync::RwLock<std::collections::HashMap<String, TokenRecord>>,
}

const SCHEMA: &str = "
PRAGMA foreign_keys = ON;
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    secret_sha256 BLOB NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    revoked_at TEXT
);
CREATE INDEX IF NOT EXISTS tokens_owner ON tokens(owner);
";

fn now_rfc3339() -> String {
    Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Splits `skt_<16 hex id>_<64 hex secret>` into id and secret.
pub fn parse_token(s: &str) -> Option<(&str, &str)> {
    let rest = s.strip_prefix("skt_")?;
    let (id, secret) = rest.split_once('_')?;
    let hex_ok = |x: &str, n: usize| x.len() == n && x.bytes().all(|b| b.is_ascii_hexdigit());
    (hex_ok(id, 16) && hex_ok(secret, 64)).then_some((id, secret))
}

/// Whether `secret` is the token's secret and the token is neither revoked nor expired at `now`.
pub fn token_matches(rec: &TokenRecord, secret: &str, now: DateTime<Utc>) -> bool {
    let digest = Sha256::digest(secret.as_bytes());
    let same = super::secrets_equal(&digest, &rec.secret_sha256);
    let live = rec.token.revoked_at.is_none()
        && DateTime::parse_from_rfc3339(&rec.token.expires_at).is_ok_and(|e| e > now);
    same && live
}

fn role_of(s: String) -> Result<Role, UserError> {
    s.parse().map_err(|_| UserError::Corrupt("unknown role"))
}

impl UserStore {
    /// Opens (creating if needed) the database file.
    pub fn open(path: &Path) -> Result<UserStore, UserError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        Self::init(conn)
    }

    /// An in-memory database (tests).
    pub fn open_in_memory() -> Result<UserStore, UserError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<UserStore, UserError> {
        conn.execute_batch(SCHEMA)?;
        Ok(UserStore {
            conn: Mutex::new(conn),
            tokens: std::sync::RwLock::new(std::collections::HashMap::new()),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn forget_tokens(&self) {
        self.tokens
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Number of users.
    pub fn count(&self) -> Result<u64, UserError> {
        let n: i64 = self
            .conn()
            .query_row("SELECT count(*) FROM users", [], |r| r.get(0))?;
        Ok(n.max(0) as u64)
    }

    /// Adds a user with an already hashed password.
    pub fn create_user(&self, name: &str, role: Role, phc: &str) -> Result<UserView, UserError> {
        let created_at = now_rfc3339();
        let n = self.conn().execute(
            "INSERT OR IGNORE INTO users (name, role, password_hash, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![name, role.as_str(), phc, created_at],
        )?;
        if n == 0 {
            return Err(UserError::Exists(name.to_owned()));
        }
        Ok(UserView {
            name: name.to_owned(),
            role,
            created_at,
        })
    }

    /// A user's role and password hash.
    pub fn credentials(&self, name: &str) -> Result<Option<(Role, String)>, UserError> {
        let row: Option<(String, String)> = self
            .conn()
            .query_row(
                "SELECT role, password_hash FROM users WHERE name = ?1",
                [name],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        row.map(|(role, phc)| Ok((role_of(role)?, phc))).transpose()
    }

    /// One user.
    pub fn user(&self, name: &str) -> Result<UserView, UserError> {
        let row: Option<(String, String)> = self
            .conn()
            .query_row(
                "SELECT role, created_at FROM users WHERE name = ?1",
                [name],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let (role, created_at) = row.ok_or_else(|| UserError::NoSuchUser(name.to_owned()))?;
        Ok(UserView {
            name: name.to_owned(),
            role: role_of(role)?,
            created_at,
        })
    }

    /// All users, by name.
    pub fn list_users(&self) -> Result<Vec<UserView>, UserError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT name, role, created_at FROM users ORDER BY name")?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get(2)?))
        })?;
        rows.map(|row| {
            let (name, role, created_at) = row?;
            Ok(UserView {
                name,
                role: role_of(role)?,
                created_at,
            })
        })
        .collect()
    }

    /// Deletes a user and their tokens; the last admin cannot be deleted.
    pub fn delete_user(&self, name: &str) -> Result<(), UserError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let role: Option<String> = tx
            .query_row("SELECT role FROM users WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()?;
        let role = role_of(role.ok_or_else(|| UserError::NoSuchUser(name.to_owned()))?)?;
        if role == Role::Admin {
            let admins: i64 =
                tx.query_row("SELECT count(*) FROM users WHERE role = 'admin'", [], |r| {
                    r.get(0)
                })?;
            if admins <= 1 {
                return Err(UserError::LastAdmin);
            }
        }
        tx.execute("DELETE FROM users WHERE name = ?1", [name])?;
        tx.commit()?;
        self.forget_tokens();
        Ok(())
    }

    /// Replaces a user's password hash.
    pub fn set_password(&self, name: &str, phc: &str) -> Result<(), UserError> {
        let n = self.conn().execute(
            "UPDATE users SET password_hash = ?2 WHERE name = ?1",
            params![name, phc],
        )?;
        if n == 0 {
            return Err(UserError::NoSuchUser(name.to_owned()));
        }
        Ok(())
    }

    /// Issues a token for `owner` acting as `role` until `expires_at`.
    pub fn create_token(
        &self,
        owner: &str,
        name: &str,
        role: Role,
        expires_at: DateTime<Utc>,
    ) -> Result<NewToken, UserError> {
        let id = super::random_hex(8);
        let secret = super::random_hex(32);
        let digest = Sha256::digest(secret.as_bytes()).to_vec();
        let token = ApiToken {
            id: id.clone(),
            owner: owner.to_owned(),
            name: name.to_owned(),
            role,
            created_at: now_rfc3339(),
            expires_at: expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            revoked_at: None,
        };
        let conn = self.conn();
        let exists: Option<i64> = conn
            .query_row("SELECT 1 FROM users WHERE name = ?1", [owner], |r| r.get(0))
            .optional()?;
        if exists.is_none() {
            return Err(UserError::NoSuchUser(owner.to_owned()));
        }
        conn.execute(
            "INSERT INTO tokens (id, owner, name, role, secret_sha256, created_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                token.id,
                token.owner,
                token.name,
                role.as_str(),
                digest,
                token.created_at,
                token.expires_at
            ],
        )?;
        Ok(NewToken {
            token,
            secret: format!("skt_{id}_{secret}"),
        })
    }

    fn token_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(ApiToken, String, Vec<u8>)> {
        Ok((
            ApiToken {
                id: r.get(0)?,
                owner: r.get(1)?,
                name: r.get(2)?,
                role: Role::Admin,
                created_at: r.get(4)?,
                expires_at: r.get(5)?,
                revoked_at: r.get(6)?,
            },
            r.get(3)?,
            r.get(7)?,
        ))
    }

    const TOKEN_COLS: &'static str =
        "id, owner, name, role, created_at, expires_at, revoked_at, secret_sha256";

    /// A token by id (for authentication).
    pub fn token(&self, id: &str) -> Result<Option<TokenRecord>, UserError> {
        if let Some(t) = self
            .tokens
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
        {
            return Ok(Some(t.clone()));
        }
        let rec = self.token_from_db(id)?;
        if let Some(r) = &rec {
            let mut cache = self.tokens.write().unwrap_or_else(|p| p.into_inner());
            if cache.len() > 10_000 {
                cache.clear();
            }
            cache.insert(id.to_owned(), r.clone());
        }
        Ok(rec)
    }

    fn token_from_db(&self, id: &str) -> Result<Option<TokenRecord>, UserError> {
        let row = self
            .conn()
            .query_row(
                &format!("SELECT {} FROM tokens WHERE id = ?1", Self::TOKEN_COLS),
                [id],
                Self::token_from_row,
            )
            .optional()?;
        row.map(|(mut token, role, secret_sha256)| {
            token.role = role_of(role)?;
            Ok(TokenRecord {
                token,
                secret_sha256,
            })
        })
        .transpose()
    }

    /// Tokens of one owner, or of everyone, newest first.
    pub fn list_tokens(&self, owner: Option<&str>) -> Result<Vec<ApiToken>, UserError> {
        let conn = self.conn();
        let sql = format!(
            "SELECT {} FROM tokens WHERE ?1 IS NULL OR owner = ?1 ORDER BY created_at DESC, id",
            Self::TOKEN_COLS
        );
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt.query_map([owner], Self::token_from_row)?;
        rows.map(|row| {
            let (mut t, role, _) = row?;
            t.role = role_of(role)?;
            Ok(t)
        })
        .collect()
    }

    /// Revokes a token (idempotent); returns it.
    pub fn revoke_token(&self, id: &str) -> Result<ApiToken, UserError> {
        self.conn().execute(
            "UPDATE tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
            params![id, now_rfc3339()],
        )?;
        self.forget_tokens();
        self.token(id)?
            .map(|r| r.token)
            .ok_or_else(|| UserError::NoSuchToken(id.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_roundtrip_and_last_admin_is_kept() {
        let s = UserStore::open_in_memory().unwrap();
        assert_eq!(s.count().unwrap(), 0);
        s.create_user("root", Role::Admin, "phc1").unwrap();
        assert!(matches!(
            s.create_user("root", Role::Auditor, "x"),
            Err(UserError::Exists(_))
        ));
        s.create_user("ann", Role::Auditor, "phc2").unwrap();
        assert_eq!(
            s.credentials("ann").unwrap(),
            Some((Role::Auditor, "phc2".into()))
        );
        assert_eq!(s.credentials("nobody").unwrap(), None);
        let names: Vec<_> = s
            .list_users()
            .unwrap()
            .into_iter()
            .map(|u| u.name)
            .collect();
        assert_eq!(names, ["ann", "root"]);
        assert!(matches!(s.delete_user("root"), Err(UserError::LastAdmin)));
        s.set_password("ann", "phc3").unwrap();
        assert_eq!(s.credentials("ann").unwrap().unwrap().1, "phc3");
        s.delete_user("ann").unwrap();
        assert!(matches!(s.user("ann"), Err(UserError::NoSuchUser(_))));
    }

    #[test]
    fn tokens_are_hashed_expire_revoke_and_die_with_their_owner() {
        let s = UserStore::open_in_memory().unwrap();
        s.create_user("op", Role::Operator, "phc").unwrap();
        let later = Utc::now() + chrono::Duration::days(1);
        let t = s.create_token("op", "ci", Role::Operator, later).unwrap();
        let (id, secret) = parse_token(&t.secret).unwrap();
        assert_eq!(id, t.token.id);
        let rec = s.token(id).unwrap().unwrap();
        assert!(token_matches(&rec, secret, Utc::now()));
        assert!(!token_matches(&rec, &"0".repeat(64), Utc::now()));
        assert!(!token_matches(
            &rec,
            secret,
            later + chrono::Duration::seconds(1)
        ));
        assert_eq!(s.list_tokens(Some("op")).unwrap().len(), 1);
        assert_eq!(s.list_tokens(Some("other")).unwrap().len(), 0);
        let revoked = s.revoke_token(id).unwrap();
        assert!(revoked.revoked_at.is_some());
        assert!(!token_matches(
            &s.token(id).unwrap().unwrap(),
            secret,
            Utc::now()
        ));
        let t2 = s.create_token("op", "ci2", Role::Operator, later).unwrap();
        s.create_user("boss", Role::Admin, "phc").unwrap();
        s.delete_user("op").unwrap();
        assert!(s.token(&t2.token.id).unwrap().is_none());
        assert!(matches!(
            s.create_token("op", "x", Role::Operator, later),
            Err(UserError::NoSuchUser(_))
        ));
    }

    #[test]
    fn token_strings_parse_strictly() {
        let id = "0123456789abcdef";
        let sec = "a".repeat(64);
        assert_eq!(
            parse_token(&format!("skt_{id}_{sec}")),
            Some((id, sec.as_str()))
        );
        for bad in [
            format!("skt_{id}_{}", &sec[1..]),
            format!("skx_{id}_{sec}"),
            format!("skt_{id}{sec}"),
            format!("skt_{}_{sec}", "g".repeat(16)),
            String::new(),
        ] {
            assert_eq!(parse_token(&bad), None, "{bad}");
        }
    }
}
