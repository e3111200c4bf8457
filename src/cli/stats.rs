//! `ccma stats`.
use super::args::ConfigArgs;
use crate::data::DATASET_KEYS;
use anyhow::Result;
use clap::Args;

/// Print per-split counts (ids, images, captions) of a dataset.
#[derive(Args, Debug)]
pub struct StatsArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
}

pub fn run(a: StatsArgs) -> Result<()> {
    a.config.check_sets_act("stats", &DATASET_KEYS)?;
    let cfg = a.config.resolve(None, &[])?;
    let ds = crate::data::load_dataset(&cfg)?;
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
    super::output::print(format_args!("{} ({})\n{t}", ds.name, ds.dir.display()))
}
