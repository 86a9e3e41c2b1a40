//! Batch scoring of CSV files with bounded memory (what `modelship-server batch` and batch Jobs run).
//!
//! Rows stream through in chunks of `chunk_rows`: memory is one chunk, whatever the file size.
//! Each chunk is scored on `threads` threads, a slice of its rows each; the `prediction` column is
//! what `/predict` answers (a scikit-learn classifier's labels themselves).

use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, IsTerminal, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ndarray::{Array2, ArrayView2, Axis};
use sha2::{Digest, Sha256};

use crate::model::{InputError, Model, Predictions};
use crate::shard::{self, Records, Shard};

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("{path}: {source}")]
    Csv { path: String, source: csv::Error },
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("{0}")]
    Input(String),
}

/// What a batch run did.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchReport {
    pub rows: u64,
    pub seconds: f64,
    /// Peak resident memory of this process, where the OS tells it (Linux).
    pub peak_rss_mib: Option<f64>,
    /// The output file, complete: written under a temporary name and renamed once flushed.
    pub output: PathBuf,
    /// Its size and SHA-256 (hex), as written.
    pub bytes: u64,
    pub sha256: String,
}

impl fmt::Display for BatchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rate = if self.seconds > 0.0 { self.rows as f64 / self.seconds } else { 0.0 };
        write!(f, "scored {} rows in {:.2}s ({:.0} rows/s)", self.rows, self.seconds, rate)?;
        if let Some(mib) = self.peak_rss_mib {
            write!(f, ", peak memory {mib:.1} MiB")?;
        }
        Ok(())
    }
}

/// Peak resident set size of this process (`VmHWM`), in MiB.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: f64 = status.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Which input columns feed the model, in the model's feature order.
fn feature_columns(model: &Model, headers: &csv::StringRecord) -> Result<Vec<usize>, BatchError> {
    let names = &model.artifact.feature_names;
    let by_name: Option<Vec<usize>> = names.iter().map(|n| headers.iter().position(|h| h == n)).collect();
    match by_name {
        Some(cols) => Ok(cols),
        None if headers.len() == names.len() => Ok((0..names.len()).collect()),
        None => Err(BatchError::Input(format!(
            "the input header {:?} neither names every feature {:?} nor has exactly {} columns",
            headers.iter().collect::<Vec<_>>(),
            names,
            names.len()
        ))),
    }
}

/// How a batch run goes.
#[derive(Debug, Clone, Copy)]
pub struct BatchOptions {
    /// Rows read, scored and written at a time.
    pub chunk_rows: usize,
    /// Threads scoring a chunk (0: as many as this process may use, cgroup CPU limits included).
    pub threads: usize,
    /// The part of the input this run scores: the records that start in its share of the bytes.
    pub shard: Shard,
}

impl Default for BatchOptions {
    fn default() -> Self {
        Self { chunk_rows: 8192, threads: 0, shard: Shard::WHOLE }
    }
}

/// A writer that hashes and counts what goes through it.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
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

/// Where a record of the input is, for error messages: a CSV line number when the whole file is
/// read from its start, else the record's place in the shard and its byte offset in the file.
struct Locator {
    shard: Shard,
    start: u64,
}

impl Locator {
    fn row(&self, records_before: u64, reader_byte: Option<u64>) -> String {
        if self.shard == Shard::WHOLE {
            // The header is line 1 (a quoted newline makes this a record number, not a line).
            return format!("row {}", records_before + 2);
        }
        let at = reader_byte.map(|b| format!(", byte {} of the file", self.start + b)).unwrap_or_default();
        format!("shard {} of {}: record {}{at}", self.shard.index, self.shard.count, records_before + 1)
    }
}

/// Fewer rows than this per thread are scored on the calling thread.
const MIN_ROWS_PER_THREAD: usize = 256;

/// Predicts `x` on up to `threads` threads, a contiguous slice of rows each, in row order. A
/// failure names the first row of the slice it came from.
fn predict_split(model: &Model, x: ArrayView2<'_, f64>, threads: usize) -> Result<Predictions, (usize, InputError)> {
    let per = x.nrows().div_ceil(threads.max(1)).max(MIN_ROWS_PER_THREAD);
    if per >= x.nrows() {
        return model.predict(x).map_err(|e| (0, e));
    }
    let parts: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> =
            x.axis_chunks_iter(Axis(0), per).map(|part| s.spawn(move || model.predict(part))).collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))).collect()
    });
    let mut out: Option<Predictions> = None;
    for (k, part) in parts.into_iter().enumerate() {
        let part = part.map_err(|e| (k * per, e))?;
        match (&mut out, part) {
            (None, p) => out = Some(p),
            (Some(Predictions::Classes(a)), Predictions::Classes(b)) => a.extend(b),
            (Some(Predictions::Values(a)), Predictions::Values(b)) => a.extend(b),
            (Some(_), _) => {
                return Err((
                    k * per,
                    InputError::Run("the model answered classes for some rows and values for others".into()),
                ));
            }
        }
    }
    out.ok_or((0, InputError::Empty))
}

