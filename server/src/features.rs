//! Parsing of feature rows from request bodies into one flat row-major matrix, without an
//! intermediate `serde_json::Value` (this is the hot path of every prediction). Values are
//! counted against a [`Budget`] as they arrive, so a request's memory is bounded while parsing.
//! A row is an array of values in the model's feature order, or an object of values by feature
//! name (`{"sepal_length": 5.1, ...}`), which needs the model's feature names.

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

/// Deserializes `[f, f, ...]`, `[[f, ...], [f, ...]]`, `{"name": f, ...}` or
/// `[{"name": f, ...}, ...]` into [`Rows`], within a [`Budget`]; `names` are the model's
/// feature names, which named rows are put in the order of.
pub struct RowsSeed<'n> {
    pub budget: Budget,
    pub names: &'n [String],
}

impl<'de> DeserializeSeed<'de> for RowsSeed<'_> {
    type Value = Rows;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Rows, D::Error> {
        d.deserialize_any(RowsVisitor(self.budget, self.names))
    }
}

struct RowsVisitor<'n>(Budget, &'n [String]);

/// Appends one named row to `out` in `names` order: every feature exactly once, no other key.
fn named_row<'de, M: de::MapAccess<'de>>(
    mut map: M,
    out: &mut Vec<f64>,
    budget: Budget,
    names: &[String],
    row: usize,
) -> Result<usize, M::Error> {
    if names.is_empty() {
        return Err(de::Error::custom(format!(
            "row {row} names its features, but this model has no feature names: send its values as an array"
        )));
    }
    let start = out.len();
    for _ in names {
        budget.push(out, f64::NAN)?;
    }
    let mut seen = vec![false; names.len()];
    while let Some(k) = map.next_key::<std::borrow::Cow<'de, str>>()? {
        let Some(i) = names.iter().position(|n| *n == k) else {
            return Err(de::Error::custom(format!(
                "row {row}: unknown feature {k:?}; the model's features are {names:?}"
            )));
        };
        if std::mem::replace(&mut seen[i], true) {
            return Err(de::Error::custom(format!("row {row}: feature {k:?} is given twice")));
        }
        out[start + i] = map.next_value::<Num>()?.0;
    }
    if let Some(i) = seen.iter().position(|s| !s) {
        return Err(de::Error::custom(format!(
            "row {row}: feature {:?} is missing (null marks a missing value)",
            names[i]
        )));
    }
    Ok(names.len())
}

enum Elem {
    Num(f64),
    Row(usize),
}

/// One element of the outer array: a number (single row) or an inner array or object (row
/// number `row`) appended to `out`.
struct ElemSeed<'a> {
    out: &'a mut Vec<f64>,
    budget: Budget,
    names: &'a [String],
    row: usize,
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
        f.write_str("a number, an array of numbers or an object of numbers by feature name")
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
    fn visit_map<M: de::MapAccess<'de>>(self, map: M) -> Result<Elem, M::Error> {
        named_row(map, self.out, self.budget, self.names, self.row).map(Elem::Row)
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

