//! A hash map in [`PARTS`] parts, for the embedded store's and ledger's large indexes (a map
//! entry per token, per user, per account).
//!
//! A `HashMap` grows by allocating a table twice its size and moving every entry into it while
//! its owner waits. Under the embedded store's lock that owner is every grant in flight: measured
//! in `bench suite --only embedded`, the commit that took the record map past 114,688 tokens held
//! the lock 48 ms, the one past 458,752 tokens 528 ms (most of it faulting in the new table's
//! pages). Split by the key's hash, each part grows on its own at a [`PARTS`]th of the size, so
//! a pause is about a [`PARTS`]th of one whole-map resize; shrinking after retention is per part
//! too.
//!
//! The parts are of staggered sizes ([`part_of_draw`]): part `i` takes a share of the keys in
//! proportion to 2^(i/[`PARTS`]), so the largest takes twice the smallest's. Parts of one size
//! would reach their resize points together, and the whole map's tables would still double in
//! one step (from 1.14 to 2.29 slots an entry: `bench footprint` read 854 bytes a token at
//! 225,000 tokens and 948 at 235,000, past the step at 229,376); staggered, one part grows
//! at a time, each at its own count, and the map's tables grow smoothly with its entries.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::collections::hash_map::{Entry, RandomState};
use std::hash::{BuildHasher, Hash};
use std::ops::Index;

use hashbrown::HashTable;

/// Parts a map is split into, a power of two. An empty part allocates nothing; an empty map is
/// one allocation of this many `HashMap` headers (48 bytes each).
pub const PARTS: usize = 64;

const _: () = assert!(PARTS.is_power_of_two() && PARTS > 1);

/// Where each part's share of the 32-bit draws ends (the last part's, at 2^32, left out): part
/// `i` takes the draws from `DRAW_BOUNDS[i - 1]` up to `DRAW_BOUNDS[i]`, a share in proportion to
/// 2^(i/[`PARTS`]).
const DRAW_BOUNDS: [u32; PARTS - 1] = draw_bounds();

const fn draw_bounds() -> [u32; PARTS - 1] {
    // 2^(1/PARTS) by bisection (a const fn has no `powf`): the step from one part's weight to
    // the next's.
    let (mut low, mut high) = (1.0f64, 2.0f64);
    let mut round = 0;
    while round < 64 {
        let middle = (low + high) / 2.0;
        let (mut power, mut times) = (middle, 1);
        while times < PARTS {
            power *= middle;
            times += 1;
        }
        if power < 2.0 {
            low = middle;
        } else {
            high = middle;
        }
        round += 1;
    }
    let mut weights = [0.0f64; PARTS];
    let (mut weight, mut total, mut part) = (1.0f64, 0.0f64, 0);
    while part < PARTS {
        weights[part] = weight;
        total += weight;
        weight *= low;
        part += 1;
    }
    let mut bounds = [0u32; PARTS - 1];
    let (mut below, mut part) = (0.0f64, 0);
    while part < PARTS - 1 {
        below += weights[part];
        bounds[part] = (below / total * 4_294_967_296.0) as u32;
        part += 1;
    }
    bounds
}

/// The part a key goes to, from 32 bits of its hash that nothing else reads (see
/// [`DRAW_BOUNDS`]). [`SplitTable`] splits its tables with it too.
fn part_of_draw(draw: u32) -> usize {
    DRAW_BOUNDS.partition_point(|&bound| bound <= draw)
}

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
        // The top bits: RandomState's SipHash mixes every bit of the key into them. (The parts
        // hash with keys of their own, so these bits say nothing of a key's slot in its part.)
        part_of_draw((self.chooser.hash_one(key) >> 32) as u32)
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

/// A hash table in [`PARTS`] staggered parts, as [`SplitMap`]'s, of values whose keys live
/// elsewhere: a record's sequence number, say, whose key is read from the record. Each value
/// costs its own size in the table, not a copy of its key's too. The caller hashes keys with
/// [`SplitTable::hash`] and answers, for a value, whether its key is the one sought and, when a
/// part grows or shrinks, its key's hash again.
pub struct SplitTable<T> {
    hasher: RandomState,
    parts: Box<[HashTable<T>]>,
    len: usize,
}

