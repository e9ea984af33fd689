//! API keys made by `hearth keys create`. The secret is shown once; the store
//! keeps its sha256 (enough for random 256-bit secrets), a redacted form and
//! the key's limits.
use crate::{now, random_hex, Store};
use anyhow::Result;
use sha2::{Digest, Sha256};
use sqlx::any::AnyRow;
use sqlx::Row;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    /// `sk-hearth-abcd…wxyz`: enough to recognise, not to use.
    pub redacted: String,
    /// Requests per minute (None: the server's default).
    pub rpm: Option<i64>,
    /// Tokens per minute (None: the server's default).
    pub tpm: Option<i64>,
    pub zero_retention: bool,
    /// May read usage of every key.
    pub admin: bool,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

/// What `create_key` is asked for.
#[derive(Debug, Clone, Default)]
pub struct NewKey {
    pub name: String,
    pub rpm: Option<i64>,
    pub tpm: Option<i64>,
    pub zero_retention: bool,
    pub admin: bool,
}

/// Lowercase hex sha256 of a secret.
pub fn secret_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

impl ApiKey {
    fn from_row(row: &AnyRow) -> Result<Self> {
        Ok(Self {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            redacted: row.try_get("redacted")?,
            rpm: row.try_get("rpm")?,
            tpm: row.try_get("tpm")?,
            zero_retention: row.try_get::<i64, _>("zero_retention")? != 0,
            admin: row.try_get::<i64, _>("admin")? != 0,
            created_at: row.try_get("created_at")?,
            revoked_at: row.try_get("revoked_at")?,
        })
    }
}

const COLUMNS: &str = "id, name, redacted, rpm, tpm, zero_retention, admin, created_at, revoked_at";

impl Store {
    /// Makes a key; returns it with its secret (which is not stored).
    pub async fn create_key(&self, new: &NewKey) -> Result<(ApiKey, String)> {
        let secret = format!("sk-hearth-{}", random_hex(32));
        let key = ApiKey {
            id: format!("key_{}", random_hex(8)),
            name: new.name.clone(),
            redacted: format!("{}…{}", &secret[..14], &secret[secret.len() - 4..]),
            rpm: new.rpm,
            tpm: new.tpm,
            zero_retention: new.zero_retention,
            admin: new.admin,
            created_at: now(),
            revoked_at: None,
        };
        sqlx::query(
            "INSERT INTO api_keys (id, name, secret_sha256, redacted, rpm, tpm, zero_retention, admin, created_at, revoked_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL)",
        )
        .bind(&key.id)
        .bind(&key.name)
        .bind(secret_hash(&secret))
        .bind(&key.redacted)
        .bind(key.rpm)
        .bind(key.tpm)
        .bind(key.zero_retention as i64)
        .bind(key.admin as i64)
        .bind(key.created_at)
        .execute(&self.pool)
        .await?;
        Ok((key, secret))
    }

    /// The active (not revoked) key with this secret.
    pub async fn key_by_secret(&self, secret: &str) -> Result<Option<ApiKey>> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM api_keys WHERE secret_sha256 = $1 AND revoked_at IS NULL"))
            .bind(secret_hash(secret))
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(ApiKey::from_row).transpose()
    }

    /// Whether any key is active (then requests need one).
    pub async fn has_active_keys(&self) -> Result<bool> {
        let row = sqlx::query("SELECT id FROM api_keys WHERE revoked_at IS NULL LIMIT 1").fetch_optional(&self.pool).await?;
        Ok(row.is_some())
    }

    /// Every key, revoked ones included, oldest first.
    pub async fn list_keys(&self) -> Result<Vec<ApiKey>> {
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM api_keys ORDER BY created_at, id")).fetch_all(&self.pool).await?;
        rows.iter().map(ApiKey::from_row).collect()
    }

    /// Revokes the key with this id or name; returns the keys revoked.
    pub async fn revoke_key(&self, id_or_name: &str) -> Result<Vec<String>> {
        let rows = sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE (id = $2 OR name = $2) AND revoked_at IS NULL RETURNING id")
            .bind(now())
            .bind(id_or_name)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok(r.try_get("id")?)).collect()
    }
}
