//! Frame ranges as job settings give them (`1-10,20,30-40`), parsed like v2's
//! `frame_range_parse`, chunked like its `iter_frame_range` and written back like its
//! `frame_range_merge`, without ever expanding the frames into a list (so a huge range
//! costs nothing before the task count is checked).
//!
//! Unlike v2, garbage (`1-x`, `5-`, `-3`, `1--2`, an empty part) and empty ranges (`10-1`)
//! are refused instead of raising deep inside the compiler or being skipped, and a frame
//! given twice is rendered once.

use std::fmt::Write;

/// A set of frame numbers: sorted, disjoint runs of consecutive frames.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameSet {
    /// Inclusive `(first, last)` runs, sorted, never overlapping nor touching.
    runs: Vec<(u32, u32)>,
}

/// Why a frame range was refused; the text is meant to follow "setting `frames`: ".
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadFrames(pub String);

const EXPECTED: &str = "expected frame numbers and ranges like 1-10,20,30-40";

fn frame_number(text: &str, part: &str) -> Result<u32, BadFrames> {
    let t = text.trim();
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(BadFrames(format!(
            "{part:?} is not a frame range; {EXPECTED}"
        )));
    }
    t.parse().map_err(|_| {
        BadFrames(format!(
            "frame {t} in {part:?} is too large (at most {})",
            u32::MAX
        ))
    })
}

impl FrameSet {
    /// Parse `1-10,20,30-40` (spaces around numbers allowed). Frames are non-negative
    /// integers; a range `a-b` needs `a <= b`.
    pub fn parse(text: &str) -> Result<FrameSet, BadFrames> {
        if text.trim().is_empty() {
            return Err(BadFrames(format!("no frames given; {EXPECTED}")));
        }
        let mut runs = Vec::new();
        for part in text.split(',') {
            let run = match part.split_once('-') {
                None => {
                    let f = frame_number(part, part)?;
                    (f, f)
                }
                Some((a, b)) => {
                    let first = frame_number(a, part)?;
                    let last = frame_number(b, part)?;
                    if first > last {
                        return Err(BadFrames(format!(
                            "{:?} is an empty range: its first frame is after its last",
                            part.trim()
                        )));
                    }
                    (first, last)
                }
            };
            runs.push(run);
        }
        Ok(FrameSet::from_runs(runs))
    }

    /// The set of these inclusive runs (in any order, overlapping or not).
    pub fn from_runs(mut runs: Vec<(u32, u32)>) -> FrameSet {
        runs.sort_unstable();
        let mut merged: Vec<(u32, u32)> = Vec::with_capacity(runs.len());
        for (first, last) in runs {
            match merged.last_mut() {
                Some(prev) if u64::from(first) <= u64::from(prev.1) + 1 => {
                    prev.1 = prev.1.max(last);
                }
                _ => merged.push((first, last)),
            }
        }
        FrameSet { runs: merged }
    }

    /// Number of frames.
    pub fn len(&self) -> u64 {
        self.runs
            .iter()
            .map(|&(a, b)| u64::from(b) - u64::from(a) + 1)
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// The runs, sorted.
    pub fn runs(&self) -> &[(u32, u32)] {
        &self.runs
    }

    /// How many chunks of `chunk_size` frames (the last may be shorter) the set makes.
    pub fn chunk_count(&self, chunk_size: u64) -> u64 {
        self.len().div_ceil(chunk_size.max(1))
    }

    /// The frames in order, `chunk_size` at a time (the last chunk may be shorter), as
    /// v2's `iter_frame_range`.
    pub fn chunks(&self, chunk_size: u64) -> Chunks<'_> {
        Chunks {
            runs: &self.runs,
            run: 0,
            next_frame: self.runs.first().map_or(0, |r| r.0),
            size: chunk_size.max(1),
        }
    }

    /// v2's `frame_range_merge`: runs as `a-b`, but a run of two frames as `a,b`; comma
    /// separated (`1,3-5,8`, `1,2`). Used in task names.
    pub fn to_range_string(&self) -> String {
        self.format("-")
    }

    /// The same in Blender's notation (`1,3..5,8`), as `blender_render` takes in `frames`.
    pub fn to_blender_string(&self) -> String {
        self.format("..")
    }

    fn format(&self, sep: &str) -> String {
        let mut out = String::new();
        for &(a, b) in &self.runs {
            if !out.is_empty() {
                out.push(',');
            }
            match b - a {
                0 => write!(out, "{a}"),
                1 => write!(out, "{a},{b}"),
                _ => write!(out, "{a}{sep}{b}"),
            }
            .expect("writing to a String");
        }
        out
    }
}

