//! Writes the MLModel CRD YAML to stdout, or to every checked-in copy with `--write`.

use std::path::Path;

/// Every checked-in copy of the generated CRD, relative to the workspace root.
const COPIES: &[&str] = &["crds/mlmodel.yaml"];

fn main() -> std::io::Result<()> {
    let yaml = modelship_crds::crd_yaml();
    if std::env::args().any(|a| a == "--write") {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        for copy in COPIES {
            std::fs::write(root.join(copy), &yaml)?;
            eprintln!("wrote {copy}");
        }
    } else {
        print!("{yaml}");
    }
    Ok(())
}
