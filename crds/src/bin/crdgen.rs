//! Writes the CRD YAML (every kind) to stdout, or to every checked-in copy with `--write`.

use std::path::Path;

fn main() -> std::io::Result<()> {
    let files = modelship_crds::crd_files();
    if std::env::args().any(|a| a == "--write") {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        for dir in modelship_crds::CRD_DIRS {
            for (file, yaml) in &files {
                std::fs::write(root.join(dir).join(file), yaml)?;
                eprintln!("wrote {dir}/{file}");
            }
        }
    } else {
        for (_, yaml) in &files {
            print!("{yaml}");
        }
    }
    Ok(())
}
