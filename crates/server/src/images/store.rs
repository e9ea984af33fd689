//! The pictures behind `url` results: kept in memory for an hour under an
//! unguessable id, then gone. Time is passed in (unix seconds) so the expiry
//! rules are tested without waiting; `get` refuses an expired picture even
//! before the purge timer has removed it.
use axum::body::Bytes;
use std::collections::HashMap;
use std::sync::Mutex;

/// How long a `url` result stays (OpenAI: "URLs are only valid for 60 minutes").
pub const URL_LIFETIME_SECONDS: u64 = 60 * 60;
/// Most bytes held at once; beyond it the pictures closest to expiry go first,
/// so a burst of large requests cannot exhaust memory.
pub const STORE_CAPACITY_BYTES: usize = 512 * 1024 * 1024;

struct Stored {
    png: Bytes,
    expires: u64,
}

pub struct PictureStore {
    files: Mutex<HashMap<String, Stored>>,
    lifetime: u64,
    capacity: usize,
}

impl Default for PictureStore {
    fn default() -> Self {
        Self::new(URL_LIFETIME_SECONDS, STORE_CAPACITY_BYTES)
    }
}

impl PictureStore {
    pub fn new(lifetime: u64, capacity: usize) -> Self {
        Self { files: Mutex::default(), lifetime, capacity }
    }

    /// Keeps `png` until `now + lifetime`; returns its id (128 random bits, hex).
    pub fn put(&self, png: Bytes, now: u64) -> String {
        let id = format!("{:032x}", rand::random::<u128>());
        let mut files = self.lock();
        files.retain(|_, f| f.expires > now);
        let mut held: usize = files.values().map(|f| f.png.len()).sum();
        while held + png.len() > self.capacity {
            let Some(oldest) = files.iter().min_by_key(|(_, f)| f.expires).map(|(id, _)| id.clone()) else { break };
            held -= files.remove(&oldest).map_or(0, |f| f.png.len());
        }
        files.insert(id.clone(), Stored { png, expires: now + self.lifetime });
        id
    }

    /// The picture, while it lives.
    pub fn get(&self, id: &str, now: u64) -> Option<Bytes> {
        self.lock().get(id).filter(|f| f.expires > now).map(|f| f.png.clone())
    }

    /// Removes every expired picture; returns how many.
    pub fn purge(&self, now: u64) -> usize {
        let mut files = self.lock();
        let before = files.len();
        files.retain(|_, f| f.expires > now);
        before - files.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Stored>> {
        self.files.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_picture_lives_one_hour_then_is_gone() {
        let store = PictureStore::default();
        let id = store.put(Bytes::from_static(b"png"), 1_000);
        assert_eq!(id.len(), 32);
        assert_eq!(store.get(&id, 1_000).as_deref(), Some(&b"png"[..]));
        assert!(store.get(&id, 1_000 + URL_LIFETIME_SECONDS - 1).is_some(), "still there a second before the hour");
        assert!(store.get(&id, 1_000 + URL_LIFETIME_SECONDS).is_none(), "gone at the hour, even before a purge");
        assert_eq!(store.purge(1_000 + URL_LIFETIME_SECONDS - 1), 0);
        assert_eq!(store.purge(1_000 + URL_LIFETIME_SECONDS), 1);
        assert_eq!(store.purge(1_000 + URL_LIFETIME_SECONDS), 0);
    }

    #[test]
    fn ids_are_unguessable_and_distinct() {
        let store = PictureStore::default();
        let a = store.put(Bytes::from_static(b"a"), 0);
        let b = store.put(Bytes::from_static(b"b"), 0);
        assert_ne!(a, b);
        assert!(store.get("00000000000000000000000000000000", 0).is_none());
        assert_eq!(store.get(&b, 10).as_deref(), Some(&b"b"[..]));
    }

    #[test]
    fn over_capacity_the_oldest_go_first() {
        let store = PictureStore::new(100, 10);
        let first = store.put(Bytes::from(vec![0u8; 4]), 0);
        let second = store.put(Bytes::from(vec![0u8; 4]), 1);
        let third = store.put(Bytes::from(vec![0u8; 4]), 2);
        assert!(store.get(&first, 2).is_none(), "evicted to make room");
        assert!(store.get(&second, 2).is_some() && store.get(&third, 2).is_some());
    }
}
