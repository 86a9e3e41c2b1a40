//! joblib's container: compressed files (zlib, gzip, xz, lzma) and `NumpyArrayWrapper`, the
//! object joblib pickles in place of an array, whose bytes follow the pickle's BUILD opcode.

use std::io::{Read, Write};

use super::numpy::{Array, Kind, element_count};
use super::pickle::{Machine, Node, NodeId, PickleError};

/// How a model file is encoded, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// A pickle (`pickle.dump`, `joblib.dump` without compression, cloudpickle).
    Pickle,
    Zlib,
    Gzip,
    Xz,
    /// The legacy `.lzma` container (`compress="lzma"`).
    Lzma,
    Bz2,
    Lz4,
    /// A skops zip (`skops.io.dump`), read by [`super::skops`] rather than unpickled.
    Skops,
}

impl Encoding {
    /// Recognises a pickle, a joblib compressor or a skops zip by the file's signature.
    pub fn detect(bytes: &[u8]) -> Option<Self> {
        Some(match bytes {
            [0x80, ..] => Self::Pickle,
            [0x78, b, ..] if (u16::from(0x78u8) << 8 | u16::from(*b)) % 31 == 0 => Self::Zlib,
            [0x1f, 0x8b, ..] => Self::Gzip,
            [0xfd, b'7', b'z', b'X', b'Z', 0x00, ..] => Self::Xz,
            [0x5d, 0x00, 0x00, ..] => Self::Lzma,
            [b'B', b'Z', b'h', ..] => Self::Bz2,
            [0x04, 0x22, 0x4d, 0x18, ..] => Self::Lz4,
            [b'P', b'K', 3, 4, ..] => Self::Skops,
            _ => return None,
        })
    }

    /// The encoding's name, as `inspect` shows it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Pickle => "pickle",
            Self::Zlib => "zlib",
            Self::Gzip => "gzip",
            Self::Xz => "xz",
            Self::Lzma => "lzma",
            Self::Bz2 => "bz2",
            Self::Lz4 => "lz4",
            Self::Skops => "skops",
        }
    }
}

/// Why a compressed file could not be expanded.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("{0}-compressed joblib files are not supported; save with compress=3 (zlib), gzip, xz or lzma")]
    Unsupported(&'static str),
    #[error("corrupt {encoding} stream: {reason}")]
    Corrupt { encoding: &'static str, reason: String },
    #[error("the decompressed model is larger than the limit of {0} bytes")]
    TooLarge(usize),
}

/// Expands a joblib-compressed file, refusing to produce more than `max` bytes.
pub fn decompress(bytes: &[u8], encoding: Encoding, max: usize) -> Result<Vec<u8>, ContainerError> {
    let corrupt = |e: std::io::Error| ContainerError::Corrupt { encoding: encoding.name(), reason: e.to_string() };
    let mut out = Vec::new();
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    match encoding {
        Encoding::Pickle | Encoding::Skops => return Ok(bytes.to_vec()),
        Encoding::Zlib => {
            flate2::read::ZlibDecoder::new(bytes).take(limit).read_to_end(&mut out).map_err(corrupt)?;
        }
        Encoding::Gzip => {
            flate2::read::MultiGzDecoder::new(bytes).take(limit).read_to_end(&mut out).map_err(corrupt)?;
        }
        Encoding::Xz | Encoding::Lzma => {
            let mut input = std::io::BufReader::new(bytes);
            let mut w = Capped { out: &mut out, max, exceeded: false };
            let r = if encoding == Encoding::Xz {
                lzma_rs::xz_decompress(&mut input, &mut w)
            } else {
                lzma_rs::lzma_decompress(&mut input, &mut w)
            };
            if w.exceeded {
                return Err(ContainerError::TooLarge(max));
            }
            if let Err(e) = r {
                return Err(ContainerError::Corrupt { encoding: encoding.name(), reason: e.to_string() });
            }
        }
        Encoding::Bz2 | Encoding::Lz4 => return Err(ContainerError::Unsupported(encoding.name())),
    }
    if out.len() > max {
        return Err(ContainerError::TooLarge(max));
    }
    Ok(out)
}

/// A writer that fails once more than `max` bytes were written.
struct Capped<'a> {
    out: &'a mut Vec<u8>,
    max: usize,
    exceeded: bool,
}

