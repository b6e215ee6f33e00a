//! Batches the embedded engine has journaled but not yet written into its catalog, read in front of it.
//!
//! The embedded engine writes batches into its catalog only once the journal holds them durably, a
//! second's worth at a time (see `embedded`'s module docs for why). Until then each batch lives here,
//! and every read looks here first: a point read sees a batch whole or not at all, and a scan sees
//! every batch pending when it starts whole, merged in key order with the catalog's. Nothing here
//! knows the engine.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::sync::Arc;

use super::{Batch, Entries, StoreError};

/// A key's newest pending value: `None` for a removal.
pub(super) type PendingValue = Option<Vec<u8>>;

/// The pending batches, in journal order, and for each key the batch and operation that wrote it last.
#[derive(Default)]
pub(super) struct Pending {
    batches: VecDeque<(u64, Arc<Batch>)>,
    latest: BTreeMap<Vec<u8>, (u64, usize)>,
}

impl Pending {
    /// Adds batch `number`, the next in journal order.
    pub fn push(&mut self, number: u64, batch: Batch) {
        // `value` finds a batch by its distance from the first: numbers follow each other.
        debug_assert!(self.batches.back().is_none_or(|(last, _)| *last + 1 == number), "batches come in journal order");
        for (index, (key, _)) in batch.operations.iter().enumerate() {
            self.latest.insert(key.clone(), (number, index));
        }
        self.batches.push_back((number, Arc::new(batch)));
    }

    /// How many batches are pending.
    pub fn len(&self) -> usize {
        self.batches.len()
    }

    /// The key's newest pending value (`Some(None)`: removed), or `None` when no pending batch has it.
    pub fn get(&self, key: &[u8]) -> Option<PendingValue> {
        let (number, index) = self.latest.get(key)?;
        Some(self.value(*number, *index))
    }

    fn value(&self, number: u64, index: usize) -> PendingValue {
        let (first, _) = self.batches.front().expect("a key's batch is pending while the key is");
        let (_, batch) = &self.batches[(number - first) as usize];
        batch.operations[index].1.clone()
    }

    /// The pending keys a scan of `prefix` (strictly after `after`, if given) covers, with their newest
    /// values, in key order; the same bounds as the tree's scan.
    pub fn range(&self, prefix: &[u8], after: Option<&[u8]>) -> Vec<(Vec<u8>, PendingValue)> {
        let start = match after {
            Some(after) => Bound::Excluded(after),
            None => Bound::Included(prefix),
        };
        self.latest
            .range::<[u8], _>((start, Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(key, (number, index))| (key.clone(), self.value(*number, *index)))
            .collect()
    }

    /// The pending batches up to `through`, in journal order, for writing into the tree.
    pub fn through(&self, through: u64) -> Vec<(u64, Arc<Batch>)> {
        self.batches.iter().take_while(|(number, _)| *number <= through).cloned().collect()
    }

    /// Forgets the batches up to `through`, once the tree holds them; a key a later batch wrote stays.
    pub fn forget_through(&mut self, through: u64) {
        while let Some((number, _)) = self.batches.front() {
            if *number > through {
                break;
            }
            let (number, batch) = self.batches.pop_front().expect("a front batch");
            for (key, _) in &batch.operations {
                if self.latest.get(key).is_some_and(|(newest, _)| *newest == number) {
                    self.latest.remove(key);
                }
            }
        }
    }
}

/// A scan of the tree with the pending values over it: a pending value replaces the tree's, a pending
/// removal hides it. Errors from the tree pass through where they occur.
pub(super) fn merge<'a>(tree: Entries<'a>, pending: Vec<(Vec<u8>, PendingValue)>) -> Entries<'a> {
    if pending.is_empty() {
        return tree;
    }
    Box::new(Merged { tree: tree.peekable(), pending: pending.into_iter().peekable() })
}

struct Merged<'a> {
    tree: std::iter::Peekable<Entries<'a>>,
    pending: std::iter::Peekable<std::vec::IntoIter<(Vec<u8>, PendingValue)>>,
}

