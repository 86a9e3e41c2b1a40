//! Writing scored records: the kept input columns, the prediction and, on request, one
//! probability column per class, in the output's format, hashed as written and renamed into
//! place only when complete.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use ndarray::Array2;
use sha2::{Digest, Sha256};

use super::BatchError;
use super::format::{Cell, Format};
use super::read::Source;
use crate::model::Predictions;
use crate::sklearn::Label;

/// A chunk of scored records, as the sink sees it.
pub struct Scored<'a> {
    pub source: &'a dyn Source,
    /// The input columns carried to the output, in output order.
    pub kept: &'a [usize],
    pub predictions: &'a Predictions,
    pub labels: Option<&'a [Label]>,
    pub probabilities: Option<&'a Array2<f64>>,
}

impl Scored<'_> {
    fn rows(&self) -> usize {
        self.predictions.len()
    }

    /// The prediction for row `i`: what `/predict` answers (a classifier's label itself).
    fn prediction(&self, i: usize) -> Cell<'_> {
        match (self.predictions, self.labels) {
            (Predictions::Classes(c), Some(labels)) => {
                labels.get(c[i]).map_or(Cell::UInt(c[i] as u64), Cell::from_label)
            }
            (Predictions::Classes(c), None) => Cell::UInt(c[i] as u64),
            (Predictions::Values(v), _) => Cell::Float(v[i]),
        }
    }

    /// Every output cell of row `i`, in column order.
    fn cells(&self, i: usize) -> impl Iterator<Item = Cell<'_>> {
        let kept = self.kept.iter().map(move |&c| self.source.cell(i, c));
        let p = self.probabilities.into_iter().flat_map(move |p| p.row(i).into_iter().copied()).map(Cell::Float);
        kept.chain(std::iter::once(self.prediction(i))).chain(p)
    }
}

/// Where scored records go.
pub trait Sink {
    fn write(&mut self, chunk: &Scored<'_>) -> Result<(), BatchError>;
    /// Flushes everything written; the file and what went into it.
    fn finish(self: Box<Self>) -> Result<Written, BatchError>;
}

/// A finished output file, not yet renamed into place.
pub struct Written {
    pub file: File,
    pub bytes: u64,
    pub sha256: String,
}

/// A sink writing `format` to `file` (`path` in messages), with output columns `names`.
pub fn create(format: Format, file: File, path: &Path, names: &[String]) -> Result<Box<dyn Sink>, BatchError> {
    let path = path.display().to_string();
    let sink = Hashing { inner: file, hasher: Sha256::new(), bytes: 0 };
    Ok(match format {
        Format::Csv => {
            let mut writer = csv::WriterBuilder::new().buffer_capacity(1 << 20).from_writer(sink);
            writer.write_record(names).map_err(|source| BatchError::Csv { path: path.clone(), source })?;
            Box::new(CsvSink { path, writer, field: Vec::new() })
        }
        Format::JsonLines => {
            // Each key as JSON, with its separator, once.
            let keys = names
                .iter()
                .enumerate()
                .map(|(k, n)| {
                    format!("{}{}:", if k == 0 { "{" } else { "," }, serde_json::Value::from(n.as_str())).into_bytes()
                })
                .collect();
            Box::new(JsonSink { path, out: BufWriter::with_capacity(1 << 20, sink), keys, line: Vec::new() })
        }
    })
}

struct CsvSink {
    path: String,
    writer: csv::Writer<Hashing<File>>,
    field: Vec<u8>,
}

impl Sink for CsvSink {
    fn write(&mut self, chunk: &Scored<'_>) -> Result<(), BatchError> {
        let err = |source| BatchError::Csv { path: self.path.clone(), source };
        for i in 0..chunk.rows() {
            for cell in chunk.cells(i) {
                self.field.clear();
                cell.write_text(&mut self.field);
                self.writer.write_field(&self.field).map_err(err)?;
            }
            self.writer.write_record(None::<&[u8]>).map_err(err)?;
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<Written, BatchError> {
        let sink =
            self.writer.into_inner().map_err(|e| BatchError::Io { path: self.path.clone(), source: e.into_error() })?;
        Ok(sink.done())
    }
}

struct JsonSink {
    path: String,
    out: BufWriter<Hashing<File>>,
    keys: Vec<Vec<u8>>,
    line: Vec<u8>,
}

impl Sink for JsonSink {
    fn write(&mut self, chunk: &Scored<'_>) -> Result<(), BatchError> {
        for i in 0..chunk.rows() {
            self.line.clear();
            for (key, cell) in self.keys.iter().zip(chunk.cells(i)) {
                self.line.extend_from_slice(key);
                cell.write_json(&mut self.line);
            }
            self.line.extend_from_slice(if self.keys.is_empty() { b"{}\n" } else { b"}\n" });
            self.out.write_all(&self.line).map_err(|source| BatchError::Io { path: self.path.clone(), source })?;
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<Written, BatchError> {
        let sink =
            self.out.into_inner().map_err(|e| BatchError::Io { path: self.path.clone(), source: e.into_error() })?;
        Ok(sink.done())
    }
}

/// A writer that hashes and counts what goes through it.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl Hashing<File> {
    fn done(self) -> Written {
        Written { file: self.inner, bytes: self.bytes, sha256: hex::encode(self.hasher.finalize()) }
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// An output file written under a temporary name beside it, renamed into place only by
/// [`AtomicOutput::commit`]: a run that fails or is killed leaves no partial output under the
/// real name, and a retried run replaces a complete one whole.
pub struct AtomicOutput {
    path: PathBuf,
    tmp: PathBuf,
    committed: bool,
}

impl AtomicOutput {
    pub fn create(path: &Path) -> Result<(Self, File), BatchError> {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
        let file = File::create(&tmp).map_err(|source| BatchError::Io { path: tmp.display().to_string(), source })?;
        Ok((Self { path: path.to_path_buf(), tmp, committed: false }, file))
    }

    /// Makes the file durable, then gives it its real name.
    pub fn commit(mut self, file: File) -> Result<(), BatchError> {
        let io = |source| BatchError::Io { path: self.path.display().to_string(), source };
        file.sync_all().map_err(io)?;
        std::fs::rename(&self.tmp, &self.path).map_err(io)?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for AtomicOutput {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}
