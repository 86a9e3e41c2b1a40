//! numpy dtypes and arrays rebuilt from their pickled state, without numpy: a dtype string plus
//! `__setstate__` tuple becomes a [`Dtype`], raw bytes plus shape become an [`Array`].

use super::pickle::NodeId;

/// Kinds of element numpy arrays in scikit-learn models use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bool,
    Int,
    UInt,
    Float,
    /// Fixed-width UCS-4 text (`<U6`).
    Unicode,
    /// Fixed-width bytes (`S3`).
    Bytes,
    /// Python objects (`O`): the array holds pickled values.
    Object,
    /// A record of named fields (`V64` with fields), e.g. a tree's node array.
    Record,
}

/// A numpy dtype: element kind, size, byte order and, for records, the fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Dtype {
    pub kind: Kind,
    pub itemsize: usize,
    pub little_endian: bool,
    pub fields: Vec<Field>,
}

/// One named field of a record dtype.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub name: String,
    pub dtype: Dtype,
    pub offset: usize,
}

/// Elements of an array: raw bytes in C order, or pickled values for object arrays.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    Raw(Vec<u8>),
    Objects(Vec<NodeId>),
}

/// A numpy array, always stored in C (row-major) order.
#[derive(Debug, Clone, PartialEq)]
pub struct Array {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub data: Data,
}

impl Dtype {
    /// Parses the string numpy pickles a dtype with (`f8`, `<i8`, `U6`, `O8`, `V64`, `b1`).
    pub fn parse(s: &str) -> Result<Self, String> {
        let (little_endian, rest) = match s.as_bytes().first() {
            Some(b'<') | Some(b'|') | Some(b'=') => (true, &s[1..]),
            Some(b'>') => (false, &s[1..]),
            _ => (true, s),
        };
        let kind_char = rest.chars().next().ok_or_else(|| "empty dtype".to_string())?;
        let digits = &rest[kind_char.len_utf8()..];
        let n: usize =
            if digits.is_empty() { 0 } else { digits.parse().map_err(|_| format!("unsupported dtype {s:?}"))? };
        let (kind, itemsize) = match (kind_char, n) {
            ('b', 1) | ('?', 0) => (Kind::Bool, 1),
            ('i', 1 | 2 | 4 | 8) => (Kind::Int, n),
            ('u', 1 | 2 | 4 | 8) => (Kind::UInt, n),
            ('f', 4 | 8) => (Kind::Float, n),
            ('U', _) => (Kind::Unicode, n.checked_mul(4).ok_or("dtype too large")?),
            ('S', _) => (Kind::Bytes, n),
            ('O', 4 | 8) => (Kind::Object, n),
            ('V', _) => (Kind::Record, n),
            _ => return Err(format!("unsupported dtype {s:?}")),
        };
        Ok(Self { kind, itemsize, little_endian, fields: Vec::new() })
    }

    /// A plain numeric dtype of this kind and size (for fields and tests).
    pub fn simple(kind: Kind, itemsize: usize) -> Self {
        Self { kind, itemsize, little_endian: true, fields: Vec::new() }
    }

    /// The field called `name` of a record dtype.
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// Checks that every field lies inside the record.
    pub fn check_fields(&self) -> Result<(), String> {
        for f in &self.fields {
            let end = f.offset.checked_add(f.dtype.itemsize).ok_or("field offset overflows")?;
            if end > self.itemsize {
                return Err(format!("field {:?} lies outside its {}-byte record", f.name, self.itemsize));
            }
        }
        Ok(())
    }

    /// Reads one element as f64 (numeric kinds only).
    fn read_f64(&self, b: &[u8]) -> Option<f64> {
        let arr8 = |b: &[u8]| -> Option<[u8; 8]> { b.get(..8)?.try_into().ok() };
        let arr4 = |b: &[u8]| -> Option<[u8; 4]> { b.get(..4)?.try_into().ok() };
        let le = self.little_endian;
        Some(match (self.kind, self.itemsize) {
            (Kind::Float, 8) => {
                let a = arr8(b)?;
                if le { f64::from_le_bytes(a) } else { f64::from_be_bytes(a) }
            }
            (Kind::Float, 4) => {
                let a = arr4(b)?;
                f64::from(if le { f32::from_le_bytes(a) } else { f32::from_be_bytes(a) })
            }
            (Kind::Int | Kind::UInt | Kind::Bool, _) => self.read_i128(b)? as f64,
            _ => return None,
        })
    }