/// Iterator over the chunks of a [`FrameSet`].
pub struct Chunks<'a> {
    runs: &'a [(u32, u32)],
    run: usize,
    next_frame: u32,
    size: u64,
}

impl Iterator for Chunks<'_> {
    type Item = FrameSet;

    fn next(&mut self) -> Option<FrameSet> {
        let mut left = self.size;
        let mut runs = Vec::new();
        while left > 0 && self.run < self.runs.len() {
            let (_, last) = self.runs[self.run];
            let available = u64::from(last) - u64::from(self.next_frame) + 1;
            let take = available.min(left);
            // take >= 1 and next_frame + take - 1 <= last, so this fits in u32.
            let end = self.next_frame + (take - 1) as u32;
            runs.push((self.next_frame, end));
            left -= take;
            if end == last {
                self.run += 1;
                if let Some(&(first, _)) = self.runs.get(self.run) {
                    self.next_frame = first;
                }
            } else {
                self.next_frame = end + 1;
            }
        }
        if runs.is_empty() {
            None
        } else {
            Some(FrameSet { runs })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk_strings(text: &str, size: u64) -> Vec<String> {
        FrameSet::parse(text)
            .unwrap()
            .chunks(size)
            .map(|c| c.to_range_string())
            .collect()
    }

    #[test]
    fn parses_like_v2() {
        let f = FrameSet::parse("1-10,20,30-40").unwrap();
        assert_eq!(f.runs(), &[(1, 10), (20, 20), (30, 40)]);
        assert_eq!(f.len(), 22);
        assert_eq!(
            FrameSet::parse(" 1 - 5 , 10 ").unwrap().runs(),
            &[(1, 5), (10, 10)]
        );
        assert_eq!(FrameSet::parse("7").unwrap().len(), 1);
        assert_eq!(FrameSet::parse("0-0").unwrap().runs(), &[(0, 0)]);
    }

    #[test]
    fn merges_overlaps_duplicates_and_neighbours() {
        let f = FrameSet::parse("5,1-3,3,4,10-12,11").unwrap();
        assert_eq!(f.runs(), &[(1, 5), (10, 12)]);
        assert_eq!(f.len(), 8);
    }

    #[test]
    fn refuses_garbage_and_empty_ranges() {
        for bad in [
            "",
            " ",
            "1-x",
            "x",
            "5-",
            "-3",
            "1--2",
            "1,,2",
            "1-2-3",
            "1.5",
            "10-1",
            "+3",
            "99999999999",
        ] {
            let err = FrameSet::parse(bad).unwrap_err().0;
            assert!(!err.is_empty(), "{bad:?}");
        }
        assert!(FrameSet::parse("10-1")
            .unwrap_err()
            .0
            .contains("empty range"));
        assert!(FrameSet::parse("1-x").unwrap_err().0.contains("\"1-x\""));
    }

    #[test]
    fn formats_like_v2_frame_range_merge() {
        let f = FrameSet::parse("1,3-5,8").unwrap();
        assert_eq!(f.to_range_string(), "1,3-5,8");
        assert_eq!(f.to_blender_string(), "1,3..5,8");
        assert_eq!(FrameSet::parse("3-4").unwrap().to_range_string(), "3,4");
        assert_eq!(FrameSet::parse("3-4").unwrap().to_blender_string(), "3,4");
    }

    #[test]
    fn chunks_like_v2_iter_frame_range() {
        assert_eq!(chunk_strings("1-10", 3), ["1-3", "4-6", "7-9", "10"]);
        assert_eq!(chunk_strings("1-100,120", 50), ["1-50", "51-100", "120"]);
        assert_eq!(chunk_strings("1-3,7,9-10", 2), ["1,2", "3,7", "9,10"]);
        assert_eq!(chunk_strings("1-3,7,9-10", 10), ["1-3,7,9,10"]);
        assert_eq!(chunk_strings("5", 1), ["5"]);
    }

    #[test]
    fn chunk_count_without_expanding() {
        let f = FrameSet::parse("0-4000000000").unwrap();
        assert_eq!(f.len(), 4_000_000_001);
        assert_eq!(f.chunk_count(1_000_000_000), 5);
        let last = f.chunks(1_000_000_000).last().unwrap();
        assert_eq!(last.runs(), &[(4_000_000_000, 4_000_000_000)]);
        assert_eq!(FrameSet::parse("1-10").unwrap().chunk_count(3), 4);
    }
}
