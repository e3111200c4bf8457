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
    if a.text_length < 2 {
        return Err(crate::UsageError(format!(
            "--text-length {} is too small: it must hold at least the start and end tokens (>= 2)",
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
}
