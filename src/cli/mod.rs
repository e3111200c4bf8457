//! The command line, the top floor: one file per command, each with its own flags (and only the
//! flags it uses), parsed once into typed values and handed to the library below. The only
//! place that knows flag names. The flags that set config keys are one table ([`flags`]); what
//! the commands share is in files that are no command's (`args`, `flags`, `given_once`,
//! `irra_flags`, `launch`, `output`, `preflight`), and no command's file imports another's.
mod args;
mod bench;
mod check;
mod compare;
mod embed;
mod export;
mod flags;
mod given_once;
mod irra_flags;
mod launch;
mod output;
mod preflight;
mod rank;
mod search;
mod serve;
mod stats;
mod summarize;
mod test;
mod tokenize;
mod train;

pub use output::StdoutClosed;

use crate::UsageError;
use clap::{Parser, Subcommand};
use std::ffi::OsString;

#[derive(Parser, Debug)]
#[command(
    name = "ccma",
    version,
    about = "Text-to-image person retrieval with CCMA (consistency-driven cross-modal alignment) on the IRRA recipe",
    long_about = "Trains and evaluates text-to-image person retrieval models: a CLIP ViT-B/16 dual encoder with \
IRRA's cross-modal MLM branch, CCMA's differential cross-modal attention and the IMAL loss. Reports \
R@1/5/10, mAP and mINP on CUHK-PEDES, ICFG-PEDES, RSTPReid and the generated TOY-PEDES set."
)]
pub struct Cli {
    /// Log level filter (error, warn, info, debug, trace), or an env-filter directive [default:
    /// info; warn on the ranks other than 0 of a data-parallel run].
    #[arg(long, global = true)]
    pub log: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    Train(train::TrainArgs),
    Test(test::TestArgs),
    Compare(compare::CompareArgs),
    Summarize(summarize::SummarizeArgs),
    Embed(embed::EmbedArgs),
    Export(export::ExportArgs),
    Rank(rank::RankArgs),
    Search(search::SearchArgs),
    Serve(serve::ServeArgs),
    Tokenize(tokenize::TokenizeArgs),
    Stats(stats::StatsArgs),
    Check(check::CheckArgs),
    Bench(bench::BenchArgs),
    /// Print the ccma and libtorch versions and the devices libtorch sees.
    Info,
}

/// The command line `args` (the program name first), every config key on it once
/// ([`given_once`]), IRRA's spellings of its flags taken ([`irra_flags`]). Clap's own errors,
/// `--help` and `--version` end the process as clap does.
pub fn parse(args: Vec<OsString>) -> Result<Cli, UsageError> {
    given_once::check(&args).map_err(UsageError)?;
    let args = irra_flags::rewrite(args).map_err(UsageError)?;
    Ok(Cli::parse_from(args))
}

/// Runs one parsed command.
pub fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Train(a) => train::run(a),
        Command::Test(a) => test::run(a),
        Command::Compare(a) => compare::run(a),
        Command::Summarize(a) => summarize::run(a),
        Command::Embed(a) => embed::run(a),
        Command::Export(a) => export::run(a),
        Command::Rank(a) => rank::run(a),
        Command::Search(a) => search::run(a),
        Command::Serve(a) => serve::run(a),
        Command::Tokenize(a) => tokenize::run(a),
        Command::Stats(a) => stats::run(a),
        Command::Check(a) => check::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Info => {
            let nccl = match crate::dist::Backend::nccl_compiled() {
                true => "NCCL (CUDA)",
                false => "no NCCL (built without its headers)",
            };
            let mut text: String = crate::device::info_lines()
                .iter()
                .map(|line| format!("{line}\n"))
                .collect();
            text += &format!("data-parallel backends: Gloo (CPU), {nccl}\n");
            output::print(text)
        }
    }
}
