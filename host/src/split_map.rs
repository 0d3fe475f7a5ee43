//! A hash map in [`PARTS`] parts, for the embedded store's and ledger's large indexes (a map
//! entry per token, per user, per account).
//!
//! A `HashMap` grows by allocating a table twice its size and moving every entry into it while
//! its owner waits. Under the embedded store's lock that owner is every grant in flight: measured
//! in `bench suite --only embedded`, the commit that took the record map past 114,688 tokens held
//! the lock 48 ms, the one past 458,752 tokens 528 ms (most of it faulting in the new table's
//! pages). Split by the key's hash, each part grows on its own at a [`PARTS`]th of the size, so
//! a pause is about a [`PARTS`]th of one whole-map resize (the parts reach their resize points
//! close together, so one commit may meet two); shrinking after retention is per part too.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::collections::hash_map::{Entry, RandomState};
use std::hash::{BuildHasher, Hash};
use std::ops::Index;

/// Parts a map is split into, a power of two. An empty part allocates nothing; an empty map is
/// one allocation of this many `HashMap` headers (48 bytes each).
pub const PARTS: usize = 64;

const _: () = assert!(PARTS.is_power_of_two() && PARTS > 1);

/// A part is shrunk only above this capacity, so that small parts are not reallocated each time
/// retention runs.
const SHRINK_ABOVE: usize = 8;

/// A `HashMap` split by key hash into [`PARTS`] parts that grow and shrink separately.
#[derive(Debug, Clone)]
pub struct SplitMap<K, V> {
    /// Chooses a key's part; the parts hash with keys of their own.
    chooser: RandomState,
    parts: Box<[HashMap<K, V>]>,
    len: usize,
}

impl<K, V> Default for SplitMap<K, V> {
    fn default() -> Self {
        SplitMap { chooser: RandomState::new(), parts: (0..PARTS).map(|_| HashMap::new()).collect(), len: 0 }
    }
}

impl<K: Eq + Hash, V> SplitMap<K, V> {
    fn part_of<Q: Hash + ?Sized>(&self, key: &Q) -> usize {
        // The top bits: RandomState's SipHash mixes every bit of the key into them.
        (self.chooser.hash_one(key) >> (u64::BITS - PARTS.trailing_zeros())) as usize
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.parts[self.part_of(key)].get(key)
    }

    pub fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let index = self.part_of(key);
        self.parts[index].get_mut(key)
    }

    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.get(key).is_some()
    }

    /// Puts `value` under `key`; answers the value it replaced.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        let index = self.part_of(&key);
        let replaced = self.parts[index].insert(key, value);
        if replaced.is_none() {
            self.len += 1;
        }
        replaced
    }

    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let index = self.part_of(key);
        let removed = self.parts[index].remove(key);
        if removed.is_some() {
            self.len -= 1;
        }
        removed
    }

    /// The value under `key`, inserting `make()`'s first if there is none.
    pub fn get_or_insert_with(&mut self, key: K, make: impl FnOnce() -> V) -> &mut V {
        let index = self.part_of(&key);
        match self.parts[index].entry(key) {
            Entry::Occupied(occupied) => occupied.into_mut(),
            Entry::Vacant(vacant) => {
                let value = vacant.insert(make());
                self.len += 1;
                value
            }
        }
    }

    /// Keeps the entries `keep` answers true for.
    pub fn retain(&mut self, mut keep: impl FnMut(&K, &mut V) -> bool) {
        for part in self.parts.iter_mut() {
            part.retain(&mut keep);
        }
        self.len = self.parts.iter().map(HashMap::len).sum();
    }

    /// Gives back the memory of each part that is less than a quarter full (and holds room for
    /// more than [`SHRINK_ABOVE`] entries).
    pub fn shrink(&mut self) {
        for part in self.parts.iter_mut() {
            if part.capacity() > SHRINK_ABOVE && part.len() * 4 < part.capacity() {
                part.shrink_to_fit();
            }
        }
    }
}

impl<K, V> SplitMap<K, V> {
    /// Entries in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.parts.iter().flat_map(HashMap::iter)
    }

    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.parts.iter().flat_map(HashMap::keys)
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.parts.iter().flat_map(HashMap::values)
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.parts.iter_mut().flat_map(HashMap::values_mut)
    }

    /// How many entries the parts hold before any of them grows, summed (as `HashMap::capacity`).
    pub fn capacity(&self) -> usize {
        self.parts.iter().map(HashMap::capacity).sum()
    }
}

