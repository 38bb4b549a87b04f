//! The combination space of an expansion: dimensions multiplied row-major (the last dimension
//! varies fastest), plus the selection of combinations that survive `exclude` and `conditions`.
//!
//! A combination is a single `u64`; its coordinates are computed on demand with one division per
//! dimension, so enumerating never allocates. When predicates remove combinations, the survivors
//! are kept as a bitmap (one bit per combination) with a rank directory, so the `i`-th instance is
//! still found in O(log n) without storing any instance.

use serde_json::Value;

/// One axis of the cross product. Zipped variables share an axis: each has a column of the same
/// length and coordinate `c` takes element `c` of every column.
#[derive(Debug, Clone)]
pub(crate) struct Dimension {
    pub columns: Vec<Vec<Value>>,
    pub len: usize,
    /// The coordinate of the columns' first element: 0, except for results mapped by reference,
    /// whose columns hold only the window a worker read ([`crate::Expansion::with_results`]).
    pub offset: usize,
}

#[derive(Debug, Clone)]
pub(crate) struct Space {
    pub dims: Vec<Dimension>,
    /// `strides[d]` is the product of the lengths of the dimensions after `d`.
    strides: Vec<u64>,
    pub raw_len: u64,
    selection: Option<Bitmap>,
}

impl Space {
    /// Builds the space; `None` when the product of the lengths overflows `u64`.
    pub fn new(dims: Vec<Dimension>) -> Option<Self> {
        let mut strides = vec![1u64; dims.len()];
        let mut raw_len = 1u64;
        for (d, dim) in dims.iter().enumerate().rev() {
            strides[d] = raw_len;
            raw_len = raw_len.checked_mul(dim.len as u64)?;
        }
        Some(Self {
            dims,
            strides,
            raw_len,
            selection: None,
        })
    }

    /// The combinations `keep` accepts, for [`Space::apply`]. Called once, at plan time.
    pub fn select<E>(&self, mut keep: impl FnMut(u64) -> Result<bool, E>) -> Result<Selection, E> {
        let mut bitmap = Bitmap::zeros(self.raw_len);
        for combination in 0..self.raw_len {
            if keep(combination)? {
                bitmap.set(combination);
            }
        }
        bitmap.finish();
        Ok(Selection(bitmap))
    }

    /// Keeps only the selected combinations.
    pub fn apply(&mut self, selection: Selection) {
        self.selection = Some(selection.0);
    }

    /// How many combinations are selected.
    pub fn len(&self) -> u64 {
        self.selection.as_ref().map_or(self.raw_len, |b| b.ones)
    }

    pub fn coordinate(&self, combination: u64, dim: usize) -> usize {
        // `combination < raw_len`, so the quotient is below the dimension's length and fits usize.
        ((combination / self.strides[dim]) % self.dims[dim].len as u64) as usize
    }

    /// The value at the combination's coordinate; `None` outside the window read of results
    /// mapped by reference.
    pub fn value(&self, combination: u64, dim: usize, column: usize) -> Option<&Value> {
        let dimension = &self.dims[dim];
        let position = self
            .coordinate(combination, dim)
            .checked_sub(dimension.offset)?;
        dimension.columns[column].get(position)
    }

    /// The combination of the `i`-th selected position.
    pub fn nth(&self, i: u64) -> Option<u64> {
        match &self.selection {
            None => (i < self.raw_len).then_some(i),
            Some(bitmap) => bitmap.select(i),
        }
    }

    /// The first selected combination at or after `from`; used to walk the selection in order.
    pub fn next_from(&self, from: u64) -> Option<u64> {
        match &self.selection {
            None => (from < self.raw_len).then_some(from),
            Some(bitmap) => bitmap.next_set(from),
        }
    }
}

/// The combinations that survive `exclude` and `conditions`.
#[derive(Debug, Clone)]
pub(crate) struct Selection(Bitmap);

/// Words per rank block: the rank directory costs one `u64` per 512 combinations.
const BLOCK: usize = 8;

