//! Which live member runs which application: rendezvous hashing.

/// The rendezvous (highest random weight) owner of `app` among `members`:
/// stable, and a member joining or leaving moves only the applications it
/// gains or had.
pub fn assign<'a>(app: &str, members: &'a [String]) -> Option<&'a str> {
    members
        .iter()
        .max_by_key(|m| (score(m, app), m.as_str()))
        .map(String::as_str)
}

fn score(member: &str, app: &str) -> u64 {
    // FNV-1a, then a SplitMix64 finalizer: stable across builds and
    // platforms (std's hasher is not guaranteed to be).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in member.bytes().chain([0xff]).chain(app.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn assignment_is_stable_and_moves_little() {
        let three: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let two: Vec<String> = ["a", "c"].map(String::from).to_vec();
        let apps: Vec<String> = (0..3000).map(|i| format!("app-{i}")).collect();
        let mut counts = HashMap::new();
        for app in &apps {
            let owner = assign(app, &three).unwrap();
            *counts.entry(owner).or_insert(0) += 1;
            let after = assign(app, &two).unwrap();
            if owner != "b" {
                assert_eq!(owner, after, "{app} moved though its owner stayed");
            }
        }
        for (m, n) in counts {
            assert!((800..1200).contains(&n), "{m} got {n} of 3000");
        }
        assert_eq!(assign("x", &[]), None);
    }
}
