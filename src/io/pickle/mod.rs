//! A restricted reader for PyTorch's zip archives: `torch.save` files (the `best.pth` of IRRA and
//! CCMA) and TorchScript archives (OpenAI's `ViT-B-16.pt`). It rebuilds tensors, plain containers
//! and TorchScript module objects as attribute containers, and nothing else; no code in a file is
//! ever run.
//!
//! The pickle in `<archive>/data.pkl` is interpreted opcode by opcode. Only the globals that
//! describe tensors and containers are accepted (`collections.OrderedDict`,
//! `torch._utils._rebuild_tensor_v2`, `torch._utils._rebuild_parameter` and the `torch.*Storage`
//! types); any other global (`os.system`, a model class, ...) is refused by name, as
//! `torch.load(weights_only=True)` does. In a TorchScript archive (one with `code/` or
//! `constants.pkl`) the module tree is pickled as objects of classes named `__torch__.…`: those
//! objects are read as their attribute dicts; one whose state is anything but a dict (a class with
//! its own `__setstate__`) is refused, and the archive's `code/` and `constants.pkl` are never read.
//!
//! The file bounds everything: values nest at most [`MAX_DEPTH`] levels; memo references share
//! the value they name instead of copying it; every byte decompressed from the zip, every tensor
//! made and every value of the result is charged to one budget of [`BUDGET_PER_BYTE`] times the
//! file's size (plus [`BUDGET_BASE`]), checked before anything is allocated; each storage must
//! hold exactly its element count times its element size, and each tensor view (offset, sizes,
//! strides) must stay inside its storage, with overflow-checked arithmetic.
//!
//! By job: zip reading (`archive.rs`), the pickle machine (`machine.rs`) and the values it runs on
//! (`obj.rs`), tensor views (`view.rs`), the budget (`budget.rs`), the result (`value.rs`).
mod archive;
mod budget;
mod machine;
mod obj;
mod value;
mod view;

pub use archive::load_torch_zip;
pub use budget::{BUDGET_BASE, BUDGET_PER_BYTE};
pub use obj::MAX_DEPTH;
pub use value::Value;

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// Writes a pickle by hand into a torch.save-shaped zip.
    fn zip_with(dir: &Path, pickle: &[u8]) -> std::path::PathBuf {
        use std::io::Write;
        let p = dir.join("hand.pth");
        let mut z = zip::ZipWriter::new(std::fs::File::create(&p).unwrap());
        let opts =
            zip::write::FileOptions::default().compression_method(zip::CompressionMethod::Stored);
        z.start_file("archive/data.pkl", opts).unwrap();
        z.write_all(pickle).unwrap();
        z.start_file("archive/data/0", opts).unwrap();
        z.write_all(&[0u8; 8]).unwrap();
        z.finish().unwrap();
        p
    }

    fn err(dir: &Path, pickle: &[u8]) -> String {
        format!("{:#}", load_torch_zip(&zip_with(dir, pickle)).unwrap_err())
    }

    #[test]
    fn hand_written_pickles() {
        let dir = tempfile::tempdir().unwrap();
        // {'n': -2, 'x': 1.5, 'l': [True, None]} with protocol 2 opcodes.
        let mut p = vec![0x80, 2, b'}', b'q', 0, b'('];
        p.extend(b"X\x01\x00\x00\x00nJ\xfe\xff\xff\xff");
        p.extend(b"X\x01\x00\x00\x00xG");
        p.extend(1.5f64.to_be_bytes());
        p.extend(b"X\x01\x00\x00\x00l]q\x01(\x88Neu.");
        let v = load_torch_zip(&zip_with(dir.path(), &p)).unwrap();
        assert!(matches!(v.get("n"), Some(Value::Int(-2))));
        assert!(matches!(v.get("x"), Some(Value::Float(f)) if *f == 1.5));
        assert!(
            matches!(v.get("l"), Some(Value::List(l)) if matches!(l[..], [Value::Bool(true), Value::None]))
        );
        // A tensor whose view reaches past its 2-element float storage is refused.
        let mut p = vec![0x80, 2];
        p.extend(b"ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x02tQK\x00K\x03\x85K\x01\x85\x89)tR.");
        let e = err(dir.path(), &p);
        assert!(e.contains("reaches past its storage of 2 elements"), "{e}");
        // Any other global is refused by name; TorchScript classes outside an archive with code.
        let e = err(dir.path(), b"\x80\x02cbuiltins\neval\n.");
        assert!(e.contains("refuses the global `builtins.eval`"), "{e}");
        let e = err(dir.path(), b"\x80\x02c__torch__\nM\n).}b.");
        assert!(e.contains("refuses the global `__torch__.M`"), "{e}");
    }

    /// A memo reference shares its value: a list that holds itself is refused by depth, and
    /// a list of lists, each holding the one before twice, by the budget, not by memory.
    #[test]
    fn shared_values_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let e = err(dir.path(), b"\x80\x02]q\x00h\x00a.");
        assert!(e.contains("nest deeper than 100 levels"), "{e}");
        let mut p = b"\x80\x02]q\x00".to_vec();
        for i in 0..60u8 {
            p.extend([b'(', b'h', i, b'h', i, b'l', b'q', i + 1]);
        }
        p.push(b'.');
        let e = err(dir.path(), &p);
        assert!(e.contains("past what this file may cost"), "{e}");
        // The mutation of a memoised dict is seen through every reference to it.
        let v = load_torch_zip(&zip_with(
            dir.path(),
            b"\x80\x02]q\x00}q\x01ah\x01X\x01\x00\x00\x00kK\x07s\x86.",
        ))
        .unwrap();
        let Value::Tuple(t) = v else { panic!() };
        assert!(matches!(&t[0], Value::List(l) if matches!(l[0].get("k"), Some(Value::Int(7)))));
        assert!(matches!(t[1].get("k"), Some(Value::Int(7))));
    }
}
