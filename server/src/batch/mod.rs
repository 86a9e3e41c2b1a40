//! Batch scoring of CSV and JSON lines files with bounded memory (what `modelship-server batch`
//! and batch Jobs run).
//!
//! Rows stream through in chunks of `chunk_rows` ([`read`] to [`write`]): memory is one chunk,
//! whatever the file size.
//! Each chunk is scored on `threads` threads, a slice of its rows each; the `prediction` column is
//! what `/predict` answers (a scikit-learn classifier's labels themselves).

pub mod format;
pub mod inputs;
pub mod read;
pub mod write;

use std::fmt;
use std::io::{self, IsTerminal};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ndarray::{Array2, ArrayView2, Axis};

pub use format::Format;
pub use write::AtomicOutput;

use crate::model::{InputError, Model, Predictions};
use crate::shard::Shard;

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("{path}: {source}")]
    Csv { path: String, source: csv::Error },
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("{0}")]
    Input(String),
}

impl BatchError {
    /// The error, saying which input file it is about (I/O and CSV errors name it already).
    fn in_file(self, file: &Path) -> Self {
        match self {
            Self::Input(m) => Self::Input(format!("{}: {m}", file.display())),
            other => other,
        }
    }
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

/// How a batch run goes.
#[derive(Debug, Clone)]
pub struct BatchOptions {
    /// Rows read, scored and written at a time.
    pub chunk_rows: usize,
    /// Threads scoring a chunk (0: as many as this process may use, cgroup CPU limits included).
    pub threads: usize,
    /// The part of the input this run scores: the records that start in its share of the bytes.
    pub shard: Shard,
    /// The input's format (`None`: from its extension).
    pub input_format: Option<Format>,
    /// The output's format (`None`: from its extension, else the input's).
    pub output_format: Option<Format>,
    /// The input columns carried to the output, in order (`None`: all of them).
    pub keep_columns: Option<Vec<String>>,
    /// Add a `probability_CLASS` column per class.
    pub probabilities: bool,
}

impl Default for BatchOptions {
    fn default() -> Self {
        Self {
            chunk_rows: 8192,
            threads: 0,
            shard: Shard::WHOLE,
            input_format: None,
            output_format: None,
            keep_columns: None,
            probabilities: false,
        }
    }
}

impl BatchOptions {
    /// An input file's format: as given, else from its extension.
    pub fn input_format(&self, file: &Path) -> Result<Format, BatchError> {
        Format::resolve(self.input_format, file, "input").map_err(BatchError::Input)
    }

    /// The output's format: as given, else from the output's extension, else the first input
    /// file's (also when there is no output file name yet).
    pub fn output_format(&self, files: &[PathBuf], output: Option<&Path>) -> Result<Format, BatchError> {
        match (self.output_format.or_else(|| output.and_then(Format::from_path)), files.first()) {
            (Some(f), _) => Ok(f),
            (None, Some(first)) => self.input_format(first),
            (None, None) => Err(BatchError::Input("no input files".into())),
        }
    }
}

/// Fewer rows than this per thread are scored on the calling thread.
const MIN_ROWS_PER_THREAD: usize = 256;

/// A chunk's predictions, and its class probabilities when asked for.
type Scores = (Predictions, Option<Array2<f64>>);

/// Predictions (and, when asked, class probabilities) for `x`, on up to `threads` threads, a
/// contiguous slice of rows each, in row order. A failure names the first row of its slice.
fn score_split(
    model: &Model,
    x: ArrayView2<'_, f64>,
    threads: usize,
    probabilities: bool,
) -> Result<Scores, (usize, InputError)> {
    let score = |part: ArrayView2<'_, f64>| -> Result<_, InputError> {
        let p = model.predict(part)?;
        let proba = if probabilities { Some(model.predict_proba(part)?) } else { None };
        Ok((p, proba))
    };
    let per = x.nrows().div_ceil(threads.max(1)).max(MIN_ROWS_PER_THREAD);
    if per >= x.nrows() {
        return score(x).map_err(|e| (0, e));
    }
    let parts: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = x.axis_chunks_iter(Axis(0), per).map(|part| s.spawn(move || score(part))).collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))).collect()
    });
    let mut out: Option<Predictions> = None;
    let mut probas = Vec::new();
    for (k, part) in parts.into_iter().enumerate() {
        let (part, proba) = part.map_err(|e| (k * per, e))?;
        probas.extend(proba);
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
    let views: Vec<_> = probas.iter().map(|p| p.view()).collect();
    let proba = match probabilities {
        true => Some(ndarray::concatenate(Axis(0), &views).map_err(|e| (0, InputError::Run(e.to_string())))?),
        false => None,
    };
    Ok((out.ok_or((0, InputError::Empty))?, proba))
}

