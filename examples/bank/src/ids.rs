//! Deterministic ids: the same inputs always give the same id, so a replayed step
//! appends events the store already holds, and the append is an idempotent retry.

use uuid::Uuid;

/// The id of step `step` caused by the message `parent` (an event or a command).
///
/// ```
/// use uuid::Uuid;
/// let t = Uuid::from_u128(7);
/// assert_eq!(bank::ids::derive(t, "debit"), bank::ids::derive(t, "debit"));
/// assert_ne!(bank::ids::derive(t, "debit"), bank::ids::derive(t, "credit"));
/// ```
pub fn derive(parent: Uuid, step: &str) -> Uuid {
    let key = format!("{parent}/{step}");
    let hi = foldstore_core::group_hash(&key);
    let lo = foldstore_core::group_hash(&format!("{key}/lo"));
    Uuid::from_u64_pair(hi, lo)
}

/// The id of the `n`-th transfer task `task` issues in a run seeded with `seed`.
pub fn transfer(seed: u64, task: usize, n: usize) -> Uuid {
    Uuid::from_u64_pair(seed, ((task as u64) << 32) | n as u64)
}
