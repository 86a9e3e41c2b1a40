//! The file formats batch scoring reads and writes, and the cell values that pass between them.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use crate::shard::Records;
use crate::sklearn::Label;

/// A batch input or output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// RFC 4180 CSV with a header row.
    Csv,
    /// One JSON object per line, keyed by column name.
    JsonLines,
}

impl Format {
    pub const ALL: [Format; 2] = [Format::Csv, Format::JsonLines];

    /// The format a file's extension names: `.csv`, or `.jsonl` / `.ndjson`.
    pub fn from_path(path: &Path) -> Option<Self> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "csv" => Some(Self::Csv),
            "jsonl" | "ndjson" => Some(Self::JsonLines),
            _ => None,
        }
    }

    /// The format given, else the one `path`'s extension names, else an error naming both ways.
    pub fn resolve(given: Option<Self>, path: &Path, what: &str) -> Result<Self, String> {
        given.or_else(|| Self::from_path(path)).ok_or_else(|| {
            format!(
                "cannot tell the {what} format of {}: name it with an extension (.csv, .jsonl, .ndjson) or give the format ({})",
                path.display(),
                Self::names()
            )
        })
    }

    /// The extension its files get (`part-00000-of-00002.jsonl`).
    pub fn extension(self) -> &'static str {
        match self {
            Self::Csv => "csv",
            Self::JsonLines => "jsonl",
        }
    }

    /// How its records are delimited, for cutting a file into shards.
    pub fn records(self) -> Records {
        match self {
            Self::Csv => Records::Csv,
            Self::JsonLines => Records::JsonLines,
        }
    }

    fn names() -> String {
        Self::ALL.iter().map(|f| f.to_string()).collect::<Vec<_>>().join(", ")
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Csv => "csv",
            Self::JsonLines => "jsonl",
        })
    }
}

impl FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "csv" => Ok(Self::Csv),
            "jsonl" | "jsonlines" | "json-lines" | "ndjson" => Ok(Self::JsonLines),
            other => Err(format!("unknown format {other:?} (known: {})", Self::names())),
        }
    }
}

