//! `src/data/text_tables.rs` is what `scripts/gen_text_tables.py` writes (then rustfmt) from the
//! Python and ftfy it names in its header. With another Python or ftfy the tables may differ for
//! good reason, and the comparison is not made.
mod common;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

#[test]
fn the_generated_tables_are_what_the_script_writes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(common::python())
        .arg(root.join("scripts/gen_text_tables.py"))
        .output()
        .expect("start the generator");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut rustfmt = Command::new("rustfmt")
        .args(["--edition", "2021", "--emit", "stdout"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start rustfmt");
    rustfmt
        .stdin
        .take()
        .unwrap()
        .write_all(&out.stdout)
        .unwrap();
    let formatted = rustfmt.wait_with_output().unwrap();
    assert!(formatted.status.success());
    let generated = String::from_utf8(formatted.stdout).unwrap();
    let committed = std::fs::read_to_string(root.join("src/data/text_tables.rs")).unwrap();
    let header = |text: &str| text.lines().nth(1).unwrap_or_default().to_string();
    if header(&generated) != header(&committed) {
        eprintln!(
            "not compared: the tables were generated {:?}, this Python has {:?}",
            header(&committed),
            header(&generated)
        );
        return;
    }
    assert!(
        generated == committed,
        "src/data/text_tables.rs differs from what scripts/gen_text_tables.py writes: regenerate it"
    );
}
