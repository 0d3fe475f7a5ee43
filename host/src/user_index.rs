//! The index of one user's tokens or entries in the embedded store and ledger: a sorted ring
//! buffer (`VecDeque`).
//!
//! Every user gets one, and most users hold a few tokens, so its size at one or two elements is
//! what counts: a `BTreeMap` allocates an 11-slot leaf node for its first key (≈ 460 bytes for a
//! `(time, flow id) → seq` key and value), this exactly the element. Keys arrive mostly in order
//! (open times grow) and leave mostly oldest first (crediting and retention follow the queue), so
//! inserts are pushes at the back and removals pops at the front, whatever the user's count; one
//! elsewhere shifts the elements on its shorter side.

use std::collections::VecDeque;

/// Keys in order, each with its value; a key at most once.
#[derive(Debug, Clone)]
pub struct UserIndex<K, V> {
    items: VecDeque<(K, V)>,
}

impl<K, V> Default for UserIndex<K, V> {
    fn default() -> Self {
        UserIndex { items: VecDeque::new() }
    }
}

impl<K: Ord, V> UserIndex<K, V> {
    /// Puts `value` under `key`, replacing the value already there; answers whether the key is
    /// new.
    pub fn insert(&mut self, key: K, value: V) -> bool {
        match self.position(&key) {
            Ok(index) => {
                self.items[index].1 = value;
                false
            }
            Err(index) => {
                if self.items.is_empty() {
                    // A user's first element: exactly one slot.
                    self.items.reserve_exact(1);
                }
                self.items.insert(index, (key, value));
                true
            }
        }
    }

    /// Takes out the key and its value, if there.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        let index = self.position(key).ok()?;
        self.items.remove(index).map(|(_, value)| value)
    }

    /// Elements in key order.
    pub fn iter(&self) -> std::collections::vec_deque::Iter<'_, (K, V)> {
        self.items.iter()
    }

    /// The keys in order.
    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &K> {
        self.items.iter().map(|(key, _)| key)
    }

    /// The elements whose keys are strictly below `end`, in key order.
    pub fn below(&self, end: &K) -> std::collections::vec_deque::Iter<'_, (K, V)> {
        let cut = self.items.partition_point(|(key, _)| key < end);
        self.items.range(..cut)
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    fn position(&self, key: &K) -> Result<usize, usize> {
        // Most keys are the newest: look at the end before searching.
        match self.items.back() {
            None => Err(0),
            Some((last, _)) if last < key => Err(self.items.len()),
            _ => self.items.binary_search_by(|(probe, _)| probe.cmp(key)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// The index answers as a `BTreeMap` does, over inserts in and out of order, replacements
    /// and removals (a fixed pseudo-random sequence).
    #[test]
    fn it_answers_as_a_btree_map_does() {
        let mut index = UserIndex::default();
        let mut model = BTreeMap::new();
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        for step in 0..5_000_u64 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let key = (step / 4 + state % 16, format!("id{}", state % 7));
            match state % 5 {
                0..=2 => assert_eq!(index.insert(key.clone(), step), model.insert(key, step).is_none()),
                3 => assert_eq!(index.remove(&key), model.remove(&key)),
                _ => {
                    let below: Vec<_> = index.below(&key).map(|(k, v)| (k.clone(), *v)).collect();
                    let expected: Vec<_> = model.range(..key.clone()).map(|(k, v)| (k.clone(), *v)).collect();
                    assert_eq!(below, expected);
                }
            }
            assert_eq!(index.len(), model.len());
        }
        let all: Vec<_> = index.iter().map(|(k, v)| (k.clone(), *v)).collect();
        assert_eq!(all, model.into_iter().collect::<Vec<_>>());
        assert!(!index.is_empty());
        assert_eq!(index.keys().count(), index.len());
    }

    /// A user's first element takes one slot.
    #[test]
    fn a_first_element_takes_one_slot() {
        let mut index = UserIndex::default();
        index.insert((7_u64, String::from("rp/a/1")), 1_u64);
        assert_eq!(index.items.capacity(), 1);
    }
}