    /// Reads one integer (or bool) element.
    fn read_i128(&self, b: &[u8]) -> Option<i128> {
        let b = b.get(..self.itemsize)?;
        let mut buf = [0u8; 16];
        for (i, &byte) in b.iter().enumerate() {
            let at = if self.little_endian { i } else { self.itemsize - 1 - i };
            *buf.get_mut(at)? = byte;
        }
        let top = self.itemsize.checked_sub(1).and_then(|i| buf.get(i));
        let negative = self.kind == Kind::Int && top.is_some_and(|&x| x & 0x80 != 0);
        if negative {
            for x in buf.iter_mut().skip(self.itemsize) {
                *x = 0xff;
            }
        }
        match self.kind {
            Kind::Int | Kind::UInt | Kind::Bool => Some(i128::from_le_bytes(buf)),
            _ => None,
        }
    }
}

/// A scalar element read from an array.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    Bytes(Vec<u8>),
}

/// Decodes one element of a non-object, non-record dtype.
pub fn read_scalar(dtype: &Dtype, b: &[u8]) -> Option<Scalar> {
    match dtype.kind {
        Kind::Bool => Some(Scalar::Bool(*b.first()? != 0)),
        Kind::Int | Kind::UInt => i64::try_from(dtype.read_i128(b)?).ok().map(Scalar::Int),
        Kind::Float => dtype.read_f64(b).map(Scalar::Float),
        Kind::Unicode => {
            let b = b.get(..dtype.itemsize)?;
            let mut s = String::new();
            for c in b.chunks_exact(4) {
                let a: [u8; 4] = c.try_into().ok()?;
                let code = if dtype.little_endian { u32::from_le_bytes(a) } else { u32::from_be_bytes(a) };
                if code == 0 {
                    break;
                }
                s.push(char::from_u32(code)?);
            }
            Some(Scalar::Str(s))
        }
        Kind::Bytes => {
            let b = b.get(..dtype.itemsize)?;
            let end = b.iter().rposition(|&x| x != 0).map_or(0, |i| i + 1);
            Some(Scalar::Bytes(b[..end].to_vec()))
        }
        Kind::Object | Kind::Record => None,
    }
}

/// Number of elements of `shape`, refusing overflow.
pub fn element_count(shape: &[usize]) -> Result<usize, String> {
    shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d)).ok_or_else(|| format!("array shape {shape:?} overflows"))
}

impl Array {
    /// Builds an array from raw bytes, checking their length against shape × itemsize and
    /// `max_bytes`, and reordering Fortran-ordered data to C order.
    pub fn from_raw(
        dtype: Dtype,
        shape: Vec<usize>,
        raw: &[u8],
        fortran: bool,
        max_bytes: usize,
    ) -> Result<Self, String> {
        if matches!(dtype.kind, Kind::Object) {
            return Err("object array given raw bytes".into());
        }
        let n = element_count(&shape)?;
        let need = n.checked_mul(dtype.itemsize).ok_or_else(|| format!("array shape {shape:?} overflows"))?;
        if need > max_bytes {
            return Err(format!("array of {need} bytes exceeds the limit of {max_bytes} bytes"));
        }
        if raw.len() != need {
            return Err(format!("array of shape {shape:?} needs {need} bytes, the file has {}", raw.len()));
        }
        let data = if fortran && shape.len() > 1 {
            let size = dtype.itemsize;
            let mut out = vec![0u8; need];
            for_each_fortran_index(&shape, |c, f| {
                if let (Some(dst), Some(src)) =
                    (out.get_mut(c * size..(c + 1) * size), raw.get(f * size..(f + 1) * size))
                {
                    dst.copy_from_slice(src);
                }
            });
            out
        } else {
            raw.to_vec()
        };
        dtype.check_fields()?;
        Ok(Self { dtype, shape, data: Data::Raw(data) })
    }

