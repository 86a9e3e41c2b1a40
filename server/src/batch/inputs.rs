//! Which files a batch input names: one file, a directory's data files, or a glob's matches;
//! and which of them one shard scores.

use std::path::{Path, PathBuf};

use super::BatchError;
use super::format::Format;
use crate::shard::{self, Shard};

/// The files `input` names, in name order: the file itself; a directory's files, leaving out
/// hidden and `_`-prefixed ones (`_SUCCESS`, `.part.tmp`) and, unless `format` is given, those
/// whose extension names no format (`*.manifest.json`); or the files a pattern with `*`, `?` or
/// `[...]` matches. None at all is an error.
pub fn list(input: &Path, format: Option<Format>) -> Result<Vec<PathBuf>, BatchError> {
    let text = input.to_string_lossy();
    let io = |source| BatchError::Io { path: text.to_string(), source };
    let mut files = if text.contains(['*', '?', '[']) {
        let pattern = glob::glob(&text).map_err(|e| BatchError::Input(format!("{text}: not a valid pattern: {e}")))?;
        let mut files = Vec::new();
        for entry in pattern {
            let path = entry.map_err(|e| BatchError::Io { path: e.path().display().to_string(), source: e.into() })?;
            if path.is_file() {
                files.push(path);
            }
        }
        files
    } else if input.is_dir() {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(input).map_err(io)? {
            let entry = entry.map_err(io)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let data =
                !name.starts_with(['.', '_']) && (format.is_some() || Format::from_path(Path::new(&name)).is_some());
            if data && entry.file_type().map_err(io)?.is_file() {
                files.push(entry.path());
            }
        }
        files
    } else {
        return Ok(vec![input.to_path_buf()]);
    };
    files.sort();
    if files.is_empty() {
        return Err(BatchError::Input(format!("{text}: no input files (hidden and _-prefixed files are left out)")));
    }
    Ok(files)
}

/// This shard's share of `files`: of one file, its byte range (`shard` itself); of several,
/// whole files ([`shard::assign_files`], balanced by size), each read from start to end.
pub fn share(files: &[PathBuf], shard: Shard) -> Result<Vec<(PathBuf, Shard)>, BatchError> {
    if let [one] = files {
        return Ok(vec![(one.clone(), shard)]);
    }
    let sizes = files
        .iter()
        .map(|f| {
            f.metadata().map(|m| m.len()).map_err(|source| BatchError::Io { path: f.display().to_string(), source })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(shard::assign_files(&sizes, shard).into_iter().map(|i| (files[i].clone(), Shard::WHOLE)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str, files: &[(&str, usize)]) -> PathBuf {
        let d = std::env::temp_dir().join(format!("modelship-inputs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("sub.csv")).unwrap();
        for (f, size) in files {
            std::fs::write(d.join(f), "x".repeat(*size)).unwrap();
        }
        d
    }

    fn names(files: &[PathBuf]) -> Vec<String> {
        files.iter().map(|f| f.file_name().unwrap().to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn a_directory_is_its_data_files_and_a_pattern_its_matches_in_name_order() {
        let d = dir(
            "list",
            &[("b.csv", 1), ("a.jsonl", 1), ("_SUCCESS", 1), (".a.csv.tmp-1", 1), ("p.manifest.json", 1), ("c.CSV", 1)],
        );
        assert_eq!(names(&list(&d, None).unwrap()), ["a.jsonl", "b.csv", "c.CSV"]);
        // With the format named, any visible file is data.
        assert_eq!(names(&list(&d, Some(Format::Csv)).unwrap()), ["a.jsonl", "b.csv", "c.CSV", "p.manifest.json"]);
        assert_eq!(names(&list(&d.join("*.csv"), None).unwrap()), ["b.csv"]);
        assert_eq!(names(&list(&d.join("[ab].*"), None).unwrap()), ["a.jsonl", "b.csv"]);
        assert_eq!(list(&d.join("b.csv"), None).unwrap(), [d.join("b.csv")]);
        let e = list(&d.join("*.parquet"), None).unwrap_err().to_string();
        assert!(e.contains("*.parquet: no input files"), "{e}");
        let e = list(&d.join("[.csv"), None).unwrap_err().to_string();
        assert!(e.contains("not a valid pattern"), "{e}");
    }

    #[test]
    fn several_files_are_shared_out_whole_every_file_to_exactly_one_shard() {
        let d = dir("share", &[("a.csv", 50), ("b.csv", 10), ("c.csv", 40), ("d.csv", 0), ("e.csv", 5)]);
        let files = list(&d, None).unwrap();
        for count in 1..=7 {
            let mut seen = Vec::new();
            for index in 0..count {
                let mine = share(&files, Shard::new(index, count).unwrap()).unwrap();
                assert!(mine.iter().all(|(_, s)| *s == Shard::WHOLE));
                seen.extend(mine.into_iter().map(|(f, _)| f));
            }
            seen.sort();
            assert_eq!(seen, files, "{count} shards");
        }
        // One file is cut into byte ranges instead.
        let one = [d.join("a.csv")];
        let s = Shard::new(1, 3).unwrap();
        assert_eq!(share(&one, s).unwrap(), [(one[0].clone(), s)]);
    }
}
