//! The UUID → connection map shared by all shards, and the typed ids it stores. Not the
//! connections themselves: each one lives only on its shard.

use std::cell::RefCell;
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};

/// Random bytes for new connections' UUIDs, read from the kernel 256 UUIDs at a time.
const RANDOM_POOL: usize = 16 * 256;

/// This thread's unread random bytes: `bytes[used..]`.
struct RandomPool {
    bytes: [u8; RANDOM_POOL],
    used: usize,
}

thread_local! {
    static POOL: RefCell<RandomPool> = const {
        RefCell::new(RandomPool { bytes: [0; RANDOM_POOL], used: RANDOM_POOL })
    };
}

/// A new random (version 4) UUID, as the text a connection is known by. The randomness is the
/// kernel's, as `Uuid::new_v4`'s is, but read for 256 UUIDs in one system call rather than one
/// each: a `getrandom` per upgrade was 1.8% of the server's CPU in a flood of upgrades.
pub(crate) fn random_uuid() -> Arc<str> {
    let bytes = POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.used == RANDOM_POOL {
            getrandom::fill(&mut pool.bytes).ok()?;
            pool.used = 0;
        }
        let at = pool.used;
        pool.used += 16;
        <[u8; 16]>::try_from(pool.bytes.get(at..at + 16)?).ok()
    });
    let uuid = match bytes {
        Some(bytes) => uuid::Builder::from_random_bytes(bytes).into_uuid(),
        // The kernel refused: one UUID at a time, as uuid does it.
        None => uuid::Uuid::new_v4(),
    };
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    Arc::from(&*uuid.hyphenated().encode_lower(&mut text))
}

/// Index of a shard (0-based, dense).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardId(pub usize);

/// Where a connection lives: its shard, its slot in that shard's slab, and the generation that
/// tells a reused slot from the connection that held it before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId {
    /// The owning shard.
    pub shard: ShardId,
    /// Slot in the shard's slab.
    pub slot: usize,
    /// Unique per connection on its shard.
    pub generation: u64,
}

/// Why a rename failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenameError {
    /// Another connection holds the new UUID.
    Taken,
    /// The old UUID does not belong to this connection any more.
    NotRegistered,
}

/// Which of `buckets` (a power of two) locks guards `key`, for maps split by key.
pub(crate) fn bucket_index(key: &str, buckets: usize) -> usize {
    let mut h = DefaultHasher::new();
    key.hash(&mut h);
    (h.finish() as usize) & (buckets - 1)
}

/// A map split into independently locked buckets, so shards registering and looking up
/// different UUIDs rarely meet on one lock.
pub struct Registry {
    buckets: Box<[Mutex<Bucket>]>,
}

type Bucket = HashMap<Arc<str>, ConnId>;

impl Registry {
    /// A registry with `buckets` locks (rounded up to a power of two).
    pub fn new(buckets: usize) -> Self {
        let n = buckets.max(1).next_power_of_two();
        Registry {
            buckets: (0..n).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    fn index(&self, uuid: &str) -> usize {
        bucket_index(uuid, self.buckets.len())
    }

    fn lock(&self, i: usize) -> MutexGuard<'_, Bucket> {
        // A panic while holding the lock leaves the map consistent (every change is one
        // insert or remove), so poisoning is not a reason to fail.
        self.buckets[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers `uuid` for `id`; false if the UUID is already taken.
    pub fn insert(&self, uuid: Arc<str>, id: ConnId) -> bool {
        let mut b = self.lock(self.index(&uuid));
        if b.contains_key(&uuid) {
            return false;
        }
        b.insert(uuid, id);
        true
    }

    /// The connection holding `uuid`.
    pub fn get(&self, uuid: &str) -> Option<ConnId> {
        self.lock(self.index(uuid)).get(uuid).copied()
    }

    /// Removes `uuid` if it still names `id`.
    pub fn remove(&self, uuid: &str, id: ConnId) -> bool {
        let mut b = self.lock(self.index(uuid));
        if b.get(uuid) == Some(&id) {
            b.remove(uuid);
            true
        } else {
            false
        }
    }

    /// Moves `id` from `old` to `new` atomically: either both change or neither does.
    pub fn rename(&self, old: &str, new: Arc<str>, id: ConnId) -> Result<(), RenameError> {
        let (i, j) = (self.index(old), self.index(&new));
        // Lock two buckets in index order so two renames never wait on each other in a cycle.
        let (mut a, mut b) = if i == j {
            (self.lock(i), None)
        } else if i < j {
            let a = self.lock(i);
            (a, Some(self.lock(j)))
        } else {
            let b = self.lock(j);
            (self.lock(i), Some(b))
        };
        if a.get(old) != Some(&id) {
            return Err(RenameError::NotRegistered);
        }
        let target = b.as_mut().unwrap_or(&mut a);
        if target.contains_key(&new) {
            return Err(RenameError::Taken);
        }
        target.insert(new, id);
        a.remove(old);
        Ok(())
    }

    /// Number of registered UUIDs.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        (0..self.buckets.len()).map(|i| self.lock(i).len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_uuids_are_version_4_text_and_differ_across_refills() {
        let mut seen = std::collections::HashSet::new();
        // Three pools' worth: the refills must not repeat bytes.
        for _ in 0..3 * RANDOM_POOL / 16 {
            let text = random_uuid();
            let uuid = uuid::Uuid::parse_str(&text).unwrap();
            assert_eq!(uuid.get_version_num(), 4, "{text}");
            assert_eq!(uuid.get_variant(), uuid::Variant::RFC4122, "{text}");
            assert_eq!(
                *text,
                uuid.hyphenated().to_string(),
                "lower-case hyphenated"
            );
            assert!(seen.insert(text), "a UUID came twice");
        }
    }

    fn id(slot: usize) -> ConnId {
        ConnId {
            shard: ShardId(0),
            slot,
            generation: slot as u64,
        }
    }

    #[test]
    fn insert_get_remove() {
        let r = Registry::new(4);
        assert!(r.insert("a".into(), id(1)));
        assert!(!r.insert("a".into(), id(2)));
        assert_eq!(r.get("a"), Some(id(1)));
        assert!(!r.remove("a", id(2)), "only the owner removes");
        assert!(r.remove("a", id(1)));
        assert_eq!(r.get("a"), None);
    }

    #[test]
    fn rename_is_all_or_nothing() {
        let r = Registry::new(8);
        r.insert("a".into(), id(1));
        r.insert("b".into(), id(2));
        assert_eq!(r.rename("a", "b".into(), id(1)), Err(RenameError::Taken));
        assert_eq!(r.get("a"), Some(id(1)));
        assert_eq!(
            r.rename("zz", "c".into(), id(1)),
            Err(RenameError::NotRegistered)
        );
        for n in 0..64 {
            // Exercise both same-bucket and cross-bucket renames.
            let new: Arc<str> = format!("n{n}").into();
            let old = r
                .get("a")
                .map(|_| "a".to_string())
                .unwrap_or(format!("n{}", n - 1));
            assert_eq!(r.rename(&old, new.clone(), id(1)), Ok(()));
            assert_eq!(r.get(&new), Some(id(1)));
            assert_eq!(r.get(&old), None);
        }
        assert_eq!(r.len(), 2);
    }
}
