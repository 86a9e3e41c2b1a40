//! Reading a batch input a chunk at a time: its share of records (a shard's byte range), each
//! record's features in the model's order, and its other columns kept for the output.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Take};
use std::path::Path;

use super::BatchError;
use super::format::{Cell, Format};
use crate::model::Model;
use crate::shard::{self, Shard};

/// A batch input being read, one chunk of records at a time.
pub trait Source {
    /// The input's columns: the CSV header, or the keys of a JSON lines file's first record.
    fn columns(&self) -> &[String];
    /// Reads up to `max` records, appending each one's features (model order) to `values`;
    /// returns how many it read, 0 at the end. The cells of the last chunk read stay available.
    fn read(&mut self, max: usize, values: &mut Vec<f64>) -> Result<usize, BatchError>;
    /// Column `col` of record `row` of the last chunk.
    fn cell(&self, row: usize, col: usize) -> Cell<'_>;
    /// Where record `row` of the last chunk is in the input, for messages.
    fn locate(&self, row: usize) -> String;
}

/// Opens `input` (its share `shard`) as `format`, for `model`.
pub fn open(model: &Model, input: &Path, format: Format, shard: Shard) -> Result<Box<dyn Source>, BatchError> {
    let io = |source| BatchError::Io { path: input.display().to_string(), source };
    let mut file = File::open(input).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    let features = Features::of(model);
    match format {
        Format::Csv => {
            let csv_err = |source| BatchError::Csv { path: input.display().to_string(), source };
            // The header from the file's start, then only this shard's byte range of records.
            let mut head = csv::ReaderBuilder::new().from_reader(BufReader::new(&mut file));
            let header = head.byte_headers().map_err(csv_err)?.clone();
            let data_start = head.position().byte();
            drop(head);
            let columns: Vec<String> = header.iter().map(|h| String::from_utf8_lossy(h).into_owned()).collect();
            let cols = features.columns_in(&columns)?;
            let (range_start, body) = share(file, len, data_start, format, shard).map_err(io)?;
            let reader = csv::ReaderBuilder::new().has_headers(false).buffer_capacity(1 << 20).from_reader(body);
            let at = Locator { shard, start: range_start, first: 2, unit: "row" };
            Ok(Box::new(CsvSource {
                path: input.display().to_string(),
                reader,
                columns,
                cols,
                features,
                at,
                records: Vec::new(),
                len: 0,
                before: 0,
            }))
        }
        Format::JsonLines => {
            let mut first = String::new();
            BufReader::new(&mut file).read_line(&mut first).map_err(io)?;
            let columns = if first.trim().is_empty() {
                Vec::new()
            } else {
                keys_in_order(&first).map_err(|e| BatchError::Input(format!("{}: line 1: {e}", input.display())))?
            };
            let (range_start, body) = share(file, len, 0, format, shard).map_err(io)?;
            let at = Locator { shard, start: range_start, first: 1, unit: "line" };
            let reader = BufReader::with_capacity(1 << 20, body);
            Ok(Box::new(JsonSource {
                path: input.display().to_string(),
                reader,
                columns,
                features,
                at,
                records: Vec::new(),
                positions: Vec::new(),
                line: String::new(),
                offset: 0,
                before: 0,
            }))
        }
    }
}

/// The shard's byte range of records, and a reader of just those bytes.
fn share(
    mut file: File,
    len: u64,
    data_start: u64,
    format: Format,
    shard: Shard,
) -> std::io::Result<(u64, Take<File>)> {
    let range = shard::byte_range(&mut file, len, data_start, format.records(), shard)?;
    file.seek(SeekFrom::Start(range.start))?;
    Ok((range.start, file.take(range.end - range.start)))
}

/// The model's features: their names, and whether a missing value may go in as NaN.
struct Features {
    names: Vec<String>,
    missing_ok: bool,
}

impl Features {
    fn of(model: &Model) -> Self {
        Self { names: model.artifact.feature_names.clone(), missing_ok: model.handles_nan() }
    }

    /// Which input columns feed the model, in the model's feature order: by name, or all of
    /// them in order when the header names none of the features but has exactly as many columns.
    fn columns_in(&self, header: &[String]) -> Result<Vec<usize>, BatchError> {
        let by_name: Option<Vec<usize>> = self.names.iter().map(|n| header.iter().position(|h| h == n)).collect();
        match by_name {
            Some(cols) => Ok(cols),
            None if header.len() == self.names.len() => Ok((0..self.names.len()).collect()),
            None => Err(BatchError::Input(format!(
                "the input header {header:?} neither names every feature {:?} nor has exactly {} columns",
                self.names,
                self.names.len()
            ))),
        }
    }

    /// A missing value (an empty CSV field, a JSON null or absent key): NaN for a model that
    /// takes missing values, else an error.
    fn missing(&self) -> Option<f64> {
        self.missing_ok.then_some(f64::NAN)
    }
}

/// Where a record of the input is, for error messages: its row (CSV, the header being row 1) or
/// line (JSON lines) when the whole file is read from its start, else its place in the shard and
/// its byte offset in the file.
struct Locator {
    shard: Shard,
    start: u64,
    /// The row or line number of the first record of the file.
    first: u64,
    unit: &'static str,
}

impl Locator {
    fn at(&self, records_before: u64, reader_byte: Option<u64>) -> String {
        if self.shard == Shard::WHOLE {
            // A quoted newline makes this a record number, not a line.
            return format!("{} {}", self.unit, records_before + self.first);
        }
        let at = reader_byte.map(|b| format!(", byte {} of the file", self.start + b)).unwrap_or_default();
        format!("shard {} of {}: record {}{at}", self.shard.index, self.shard.count, records_before + 1)
    }
}