impl Iterator for Merged<'_> {
    type Item = Result<(Vec<u8>, Vec<u8>), StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        use std::cmp::Ordering;
        loop {
            let ordering = match (self.pending.peek(), self.tree.peek()) {
                (None, _) | (Some(_), Some(Err(_))) => return self.tree.next(),
                (Some(_), None) => Ordering::Less,
                (Some((pending, _)), Some(Ok((key, _)))) => pending.as_slice().cmp(key.as_slice()),
            };
            match ordering {
                Ordering::Greater => return self.tree.next(),
                Ordering::Equal => drop(self.tree.next()),
                Ordering::Less => {}
            }
            if let Some((key, Some(value))) = self.pending.next() {
                return Some(Ok((key, value)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(operations: &[(&str, Option<&str>)]) -> Batch {
        let mut batch = Batch::default();
        for (key, value) in operations {
            match value {
                Some(value) => batch.insert(key.as_bytes(), value.as_bytes()),
                None => batch.remove(key.as_bytes()),
            }
        }
        batch
    }

    fn tree(pairs: &[(&str, &str)]) -> Entries<'static> {
        let pairs: Vec<_> = pairs.iter().map(|(k, v)| Ok((k.as_bytes().to_vec(), v.as_bytes().to_vec()))).collect();
        Box::new(pairs.into_iter())
    }

    fn strings(entries: Entries<'_>) -> Vec<(String, String)> {
        entries
            .map(|item| {
                let (key, value) = item.expect("no error");
                (String::from_utf8(key).expect("utf-8"), String::from_utf8(value).expect("utf-8"))
            })
            .collect()
    }

    #[test]
    fn the_newest_pending_write_of_a_key_is_the_one_read_and_a_later_one_outlives_an_earlier_batch() {
        let mut pending = Pending::default();
        pending.push(7, batch(&[("a", Some("1")), ("b", Some("1")), ("a", Some("2"))]));
        pending.push(8, batch(&[("b", None), ("c", Some("3"))]));
        assert_eq!(pending.get(b"a"), Some(Some(b"2".to_vec())), "the last operation of a batch counts");
        assert_eq!(pending.get(b"b"), Some(None), "a later removal hides an earlier write");
        assert_eq!(pending.get(b"d"), None, "not pending: read the tree");
        assert_eq!(pending.through(7).len(), 1);
        assert_eq!(pending.through(8).iter().map(|(n, _)| *n).collect::<Vec<_>>(), vec![7, 8]);

        pending.forget_through(7);
        assert_eq!(pending.get(b"a"), None, "batch 7 is in the tree now");
        assert_eq!(pending.get(b"b"), Some(None), "batch 8's removal still stands over batch 7's write");
        assert_eq!(pending.get(b"c"), Some(Some(b"3".to_vec())));
        pending.forget_through(8);
        assert!(pending.batches.is_empty());
        assert_eq!(pending.get(b"b"), None);
        assert!(pending.latest.is_empty(), "no key outlives its batches");
    }

    #[test]
    fn a_scan_merges_pending_values_over_the_tree_with_its_bounds() {
        let mut pending = Pending::default();
        pending.push(1, batch(&[("p/2", Some("new")), ("p/3", None), ("p/5", Some("added")), ("q/1", Some("x"))]));
        pending.push(2, batch(&[("o/9", Some("before the prefix")), ("p/0", Some("first"))]));
        let stored = [("p/1", "old"), ("p/2", "old"), ("p/3", "old"), ("p/4", "old"), ("q/0", "other")];

        let all = strings(merge(tree(&stored[..4]), pending.range(b"p/", None)));
        assert_eq!(
            all,
            [("p/0", "first"), ("p/1", "old"), ("p/2", "new"), ("p/4", "old"), ("p/5", "added")]
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        let after = strings(merge(tree(&stored[1..4]), pending.range(b"p/", Some(b"p/1"))));
        assert_eq!(after.first().map(|(k, _)| k.as_str()), Some("p/2"), "strictly after the cursor");
        assert_eq!(after.len(), 3);
        assert_eq!(pending.range(b"p/", Some(b"p/5")), vec![], "nothing pending after the last key");

        // An error from the tree is passed on in its place, and the scan goes on past it.
        let failing: Entries<'static> = Box::new(
            vec![Ok((b"p/1".to_vec(), b"old".to_vec())), Err(StoreError::Engine("read failed".into()))].into_iter(),
        );
        let items: Vec<_> = merge(failing, pending.range(b"p/", None)).collect();
        assert!(matches!(&items[1], Ok((key, _)) if key == b"p/1"));
        assert!(matches!(&items[2], Err(StoreError::Engine(_))));
        assert_eq!(items.len(), 5, "p/0, p/1, the error, p/2, p/5");
    }
}