    /// Builds an object array from its pickled elements.
    pub fn from_objects(dtype: Dtype, shape: Vec<usize>, items: Vec<NodeId>, fortran: bool) -> Result<Self, String> {
        let n = element_count(&shape)?;
        if items.len() != n {
            return Err(format!("object array of shape {shape:?} has {} elements", items.len()));
        }
        let items = if fortran && shape.len() > 1 {
            let mut out = items.clone();
            for_each_fortran_index(&shape, |c, f| {
                if let (Some(dst), Some(&src)) = (out.get_mut(c), items.get(f)) {
                    *dst = src;
                }
            });
            out
        } else {
            items
        };
        Ok(Self { dtype, shape, data: Data::Objects(items) })
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        element_count(&self.shape).unwrap_or(0)
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The elements of a numeric array as f64, in C order.
    pub fn to_f64(&self) -> Result<Vec<f64>, String> {
        let Data::Raw(raw) = &self.data else {
            return Err("expected a numeric array, found an object array".into());
        };
        if !matches!(self.dtype.kind, Kind::Float | Kind::Int | Kind::UInt | Kind::Bool) {
            return Err(format!("expected a numeric array, found {:?} elements", self.dtype.kind));
        }
        raw.chunks_exact(self.dtype.itemsize.max(1))
            .map(|c| self.dtype.read_f64(c).ok_or_else(|| "unreadable element".to_string()))
            .collect()
    }

    /// The elements of a non-object array as scalars.
    pub fn scalars(&self) -> Result<Vec<Scalar>, String> {
        let Data::Raw(raw) = &self.data else {
            return Err("object array".into());
        };
        raw.chunks_exact(self.dtype.itemsize.max(1))
            .map(|c| read_scalar(&self.dtype, c).ok_or_else(|| format!("unreadable {:?} element", self.dtype.kind)))
            .collect()
    }

    /// One field of a record array, as f64 per record.
    pub fn field_f64(&self, name: &str) -> Result<Vec<f64>, String> {
        self.field(name, "numeric", |d, b| d.read_f64(b))
    }

    /// One integer field of a record array, as i64 per record.
    pub fn field_i64(&self, name: &str) -> Result<Vec<i64>, String> {
        self.field(name, "an integer", |d, b| d.read_i128(b).and_then(|v| i64::try_from(v).ok()))
    }

    fn field<T>(&self, name: &str, what: &str, read: impl Fn(&Dtype, &[u8]) -> Option<T>) -> Result<Vec<T>, String> {
        let Data::Raw(raw) = &self.data else {
            return Err("expected a record array".into());
        };
        if self.dtype.kind != Kind::Record || self.dtype.itemsize == 0 {
            return Err("expected a record array".into());
        }
        let field = self.dtype.field(name).ok_or_else(|| format!("record has no field {name:?}"))?;
        raw.chunks_exact(self.dtype.itemsize)
            .map(|rec| {
                rec.get(field.offset..)
                    .and_then(|b| read(&field.dtype, b))
                    .ok_or_else(|| format!("field {name:?} is not {what}"))
            })
            .collect()
    }
}

/// Calls `f(c_index, fortran_index)` for every element of an array of `shape`.
fn for_each_fortran_index(shape: &[usize], mut f: impl FnMut(usize, usize)) {
    let n = element_count(shape).unwrap_or(0);
    let mut idx = vec![0usize; shape.len()];
    for c in 0..n {
        // Fortran offset: first index varies fastest.
        let mut off = 0;
        let mut stride = 1;
        for (i, &d) in idx.iter().zip(shape) {
            off += i * stride;
            stride *= d;
        }
        f(c, off);
        // Advance the C-order multi-index: last index varies fastest.
        for (i, &d) in idx.iter_mut().zip(shape).rev() {
            *i += 1;
            if *i < d {
                break;
            }
            *i = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dtypes() {
        assert_eq!(Dtype::parse("<f8").map(|d| (d.kind, d.itemsize)), Ok((Kind::Float, 8)));
        assert_eq!(Dtype::parse("U6").map(|d| (d.kind, d.itemsize)), Ok((Kind::Unicode, 24)));
        assert_eq!(Dtype::parse(">i4").map(|d| d.little_endian), Ok(false));
        assert!(Dtype::parse("c16").is_err());
        assert!(Dtype::parse("f99999999999999999999999").is_err());
    }

    #[test]
    fn fortran_order_becomes_c_order() {
        let d = Dtype::simple(Kind::UInt, 1);
        // [[0,1,2],[3,4,5]] in Fortran order is 0,3,1,4,2,5.
        let a = Array::from_raw(d, vec![2, 3], &[0, 3, 1, 4, 2, 5], true, 100).unwrap();
        assert_eq!(a.to_f64().unwrap(), vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
    }

    #[test]
    fn sizes_are_checked_before_allocating() {
        let d = Dtype::simple(Kind::Float, 8);
        assert!(Array::from_raw(d.clone(), vec![usize::MAX, 2], &[], false, 100).unwrap_err().contains("overflows"));
        assert!(Array::from_raw(d.clone(), vec![1 << 40], &[], false, 1 << 20).unwrap_err().contains("limit"));
        assert!(Array::from_raw(d, vec![2], &[0; 8], false, 100).unwrap_err().contains("needs 16 bytes"));
    }

    #[test]
    fn reads_signed_and_big_endian() {
        let d = Dtype::parse(">i2").unwrap();
        assert_eq!(read_scalar(&d, &[0xff, 0xfe]), Some(Scalar::Int(-2)));
        let d = Dtype::parse("<i8").unwrap();
        assert_eq!(read_scalar(&d, &(-5i64).to_le_bytes()), Some(Scalar::Int(-5)));
        let d = Dtype::parse("<U2").unwrap();
        assert_eq!(read_scalar(&d, &[b'a', 0, 0, 0, 0, 0, 0, 0]), Some(Scalar::Str("a".into())));
    }
}
