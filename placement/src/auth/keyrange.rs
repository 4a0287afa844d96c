//! Key ranges and merged sets of them: what a grant covers, and what a user may read or write.
//! Pure values, no I/O; the permission checks of [`super::AuthView`] are lookups in a [`RangeSet`].

use std::cmp::Ordering;
use std::fmt;

/// The keys `[start, end)`; `end: None` is unbounded (as a region's empty `end_key`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyRange {
    pub start: Vec<u8>,
    pub end: Option<Vec<u8>>,
}

/// A range whose end is not after its start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("empty key range: the end {end:?} is not after the start {start:?}")]
pub struct EmptyRange {
    pub start: Vec<u8>,
    pub end: Vec<u8>,
}

impl KeyRange {
    /// `[start, end)`, refused when it holds no key.
    pub fn new(start: impl Into<Vec<u8>>, end: Option<Vec<u8>>) -> Result<KeyRange, EmptyRange> {
        let start = start.into();
        match end {
            Some(end) if end <= start => Err(EmptyRange { start, end }),
            end => Ok(KeyRange { start, end }),
        }
    }

    /// Every key that starts with `prefix` (every key at all for the empty prefix).
    pub fn prefix(prefix: &[u8]) -> KeyRange {
        KeyRange { start: prefix.to_vec(), end: prefix_end(prefix) }
    }

    /// Exactly one key.
    pub fn key(key: &[u8]) -> KeyRange {
        let mut end = key.to_vec();
        end.push(0);
        KeyRange { start: key.to_vec(), end: Some(end) }
    }

    /// Every key.
    pub fn all() -> KeyRange {
        KeyRange { start: Vec::new(), end: None }
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        key >= self.start.as_slice() && self.end.as_deref().is_none_or(|end| key < end)
    }

    /// The keys both ranges hold, if any.
    pub fn intersection(&self, other: &KeyRange) -> Option<KeyRange> {
        let start = self.start.clone().max(other.start.clone());
        let end = match cmp_end(&self.end, &other.end) {
            Ordering::Greater => other.end.clone(),
            _ => self.end.clone(),
        };
        KeyRange::new(start, end).ok()
    }

    /// The empty `end` the wire uses for "unbounded".
    pub fn end_bytes(&self) -> &[u8] {
        self.end.as_deref().unwrap_or_default()
    }

    /// A range read from the wire, where an empty `end` is unbounded.
    pub fn from_wire(start: &[u8], end: &[u8]) -> Result<KeyRange, EmptyRange> {
        KeyRange::new(start, (!end.is_empty()).then(|| end.to_vec()))
    }
}

impl fmt::Display for KeyRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |bytes: &[u8]| String::from_utf8_lossy(bytes).escape_debug().to_string();
        match &self.end {
            Some(end) => write!(f, "[\"{}\", \"{}\")", show(&self.start), show(end)),
            None => write!(f, "[\"{}\", ∞)", show(&self.start)),
        }
    }
}

/// Ranges sort by start, then by end with unbounded last.
impl Ord for KeyRange {
    fn cmp(&self, other: &KeyRange) -> Ordering {
        self.start.cmp(&other.start).then_with(|| cmp_end(&self.end, &other.end))
    }
}

impl PartialOrd for KeyRange {
    fn partial_cmp(&self, other: &KeyRange) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Compares two range ends, `None` (unbounded) being the greatest.
fn cmp_end(a: &Option<Vec<u8>>, b: &Option<Vec<u8>>) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
        (Some(a), Some(b)) => a.cmp(b),
    }
}

/// The first key after every key that starts with `prefix`; `None` when there is none (the prefix is
/// empty or all `0xff`). etcd's `GetPrefixRangeEnd`, with unbounded spelled `None`.
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let last = prefix.iter().rposition(|&b| b != 0xff)?;
    let mut end = prefix[..=last].to_vec();
    end[last] += 1;
    Some(end)
}

/// A set of keys as sorted, disjoint, non-touching ranges: overlapping or adjacent ranges are merged,
/// so a key lookup is one binary search and a scan's readable parts come out in key order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSet {
    ranges: Vec<KeyRange>,
}

impl RangeSet {
    /// The union of `ranges`.
    pub fn from_ranges(ranges: impl IntoIterator<Item = KeyRange>) -> RangeSet {
        let mut sorted: Vec<KeyRange> = ranges.into_iter().collect();
        sorted.sort();
        let mut merged: Vec<KeyRange> = Vec::with_capacity(sorted.len());
        for range in sorted {
            match merged.last_mut() {
                // Touching or overlapping the previous one: extend it.
                Some(last) if last.end.as_ref().is_none_or(|end| range.start <= *end) => {
                    if cmp_end(&range.end, &last.end) == Ordering::Greater {
                        last.end = range.end;
                    }
                }
                _ => merged.push(range),
            }
        }
        RangeSet { ranges: merged }
    }

