//! Batch scoring of CSV files with bounded memory (what `modelship-server batch` and batch Jobs run).
//!
//! Rows stream through in chunks of `chunk_rows`: memory is one chunk, whatever the file size.
//! Each chunk is scored on `threads` threads, a slice of its rows each; the `prediction` column is
//! what `/predict` answers (a scikit-learn classifier's labels themselves).

use std::fmt;
use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};

use ndarray::{Array2, ArrayView2, Axis};

use crate::model::{InputError, Model, Predictions};

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("{path}: {source}")]
    Csv { path: String, source: csv::Error },
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
}

impl Default for BatchOptions {
    fn default() -> Self {
        Self { chunk_rows: 8192, threads: 0 }
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

/// Scores `input` into `output`: every input column, then `prediction`.
pub fn score_csv(model: &Model, input: &Path, output: &Path, opts: BatchOptions) -> Result<BatchReport, BatchError> {
    let in_err = |source| BatchError::Csv { path: input.display().to_string(), source };
    let out_err = |source| BatchError::Csv { path: output.display().to_string(), source };
    let chunk_rows = opts.chunk_rows.max(1);
    let threads = match opts.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let labels = model.labels();
    let mut reader = csv::ReaderBuilder::new().buffer_capacity(1 << 20).from_path(input).map_err(in_err)?;
    let mut writer = csv::WriterBuilder::new().buffer_capacity(1 << 20).from_path(output).map_err(out_err)?;
    let headers = reader.byte_headers().map_err(in_err)?.clone();
    let cols = feature_columns(model, &csv::StringRecord::from_byte_record_lossy(headers.clone()))?;
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
                        "row {}: column {} is not a finite number: {:?}",
                        rows + chunk.len() as u64 + 2,
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
                // CSV line numbers: the header is line 1.
                let from = rows + 2 + first as u64;
                BatchError::Input(format!("rows {from}-{}: {e}", rows + 1 + chunk.len() as u64))
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
    writer.flush().map_err(|e| BatchError::Input(format!("{}: {e}", output.display())))?;
    progress.done(rows, start);
    Ok(BatchReport { rows, seconds: start.elapsed().as_secs_f64(), peak_rss_mib: peak_rss_mib() })
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
