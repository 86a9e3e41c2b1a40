//! Writes the MLModel CRD YAML to stdout, or to every checked-in copy with `--write`.

use std::path::Path;

fn main() -> std::io::Result<()> {
    let yaml = modelship_crds::crd_yaml();
    if std::env::args().any(|a| a == "--write") {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        for copy in modelship_crds::CRD_COPIES {
            std::fs::write(root.join(copy), &yaml)?;
            eprintln!("wrote {copy}");
        }
    } else {
        print!("{yaml}");
    }
    Ok(())
}