impl<K, Q, V> Index<&Q> for SplitMap<K, V>
where
    K: Eq + Hash + Borrow<Q>,
    Q: Eq + Hash + ?Sized,
{
    type Output = V;

    /// The value under `key`; panics when there is none, as `HashMap`'s does.
    fn index(&self, key: &Q) -> &V {
        self.get(key).expect("no entry under the key")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u16, u32),
        Remove(u16),
        Upsert(u16, u32),
        Bump(u16),
        Retain(u16),
        Shrink,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (any::<u16>(), any::<u32>()).prop_map(|(k, v)| Op::Insert(k % 2048, v)),
            3 => any::<u16>().prop_map(|k| Op::Remove(k % 2048)),
            2 => (any::<u16>(), any::<u32>()).prop_map(|(k, v)| Op::Upsert(k % 2048, v)),
            2 => any::<u16>().prop_map(|k| Op::Bump(k % 2048)),
            1 => any::<u16>().prop_map(|m| Op::Retain(m % 7 + 2)),
            1 => Just(Op::Shrink),
        ]
    }

    proptest! {
        /// Whatever the operations, the split map answers as one `HashMap` does.
        #[test]
        fn behaves_as_one_hash_map(ops in proptest::collection::vec(op(), 0..600)) {
            let mut split = SplitMap::<String, u32>::default();
            let mut model = HashMap::<String, u32>::new();
            for op in ops {
                match op {
                    Op::Insert(k, v) => prop_assert_eq!(split.insert(k.to_string(), v), model.insert(k.to_string(), v)),
                    Op::Remove(k) => prop_assert_eq!(split.remove(k.to_string().as_str()), model.remove(&k.to_string())),
                    Op::Upsert(k, v) => {
                        let split = split.get_or_insert_with(k.to_string(), || 0);
                        *split = split.wrapping_add(v % 10);
                        let model = model.entry(k.to_string()).or_insert(0);
                        *model = model.wrapping_add(v % 10);
                    }
                    Op::Bump(k) => {
                        let (split, model) = (split.get_mut(k.to_string().as_str()), model.get_mut(&k.to_string()));
                        prop_assert_eq!(split.is_some(), model.is_some());
                        if let (Some(split), Some(model)) = (split, model) {
                            *split = split.wrapping_add(1);
                            *model = model.wrapping_add(1);
                        }
                    }
                    Op::Retain(m) => {
                        split.retain(|_, v| *v % u32::from(m) != 0);
                        model.retain(|_, v| *v % u32::from(m) != 0);
                    }
                    Op::Shrink => split.shrink(),
                }
                prop_assert_eq!(split.len(), model.len());
                prop_assert_eq!(split.is_empty(), model.is_empty());
            }
            let mut entries: Vec<_> = split.iter().map(|(k, v)| (k.clone(), *v)).collect();
            let mut expected: Vec<_> = model.into_iter().collect();
            entries.sort_unstable();
            expected.sort_unstable();
            prop_assert_eq!(entries.len(), split.keys().count());
            for (key, value) in &expected {
                prop_assert_eq!(split.get(key.as_str()), Some(value));
                prop_assert_eq!(&split[key.as_str()], value);
                prop_assert!(split.contains_key(key.as_str()));
            }
            prop_assert_eq!(entries, expected);
        }
    }

    #[test]
    fn keys_spread_over_the_parts_and_each_part_grows_alone() {
        let mut map = SplitMap::<u64, u64>::default();
        for seq in 0..64 * 1024 {
            map.insert(seq, seq);
        }
        let sizes: Vec<usize> = map.parts.iter().map(HashMap::len).collect();
        // 1,024 a part on average; a part with under half or over twice that is a bad chooser.
        assert!(sizes.iter().all(|&size| (512..=2048).contains(&size)), "{sizes:?}");
        // Growing past a power of two moves one part, not the map: the insert that takes a part
        // past its capacity leaves every other part's capacity as it was.
        let capacities: Vec<usize> = map.parts.iter().map(HashMap::capacity).collect();
        let mut seq = 64 * 1024;
        let grown = loop {
            map.insert(seq, seq);
            seq += 1;
            let now: Vec<usize> = map.parts.iter().map(HashMap::capacity).collect();
            let changed: Vec<usize> = (0..PARTS).filter(|&part| now[part] != capacities[part]).collect();
            if !changed.is_empty() {
                break changed;
            }
        };
        assert_eq!(grown.len(), 1, "{grown:?}");
        for seq in 64 * 1024..seq {
            map.remove(&seq);
        }
        for seq in 0..60 * 1024 {
            map.remove(&seq);
        }
        let before = map.capacity();
        map.shrink();
        assert!(map.capacity() * 4 < before, "{} of {before}", map.capacity());
        assert_eq!(map.values().copied().min(), Some(60 * 1024));
        for value in map.values_mut() {
            *value += 1;
        }
        assert_eq!(map.get(&(60 * 1024)), Some(&(60 * 1024 + 1)));
    }
}
