//! Parsing of feature rows from request bodies into one flat row-major matrix, without an
//! intermediate `serde_json::Value` (this is the hot path of every prediction). Values are
//! counted against a [`Budget`] as they arrive, so a request's memory is bounded while parsing.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, SeqAccess, Visitor};

/// Rows of features as one matrix (rows × features).
#[derive(Debug, Clone, PartialEq)]
pub struct Rows {
    pub matrix: ndarray::Array2<f64>,
    /// Whether the request sent one row (`[1,2]`) rather than a batch (`[[1,2]]`).
    pub single: bool,
}

impl Rows {
    /// Builds rows from row-major data of `n_cols` columns, checking the length.
    pub fn from_flat(data: Vec<f64>, n_cols: usize, single: bool) -> Result<Self, String> {
        let n_rows = data.len().checked_div(n_cols).unwrap_or(0);
        if n_rows * n_cols != data.len() {
            return Err(format!("{} values do not make whole rows of {n_cols}", data.len()));
        }
        ndarray::Array2::from_shape_vec((n_rows, n_cols), data)
            .map(|matrix| Self { matrix, single })
            .map_err(|e| e.to_string())
    }

    pub fn n_rows(&self) -> usize {
        self.matrix.nrows()
    }

    pub fn n_cols(&self) -> usize {
        self.matrix.ncols()
    }
}

/// How many values one request may hold: `max_rows` rows of the model's `n_features`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    pub n_features: usize,
    pub max_rows: usize,
}

impl Budget {
    /// Most values a request may send.
    pub fn max_values(self) -> usize {
        self.n_features.saturating_mul(self.max_rows)
    }

    /// The error for a request that sent more than [`Budget::max_values`].
    pub fn exceeded(self) -> String {
        format!(
            "more than {} values: rows exceed the limit of {} rows of {} features per request",
            self.max_values(),
            self.max_rows,
            self.n_features
        )
    }

    /// Appends `v` to `out`, refusing to grow past the budget.
    fn push<E: de::Error>(self, out: &mut Vec<f64>, v: f64) -> Result<(), E> {
        if out.len() >= self.max_values() {
            return Err(E::custom(self.exceeded()));
        }
        out.push(v);
        Ok(())
    }
}

/// Deserializes `[f, f, ...]` or `[[f, ...], [f, ...]]` into [`Rows`], within a [`Budget`].
pub struct RowsSeed(pub Budget);

impl<'de> DeserializeSeed<'de> for RowsSeed {
    type Value = Rows;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Rows, D::Error> {
        d.deserialize_seq(RowsVisitor(self.0))
    }
}

struct RowsVisitor(Budget);

enum Elem {
    Num(f64),
    Row(usize),
}

/// One element of the outer array: a number (single row) or an inner array appended to `out`.
struct ElemSeed<'a> {
    out: &'a mut Vec<f64>,
    budget: Budget,
}

impl<'de> DeserializeSeed<'de> for ElemSeed<'_> {
    type Value = Elem;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Elem, D::Error> {
        d.deserialize_any(self)
    }
}

fn finite<E: de::Error>(v: f64) -> Result<f64, E> {
    if v.is_finite() { Ok(v) } else { Err(E::custom("feature values must be finite numbers")) }
}

