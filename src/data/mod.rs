//! Datasets, tokenizer, MLM masking, image transforms, samplers and the parallel loader.
pub mod annotations;
pub mod batch;
pub mod loader;
pub mod mlm;
pub mod sampler;
pub mod synthetic;
pub mod text_clean;
mod text_tables;
pub mod tokenizer;
pub mod transforms;

/// `ccma tokenize`: one JSON array of `text_length` ids per UTF-8 line of stdin.
pub fn run_tokenize_cli(args: &crate::cli::TokenizeArgs) -> anyhow::Result<()> {
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    tokenize_lines(
        stdin.lock(),
        &mut std::io::BufWriter::new(stdout.lock()),
        args.text_length,
    )
}

/// Tokenises every line of `input` (UTF-8, `\n`-separated; a final `\r` is whitespace and
/// cleaned away) and writes one JSON array of `text_length` ids per line.
pub fn tokenize_lines(
    mut input: impl std::io::BufRead,
    output: &mut impl std::io::Write,
    text_length: usize,
) -> anyhow::Result<()> {
    use anyhow::Context;
    if text_length < 2 {
        return Err(crate::UsageError(format!(
            "--text-length {text_length} is too small: it must hold at least the start and end tokens (>= 2)"
        ))
        .into());
    }
    let tokenizer = tokenizer::Tokenizer::shared();
    let mut line = Vec::new();
    for number in 1.. {
        line.clear();
        if input
            .read_until(b'\n', &mut line)
            .context("cannot read stdin")?
            == 0
        {
            break;
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        let text = std::str::from_utf8(&line).map_err(|e| {
            crate::UsageError(format!(
                "stdin line {number}: invalid UTF-8 at byte {} (expected UTF-8 text)",
                e.valid_up_to() + 1
            ))
        })?;
        let ids = tokenizer.encode(text, text_length);
        serde_json::to_writer(&mut *output, &ids).context("cannot write to stdout")?;
        output.write_all(b"\n").context("cannot write to stdout")?;
    }
    output.flush().context("cannot write to stdout")?;
    Ok(())
}

/// `ccma stats`: ids, images and captions per split.
pub fn run_stats_cli(args: &crate::cli::StatsArgs) -> anyhow::Result<()> {
    let cfg = args.config.resolve()?;
    let ds = load_dataset(&cfg)?;
    let mut t = prettytable::Table::new();
    t.set_titles(prettytable::row!["split", "ids", "images", "captions"]);
    t.add_row(prettytable::row![
        "train",
        ds.num_classes,
        ds.train_images,
        ds.train.len()
    ]);
    for (name, s) in [("val", &ds.val), ("test", &ds.test)] {
        t.add_row(prettytable::row![
            name,
            s.num_ids(),
            s.image_paths.len(),
            s.captions.len()
        ]);
    }
    println!("{} ({})", ds.name, ds.dir.display());
    t.printstd();
    Ok(())
}

/// The dataset a config names, generating SYNTH-PEDES first when it is asked for and missing.
pub fn load_dataset(cfg: &crate::config::Config) -> anyhow::Result<annotations::Dataset> {
    if cfg.dataset_name == "SYNTH-PEDES" {
        synthetic::ensure(&cfg.root_dir, cfg.synth_ids, cfg.seed)?;
    }
    annotations::load(&cfg.dataset_name, &cfg.root_dir)
}