    /// Every key.
    pub fn all() -> RangeSet {
        RangeSet { ranges: vec![KeyRange::all()] }
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The merged ranges, in key order.
    pub fn ranges(&self) -> &[KeyRange] {
        &self.ranges
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        // The only candidate is the last range starting at or before the key.
        let after = self.ranges.partition_point(|range| range.start.as_slice() <= key);
        after > 0 && self.ranges[after - 1].contains(key)
    }

    /// The parts of `range` in the set, in key order: what a scan of `range` may return.
    pub fn intersection(&self, range: &KeyRange) -> Vec<KeyRange> {
        self.ranges.iter().filter_map(|member| member.intersection(range)).collect()
    }

    /// Whether every key of `range` is in the set (one merged range holds it all).
    pub fn covers(&self, range: &KeyRange) -> bool {
        self.intersection(range).first() == Some(range)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(start: &str, end: &str) -> KeyRange {
        KeyRange::from_wire(start.as_bytes(), end.as_bytes()).unwrap()
    }

    #[test]
    fn prefix_end_increments_the_last_byte_below_0xff() {
        assert_eq!(prefix_end(b"abc"), Some(b"abd".to_vec()));
        assert_eq!(prefix_end(b"a\xff\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
        assert_eq!(prefix_end(b""), None);
    }

    #[test]
    fn a_prefix_range_holds_exactly_the_keys_with_that_prefix() {
        let users = KeyRange::prefix(b"users/");
        assert!(users.contains(b"users/"));
        assert!(users.contains(b"users/alice"));
        assert!(!users.contains(b"users"));
        assert!(!users.contains(b"users0"));
        assert!(KeyRange::prefix(b"").contains(b"anything"));
        assert!(KeyRange::prefix(b"\xff").contains(b"\xff\xff\xff"));
    }

    #[test]
    fn a_key_range_holds_one_key() {
        let one = KeyRange::key(b"k");
        assert!(one.contains(b"k"));
        assert!(!one.contains(b"k\0"));
        assert!(!one.contains(b"j"));
    }

    #[test]
    fn an_empty_range_is_refused() {
        assert!(KeyRange::new(b"b".to_vec(), Some(b"a".to_vec())).is_err());
        assert!(KeyRange::new(b"a".to_vec(), Some(b"a".to_vec())).is_err());
        assert!(KeyRange::new(b"a".to_vec(), None).is_ok());
    }

    #[test]
    fn overlapping_and_touching_ranges_merge() {
        let set = RangeSet::from_ranges([range("m", "p"), range("a", "c"), range("b", "d"), range("d", "e")]);
        assert_eq!(set.ranges(), &[range("a", "e"), range("m", "p")]);
        let unbounded = RangeSet::from_ranges([range("x", ""), range("a", "b"), range("y", "z")]);
        assert_eq!(unbounded.ranges(), &[range("a", "b"), range("x", "")]);
    }

    #[test]
    fn contains_looks_in_the_right_range() {
        let set = RangeSet::from_ranges([range("a", "c"), range("m", "p")]);
        for key in ["a", "b", "bz", "m", "o"] {
            assert!(set.contains(key.as_bytes()), "{key}");
        }
        for key in ["", "c", "l", "p", "z"] {
            assert!(!set.contains(key.as_bytes()), "{key}");
        }
        assert!(!RangeSet::default().contains(b"a"));
        assert!(RangeSet::all().contains(b""));
    }

    #[test]
    fn a_scan_reaching_outside_keeps_only_the_parts_in_the_set() {
        let set = RangeSet::from_ranges([KeyRange::prefix(b"app/"), KeyRange::prefix(b"cfg/")]);
        assert_eq!(set.intersection(&range("app/m", "app/n")), vec![range("app/m", "app/n")]);
        assert_eq!(set.intersection(&range("", "")), vec![range("app/", "app0"), range("cfg/", "cfg0")]);
        assert_eq!(set.intersection(&range("b", "cfg/x")), vec![range("cfg/", "cfg/x")]);
        assert!(set.intersection(&range("d", "")).is_empty());
        assert!(set.covers(&range("app/a", "app/b")));
        assert!(!set.covers(&range("app/a", "b")));
    }
}