impl<T> Default for SplitTable<T> {
    fn default() -> Self {
        SplitTable { hasher: RandomState::new(), parts: (0..PARTS).map(|_| HashTable::new()).collect(), len: 0 }
    }
}

impl<T> SplitTable<T> {
    /// A key's hash, for the other methods.
    pub fn hash<Q: Hash + ?Sized>(&self, key: &Q) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The part of a hash, from bits the parts use neither for the slot (the low ones, at most 27
    /// for 2^32 values in 64 parts) nor for the tag (the top seven): bits 32 to 55, as the top of
    /// the draw [`part_of_draw`] shares out.
    fn part(hash: u64) -> usize {
        part_of_draw(((hash >> 32) as u32) << 8)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The value whose key has `hash` and for which `is_key` answers true.
    pub fn find(&self, hash: u64, is_key: impl FnMut(&T) -> bool) -> Option<&T> {
        self.parts[Self::part(hash)].find(hash, is_key)
    }

    /// Adds a value whose key no other value has. `rehash` gives another value's key's hash
    /// again (with the table's hasher, which it is handed) when its part grows.
    pub fn insert_unique(&mut self, hash: u64, value: T, rehash: impl Fn(&RandomState, &T) -> u64) {
        let SplitTable { hasher, parts, len } = self;
        parts[Self::part(hash)].insert_unique(hash, value, |other| rehash(hasher, other));
        *len += 1;
    }

    /// Takes out the value whose key has `hash` and for which `is_key` answers true.
    pub fn remove(&mut self, hash: u64, is_key: impl FnMut(&T) -> bool) -> Option<T> {
        let (value, _) = self.parts[Self::part(hash)].find_entry(hash, is_key).ok()?.remove();
        self.len -= 1;
        Some(value)
    }

    /// Values in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.parts.iter().flat_map(HashTable::iter)
    }

    /// Gives back the memory of each part that is less than a quarter full (and holds room for
    /// more than [`SHRINK_ABOVE`] values), rehashing what it keeps as
    /// [`SplitTable::insert_unique`] does.
    pub fn shrink(&mut self, rehash: impl Fn(&RandomState, &T) -> u64) {
        let SplitTable { hasher, parts, .. } = self;
        for part in parts.iter_mut() {
            if part.capacity() > SHRINK_ABOVE && part.len() * 4 < part.capacity() {
                part.shrink_to_fit(|other| rehash(hasher, other));
            }
        }
    }

    /// How many values the parts hold before any of them grows, summed.
    pub fn capacity(&self) -> usize {
        self.parts.iter().map(HashTable::capacity).sum()
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

    proptest! {
        /// Whatever the operations, the split table answers as one `HashMap` does, its values
        /// carrying their keys (as records carry their order numbers for the store's index).
        #[test]
        fn table_behaves_as_one_hash_map(ops in proptest::collection::vec(op(), 0..600)) {
            let mut table = SplitTable::<(String, u32)>::default();
            let mut model = HashMap::<String, u32>::new();
            let rehash = |hasher: &RandomState, value: &(String, u32)| hasher.hash_one(value.0.as_str());
            for op in ops {
                match op {
                    Op::Insert(k, v) | Op::Upsert(k, v) => {
                        let key = k.to_string();
                        let hash = table.hash(key.as_str());
                        let found = table.find(hash, |value| value.0 == key).map(|value| value.1);
                        prop_assert_eq!(found, model.get(&key).copied());
                        if found.is_none() {
                            table.insert_unique(hash, (key.clone(), v), rehash);
                            model.insert(key, v);
                        }
                    }
                    Op::Remove(k) | Op::Bump(k) => {
                        let key = k.to_string();
                        let removed = table.remove(table.hash(key.as_str()), |value| value.0 == key);
                        prop_assert_eq!(removed.map(|value| value.1), model.remove(&key));
                    }
                    Op::Retain(_) | Op::Shrink => table.shrink(rehash),
                }
                prop_assert_eq!(table.len(), model.len());
                prop_assert_eq!(table.is_empty(), model.is_empty());
            }
            let mut values: Vec<_> = table.iter().cloned().collect();
            let mut expected: Vec<_> = model.into_iter().collect();
            values.sort_unstable();
            expected.sort_unstable();
            prop_assert_eq!(values, expected);
        }
    }

    /// A split table's parts shrink once most of their values are gone, and still find the rest.
    #[test]
    fn a_table_gives_its_room_back_and_finds_what_it_kept() {
        let mut table = SplitTable::<u64>::default();
        let rehash = |hasher: &RandomState, value: &u64| hasher.hash_one(value);
        for value in 0..64 * 1024u64 {
            table.insert_unique(table.hash(&value), value, rehash);
        }
        for value in 1024..64 * 1024u64 {
            assert_eq!(table.remove(table.hash(&value), |&other| other == value), Some(value));
        }
        let before = table.capacity();
        table.shrink(rehash);
        assert!(table.capacity() * 4 < before, "{} of {before}", table.capacity());
        for value in 0..1024u64 {
            assert_eq!(table.find(table.hash(&value), |&other| other == value), Some(&value));
        }
        assert_eq!(table.len(), 1024);
    }

    /// Over a doubling of the entries, each part grows once, each at its own count, so the
    /// tables' room an entry stays near its mean. Parts of one size would all grow within a
    /// few thousand inserts of each other, the room an entry stepping from ≈ 1.1 to ≈ 2.2.
    #[test]
    fn the_parts_grow_one_at_a_time_across_a_doubling() {
        let mut map = SplitMap::<u64, u64>::default();
        const FROM: u64 = 1 << 16;
        for seq in 0..FROM {
            map.insert(seq, seq);
        }
        let (mut room_low, mut room_high) = (f64::MAX, 0f64);
        let mut growths = Vec::new();
        let mut capacity = map.capacity();
        for seq in FROM..2 * FROM {
            map.insert(seq, seq);
            let now = map.capacity();
            if now != capacity {
                growths.push(seq);
                capacity = now;
            }
            let room = now as f64 / map.len() as f64;
            (room_low, room_high) = (room_low.min(room), room_high.max(room));
        }
        assert!((PARTS * 3 / 4..=PARTS * 5 / 4).contains(&growths.len()), "{} growths: {growths:?}", growths.len());
        let widest = growths.windows(2).map(|pair| pair[1] - pair[0]).max().unwrap_or(FROM);
        assert!(widest < FROM / 8, "{widest} inserts without a part growing: {growths:?}");
        assert!(room_high / room_low < 1.15, "room an entry from {room_low:.3} to {room_high:.3}");
    }

    #[test]
    fn draws_fall_in_parts_of_growing_shares() {
        assert_eq!(part_of_draw(0), 0);
        assert_eq!(part_of_draw(u32::MAX), PARTS - 1);
        assert!(DRAW_BOUNDS.windows(2).all(|pair| pair[0] < pair[1]), "{DRAW_BOUNDS:?}");
        let share = |part: usize| {
            let start = if part == 0 { 0 } else { u64::from(DRAW_BOUNDS[part - 1]) };
            let end = DRAW_BOUNDS.get(part).map_or(1 << 32, |&end| u64::from(end));
            (end - start) as f64
        };
        for part in 1..PARTS {
            let step = share(part) / share(part - 1);
            assert!((step - 2f64.powf(1.0 / PARTS as f64)).abs() < 1e-6, "part {part}: {step}");
            assert_eq!(part_of_draw(DRAW_BOUNDS[part - 1]), part);
            assert_eq!(part_of_draw(DRAW_BOUNDS[part - 1] - 1), part - 1);
        }
    }

    #[test]
    fn keys_spread_over_the_parts_and_each_part_grows_alone() {
        let mut map = SplitMap::<u64, u64>::default();
        for seq in 0..64 * 1024 {
            map.insert(seq, seq);
        }
        let sizes: Vec<usize> = map.parts.iter().map(HashMap::len).collect();
        // Part `i` holds a share in proportion to 2^(i/64): from ≈ 710 to ≈ 1,420 of 65,536; a
        // part off its share by a quarter is a bad chooser.
        let total: f64 = (0..PARTS).map(|part| 2f64.powf(part as f64 / PARTS as f64)).sum();
        for (part, &size) in sizes.iter().enumerate() {
            let expected = 65_536.0 * 2f64.powf(part as f64 / PARTS as f64) / total;
            assert!((size as f64 - expected).abs() < expected / 4.0, "part {part}: {size}, not ≈ {expected:.0}");
        }
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
