//! The zip container of a skops file, read with caps: the number of entries, each entry's and
//! all entries' uncompressed bytes (so a zip bomb stops at the cap), and entry names that are
//! plain file names (skops writes `schema.json` and `<id>.npy` / `<uuid>.bin` side by side).

use std::io::{Cursor, Read};

use super::SkopsError;

/// Most entries a skops file may hold (a large boosted model has a few thousand arrays).
pub const MAX_ENTRIES: usize = 200_000;

/// A skops zip file, opened for reading its entries by name.
pub struct Archive<'a> {
    zip: zip::ZipArchive<Cursor<&'a [u8]>>,
    /// Uncompressed bytes the remaining reads may produce, over all entries (repeated reads count).
    left: usize,
    /// Largest uncompressed array entry.
    entry_max: usize,
}

/// Largest `schema.json`: its parsed tree takes several times its size in memory, and a model
/// with ten thousand trees writes a few tens of megabytes.
pub const MAX_SCHEMA_BYTES: usize = 64 << 20;

impl<'a> Archive<'a> {
    /// Opens the zip in `bytes`; refuses more than `max_entries` entries and names that are not
    /// plain file names.
    pub fn open(bytes: &'a [u8], total_max: usize, entry_max: usize, max_entries: usize) -> Result<Self, SkopsError> {
        let zip = zip::ZipArchive::new(Cursor::new(bytes)).map_err(|e| SkopsError::Zip(one_line(&e)))?;
        if zip.len() > max_entries {
            return Err(SkopsError::TooManyEntries { count: zip.len(), limit: max_entries });
        }
        if let Some(bad) = zip.file_names().find(|n| !plain_name(n)) {
            return Err(SkopsError::EntryName(bad.to_string()));
        }
        Ok(Self { zip, left: total_max, entry_max })
    }

    /// The uncompressed bytes of entry `name`, checked against the caps before and while reading.
    pub fn read(&mut self, name: &str) -> Result<Vec<u8>, SkopsError> {
        if !plain_name(name) {
            return Err(SkopsError::EntryName(name.to_string()));
        }
        let max = if name == "schema.json" { MAX_SCHEMA_BYTES } else { self.entry_max };
        let cap = max.min(self.left);
        let too_large = |size: u64| SkopsError::TooLarge { name: name.to_string(), size, limit: cap };
        let mut f = match self.zip.by_name(name) {
            Ok(f) => f,
            Err(zip::result::ZipError::FileNotFound) => return Err(SkopsError::MissingEntry(name.to_string())),
            Err(e) => return Err(SkopsError::Entry { name: name.to_string(), reason: one_line(&e) }),
        };
        let declared = f.size();
        if declared > cap as u64 {
            return Err(too_large(declared));
        }
        // The declared size may lie: read at most one byte past it, whatever the stream holds.
        let mut out = Vec::new();
        (&mut f)
            .take(declared.saturating_add(1))
            .read_to_end(&mut out)
            .map_err(|e| SkopsError::Entry { name: name.to_string(), reason: one_line(&e) })?;
        if out.len() as u64 != declared {
            return Err(SkopsError::Entry {
                name: name.to_string(),
                reason: format!("holds {} bytes, its header declares {declared}", out.len()),
            });
        }
        self.left -= out.len();
        Ok(out)
    }
}

/// A name skops writes: no directory, no `..`, no absolute or Windows path, no hidden file.
fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// An error's message on one line.
fn one_line(e: &dyn std::fmt::Display) -> String {
    e.to_string().split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_count_is_capped() {
        use std::io::Write;
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for i in 0..5 {
            w.start_file(format!("{i}.npy"), zip::write::SimpleFileOptions::default()).unwrap();
            w.write_all(b"x").unwrap();
        }
        let bytes = w.finish().unwrap().into_inner();
        let err = Archive::open(&bytes, 1 << 20, 1 << 20, 4).err().map(|e| e.to_string()).unwrap_or_default();
        assert_eq!(err, "the skops file has 5 entries, more than the limit of 4");
        assert!(Archive::open(&bytes, 1 << 20, 1 << 20, 5).is_ok());
    }

    #[test]
    fn only_plain_names_pass() {
        assert!(plain_name("schema.json") && plain_name("140257593371664.npy"));
        assert!(plain_name("0b7e0f4a-0f7e-4c1e-9c1d-1f2e3d4c5b6a.bin"));
        for bad in ["../x.npy", "/etc/passwd", "a/b.npy", "..", ".hidden", "c:\\x", "x\0y", ""] {
            assert!(!plain_name(bad), "{bad:?}");
        }
    }
}
