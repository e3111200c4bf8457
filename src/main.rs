//! `ccma` binary: parse the command line, run it, report errors on one line.
use clap::Parser;

fn main() {
    let cli = ccma::cli::Cli::parse();
    ccma::logging::init(&cli.log, None);
    if let Err(err) = ccma::cli::run(cli) {
        // One line: the outermost context first, then each cause.
        eprintln!("error: {err:#}");
        std::process::exit(ccma::exit_code(&err));
    }
}