impl Write for Capped<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.out.len().saturating_add(buf.len()) > self.max {
            self.exceeded = true;
            return Err(std::io::Error::other("output limit reached"));
        }
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Reads the array a `NumpyArrayWrapper` stands for from the bytes after its BUILD opcode:
/// an optional alignment padding (one length byte, then that many bytes), then the elements in
/// the wrapper's order; object arrays are an inner pickle instead.
pub(super) fn read_wrapped_array(m: &mut Machine<'_>, state: NodeId, at: usize) -> Result<Node, PickleError> {
    let Node::Dict(items) = m.node(state) else {
        return Err(m.invalid(at, "NumpyArrayWrapper state must be a dict"));
    };
    let get = |key: &str| {
        items.iter().rev().find(|(k, _)| matches!(m.node(*k), Node::Str(s) if s == key)).map(|&(_, v)| m.node(v))
    };
    let shape = match get("shape") {
        Some(Node::Tuple(dims)) => m.shape(dims, at)?,
        _ => return Err(m.invalid(at, "NumpyArrayWrapper without a shape")),
    };
    let fortran = matches!(get("order"), Some(Node::Str(s)) if s == "F");
    let dtype = match get("dtype") {
        Some(Node::Dtype(d)) => d.clone(),
        _ => return Err(m.invalid(at, "NumpyArrayWrapper without a dtype")),
    };
    let aligned = matches!(get("numpy_array_alignment_bytes"), Some(Node::Int(_)));
    if dtype.kind == Kind::Object {
        let inner = m.run()?;
        return match m.node(inner) {
            Node::Array(a) if a.dtype.kind == Kind::Object && a.shape == shape => {
                m.copy(a.len(), at).map(|()| Node::Array(a.clone()))
            }
            _ => Err(m.invalid(at, "the inner pickle of an object array is not that array")),
        };
    }
    let n = element_count(&shape).map_err(|e| m.invalid(at, e))?;
    let need =
        n.checked_mul(dtype.itemsize).ok_or_else(|| m.invalid(at, format!("array shape {shape:?} overflows")))?;
    let max = m.limits.max_array_bytes;
    if need > max {
        return Err(m.invalid(at, format!("array of {need} bytes exceeds the limit of {max} bytes")));
    }
    // The declared size is checked above, before reading anything.
    if aligned {
        let pad = m.take(1, "alignment padding")?[0];
        m.take(u64::from(pad), "alignment padding")?;
    }
    let raw = m.take(need as u64, "array data")?;
    Array::from_raw(dtype, shape, raw, fortran, max).map(Node::Array).map_err(|e| m.invalid(at, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_signatures() {
        assert_eq!(Encoding::detect(&[0x80, 4]), Some(Encoding::Pickle));
        assert_eq!(Encoding::detect(&[0x78, 0x5e]), Some(Encoding::Zlib));
        assert_eq!(Encoding::detect(&[0x78, 0x00]), None);
        assert_eq!(Encoding::detect(&[0x1f, 0x8b, 8]), Some(Encoding::Gzip));
        assert_eq!(Encoding::detect(b"{\"format\""), None);
    }

    #[test]
    fn decompression_is_capped() {
        use flate2::Compression;
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), Compression::new(3));
        e.write_all(&vec![0u8; 10_000]).unwrap();
        let z = e.finish().unwrap();
        assert_eq!(decompress(&z, Encoding::Zlib, 10_000).unwrap().len(), 10_000);
        assert!(matches!(decompress(&z, Encoding::Zlib, 9_999), Err(ContainerError::TooLarge(9_999))));
        assert!(matches!(decompress(&z[..10], Encoding::Zlib, 100_000), Err(ContainerError::Corrupt { .. })));
    }
}
