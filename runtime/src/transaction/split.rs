//! A/B splits (`[split]` in the policy): which arm a transaction that
//! names no path runs on. The arm is drawn from a hash of what keeps its
//! caller on one arm (the caller's name or the idempotency key), so every
//! node draws the same arm for the same caller, and a caller's
//! transactions are compared as one population. The arm is kept with the
//! transaction's first attempt; `split_report.rs` compares the arms.

use crate::policy::{SplitSettings, SplitSticky};

/// The arm of transactions no arm took: the usual order of paths.
pub const CONTROL: &str = "control";

/// The arm a transaction runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Arm {
    /// Its name: an arm's, or [`CONTROL`].
    pub(crate) name: String,
    /// Its order of paths; `None` for the control.
    pub(crate) order: Option<Vec<String>>,
}

/// The arm of a transaction, or `None` when the policy splits nothing.
/// `caller` and `key` are the transaction's; `id` places one that has
/// neither of what the split is sticky on.
pub(crate) fn assign(split: &SplitSettings, caller: Option<&str>, key: Option<&str>, id: &str) -> Option<Arm> {
    if split.arms.is_empty() {
        return None;
    }
    let sticky = match split.sticky {
        SplitSticky::Caller => caller.filter(|caller| !caller.is_empty()).or(key),
        SplitSticky::Key => key,
    };
    let draw = unit(sticky.unwrap_or(id));
    let mut below = 0.0;
    for arm in &split.arms {
        below += arm.share;
        if draw < below {
            return Some(Arm { name: arm.name.clone(), order: Some(arm.order.clone()) });
        }
    }
    Some(Arm { name: CONTROL.to_string(), order: None })
}

/// A value in [0, 1) drawn from `text`, the same on every node.
fn unit(text: &str) -> f64 {
    let hash = blake3::hash(format!("txmirror split\0{text}").as_bytes());
    let mut first = [0_u8; 8];
    first.copy_from_slice(&hash.as_bytes()[..8]);
    // The top 53 bits, exactly representable: a uniform draw below 1.
    (u64::from_le_bytes(first) >> 11) as f64 / (1_u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;
    use crate::policy::SplitArm;

    fn split(share: f64, sticky: SplitSticky) -> SplitSettings {
        SplitSettings {
            sticky,
            arms: vec![SplitArm { name: "backup-first".into(), share, order: vec!["b".into(), "a".into()] }],
        }
    }

    #[test]
    fn a_caller_stays_on_its_arm_and_the_arms_take_their_shares() {
        let split = split(0.3, SplitSticky::Caller);
        let mut on_arm = 0;
        for caller in 0..10_000 {
            let caller = format!("caller-{caller}");
            let first = assign(&split, Some(&caller), None, "tx-1").unwrap();
            // Another transaction of the same caller, with another key.
            let again = assign(&split, Some(&caller), Some("k-9"), "tx-2").unwrap();
            assert_eq!(first, again, "{caller} moved between arms");
            if first.name == "backup-first" {
                assert_eq!(first.order.as_deref(), Some(&["b".to_string(), "a".to_string()][..]));
                on_arm += 1;
            } else {
                assert_eq!((first.name.as_str(), first.order), (CONTROL, None));
            }
        }
        // 3,000 expected; the binomial's standard deviation is about 46.
        assert!((2_800..=3_200).contains(&on_arm), "{on_arm} of 10,000 on a 30% arm");
    }

    #[test]
    fn a_key_split_follows_the_key_and_no_split_assigns_nothing() {
        let split = split(0.5, SplitSticky::Key);
        for key in 0..200 {
            let key = format!("key-{key}");
            let a = assign(&split, Some("alice"), Some(&key), "tx-1").unwrap();
            let b = assign(&split, Some("bob"), Some(&key), "tx-2").unwrap();
            assert_eq!(a, b, "the key, not the caller, decides");
        }
        // Without a key, each transaction is placed by its id.
        let names: std::collections::BTreeSet<String> =
            (0..64).map(|id| assign(&split, None, None, &format!("tx-{id}")).unwrap().name).collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert_eq!(assign(&SplitSettings::default(), Some("alice"), None, "tx"), None);
        assert!(unit("x") < 1.0 && unit("y") >= 0.0);
    }
}
