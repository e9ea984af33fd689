//! Records of uploaded files (their bytes are blobs named by the id).
use crate::{now, random_hex, Store};
use anyhow::Result;
use sqlx::any::AnyRow;
use sqlx::Row;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRecord {
    pub id: String,
    pub purpose: String,
    pub filename: String,
    pub bytes: i64,
    pub sha256: String,
    pub created_at: i64,
    /// The API key id that uploaded it (or whose job wrote it); None: no owner, every key reads it.
    pub owner: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListOrder {
    Asc,
    Desc,
}

impl FileRecord {
    /// A new record's id: `file-` + creation time in microseconds (13 hex
    /// digits, so ids sort by upload) + 12 random hex digits.
    pub fn new_id() -> String {
        let micros = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros()).unwrap_or(0);
        format!("file-{micros:013x}{}", random_hex(6))
    }

    pub fn new(id: String, purpose: &str, filename: &str, bytes: u64, sha256: String) -> Self {
        Self { id, purpose: purpose.to_string(), filename: filename.to_string(), bytes: bytes as i64, sha256, created_at: now(), owner: None }
    }

    pub fn owned_by(self, owner: Option<String>) -> Self {
        Self { owner, ..self }
    }

    /// Whether the key `key_id` may see this file: its own and unowned files;
    /// `None` (an admin key, or a server without keys) sees every file.
    pub fn visible_to(&self, key_id: Option<&str>) -> bool {
        key_id.is_none() || self.owner.is_none() || self.owner.as_deref() == key_id
    }

    fn from_row(row: &AnyRow) -> Result<Self> {
        Ok(Self {
            id: row.try_get("id")?,
            purpose: row.try_get("purpose")?,
            filename: row.try_get("filename")?,
            bytes: row.try_get("bytes")?,
            sha256: row.try_get("sha256")?,
            created_at: row.try_get("created_at")?,
            owner: row.try_get("owner")?,
        })
    }
}

const COLUMNS: &str = "id, purpose, filename, bytes, sha256, created_at, owner";

impl Store {
    pub async fn insert_file(&self, f: &FileRecord) -> Result<()> {
        sqlx::query("INSERT INTO files (id, purpose, filename, bytes, sha256, created_at, owner) VALUES ($1, $2, $3, $4, $5, $6, $7)")
            .bind(&f.id)
            .bind(&f.purpose)
            .bind(&f.filename)
            .bind(f.bytes)
            .bind(&f.sha256)
            .bind(f.created_at)
            .bind(&f.owner)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn file(&self, id: &str) -> Result<Option<FileRecord>> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM files WHERE id = $1")).bind(id).fetch_optional(&self.pool).await?;
        row.as_ref().map(FileRecord::from_row).transpose()
    }

    /// Up to `limit` files after the cursor `after` (a file id) in `order`,
    /// optionally of one purpose, that the key `visible_to` may see (see
    /// [`FileRecord::visible_to`]; None: every file).
    pub async fn list_files(
        &self,
        visible_to: Option<&str>,
        purpose: Option<&str>,
        after: Option<&str>,
        limit: i64,
        order: ListOrder,
    ) -> Result<Vec<FileRecord>> {
        let (cmp, dir) = match order {
            ListOrder::Asc => (">", "ASC"),
            ListOrder::Desc => ("<", "DESC"),
        };
        let sql = format!(
            "SELECT {COLUMNS} FROM files WHERE ($1 IS NULL OR purpose = $1) AND ($2 IS NULL OR id {cmp} $2) \
             AND ($4 IS NULL OR owner IS NULL OR owner = $4) ORDER BY id {dir} LIMIT $3"
        );
        let rows = sqlx::query(&sql).bind(purpose).bind(after).bind(limit).bind(visible_to).fetch_all(&self.pool).await?;
        rows.iter().map(FileRecord::from_row).collect()
    }

    /// Every file id (the blob sweep keeps these).
    pub async fn file_ids(&self) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT id FROM files").fetch_all(&self.pool).await?;
        rows.iter().map(|r| Ok(r.try_get("id")?)).collect()
    }

    /// Deletes the record; false if there was none.
    pub async fn delete_file(&self, id: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM files WHERE id = $1").bind(id).execute(&self.pool).await?;
        Ok(done.rows_affected() > 0)
    }
}
