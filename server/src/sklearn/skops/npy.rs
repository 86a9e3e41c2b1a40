//! numpy's `.npy` format, as `np.save(..., allow_pickle=False)` writes it: a magic string, a
//! version, a Python-literal header `{'descr': .., 'fortran_order': .., 'shape': (..)}`, then
//! the raw elements. Shape × item size is checked against the bytes present and the cap before
//! anything is allocated ([`Array::from_raw`]).

use crate::sklearn::numpy::{Array, Dtype, Field, Kind};

const MAGIC: &[u8] = b"\x93NUMPY";

/// Nesting of the header literal (a record descr is a list of tuples: depth 3).
const MAX_DEPTH: usize = 4;

/// Parses one `.npy` file into an array of at most `max_bytes` bytes of elements.
pub fn parse(bytes: &[u8], max_bytes: usize) -> Result<Array, String> {
    let rest = bytes.strip_prefix(MAGIC).ok_or("not a .npy file (no \\x93NUMPY magic)")?;
    let (len, start) = match rest {
        [1, _, a, b, ..] => (usize::from(u16::from_le_bytes([*a, *b])), MAGIC.len() + 4),
        [2 | 3, _, a, b, c, d, ..] => (u32::from_le_bytes([*a, *b, *c, *d]) as usize, MAGIC.len() + 6),
        [v, ..] => return Err(format!(".npy format version {v} is not supported")),
        [] => return Err("truncated .npy header".into()),
    };
    let header = start.checked_add(len).and_then(|end| bytes.get(start..end)).ok_or("truncated .npy header")?;
    let data = &bytes[start + len..];
    let mut p = Literal { s: header, i: 0 };
    let Lit::Dict(items) = p.value(0)? else {
        return Err(".npy header is not a dict".into());
    };
    let get = |key: &str| items.iter().find(|(k, _)| matches!(k, Lit::Str(s) if s == key)).map(|(_, v)| v);
    let dtype = descr(get("descr").ok_or(".npy header has no descr")?)?;
    let fortran = match get("fortran_order") {
        Some(Lit::Bool(b)) => *b,
        _ => return Err(".npy header: fortran_order must be True or False".into()),
    };
    let shape = match get("shape") {
        Some(Lit::Seq(dims)) => dims
            .iter()
            .map(|d| match d {
                Lit::Int(n) => usize::try_from(*n).map_err(|_| format!("array dimension {n} is out of range")),
                _ => Err(".npy header: shape must hold integers".to_string()),
            })
            .collect::<Result<Vec<_>, _>>()?,
        _ => return Err(".npy header: shape must be a tuple".into()),
    };
    Array::from_raw(dtype, shape, data, fortran, max_bytes)
}

/// A dtype from its descr: a type string (`<f8`), or a record's list of `(name, type)` fields
/// laid out one after another (numpy names padding `''`).
fn descr(d: &Lit) -> Result<Dtype, String> {
    match d {
        Lit::Str(s) => {
            let t = Dtype::parse(s)?;
            if t.kind == Kind::Object {
                return Err("object arrays cannot be stored in a .npy file without pickle".into());
            }
            Ok(t)
        }
        Lit::Seq(fields) => {
            let mut record = Dtype::simple(Kind::Record, 0);
            for f in fields {
                let Lit::Seq(spec) = f else {
                    return Err("record fields must be (name, type) tuples".into());
                };
                let (name, ty) = match spec.as_slice() {
                    [Lit::Str(name), Lit::Str(ty)] => (name, Dtype::parse(ty)?),
                    _ => return Err("record fields must be (name, type) pairs (no titles or sub-arrays)".into()),
                };
                let simple = matches!(ty.kind, Kind::Bool | Kind::Int | Kind::UInt | Kind::Float);
                let padding = name.is_empty() && ty.kind == Kind::Record;
                if !(simple || padding) {
                    return Err(format!("record field {name:?} has an unsupported type"));
                }
                let size = ty.itemsize;
                if !name.is_empty() {
                    record.fields.push(Field { name: name.clone(), dtype: ty, offset: record.itemsize });
                }
                record.itemsize = record.itemsize.checked_add(size).ok_or("record too large")?;
            }
            Ok(record)
        }
        _ => Err(".npy header: descr must be a string or a list of fields".into()),
    }
}

/// The Python literals a `.npy` header uses.
#[derive(Debug, PartialEq)]
enum Lit {
    Str(String),
    Int(i64),
    Bool(bool),
    None,
    /// A tuple or a list.
    Seq(Vec<Lit>),
    Dict(Vec<(Lit, Lit)>),
}

/// A small recursive-descent reader of those literals.
struct Literal<'a> {
    s: &'a [u8],
    i: usize,
}

