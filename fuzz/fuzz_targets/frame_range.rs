//! Fuzz the frame-range parser (`FrameSet::parse`). Invariants for an accepted range:
//! runs sorted, disjoint and not touching; the count matches the runs; both written forms
//! parse back to the same set; chunking yields every frame once, in order, in chunks of
//! the asked size.
#![no_main]

use flamenco_core::jobs::FrameSet;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(set) = FrameSet::parse(text) else {
        return;
    };
    let runs = set.runs();
    assert!(!runs.is_empty());
    for &(a, b) in runs {
        assert!(a <= b, "run {a}-{b}");
    }
    for w in runs.windows(2) {
        assert!(
            u64::from(w[0].1) + 1 < u64::from(w[1].0),
            "runs {w:?} touch"
        );
    }
    let len: u64 = runs.iter().map(|&(a, b)| u64::from(b - a) + 1).sum();
    assert_eq!(set.len(), len);
    // Never more runs than comma-separated parts.
    assert!(runs.len() <= text.split(',').count());

    let written = set.to_range_string();
    assert_eq!(FrameSet::parse(&written).as_ref(), Ok(&set), "{written}");
    let blender = set.to_blender_string().replace("..", "-");
    assert_eq!(FrameSet::parse(&blender).as_ref(), Ok(&set), "{blender}");

    // At most ~1000 chunks, whatever the size of the set.
    let size = len.div_ceil(1000).max(1);
    let mut seen = 0u64;
    let mut last: Option<u32> = None;
    let mut chunks = 0u64;
    for chunk in set.chunks(size) {
        chunks += 1;
        let n = chunk.len();
        assert!(n >= 1 && n <= size);
        let first = chunk.runs()[0].0;
        assert!(last.is_none_or(|l| l < first), "chunks out of order");
        last = chunk.runs().last().map(|r| r.1);
        seen += n;
    }
    assert_eq!(seen, len);
    assert_eq!(chunks, set.chunk_count(size));
});