/// One value of an input column carried to the output, or of a prediction, as its source had it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cell<'a> {
    Null,
    /// Untyped text, as CSV holds every value.
    Text(&'a [u8]),
    Str(&'a str),
    Int(i64),
    UInt(u64),
    Float(f64),
    Bool(bool),
    /// A JSON array or object.
    Json(&'a serde_json::Value),
}

impl<'a> Cell<'a> {
    pub fn from_json(v: &'a serde_json::Value) -> Self {
        use serde_json::Value;
        match v {
            Value::Null => Self::Null,
            Value::Bool(b) => Self::Bool(*b),
            Value::Number(n) => match (n.as_i64(), n.as_u64()) {
                (Some(i), _) => Self::Int(i),
                (None, Some(u)) => Self::UInt(u),
                _ => Self::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            Value::String(s) => Self::Str(s),
            other => Self::Json(other),
        }
    }

    pub fn from_label(label: &'a Label) -> Self {
        match label {
            Label::Int(i) => Self::Int(*i),
            Label::Float(x) => Self::Float(*x),
            Label::Bool(b) => Self::Bool(*b),
            Label::Str(s) => Self::Str(s),
        }
    }

    /// Its text in a CSV field (booleans as pandas writes them, `True`/`False`; null as empty).
    pub fn write_text(&self, out: &mut Vec<u8>) {
        use std::io::Write;
        let _ = match self {
            Self::Null => Ok(()),
            Self::Text(t) => out.write_all(t),
            Self::Str(s) => out.write_all(s.as_bytes()),
            Self::Int(i) => write!(out, "{i}"),
            Self::UInt(u) => write!(out, "{u}"),
            Self::Float(x) => write!(out, "{x}"),
            Self::Bool(b) => out.write_all(if *b { b"True" } else { b"False" }),
            Self::Json(v) => serde_json::to_writer(&mut *out, v).map_err(std::io::Error::other),
        };
    }

    /// Its JSON text (CSV text as a number when it is written as a JSON number, else as a
    /// string; a non-finite float as null, which JSON lacks).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        use std::io::Write;
        let _ = match self {
            Self::Null => out.write_all(b"null").map_err(serde_json::Error::io),
            // CSV text that is a JSON number is one (as pandas reads it); other text is a string.
            Self::Text(t) if is_json_number(t) => out.write_all(t).map_err(serde_json::Error::io),
            Self::Text(t) => serde_json::to_writer(&mut *out, &String::from_utf8_lossy(t)),
            Self::Str(s) => serde_json::to_writer(&mut *out, s),
            Self::Int(i) => serde_json::to_writer(&mut *out, i),
            Self::UInt(u) => serde_json::to_writer(&mut *out, u),
            Self::Float(x) if x.is_finite() => serde_json::to_writer(&mut *out, x),
            Self::Float(_) => out.write_all(b"null").map_err(serde_json::Error::io),
            Self::Bool(b) => serde_json::to_writer(&mut *out, b),
            Self::Json(v) => serde_json::to_writer(&mut *out, v),
        };
    }
}

/// Whether `t` is a number in JSON's grammar: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
/// (so `007`, `+1`, `.5`, `1.` and `NaN` are not, and stay strings).
fn is_json_number(t: &[u8]) -> bool {
    let digits = |t: &[u8], from: usize| from + t[from..].iter().take_while(|b| b.is_ascii_digit()).count();
    let mut i = usize::from(t.first() == Some(&b'-'));
    match t.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => i = digits(t, i),
        _ => return false,
    }
    if t.get(i) == Some(&b'.') {
        let end = digits(t, i + 1);
        if end == i + 1 {
            return false;
        }
        i = end;
    }
    if matches!(t.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(t.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let end = digits(t, i);
        if end == i {
            return false;
        }
        i = end;
    }
    i == t.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_come_from_the_extension_or_the_name_given() {
        assert_eq!(Format::from_path(Path::new("a/b.CSV")), Some(Format::Csv));
        assert_eq!(Format::from_path(Path::new("b.ndjson")), Some(Format::JsonLines));
        assert_eq!(Format::from_path(Path::new("b.txt")), None);
        assert_eq!(Format::resolve(Some(Format::Csv), Path::new("b.txt"), "input"), Ok(Format::Csv));
        let e = Format::resolve(None, Path::new("b.txt"), "input").unwrap_err();
        assert!(e.contains("input format of b.txt") && e.contains("csv, jsonl"), "{e}");
        assert_eq!("JSONL".parse::<Format>(), Ok(Format::JsonLines));
        assert!("parquet2".parse::<Format>().unwrap_err().contains("unknown format \"parquet2\""));
        for f in Format::ALL {
            assert_eq!(f.to_string().parse::<Format>(), Ok(f));
            assert_eq!(Format::from_path(Path::new(&format!("x.{}", f.extension()))), Some(f));
        }
    }

    #[test]
    fn cells_keep_their_type_from_json_to_json_and_read_as_pandas_writes_them_in_csv() {
        let v: serde_json::Value = serde_json::json!([null, true, -3, 18446744073709551615u64, 2.5, "x", {"a": 1}]);
        let cells: Vec<Cell> = v.as_array().unwrap().iter().map(Cell::from_json).collect();
        let written = |c: &Cell, json: bool| {
            let mut out = Vec::new();
            if json {
                c.write_json(&mut out)
            } else {
                c.write_text(&mut out)
            }
            String::from_utf8(out).unwrap()
        };
        let back = format!("[{}]", cells.iter().map(|c| written(c, true)).collect::<Vec<_>>().join(","));
        assert_eq!(serde_json::from_str::<serde_json::Value>(&back).unwrap(), v);
        let text: Vec<String> = cells.iter().map(|c| written(c, false)).collect();
        assert_eq!(text, ["", "True", "-3", "18446744073709551615", "2.5", "x", r#"{"a":1}"#]);
        assert_eq!(written(&Cell::Float(f64::NAN), true), "null");
        for number in ["0", "-0", "4.54", "12345", "1e5", "-2.5E-3", "0.0"] {
            assert_eq!(written(&Cell::Text(number.as_bytes()), true), number);
        }
        for text in ["007", "+1", ".5", "1.", "1e", "NaN", "inf", "", "-", "1,5", " 1", "0x1f", "1e+"] {
            assert_eq!(written(&Cell::Text(text.as_bytes()), true), serde_json::json!(text).to_string(), "{text:?}");
        }
        assert_eq!(written(&Cell::Text(b"0\"07"), true), r#""0\"07""#);
    }
}