impl<'de> Visitor<'de> for ElemSeed<'_> {
    type Value = Elem;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number or an array of numbers")
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Elem, E> {
        finite(v).map(Elem::Num)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Elem, E> {
        Ok(Elem::Num(v as f64))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Elem, E> {
        Ok(Elem::Num(v as f64))
    }
    /// `null` is a missing value; the model decides whether it takes one (`Model::check`).
    fn visit_unit<E: de::Error>(self) -> Result<Elem, E> {
        Ok(Elem::Num(f64::NAN))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Elem, A::Error> {
        let start = self.out.len();
        while let Some(v) = seq.next_element::<Num>()? {
            self.budget.push(self.out, v.0)?;
        }
        Ok(Elem::Row(self.out.len() - start))
    }
}

/// A finite number; anything else is an error naming what was found.
struct Num(f64);

impl<'de> de::Deserialize<'de> for Num {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Num;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number or null")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Num, E> {
                finite(v).map(Num)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Num, E> {
                Ok(Num(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Num, E> {
                Ok(Num(v as f64))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Num, E> {
                Ok(Num(f64::NAN))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Visitor<'de> for RowsVisitor {
    type Value = Rows;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of numbers or an array of arrays of numbers")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Rows, A::Error> {
        let budget = self.0;
        let mut data = Vec::with_capacity(seq.size_hint().unwrap_or(8).min(budget.max_values()));
        let (mut nums, mut rows, mut width) = (0usize, 0usize, None::<usize>);
        while let Some(elem) = seq.next_element_seed(ElemSeed { out: &mut data, budget })? {
            match elem {
                Elem::Num(v) => {
                    budget.push(&mut data, v)?;
                    nums += 1;
                }
                Elem::Row(len) => {
                    if *width.get_or_insert(len) != len {
                        return Err(de::Error::custom(format!(
                            "row {rows} has {len} values but row 0 has {}",
                            width.unwrap_or_default()
                        )));
                    }
                    rows += 1;
                }
            }
            if nums > 0 && rows > 0 {
                return Err(de::Error::custom("mixes numbers and arrays; send one row [..] or rows [[..], ..]"));
            }
        }
        let (n_cols, single) = if rows > 0 { (width.unwrap_or_default(), false) } else { (nums, true) };
        Rows::from_flat(data, n_cols, single).map_err(de::Error::custom)
    }
}

/// Parses a JSON object, returning the [`Rows`] under `key` (within `budget`) and ignoring other
/// fields.
pub fn rows_from_object(body: &[u8], key: &'static str, budget: Budget) -> Result<Rows, String> {
    struct Obj(&'static str, Budget);
    impl<'de> DeserializeSeed<'de> for Obj {
        type Value = Option<Rows>;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<Rows>, D::Error> {
            d.deserialize_map(self)
        }
    }
    impl<'de> Visitor<'de> for Obj {
        type Value = Option<Rows>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(f, "a JSON object with a \"{}\" field", self.0)
        }
        fn visit_map<M: de::MapAccess<'de>>(self, mut map: M) -> Result<Option<Rows>, M::Error> {
            let mut found = None;
            while let Some(k) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                if k == self.0 {
                    if found.is_some() {
                        return Err(de::Error::custom(format!("duplicate field \"{}\"", self.0)));
                    }
                    found = Some(map.next_value_seed(RowsSeed(self.1))?);
                } else {
                    map.next_value::<de::IgnoredAny>()?;
                }
            }
            Ok(found)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let rows = Obj(key, budget).deserialize(&mut de).map_err(|e| format!("invalid request body: {e}"))?;
    de.end().map_err(|e| format!("invalid request body: {e}"))?;
    rows.ok_or_else(|| format!("missing field \"{key}\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUDGET: Budget = Budget { n_features: 4, max_rows: 100 };

    #[test]
    fn single_row_and_batch() {
        let r = rows_from_object(br#"{"features":[5.1,3.5,1,0.2]}"#, "features", BUDGET).unwrap();
        assert_eq!((r.n_rows(), r.n_cols(), r.single), (1, 4, true));
        assert_eq!(r.matrix.as_slice().unwrap(), &[5.1, 3.5, 1.0, 0.2]);
        let r = rows_from_object(br#"{"x":1,"features":[[1,2],[3,4],[5,6]]}"#, "features", BUDGET).unwrap();
        assert_eq!((r.n_rows(), r.n_cols(), r.single), (3, 2, false));
        assert_eq!(r.matrix[[2, 1]], 6.0);
    }

    #[test]
    fn errors_name_the_problem() {
        let err = |b: &str| rows_from_object(b.as_bytes(), "features", BUDGET).unwrap_err();
        assert!(err(r#"{"features":[[1,2],[3]]}"#).contains("row 1 has 1 values"));
        assert!(err(r#"{"features":[1,[2]]}"#).contains("mixes"));
        assert!(err(r#"{"features":["a"]}"#).contains("a number"));
        assert!(err(r#"{"feature":[1]}"#).contains("missing field \"features\""));
        assert!(err(r#"{"features":[1e999]}"#).contains("invalid request body"));
        assert!(err(r#"{"features":[NaN]}"#).contains("invalid request body"));
        assert!(err(r#"{"features":[1]} x"#).contains("trailing"));
        assert!(err(r#"[1,2]"#).contains("object"));
    }

    #[test]
    fn values_beyond_the_budget_are_refused_while_parsing() {
        let budget = Budget { n_features: 2, max_rows: 3 };
        let ok = rows_from_object(br#"{"features":[[1,2],[3,4],[5,6]]}"#, "features", budget).unwrap();
        assert_eq!(ok.n_rows(), 3);
        for body in [r#"{"features":[[1,2],[3,4],[5,6],[7]]}"#, r#"{"features":[1,2,3,4,5,6,7]}"#] {
            let err = rows_from_object(body.as_bytes(), "features", budget).unwrap_err();
            assert!(err.contains("exceed the limit of 3 rows of 2 features"), "{err}");
        }
        // The error comes at the 7th value, not after the rest is read: garbage after it is never seen.
        let err = rows_from_object(br#"{"features":[1,2,3,4,5,6,7,"#, "features", budget).unwrap_err();
        assert!(err.contains("exceed the limit"), "{err}");
    }

    #[test]
    fn null_is_a_missing_value() {
        let r = rows_from_object(br#"{"features":[[1,null],[null,4]]}"#, "features", BUDGET).unwrap();
        assert!(r.matrix[[0, 1]].is_nan() && r.matrix[[1, 0]].is_nan());
        let r = rows_from_object(br#"{"features":[null,2]}"#, "features", BUDGET).unwrap();
        assert!(r.single && r.matrix[[0, 0]].is_nan());
    }

    #[test]
    fn empty_is_zero_rows() {
        let r = rows_from_object(br#"{"features":[]}"#, "features", BUDGET).unwrap();
        assert_eq!(r.n_rows(), 0);
    }
}
