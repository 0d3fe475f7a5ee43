//! Shared copies of the strings many records repeat (activity and scene ids, budget accounts):
//! the embedded store and ledger keep one allocation of each, whatever the number of records.

use std::collections::HashSet;
use std::sync::Arc;

/// One copy of each string shared. A holder that lets its copy go through [`release`] takes the
/// string out when it was the last (the embedded store, whose records retire); one that never
/// lets go (the ledger, whose entries stay) keeps it as long as they do.
///
/// [`release`]: SharedStrings::release
#[derive(Debug, Default)]
pub struct SharedStrings(HashSet<Arc<str>>);

impl SharedStrings {
    /// The shared copy of `text`, made on first use.
    pub fn share(&mut self, text: &str) -> Arc<str> {
        if let Some(shared) = self.0.get(text) {
            return shared.clone();
        }
        let shared: Arc<str> = Arc::from(text);
        self.0.insert(shared.clone());
        shared
    }

    /// Lets one holder's copy go; the string leaves when no one else holds it.
    pub fn release(&mut self, shared: Arc<str>) {
        // Two holders left: this one and the set.
        if Arc::strong_count(&shared) == 2 {
            self.0.remove(&*shared);
        }
    }

    /// Gives back the table's room when most of it is empty (after many strings left).
    pub fn shrink(&mut self) {
        if self.0.capacity() > 64 && self.0.len() * 4 < self.0.capacity() {
            self.0.shrink_to_fit();
        }
    }

    /// How many strings are shared.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves a string is allocated once however often it is shared.
    #[test]
    fn a_string_is_shared_not_copied() {
        let mut strings = SharedStrings::default();
        let first = strings.share("spring");
        let again = strings.share(&String::from("spring"));
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(strings.len(), 1);
        let other = strings.share("lantern");
        assert_eq!(strings.len(), 2);
        strings.release(first);
        assert_eq!(strings.len(), 2, "still held once");
        strings.release(again);
        strings.release(other);
        assert!(strings.is_empty(), "no holder left");
    }
}