impl<'de> Visitor<'de> for RowsVisitor<'_> {
    type Value = Rows;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of numbers, an array of arrays of numbers, or objects of numbers by feature name")
    }
    /// One named row: `{"sepal_length": 5.1, ...}`.
    fn visit_map<M: de::MapAccess<'de>>(self, map: M) -> Result<Rows, M::Error> {
        let mut data = Vec::with_capacity(self.1.len());
        let n = named_row(map, &mut data, self.0, self.1, 0)?;
        Rows::from_flat(data, n, true).map_err(de::Error::custom)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Rows, A::Error> {
        let (budget, names) = (self.0, self.1);
        let mut data = Vec::with_capacity(seq.size_hint().unwrap_or(8).min(budget.max_values()));
        let (mut nums, mut rows, mut width) = (0usize, 0usize, None::<usize>);
        while let Some(elem) = seq.next_element_seed(ElemSeed { out: &mut data, budget, names, row: rows })? {
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

/// Parses a JSON object, returning the [`Rows`] under `key` (within `budget`; named rows in the
/// order of `names`) and ignoring other fields.
pub fn rows_from_object(body: &[u8], key: &'static str, budget: Budget, names: &[String]) -> Result<Rows, String> {
    struct Obj<'n>(&'static str, Budget, &'n [String]);
    impl<'de> DeserializeSeed<'de> for Obj<'_> {
        type Value = Option<Rows>;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<Rows>, D::Error> {
            d.deserialize_map(self)
        }
    }
    impl<'de> Visitor<'de> for Obj<'_> {
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
                    found = Some(map.next_value_seed(RowsSeed { budget: self.1, names: self.2 })?);
                } else {
                    map.next_value::<de::IgnoredAny>()?;
                }
            }
            Ok(found)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let rows = Obj(key, budget, names).deserialize(&mut de).map_err(|e| format!("invalid request body: {e}"))?;
    de.end().map_err(|e| format!("invalid request body: {e}"))?;
    rows.ok_or_else(|| format!("missing field \"{key}\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUDGET: Budget = Budget { n_features: 4, max_rows: 100 };

    #[test]
    fn single_row_and_batch() {
        let r = rows_from_object(br#"{"features":[5.1,3.5,1,0.2]}"#, "features", BUDGET, &[]).unwrap();
        assert_eq!((r.n_rows(), r.n_cols(), r.single), (1, 4, true));
        assert_eq!(r.matrix.as_slice().unwrap(), &[5.1, 3.5, 1.0, 0.2]);
        let r = rows_from_object(br#"{"x":1,"features":[[1,2],[3,4],[5,6]]}"#, "features", BUDGET, &[]).unwrap();
        assert_eq!((r.n_rows(), r.n_cols(), r.single), (3, 2, false));
        assert_eq!(r.matrix[[2, 1]], 6.0);
    }

    #[test]
    fn errors_name_the_problem() {
        let err = |b: &str| rows_from_object(b.as_bytes(), "features", BUDGET, &[]).unwrap_err();
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
        let ok = rows_from_object(br#"{"features":[[1,2],[3,4],[5,6]]}"#, "features", budget, &[]).unwrap();
        assert_eq!(ok.n_rows(), 3);
        for body in [r#"{"features":[[1,2],[3,4],[5,6],[7]]}"#, r#"{"features":[1,2,3,4,5,6,7]}"#] {
            let err = rows_from_object(body.as_bytes(), "features", budget, &[]).unwrap_err();
            assert!(err.contains("exceed the limit of 3 rows of 2 features"), "{err}");
        }
        // The error comes at the 7th value, not after the rest is read: garbage after it is never seen.
        let err = rows_from_object(br#"{"features":[1,2,3,4,5,6,7,"#, "features", budget, &[]).unwrap_err();
        assert!(err.contains("exceed the limit"), "{err}");
    }

    #[test]
    fn null_is_a_missing_value() {
        let r = rows_from_object(br#"{"features":[[1,null],[null,4]]}"#, "features", BUDGET, &[]).unwrap();
        assert!(r.matrix[[0, 1]].is_nan() && r.matrix[[1, 0]].is_nan());
        let r = rows_from_object(br#"{"features":[null,2]}"#, "features", BUDGET, &[]).unwrap();
        assert!(r.single && r.matrix[[0, 0]].is_nan());
    }

    #[test]
    fn named_rows_take_the_model_feature_order() {
        let names: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
        let parse = |b: &str| rows_from_object(b.as_bytes(), "features", BUDGET, &names);
        let r = parse(r#"{"features":{"d":4,"b":2,"a":1,"c":null}}"#).unwrap();
        assert!(r.single && r.matrix.row(0).iter().take(2).eq([1.0, 2.0].iter()) && r.matrix[[0, 2]].is_nan());
        assert_eq!(r.matrix[[0, 3]], 4.0);
        let r = parse(r#"{"features":[{"a":1,"b":2,"c":3,"d":4},{"d":8,"c":7,"b":6,"a":5}]}"#).unwrap();
        assert_eq!((r.n_rows(), r.single), (2, false));
        assert_eq!(r.matrix.as_slice().unwrap(), &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]);
        let err = |b: &str| parse(b).unwrap_err();
        assert!(
            err(r#"{"features":{"a":1,"b":2,"c":3,"x":4}}"#)
                .contains(r#"row 0: unknown feature "x"; the model's features are ["a", "b", "c", "d"]"#)
        );
        assert!(
            err(r#"{"features":[{"a":1,"b":2,"c":3,"d":4},{"a":1,"b":2,"c":3}]}"#)
                .contains(r#"row 1: feature "d" is missing"#)
        );
        assert!(err(r#"{"features":{"a":1,"a":2,"c":3,"d":4}}"#).contains(r#"feature "a" is given twice"#));
        assert!(err(r#"{"features":{"a":"x","b":2,"c":3,"d":4}}"#).contains("a number"));
        let unnamed = rows_from_object(br#"{"features":{"a":1}}"#, "features", BUDGET, &[]).unwrap_err();
        assert!(unnamed.contains("this model has no feature names"), "{unnamed}");
        // Budget: named values count like any others.
        let small = Budget { n_features: 4, max_rows: 1 };
        let e = rows_from_object(br#"{"features":[{"a":1,"b":2,"c":3,"d":4},{"a":1}]}"#, "features", small, &names);
        assert!(e.unwrap_err().contains("exceed the limit"));
    }

    #[test]
    fn empty_is_zero_rows() {
        let r = rows_from_object(br#"{"features":[]}"#, "features", BUDGET, &[]).unwrap();
        assert_eq!(r.n_rows(), 0);
    }
}