/// The output's columns: the kept input columns (indices into the input's), then `prediction`,
/// then `probability_CLASS` per class when asked. `keep` names the input columns to carry
/// through, in order; all of them when `None`.
fn output_columns(
    model: &Model,
    input: &[String],
    keep: Option<&[String]>,
    probabilities: bool,
) -> Result<(Vec<usize>, Vec<String>), BatchError> {
    let kept: Vec<usize> = match keep {
        None => (0..input.len()).collect(),
        Some(names) => names
            .iter()
            .map(|n| {
                input.iter().position(|c| c == n).ok_or_else(|| {
                    BatchError::Input(format!(
                        "--keep-columns names {n:?}, which the input lacks (its columns: {input:?})"
                    ))
                })
            })
            .collect::<Result<_, _>>()?,
    };
    let mut names: Vec<String> = kept.iter().map(|&c| input[c].clone()).collect();
    names.push(PREDICTION.to_string());
    if probabilities {
        if !model.artifact.estimator.has_proba() {
            return Err(BatchError::Input(InputError::NoProbabilities(model.algorithm()).to_string()));
        }
        names.extend(model.class_names().iter().map(|c| format!("probability_{c}")));
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(dup) = names.iter().find(|n| !seen.insert(n.as_str())) {
        return Err(BatchError::Input(format!(
            "the output would have two columns named {dup:?}: the input has one already; choose the columns to keep with --keep-columns"
        )));
    }
    Ok((kept, names))
}

/// The prediction's column in the output.
pub const PREDICTION: &str = "prediction";

/// Scores `files` (the listing of [`inputs::list`]; this shard's share of them, all by default)
/// into `output`: the kept input columns, then `prediction` (and the class probabilities when
/// asked), in the output format. The output's columns come from the first file of the listing,
/// so every shard writes the same ones.
pub fn score(model: &Model, files: &[PathBuf], output: &Path, opts: &BatchOptions) -> Result<BatchReport, BatchError> {
    let out_format = opts.output_format(files, Some(output))?;
    let chunk_rows = opts.chunk_rows.max(1);
    let threads = match opts.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let several = files.len() > 1;
    let about = |file| naming(several, file);
    let first = files.first().ok_or_else(|| BatchError::Input("no input files".into()))?;
    let columns =
        read::open(model, first, opts.input_format(first)?, Shard::WHOLE).map_err(about(first))?.columns().to_vec();
    let (kept, names) = output_columns(model, &columns, opts.keep_columns.as_deref(), opts.probabilities)?;
    let mine = inputs::share(files, opts.shard)?;
    let (atomic, file) = AtomicOutput::create(output)?;
    let mut sink = write::create(out_format, file, output, &names)?;

    let labels = model.labels();
    let n = model.n_features();
    let start = Instant::now();
    let progress = Progress::new();
    let mut values = Vec::with_capacity(chunk_rows * n);
    let mut rows = 0u64;
    for (path, shard) in &mine {
        let about = about(path);
        let mut source = read::open(model, path, opts.input_format(path)?, *shard).map_err(about)?;
        let kept = match several {
            true => same_columns(source.columns(), &columns, &kept, opts.keep_columns.is_none()).map_err(about)?,
            false => kept.clone(),
        };
        loop {
            values.clear();
            let read = source.read(chunk_rows, &mut values).map_err(about)?;
            if read == 0 {
                break;
            }
            let x = ArrayView2::from_shape((read, n), &values).map_err(|e| BatchError::Input(e.to_string()))?;
            let (predictions, probabilities) =
                score_split(model, x, threads, opts.probabilities).map_err(|(first, e)| {
                    let at = source.locate(first);
                    about(BatchError::Input(format!("{at} and the {} rows after it: {e}", read - first - 1)))
                })?;
            let chunk = write::Scored {
                source: source.as_ref(),
                kept: &kept,
                predictions: &predictions,
                labels,
                probabilities: probabilities.as_ref(),
            };
            sink.write(&chunk)?;
            rows += read as u64;
            progress.tick(rows, start);
        }
    }
    let written = sink.finish()?;
    atomic.commit(written.file)?;
    progress.done(rows, start);
    Ok(BatchReport {
        rows,
        seconds: start.elapsed().as_secs_f64(),
        peak_rss_mib: peak_rss_mib(),
        output: output.to_path_buf(),
        bytes: written.bytes,
        sha256: written.sha256,
    })
}

/// Errors about `file`, naming it when there are `several` input files.
fn naming(several: bool, file: &Path) -> impl Fn(BatchError) -> BatchError + Copy + '_ {
    move |e: BatchError| if several { e.in_file(file) } else { e }
}

/// The kept columns in a later file of the listing: the first file's `kept` (indices into
/// `first`), found by name. When every column is kept, the file must have the same columns.
fn same_columns(columns: &[String], first: &[String], kept: &[usize], all: bool) -> Result<Vec<usize>, BatchError> {
    if all && columns != first {
        return Err(BatchError::Input(format!(
            "its columns {columns:?} are not the first file's {first:?}: name the columns to keep"
        )));
    }
    kept.iter()
        .map(|&c| {
            columns.iter().position(|name| *name == first[c]).ok_or_else(|| {
                BatchError::Input(format!(
                    "it has no column {:?}, which the first file has and the output keeps",
                    first[c]
                ))
            })
        })
        .collect()
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
