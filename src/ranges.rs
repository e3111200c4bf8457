//! Range checks of named values, each error naming the key and what was expected: the one form
//! of the run config's checks and of the model's, on sizes read from a YAML file, a weights file or
//! a checkpoint's metadata.
use anyhow::Result;

/// `bail!` with "invalid value for `key`: ..." as a usage error.
macro_rules! invalid {
    ($key:expr, $($arg:tt)*) => {
        anyhow::bail!($crate::UsageError(format!("invalid value for `{}`: {}", $key, format!($($arg)*))))
    };
}
pub(crate) use invalid;

/// Positive finite numbers among `values` (key, value); the first that is not is an error.
pub fn check_positive(values: &[(&str, f64)]) -> Result<()> {
    for &(key, v) in values {
        if !(v.is_finite() && v > 0.0) {
            invalid!(key, "{v} (expected a positive number)");
        }
    }
    Ok(())
}

/// Numbers among `values` (key, value, lowest, highest) within their inclusive range.
pub fn check_range(values: &[(&str, f64, f64, f64)]) -> Result<()> {
    for &(key, v, lo, hi) in values {
        if !(v.is_finite() && lo <= v && v <= hi) {
            invalid!(key, "{v} (expected a number from {lo} to {hi})");
        }
    }
    Ok(())
}