struct CsvSource {
    path: String,
    reader: csv::Reader<Take<File>>,
    columns: Vec<String>,
    /// The feature columns, in model order.
    cols: Vec<usize>,
    features: Features,
    at: Locator,
    /// Records of the chunk (reused, `len` of them current).
    records: Vec<csv::ByteRecord>,
    len: usize,
    /// Records before the chunk.
    before: u64,
}

impl Source for CsvSource {
    fn columns(&self) -> &[String] {
        &self.columns
    }

    fn read(&mut self, max: usize, values: &mut Vec<f64>) -> Result<usize, BatchError> {
        self.before += self.len as u64;
        self.len = 0;
        while self.len < max {
            if self.records.len() == self.len {
                self.records.push(csv::ByteRecord::new());
            }
            let record = &mut self.records[self.len];
            let more = self
                .reader
                .read_byte_record(record)
                .map_err(|source| BatchError::Csv { path: self.path.clone(), source })?;
            if !more {
                break;
            }
            for &c in &self.cols {
                let field = record.get(c).unwrap_or_default();
                let v = if field.iter().all(u8::is_ascii_whitespace) { self.features.missing() } else { number(field) };
                let v = v.ok_or_else(|| {
                    BatchError::Input(format!(
                        "{}: column {} is not a finite number: {:?}",
                        self.at.at(self.before + self.len as u64, record.position().map(|p| p.byte())),
                        c + 1,
                        String::from_utf8_lossy(field)
                    ))
                })?;
                values.push(v);
            }
            self.len += 1;
        }
        Ok(self.len)
    }

    fn cell(&self, row: usize, col: usize) -> Cell<'_> {
        self.records[row].get(col).map_or(Cell::Null, Cell::Text)
    }

    fn locate(&self, row: usize) -> String {
        self.at.at(self.before + row as u64, self.records[row].position().map(|p| p.byte()))
    }
}

fn number(field: &[u8]) -> Option<f64> {
    let s = std::str::from_utf8(field).ok()?.trim();
    s.parse::<f64>().ok().filter(|v| v.is_finite())
}

struct JsonSource {
    path: String,
    reader: BufReader<Take<File>>,
    columns: Vec<String>,
    features: Features,
    at: Locator,
    records: Vec<serde_json::Map<String, serde_json::Value>>,
    /// Each record's byte offset in the shard.
    positions: Vec<u64>,
    line: String,
    /// Bytes of the shard read so far.
    offset: u64,
    before: u64,
}

impl Source for JsonSource {
    fn columns(&self) -> &[String] {
        &self.columns
    }

    fn read(&mut self, max: usize, values: &mut Vec<f64>) -> Result<usize, BatchError> {
        self.before += self.records.len() as u64;
        self.records.clear();
        self.positions.clear();
        while self.records.len() < max {
            self.line.clear();
            let n = self
                .reader
                .read_line(&mut self.line)
                .map_err(|source| BatchError::Io { path: self.path.clone(), source })?;
            if n == 0 {
                break;
            }
            let position = self.offset;
            self.offset += n as u64;
            if self.line.trim().is_empty() {
                continue;
            }
            let here = || self.at.at(self.before + self.records.len() as u64, Some(position));
            let record: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&self.line)
                .map_err(|e| BatchError::Input(format!("{}: {}: not a JSON object: {e}", self.path, here())))?;
            for name in &self.features.names {
                let v = match record.get(name) {
                    None | Some(serde_json::Value::Null) => self.features.missing(),
                    Some(v) => v.as_f64().filter(|v| v.is_finite()),
                };
                let v = v.ok_or_else(|| {
                    BatchError::Input(format!(
                        "{}: feature {name:?} is not a finite number: {}",
                        here(),
                        record.get(name).map_or("missing".to_string(), |v| v.to_string())
                    ))
                })?;
                values.push(v);
            }
            self.records.push(record);
            self.positions.push(position);
        }
        Ok(self.records.len())
    }

    fn cell(&self, row: usize, col: usize) -> Cell<'_> {
        self.records[row].get(&self.columns[col]).map_or(Cell::Null, Cell::from_json)
    }

    fn locate(&self, row: usize) -> String {
        self.at.at(self.before + row as u64, Some(self.positions[row]))
    }
}

/// The keys of a JSON object in the order the text has them (serde_json's map sorts them).
fn keys_in_order(text: &str) -> Result<Vec<String>, String> {
    use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
    struct Keys;
    impl<'de> Visitor<'de> for Keys {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut keys: Vec<String> = Vec::new();
            while let Some(key) = map.next_key::<String>()? {
                map.next_value::<IgnoredAny>()?;
                if !keys.contains(&key) {
                    keys.push(key);
                }
            }
            Ok(keys)
        }
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let keys = de.deserialize_map(Keys).map_err(|e| format!("not a JSON object: {e}"))?;
    de.end().map_err(|e| format!("not one JSON object: {e}"))?;
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_keys_keep_the_order_of_the_text() {
        assert_eq!(keys_in_order(r#"{"z": 1, "a": {"b": 2}, "m": [3]}"#).unwrap(), ["z", "a", "m"]);
        assert!(keys_in_order("[1, 2]").unwrap_err().contains("not a JSON object"));
        assert!(keys_in_order(r#"{"a": 1} {"b": 2}"#).unwrap_err().contains("not one JSON object"));
    }
}
