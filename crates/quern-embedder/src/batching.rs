//! Groups a request's texts into forward passes of similar length, each padded to at most a token budget.
//!
//! A forward pass pads every text to the longest of its group, and a padded token costs as much as a real one; so
//! texts are sorted by length (longest first) and cut into groups whose `longest × count` stays within the budget.
//! Longest first also hands the slowest groups to the workers first, so a request's groups finish close together.

/// Indices into `lengths`, grouped: every index exactly once; within a group, `longest × count <= tokens_per_batch`
/// unless the group is a single text longer than the budget. Ties keep their input order.
pub fn plan(lengths: &[usize], tokens_per_batch: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(lengths[i]));
    let mut groups = Vec::new();
    let mut group: Vec<usize> = Vec::new();
    for i in order {
        // Sorted longest first, so a group's first text is its longest.
        if let Some(&first) = group.first() {
            if lengths[first] * (group.len() + 1) > tokens_per_batch {
                groups.push(std::mem::take(&mut group));
            }
        }
        group.push(i);
    }
    if !group.is_empty() {
        groups.push(group);
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn groups_similar_lengths_within_the_budget() {
        let lengths = [200, 10, 200, 12, 256, 11];
        assert_eq!(plan(&lengths, 512), vec![vec![4, 0], vec![2, 3], vec![5, 1]]);
        assert_eq!(plan(&lengths, 1024), vec![vec![4, 0, 2, 3], vec![5, 1]]);
        assert_eq!(plan(&lengths, 100), vec![vec![4], vec![0], vec![2], vec![3, 5, 1]]);
        assert!(plan(&[], 512).is_empty());
    }

    proptest! {
        #[test]
        fn every_text_once_and_every_group_within_budget(
            lengths in proptest::collection::vec(1usize..300, 0..80),
            budget in 1usize..2048,
        ) {
            let groups = plan(&lengths, budget);
            let mut seen: Vec<usize> = groups.iter().flatten().copied().collect();
            seen.sort_unstable();
            prop_assert_eq!(seen, (0..lengths.len()).collect::<Vec<_>>());
            for group in &groups {
                prop_assert!(!group.is_empty());
                let longest = group.iter().map(|&i| lengths[i]).max().unwrap();
                prop_assert!(group.len() == 1 || longest * group.len() <= budget, "{:?}", group);
            }
        }
    }
}
