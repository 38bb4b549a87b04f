//! Number ranges: `"1-5,10,12,14"` as runs of consecutive numbers, kept as runs (a range of ten
//! million numbers is one run, 24 bytes) and read by position with a binary search over the runs'
//! starting positions.

use serde_json::Value;

/// The numbers of a range, in the order written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Numbers {
    /// `(first, last)` of each run, inclusive, in the order written.
    runs: Vec<(u64, u64)>,
    /// `starts[r]` is the position of run `r`'s first number.
    starts: Vec<u64>,
    len: u64,
}

impl Numbers {
    /// Parses a range: numbers and `first-last` runs joined by commas, spaces around each part
    /// allowed. Every number appears at most once. The error says which part is wrong and why.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.trim().is_empty() {
            return Err("the range is empty (write numbers and runs like `1-5,10,12`)".into());
        }
        let mut runs = Vec::new();
        for part in text.split(',') {
            let part = part.trim();
            if part.is_empty() {
                return Err(format!(
                    "`{text}` has an empty part between commas (write numbers and runs like `1-5,10,12`)"
                ));
            }
            let run = match part.split_once('-') {
                None => {
                    let number = number(part, part)?;
                    (number, number)
                }
                Some((first, last)) => {
                    let (first, last) = (first.trim(), last.trim());
                    if first.is_empty() {
                        return Err(format!("`{part}` has no first number"));
                    }
                    if last.is_empty() {
                        return Err(format!("`{part}` has no last number"));
                    }
                    let (first, last) = (number(first, part)?, number(last, part)?);
                    if first > last {
                        return Err(format!(
                            "`{part}` runs backwards (write `{last}-{first}`; runs go up)"
                        ));
                    }
                    (first, last)
                }
            };
            runs.push(run);
        }
        Self::from_runs(runs)
    }

    /// The numbers of a JSON list of non-negative integers, in order, each at most once.
    pub fn from_list(items: &[Value]) -> Result<Self, String> {
        let mut runs: Vec<(u64, u64)> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let Some(number) = item.as_u64() else {
                return Err(format!(
                    "element {i} is {item}, not a non-negative integer that fits in 64 bits"
                ));
            };
            match runs.last_mut() {
                Some((_, last)) if last.checked_add(1) == Some(number) => *last = number,
                _ => runs.push((number, number)),
            }
        }
        Self::from_runs(runs)
    }

    fn from_runs(runs: Vec<(u64, u64)>) -> Result<Self, String> {
        let mut sorted = runs.clone();
        sorted.sort_unstable();
        if let Some(pair) = sorted.windows(2).find(|pair| pair[1].0 <= pair[0].1) {
            let twice = pair[1].0;
            return Err(format!("{twice} appears more than once"));
        }
        let mut starts = Vec::with_capacity(runs.len());
        let mut len = 0u64;
        for &(first, last) in &runs {
            starts.push(len);
            // `last - first + 1` overflows only for the run 0-u64::MAX.
            let count = (last - first)
                .checked_add(1)
                .and_then(|count| len.checked_add(count))
                .ok_or_else(|| "the range holds more than 2^64 numbers".to_string())?;
            len = count;
        }
        Ok(Self { runs, starts, len })
    }

    /// How many numbers the range holds.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// The number at position `i` (`i < len`).
    pub fn nth(&self, i: u64) -> u64 {
        let run = self.starts.partition_point(|&start| start <= i) - 1;
        self.runs[run].0 + (i - self.starts[run])
    }
}

fn number(text: &str, part: &str) -> Result<u64, String> {
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "`{text}` in `{part}` is not a number (digits only, no signs)"
        ));
    }
    text.parse()
        .map_err(|_| format!("`{text}` in `{part}` does not fit in 64 bits"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn all(numbers: &Numbers) -> Vec<u64> {
        (0..numbers.len()).map(|i| numbers.nth(i)).collect()
    }

    #[test]
    fn runs_and_single_numbers_keep_the_order_written() {
        let numbers = Numbers::parse("10, 1-3,7 ,20-21").unwrap();
        assert_eq!(all(&numbers), [10, 1, 2, 3, 7, 20, 21]);
    }

    #[test]
    fn a_huge_run_is_one_run() {
        let numbers = Numbers::parse("0-9999999999").unwrap();
        assert_eq!(numbers.len(), 10_000_000_000);
        assert_eq!(numbers.nth(9_999_999_999), 9_999_999_999);
        assert_eq!(numbers.runs.len(), 1);
    }

    #[test]
    fn lists_merge_consecutive_numbers_into_runs() {
        let numbers = Numbers::from_list(&[json!(4), json!(5), json!(6), json!(1)]).unwrap();
        assert_eq!(numbers.runs, [(4, 6), (1, 1)]);
        assert_eq!(all(&numbers), [4, 5, 6, 1]);
    }

    #[test]
    fn every_bad_range_says_which_part_and_why() {
        let cases = [
            ("", "empty"),
            ("  ", "empty"),
            ("1,,2", "empty part"),
            ("5-1", "`5-1` runs backwards"),
            ("1-", "`1-` has no last number"),
            ("-3", "`-3` has no first number"),
            ("a-b", "`a` in `a-b` is not a number"),
            ("1-2-3", "`2-3` in `1-2-3` is not a number"),
            ("+4", "`+4` in `+4` is not a number"),
            ("1.5", "not a number"),
            (
                "18446744073709551616",
                "`18446744073709551616` in `18446744073709551616` does not fit in 64 bits",
            ),
            ("1-5,3", "3 appears more than once"),
            ("2,2", "2 appears more than once"),
            ("0-18446744073709551615", "more than 2^64"),
        ];
        for (text, expected) in cases {
            let error = Numbers::parse(text).expect_err(text);
            assert!(error.contains(expected), "{text:?}: {error}");
        }
        let error = Numbers::from_list(&[json!(1), json!(-1)]).unwrap_err();
        assert!(error.contains("element 1 is -1"), "{error}");
        let error = Numbers::from_list(&[json!(1), json!(1)]).unwrap_err();
        assert!(error.contains("1 appears more than once"), "{error}");
    }
}