impl Literal<'_> {
    fn skip_space(&mut self) {
        while self.s.get(self.i).is_some_and(|b| b.is_ascii_whitespace()) {
            self.i += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_space();
        self.s.get(self.i).copied()
    }

    fn value(&mut self, depth: usize) -> Result<Lit, String> {
        if depth > MAX_DEPTH {
            return Err(".npy header nests too deeply".into());
        }
        let at = self.i;
        match self.peek().ok_or("truncated .npy header")? {
            q @ (b'\'' | b'"') => self.string(q),
            b'(' => self.items(b')', depth).map(Lit::Seq),
            b'[' => self.items(b']', depth).map(Lit::Seq),
            b'{' => {
                self.i += 1;
                let mut out = Vec::new();
                while self.peek() != Some(b'}') {
                    let k = self.value(depth + 1)?;
                    if self.peek() != Some(b':') {
                        return Err(format!(".npy header: expected ':' at byte {}", self.i));
                    }
                    self.i += 1;
                    out.push((k, self.value(depth + 1)?));
                    if !self.comma(b'}')? {
                        break;
                    }
                }
                self.i += 1;
                Ok(Lit::Dict(out))
            }
            _ => {
                let start = self.i;
                while self.s.get(self.i).is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'-') {
                    self.i += 1;
                }
                let word = std::str::from_utf8(&self.s[start..self.i]).unwrap_or_default();
                match word {
                    "True" => Ok(Lit::Bool(true)),
                    "False" => Ok(Lit::Bool(false)),
                    "None" => Ok(Lit::None),
                    // Python 2 wrote long integers with an L suffix.
                    w => w
                        .strip_suffix('L')
                        .unwrap_or(w)
                        .parse()
                        .map(Lit::Int)
                        .map_err(|_| format!(".npy header: unexpected {w:?} at byte {at}")),
                }
            }
        }
    }

    /// Elements up to `close`; after a comma or before the closing bracket.
    fn items(&mut self, close: u8, depth: usize) -> Result<Vec<Lit>, String> {
        self.i += 1;
        let mut out = Vec::new();
        while self.peek() != Some(close) {
            out.push(self.value(depth + 1)?);
            if !self.comma(close)? {
                break;
            }
        }
        self.i += 1;
        Ok(out)
    }

    /// After an element: true if a comma follows, false at `close`, an error otherwise.
    fn comma(&mut self, close: u8) -> Result<bool, String> {
        match self.peek() {
            Some(b',') => {
                self.i += 1;
                Ok(true)
            }
            Some(c) if c == close => Ok(false),
            _ => Err(format!(".npy header: expected ',' or '{}' at byte {}", close as char, self.i)),
        }
    }

    fn string(&mut self, quote: u8) -> Result<Lit, String> {
        let start = self.i + 1;
        let len = self.s[start..].iter().position(|&b| b == quote || b == b'\\').ok_or("unterminated string")?;
        if self.s[start + len] == b'\\' {
            return Err(".npy header: escaped strings are not supported".into());
        }
        self.i = start + len + 1;
        String::from_utf8(self.s[start..start + len].to_vec())
            .map(Lit::Str)
            .map_err(|_| ".npy header: string is not UTF-8".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(header: &str, data: &[u8]) -> Vec<u8> {
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(&[1, 0]);
        b.extend_from_slice(&(header.len() as u16).to_le_bytes());
        b.extend_from_slice(header.as_bytes());
        b.extend_from_slice(data);
        b
    }

    #[test]
    fn reads_plain_and_record_arrays() {
        let a = parse(&npy("{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }\n", &[0; 16]), 100).unwrap();
        assert_eq!((a.shape.clone(), a.to_f64().unwrap()), (vec![2], vec![0.0, 0.0]));
        let h = "{'descr': [('left', '<i8'), ('t', '<f8'), ('m', '|u1'), ('', '|V7')], 'fortran_order': False, 'shape': (1,), }";
        let mut rec = 3i64.to_le_bytes().to_vec();
        rec.extend_from_slice(&1.5f64.to_le_bytes());
        rec.extend_from_slice(&[1; 8]);
        let a = parse(&npy(h, &rec), 100).unwrap();
        assert_eq!(a.dtype.itemsize, 24);
        assert_eq!(a.field_i64("left").unwrap(), vec![3]);
        assert_eq!(a.field_f64("t").unwrap(), vec![1.5]);
        assert_eq!(a.field_i64("m").unwrap(), vec![1]);
    }

    #[test]
    fn refuses_bad_headers_and_sizes() {
        let huge = npy("{'descr': '<f8', 'fortran_order': False, 'shape': (1000000000000,), }", &[]);
        assert!(parse(&huge, 1 << 30).unwrap_err().contains("exceeds the limit"));
        let short = npy("{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }", &[0; 8]);
        assert!(parse(&short, 100).unwrap_err().contains("needs 24 bytes, the file has 8"));
        let obj = npy("{'descr': '|O', 'fortran_order': False, 'shape': (1,), }", &[0; 8]);
        assert!(parse(&obj, 100).is_err());
        let deep = npy("{'descr': [[[[[[('a', '<f8')]]]]]], 'fortran_order': False, 'shape': (), }", &[]);
        assert!(parse(&deep, 100).unwrap_err().contains("deeply"));
        assert!(parse(b"\x93NUMPY\x01\x00\xff\xff{", 100).unwrap_err().contains("truncated"));
        assert!(parse(b"PK\x03\x04", 100).is_err());
    }
}
