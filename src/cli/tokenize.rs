//! `ccma tokenize`.
use anyhow::Result;
use clap::Args;

/// Tokenise UTF-8 lines from stdin; prints one JSON array of token ids per line.
#[derive(Args, Debug)]
pub struct TokenizeArgs {
    /// Context length (ids per line, zero-padded; longer captions are truncated, last id EOT).
    #[arg(long, value_name = "N", default_value_t = 77)]
    pub text_length: usize,
}

pub fn run(a: TokenizeArgs) -> Result<()> {
    let max = crate::config::MAX_TEXT_LENGTH;
    if !(2..=max).contains(&a.text_length) {
        return Err(crate::UsageError(format!(
            "--text-length {} is out of range: it must hold the start and end tokens and be at most {max} (2..={max})",
            a.text_length
        ))
        .into());
    }
    let stdout = std::io::stdout();
    crate::data::tokenize_lines(
        std::io::stdin().lock(),
        &mut std::io::BufWriter::new(stdout.lock()),
        a.text_length,
    )
    .map_err(super::output::stdout_error)
}
