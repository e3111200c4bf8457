//! What a file may cost: one budget for its decompressed entries, tensors and result values,
//! charged before anything is allocated.
use anyhow::{bail, Result};

/// Bytes of decompressed entries, tensors and values a file may cost, per byte of the file...
pub const BUDGET_PER_BYTE: u64 = 4;
/// ...plus this much.
pub const BUDGET_BASE: u64 = 16 << 20;

/// What a file may still cost (bytes): decompressed entries, tensors, values of the result.
pub(super) struct Budget {
    left: u64,
    total: u64,
}

impl Budget {
    pub(super) fn for_file(len: u64) -> Budget {
        let total = len
            .saturating_mul(BUDGET_PER_BYTE)
            .saturating_add(BUDGET_BASE);
        Budget { left: total, total }
    }

    /// Takes `bytes` from the budget, or fails naming `what` before anything is allocated.
    pub(super) fn charge(&mut self, bytes: u64, what: &dyn Fn() -> String) -> Result<()> {
        match self.left.checked_sub(bytes) {
            Some(left) => {
                self.left = left;
                Ok(())
            }
            None => bail!(
                "{} would take {bytes} bytes, past what this file may cost ({} bytes: {BUDGET_PER_BYTE} x its size + {} MiB)",
                what(),
                self.total,
                BUDGET_BASE >> 20
            ),
        }
    }
}