#[derive(Debug, Clone)]
struct Bitmap {
    words: Vec<u64>,
    /// `ranks[b]` counts the ones before block `b`.
    ranks: Vec<u64>,
    ones: u64,
    len: u64,
}

impl Bitmap {
    fn zeros(len: u64) -> Self {
        Self {
            words: vec![0; len.div_ceil(64) as usize],
            ranks: Vec::new(),
            ones: 0,
            len,
        }
    }

    fn set(&mut self, bit: u64) {
        self.words[(bit / 64) as usize] |= 1 << (bit % 64);
    }

    fn finish(&mut self) {
        self.ranks.clear();
        let mut ones = 0u64;
        for block in self.words.chunks(BLOCK) {
            self.ranks.push(ones);
            ones += block.iter().map(|w| u64::from(w.count_ones())).sum::<u64>();
        }
        self.ones = ones;
    }

    fn select(&self, i: u64) -> Option<u64> {
        if i >= self.ones {
            return None;
        }
        // The last block whose rank is <= i holds the bit.
        let block = self.ranks.partition_point(|&rank| rank <= i) - 1;
        let mut remaining = i - self.ranks[block];
        let start = block * BLOCK;
        for (w, &word) in self.words[start..].iter().take(BLOCK).enumerate() {
            let ones = u64::from(word.count_ones());
            if remaining < ones {
                return Some((start + w) as u64 * 64 + select_in_word(word, remaining));
            }
            remaining -= ones;
        }
        None
    }

    fn next_set(&self, from: u64) -> Option<u64> {
        if from >= self.len {
            return None;
        }
        let mut w = (from / 64) as usize;
        let mut word = self.words[w] & (u64::MAX << (from % 64));
        loop {
            if word != 0 {
                return Some(w as u64 * 64 + u64::from(word.trailing_zeros()));
            }
            w += 1;
            word = *self.words.get(w)?;
        }
    }
}

/// Position of the `n`-th set bit of `word` (`n` below its popcount).
fn select_in_word(mut word: u64, n: u64) -> u64 {
    for _ in 0..n {
        word &= word - 1;
    }
    u64::from(word.trailing_zeros())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dim(values: Vec<Value>) -> Dimension {
        Dimension {
            len: values.len(),
            columns: vec![values],
            offset: 0,
        }
    }

    #[test]
    fn coordinates_are_row_major() {
        let space = Space::new(vec![
            dim(vec![json!("A"), json!("B")]),
            dim(vec![json!(1), json!(2), json!(3)]),
        ])
        .unwrap();
        assert_eq!(space.raw_len, 6);
        let pairs: Vec<(usize, usize)> = (0..6)
            .map(|c| (space.coordinate(c, 0), space.coordinate(c, 1)))
            .collect();
        assert_eq!(pairs, vec![(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]);
    }

    #[test]
    fn overflowing_products_are_refused() {
        let huge = Dimension {
            columns: vec![Vec::new()],
            len: usize::MAX,
            offset: 0,
        };
        assert!(Space::new(vec![huge.clone(), huge]).is_none());
    }

    #[test]
    fn bitmap_select_agrees_with_next_set() {
        for len in [1u64, 63, 64, 65, 511, 512, 513, 2000] {
            let mut bitmap = Bitmap::zeros(len);
            let kept: Vec<u64> = (0..len).filter(|b| b % 3 == 0 || b % 7 == 1).collect();
            kept.iter().for_each(|&b| bitmap.set(b));
            bitmap.finish();
            assert_eq!(bitmap.ones, kept.len() as u64);
            let mut walked = Vec::new();
            let mut from = 0;
            while let Some(bit) = bitmap.next_set(from) {
                walked.push(bit);
                from = bit + 1;
            }
            assert_eq!(walked, kept);
            for (i, &bit) in kept.iter().enumerate() {
                assert_eq!(bitmap.select(i as u64), Some(bit), "len {len} i {i}");
            }
            assert_eq!(bitmap.select(kept.len() as u64), None);
        }
    }
}
