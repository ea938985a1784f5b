//! Frame ranges: parsing agrees with a naive model, writing and parsing round-trip, and
//! nothing panics or grows beyond its input.

use std::collections::BTreeSet;

use flamenco_core::jobs::FrameSet;
use proptest::prelude::*;

/// One part of a range text, with the frames it stands for.
fn part() -> impl Strategy<Value = (String, Vec<u32>)> {
    prop_oneof![
        (0u32..300, " {0,2}", " {0,2}").prop_map(|(f, l, r)| (format!("{l}{f}{r}"), vec![f])),
        (0u32..300, 0u32..40, " {0,2}", " {0,2}")
            .prop_map(|(a, n, l, r)| (format!("{l}{a}{r}-{l}{}{r}", a + n), (a..=a + n).collect())),
    ]
}

fn model(frames: &[Vec<u32>]) -> BTreeSet<u32> {
    frames.iter().flatten().copied().collect()
}

proptest! {
    #[test]
    fn parse_agrees_with_the_expanded_model(parts in prop::collection::vec(part(), 1..10)) {
        let text = parts.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>().join(",");
        let frames: Vec<Vec<u32>> = parts.into_iter().map(|(_, f)| f).collect();
        let expected = model(&frames);
        let set = FrameSet::parse(&text).expect("valid text parses");
        let got: BTreeSet<u32> = set.runs().iter().flat_map(|&(a, b)| a..=b).collect();
        prop_assert_eq!(&got, &expected, "text {:?}", text);
        prop_assert_eq!(set.len(), expected.len() as u64);
        prop_assert!(set.runs().len() <= frames.len());
        // Sorted, disjoint, not touching.
        for w in set.runs().windows(2) {
            prop_assert!(u64::from(w[0].1) + 1 < u64::from(w[1].0));
        }
    }

    #[test]
    fn written_forms_round_trip(runs in prop::collection::vec((any::<u32>(), 0u32..1000), 1..8)) {
        let runs: Vec<(u32, u32)> = runs.into_iter().map(|(a, n)| (a, a.saturating_add(n))).collect();
        let set = FrameSet::from_runs(runs);
        let text = set.to_range_string();
        prop_assert_eq!(FrameSet::parse(&text), Ok(set.clone()), "{}", text);
        let blender = set.to_blender_string().replace("..", "-");
        prop_assert_eq!(FrameSet::parse(&blender), Ok(set.clone()), "{}", blender);
    }

    #[test]
    fn chunks_cover_every_frame_once_in_order(
        runs in prop::collection::vec((0u32..500, 0u32..30), 1..6),
        size in 1u64..20,
    ) {
        let set = FrameSet::from_runs(runs.into_iter().map(|(a, n)| (a, a + n)).collect());
        let all: Vec<u32> = set.runs().iter().flat_map(|&(a, b)| a..=b).collect();
        let chunks: Vec<FrameSet> = set.chunks(size).collect();
        prop_assert_eq!(chunks.len() as u64, set.chunk_count(size));
        let mut seen = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            if i + 1 < chunks.len() {
                prop_assert_eq!(c.len(), size);
            } else {
                prop_assert!(!c.is_empty() && c.len() <= size);
            }
            seen.extend(c.runs().iter().flat_map(|&(a, b)| a..=b));
        }
        prop_assert_eq!(seen, all);
    }

    #[test]
    fn never_panics_on_any_text(text in any::<String>()) {
        if let Ok(set) = FrameSet::parse(&text) {
            prop_assert!(!set.is_empty());
            prop_assert!(set.runs().len() <= text.split(',').count());
        }
    }

    #[test]
    fn never_panics_on_range_like_text(text in "[0-9 ,\\-]{0,40}") {
        match FrameSet::parse(&text) {
            Ok(set) => {
                prop_assert!(set.runs().len() <= text.split(',').count());
                prop_assert_eq!(FrameSet::parse(&set.to_range_string()), Ok(set.clone()));
            }
            Err(e) => prop_assert!(!e.0.is_empty()),
        }
    }
}

#[test]
fn a_huge_range_is_counted_not_expanded() {
    let set = FrameSet::parse("0-4294967295").expect("parses");
    assert_eq!(set.len(), 1 << 32);
    assert_eq!(set.chunk_count(1 << 30), 4);
}
