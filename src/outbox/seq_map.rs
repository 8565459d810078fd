//! An ordered map keyed by sequence number, packed for keys that mostly arrive in order: values
//! sit in blocks of 64 consecutive numbers, each a sorted vector. A `BTreeMap` filled in order
//! leaves its nodes half empty (each split at the right edge keeps six of eleven slots), which
//! doubled the memory a backlog of pending events takes (issue 30, BENCHMARKS.md).

use std::collections::BTreeMap;

const BLOCK: u64 = 64;

#[derive(Debug, Clone, PartialEq)]
pub(super) struct SeqMap<T> {
    /// First number of a block → its values, by number.
    blocks: BTreeMap<u64, Vec<(u64, T)>>,
    len: usize,
}

impl<T> Default for SeqMap<T> {
    fn default() -> Self {
        Self {
            blocks: BTreeMap::new(),
            len: 0,
        }
    }
}

impl<T> SeqMap<T> {
    fn block_of(seq: u64) -> u64 {
        seq - seq % BLOCK
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(super) fn get(&self, seq: u64) -> Option<&T> {
        let block = self.blocks.get(&Self::block_of(seq))?;
        let at = block.binary_search_by_key(&seq, |(s, _)| *s).ok()?;
        Some(&block[at].1)
    }

    pub(super) fn get_mut(&mut self, seq: u64) -> Option<&mut T> {
        let block = self.blocks.get_mut(&Self::block_of(seq))?;
        let at = block.binary_search_by_key(&seq, |(s, _)| *s).ok()?;
        Some(&mut block[at].1)
    }

    pub(super) fn contains(&self, seq: u64) -> bool {
        self.get(seq).is_some()
    }

    /// Inserts `value` at `seq`; returns the value it replaces.
    pub(super) fn insert(&mut self, seq: u64, value: T) -> Option<T> {
        let block = self.blocks.entry(Self::block_of(seq)).or_default();
        match block.binary_search_by_key(&seq, |(s, _)| *s) {
            Ok(at) => Some(std::mem::replace(&mut block[at].1, value)),
            Err(at) => {
                // A block fills up to exactly its 64 values, not to the next power of two.
                if block.capacity() == 0 {
                    block.reserve_exact(BLOCK as usize);
                }
                block.insert(at, (seq, value));
                self.len += 1;
                None
            }
        }
    }

    /// Inserts `value` at `seq` unless something is there already.
    pub(super) fn insert_if_absent(&mut self, seq: u64, value: impl FnOnce() -> T) {
        if !self.contains(seq) {
            self.insert(seq, value());
        }
    }

    pub(super) fn remove(&mut self, seq: u64) -> Option<T> {
        let start = Self::block_of(seq);
        let block = self.blocks.get_mut(&start)?;
        let at = block.binary_search_by_key(&seq, |(s, _)| *s).ok()?;
        let (_, value) = block.remove(at);
        self.len -= 1;
        if block.is_empty() {
            self.blocks.remove(&start);
        } else if block.len() * 4 <= block.capacity() {
            // A block left with a few stragglers gives the rest of its room back.
            block.shrink_to(block.len() * 2);
        }
        Some(value)
    }

    /// Values in number order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (u64, &T)> {
        self.blocks
            .values()
            .flat_map(|block| block.iter().map(|(seq, value)| (*seq, value)))
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &T> {
        self.iter().map(|(_, value)| value)
    }

    /// Values numbered above `after`, in number order.
    pub(super) fn iter_after(&self, after: u64) -> impl Iterator<Item = (u64, &T)> {
        self.blocks
            .range(Self::block_of(after)..)
            .flat_map(|(_, block)| block.iter().map(|(seq, value)| (*seq, value)))
            .skip_while(move |(seq, _)| *seq <= after)
    }

    pub(super) fn first(&self) -> Option<(u64, &T)> {
        self.iter().next()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_behaves_as_an_ordered_map_in_and_out_of_order() {
        let mut map = SeqMap::default();
        let mut model = BTreeMap::new();
        // In order, then back across blocks, then removals that empty and thin out blocks.
        let inserts = (1..300)
            .chain([1_000, 5, 64, 63, 128, 7_000])
            .chain(250..260);
        for (n, seq) in inserts.enumerate() {
            assert_eq!(map.insert(seq, n), model.insert(seq, n), "insert {seq}");
        }
        for seq in (0..400).filter(|s| s % 3 != 0).chain([1_000, 42_000]) {
            assert_eq!(map.remove(seq), model.remove(&seq), "remove {seq}");
        }
        assert_eq!(map.len(), model.len());
        assert_eq!(map.is_empty(), model.is_empty());
        let all: Vec<(u64, usize)> = map.iter().map(|(s, v)| (s, *v)).collect();
        let expected: Vec<(u64, usize)> = model.iter().map(|(s, v)| (*s, *v)).collect();
        assert_eq!(all, expected);
        for after in [0, 62, 63, 64, 65, 299, 400, 7_000] {
            let got: Vec<u64> = map.iter_after(after).map(|(s, _)| s).collect();
            let want: Vec<u64> = model.range(after + 1..).map(|(s, _)| *s).collect();
            assert_eq!(got, want, "after {after}");
        }
        for seq in [0, 3, 4, 64, 7_000, 7_001] {
            assert_eq!(map.get(seq), model.get(&seq), "get {seq}");
        }
        *map.get_mut(3).unwrap() += 1;
        assert_eq!(map.get(3), Some(&(model[&3] + 1)));
        assert_eq!(map.first().map(|(s, _)| s), model.keys().next().copied());
    }

    #[test]
    fn a_block_filled_in_order_holds_exactly_its_values() {
        let mut map = SeqMap::default();
        for seq in 0..BLOCK {
            map.insert(seq, [0u8; 40]);
        }
        assert_eq!(map.blocks[&0].capacity(), BLOCK as usize);
        for seq in BLOCK..100 * BLOCK + 1 {
            map.insert(seq, [0u8; 40]);
        }
        let room: usize = map.blocks.values().map(Vec::capacity).sum();
        assert_eq!(room, 101 * BLOCK as usize);
        for seq in 1..BLOCK {
            map.remove(seq);
        }
        assert!(
            map.blocks[&0].capacity() <= 2,
            "{}",
            map.blocks[&0].capacity()
        );
    }
}