/// Scores `input` (its share `opts.shard`, all of it by default) into `output`: every input
/// column, then `prediction`, under the input's header.
pub fn score_csv(model: &Model, input: &Path, output: &Path, opts: BatchOptions) -> Result<BatchReport, BatchError> {
    let in_err = |source| BatchError::Csv { path: input.display().to_string(), source };
    let in_io = |source| BatchError::Io { path: input.display().to_string(), source };
    let out_err = |source| BatchError::Csv { path: output.display().to_string(), source };
    let chunk_rows = opts.chunk_rows.max(1);
    let threads = match opts.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let labels = model.labels();

    // The header from the file's start, then only this shard's byte range of records.
    let mut file = File::open(input).map_err(in_io)?;
    let len = file.metadata().map_err(in_io)?.len();
    let mut head = csv::ReaderBuilder::new().from_reader(BufReader::new(&mut file));
    let headers = head.byte_headers().map_err(in_err)?.clone();
    let data_start = head.position().byte();
    drop(head);
    let range = shard::byte_range(&mut file, len, data_start, Records::Csv, opts.shard).map_err(in_io)?;
    file.seek(SeekFrom::Start(range.start)).map_err(in_io)?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .buffer_capacity(1 << 20)
        .from_reader(file.take(range.end - range.start));
    let at = Locator { shard: opts.shard, start: range.start };

    let cols = feature_columns(model, &csv::StringRecord::from_byte_record_lossy(headers.clone()))?;
    let (atomic, out_file) = AtomicOutput::create(output)?;
    let sink = Hashing { inner: out_file, hasher: Sha256::new(), bytes: 0 };
    let mut writer = csv::WriterBuilder::new().buffer_capacity(1 << 20).from_writer(sink);
    let mut out_headers = headers.clone();
    out_headers.push_field(b"prediction");
    writer.write_byte_record(&out_headers).map_err(out_err)?;

    let n = cols.len();
    let start = Instant::now();
    let progress = Progress::new();
    let mut chunk: Vec<csv::ByteRecord> = Vec::with_capacity(chunk_rows);
    let mut values = Vec::with_capacity(chunk_rows * n);
    let mut rows = 0u64;
    let mut record = csv::ByteRecord::new();
    let mut text = String::new();
    loop {
        let more = reader.read_byte_record(&mut record).map_err(in_err)?;
        if more {
            for &c in &cols {
                let field = record.get(c).unwrap_or_default();
                let v = fast_float(field).ok_or_else(|| {
                    BatchError::Input(format!(
                        "{}: column {} is not a finite number: {:?}",
                        at.row(rows + chunk.len() as u64, record.position().map(|p| p.byte())),
                        c + 1,
                        String::from_utf8_lossy(field)
                    ))
                })?;
                values.push(v);
            }
            chunk.push(record.clone());
        }
        if chunk.len() == chunk_rows || (!more && !chunk.is_empty()) {
            let x = Array2::from_shape_vec((chunk.len(), n), std::mem::take(&mut values))
                .map_err(|e| BatchError::Input(e.to_string()))?;
            let predictions = predict_split(model, x.view(), threads).map_err(|(first, e)| {
                let from = at.row(rows + first as u64, chunk[first].position().map(|p| p.byte()));
                BatchError::Input(format!("{from} and the {} rows after it: {e}", chunk.len() - first - 1))
            })?;
            for (i, rec) in chunk.iter_mut().enumerate() {
                use std::fmt::Write;
                text.clear();
                let _ = match (&predictions, labels) {
                    (Predictions::Classes(c), Some(labels)) => match labels.get(c[i]) {
                        Some(label) => write!(text, "{label}"),
                        None => write!(text, "{}", c[i]),
                    },
                    (Predictions::Classes(c), None) => write!(text, "{}", c[i]),
                    (Predictions::Values(v), _) => write!(text, "{}", v[i]),
                };
                rec.push_field(text.as_bytes());
                writer.write_byte_record(rec).map_err(out_err)?;
            }
            rows += chunk.len() as u64;
            chunk.clear();
            values = x.into_raw_vec_and_offset().0;
            values.clear();
            progress.tick(rows, start);
        }
        if !more {
            break;
        }
    }
    let sink = writer
        .into_inner()
        .map_err(|e| BatchError::Io { path: output.display().to_string(), source: e.into_error() })?;
    let sha256 = hex::encode(sink.hasher.finalize());
    atomic.commit(sink.inner)?;
    progress.done(rows, start);
    Ok(BatchReport {
        rows,
        seconds: start.elapsed().as_secs_f64(),
        peak_rss_mib: peak_rss_mib(),
        output: output.to_path_buf(),
        bytes: sink.bytes,
        sha256,
    })
}

fn fast_float(field: &[u8]) -> Option<f64> {
    let s = std::str::from_utf8(field).ok()?.trim();
    s.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// Progress on a terminal (a rewritten line), or a log line every few seconds elsewhere.
struct Progress {
    tty: bool,
    last: std::cell::Cell<Instant>,
}

impl Progress {
    fn new() -> Self {
        Self { tty: std::io::stderr().is_terminal(), last: std::cell::Cell::new(Instant::now()) }
    }

    fn tick(&self, rows: u64, start: Instant) {
        let every = if self.tty { Duration::from_millis(250) } else { Duration::from_secs(5) };
        if self.last.get().elapsed() < every {
            return;
        }
        self.last.set(Instant::now());
        let rate = rows as f64 / start.elapsed().as_secs_f64().max(1e-9);
        if self.tty {
            eprint!("\r{rows} rows scored, {rate:.0} rows/s   ");
        } else {
            tracing::info!(rows, rows_per_second = rate as u64, "batch progress");
        }
    }

    fn done(&self, rows: u64, start: Instant) {
        if self.tty {
            let rate = rows as f64 / start.elapsed().as_secs_f64().max(1e-9);
            eprintln!("\r{rows} rows scored, {rate:.0} rows/s   ");
        }
    }
}
