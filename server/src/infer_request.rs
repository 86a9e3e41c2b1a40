//! Parsing of Open Inference Protocol V2 requests with memory bounded while parsing.
//!
//! Nothing is built as a `serde_json::Value`: tensor data goes straight into `f64`s, counted as
//! elements arrive against the declared shape (when `shape` comes before `data`) and always
//! against the request's [`Budget`]. A second input tensor, an unknown or a repeated output is
//! refused the moment it is read. Nesting is bounded by serde_json's recursion limit (128) and
//! ours (a tensor's data nests at most [`MAX_DATA_DEPTH`] arrays deep).

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::features::Budget;

/// Deepest array nesting of a tensor's `data`: `[[..], ..]` for shape `[rows, features]`.
pub const MAX_DATA_DEPTH: usize = 2;

/// A V2 inference request with one input tensor and distinct, known outputs.
#[derive(Debug)]
pub struct InferRequest {
    pub id: Option<String>,
    /// Request parameter `binary_data_output`: send every output as binary.
    pub binary_data_output: bool,
    pub input: InputTensor,
    /// The requested outputs in order, each with its own `binary_data` parameter.
    pub outputs: Vec<(&'static str, Option<bool>)>,
}

/// The input tensor as sent; [`InputTensor::rows_cols`] checks its shape.
#[derive(Debug, Default)]
pub struct InputTensor {
    pub name: String,
    /// The declared shape (at most two dimensions are accepted).
    pub shape: Vec<i64>,
    pub datatype: String,
    /// Parameter `binary_data_size`: the tensor is this many bytes of the binary part.
    pub binary_data_size: Option<usize>,
    pub data: Option<Data>,
}

/// JSON tensor data, flattened row-major.
#[derive(Debug, Default, PartialEq)]
pub struct Data {
    pub values: Vec<f64>,
    /// The first value that is not a JSON integer, if any (INT* and UINT* refuse it; the datatype
    /// may come after the data, so it is checked once the whole tensor is read).
    pub non_integer: Option<f64>,
    /// The first negative value, if any (UINT* refuses it).
    pub negative: Option<i64>,
    /// What the first non-number was (`"a string"`), if any: skipped without allocating and
    /// reported after the datatype, which may come later and explain it (`BYTES`).
    pub non_number: Option<&'static str>,
}

impl Data {
    /// Checks the values against a numeric `datatype`.
    pub fn check_datatype(&self, datatype: &str) -> Result<(), String> {
        if let Some(what) = self.non_number {
            return Err(format!("data must hold numbers, found {what}"));
        }
        let integer = datatype.starts_with("INT") || datatype.starts_with("UINT");
        if let (true, Some(v)) = (integer, self.non_integer) {
            return Err(format!("{datatype} data holds a non-integer value {v}"));
        }
        if let (true, Some(v)) = (datatype.starts_with("UINT"), self.negative) {
            return Err(format!("{datatype} data holds a negative value {v}"));
        }
        Ok(())
    }
}

/// Rows and features of a declared `shape`, checked against the budget.
pub fn rows_cols(shape: &[i64], budget: Budget) -> Result<(usize, usize), String> {
    if shape.iter().any(|&d| d < 0) {
        return Err(format!("shape {shape:?} has a negative dimension"));
    }
    let (rows, cols) = match *shape {
        [cols] => (1, cols as u64),
        [rows, cols] => (rows as u64, cols as u64),
        _ => return Err(format!("shape {shape:?} must be [features] or [rows, features]")),
    };
    if cols != budget.n_features as u64 {
        return Err(format!("expected {} features per row, shape has {cols}", budget.n_features));
    }
    if rows > budget.max_rows as u64 {
        return Err(format!("{rows} rows exceed the limit of {} rows per request", budget.max_rows));
    }
    Ok((rows as usize, cols as usize))
}

/// Parses the JSON part of a V2 request. `outputs` are the output names this model has.
pub fn parse(json: &[u8], budget: Budget, outputs: &'static [&'static str]) -> Result<InferRequest, String> {
    let mut de = serde_json::Deserializer::from_slice(json);
    let req = RequestSeed { budget, outputs }.deserialize(&mut de).and_then(|r| de.end().map(|()| r));
    req.map_err(|e| format!("invalid inference request: {e}"))
}

struct RequestSeed {
    budget: Budget,
    outputs: &'static [&'static str],
}

/// The request `parameters` we understand; others are skipped without allocating.
#[derive(Deserialize, Default)]
struct RequestParameters {
    #[serde(default)]
    binary_data_output: Option<bool>,
}

impl<'de> DeserializeSeed<'de> for RequestSeed {
    type Value = InferRequest;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<InferRequest, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RequestSeed {
    type Value = InferRequest;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an inference request object with \"inputs\"")
    }
    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<InferRequest, M::Error> {
        let (mut id, mut parameters, mut input, mut outputs) = (None, None, None, None);
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match key.as_ref() {
                "id" => id = Some(map.next_value::<Option<String>>()?),
                "parameters" => set_once(&mut parameters, "parameters", map.next_value::<RequestParameters>()?)?,
                "inputs" => set_once(&mut input, "inputs", map.next_value_seed(InputsSeed(self.budget))?)?,
                "outputs" => set_once(&mut outputs, "outputs", map.next_value_seed(OutputsSeed(self.outputs))?)?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let input = input.ok_or_else(|| de::Error::missing_field("inputs"))?;
        Ok(InferRequest {
            id: id.flatten(),
            binary_data_output: parameters.and_then(|p: RequestParameters| p.binary_data_output).unwrap_or(false),
            input,
            outputs: outputs.unwrap_or_default(),
        })
    }
}

/// Stores a field's value, refusing a second occurrence (so a repeated field cannot double memory).
fn set_once<T, E: de::Error>(slot: &mut Option<T>, field: &'static str, value: T) -> Result<(), E> {
    if slot.replace(value).is_some() {
        return Err(E::duplicate_field(field));
    }
    Ok(())
}

/// `inputs`: exactly one tensor; a second is refused before it is read.
struct InputsSeed(Budget);

impl<'de> DeserializeSeed<'de> for InputsSeed {
    type Value = InputTensor;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<InputTensor, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for InputsSeed {
    type Value = InputTensor;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of one input tensor")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<InputTensor, A::Error> {
        let one = "expected exactly one input tensor";
        let input =
            seq.next_element_seed(InputSeed(self.0))?.ok_or_else(|| de::Error::custom(format!("{one}, got 0")))?;
        if seq.next_element::<IgnoredAny>()?.is_some() {
            return Err(de::Error::custom(format!("{one}, got more")));
        }
        Ok(input)
    }
}

/// The `parameters` of an input tensor we understand.
#[derive(Deserialize, Default)]
struct InputParameters {
    #[serde(default)]
    binary_data_size: Option<usize>,
}

struct InputSeed(Budget);

impl<'de> DeserializeSeed<'de> for InputSeed {
    type Value = InputTensor;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<InputTensor, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for InputSeed {
    type Value = InputTensor;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an input tensor object")
    }
    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<InputTensor, M::Error> {
        let budget = self.0;
        let (mut name, mut shape, mut datatype, mut parameters, mut data) = (None, None, None, None, None);
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match key.as_ref() {
                "name" => set_once(&mut name, "name", map.next_value::<String>()?)?,
                "datatype" => set_once(&mut datatype, "datatype", map.next_value::<String>()?)?,
                "parameters" => set_once(&mut parameters, "parameters", map.next_value::<InputParameters>()?)?,
                "shape" => {
                    let s = map.next_value_seed(ShapeSeed)?;
                    // Refuse a huge or wrong declared shape before any data is read.
                    rows_cols(&s, budget).map_err(de::Error::custom)?;
                    set_once(&mut shape, "shape", s)?;
                }
                "data" => {
                    // The declared shape bounds the data when it came first; the budget always does.
                    let declared = shape.as_deref().and_then(|s| rows_cols(s, budget).ok());
                    let limit = declared.map_or(budget.max_values(), |(r, c)| r * c);
                    let seed = DataSeed { out: Data::default(), limit, declared: shape.clone(), budget, depth: 0 };
                    set_once(&mut data, "data", map.next_value_seed(seed)?)?;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(InputTensor {
            name: name.ok_or_else(|| de::Error::missing_field("name"))?,
            shape: shape.ok_or_else(|| de::Error::missing_field("shape"))?,
            datatype: datatype.ok_or_else(|| de::Error::missing_field("datatype"))?,
            binary_data_size: parameters.and_then(|p: InputParameters| p.binary_data_size),
            data,
        })
    }
}

/// A shape of at most two dimensions (anything longer is refused at its third entry).
struct ShapeSeed;

impl<'de> DeserializeSeed<'de> for ShapeSeed {
    type Value = Vec<i64>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<i64>, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ShapeSeed {
    type Value = Vec<i64>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a shape array of integers")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<i64>, A::Error> {
        let mut shape = Vec::with_capacity(2);
        while let Some(d) = seq.next_element::<i64>()? {
            if shape.len() == 2 {
                shape.push(d);
                return Err(de::Error::custom(format!("shape {shape:?}... must be [features] or [rows, features]")));
            }
            shape.push(d);
        }
        Ok(shape)
    }
}

/// Tensor data: numbers, possibly nested, appended to `out` up to `limit` values.
struct DataSeed {
    out: Data,
    limit: usize,
    declared: Option<Vec<i64>>,
    budget: Budget,
    depth: usize,
}

impl DataSeed {
    fn push<E: de::Error>(&mut self, v: f64) -> Result<(), E> {
        if self.out.values.len() >= self.limit {
            return Err(E::custom(match &self.declared {
                Some(shape) => format!("shape {shape:?} needs {} values, data has more", self.limit),
                None => self.budget.exceeded(),
            }));
        }
        self.out.values.push(v);
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for DataSeed {
    type Value = Data;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Data, D::Error> {
        d.deserialize_any(self)
    }
}

/// One nested array level of [`DataSeed`], writing into the parent's buffer.
struct Nested<'a>(&'a mut DataSeed);

impl<'de> DeserializeSeed<'de> for Nested<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

/// The element visitor shared by the top level and nested arrays.
impl<'de> Visitor<'de> for Nested<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number or an array of numbers")
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.0.push(v as f64)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        if v < 0 && self.0.out.negative.is_none() {
            self.0.out.negative = Some(v);
        }
        self.0.push(v as f64)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        if !v.is_finite() {
            return Err(E::custom("data values must be finite numbers"));
        }
        if self.0.out.non_integer.is_none() {
            self.0.out.non_integer = Some(v);
        }
        if v < 0.0 && self.0.out.negative.is_none() {
            self.0.out.negative = Some(v as i64);
        }
        self.0.push(v)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if self.0.depth == MAX_DATA_DEPTH {
            return Err(de::Error::custom(format!("data nests deeper than {MAX_DATA_DEPTH} arrays")));
        }
        self.0.depth += 1;
        while seq.next_element_seed(Nested(self.0))?.is_some() {}
        self.0.depth -= 1;
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.0.out.non_number.get_or_insert("a string");
        Ok(())
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.0.out.non_number.get_or_insert("a boolean");
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.0.out.non_number.get_or_insert("null");
        Ok(())
    }
    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<(), M::Error> {
        self.0.out.non_number.get_or_insert("an object");
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(())
    }
}

impl<'de> Visitor<'de> for DataSeed {
    type Value = Data;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("tensor data: an array of numbers, possibly nested")
    }
    fn visit_seq<A: SeqAccess<'de>>(mut self, seq: A) -> Result<Data, A::Error> {
        self.out.values.reserve(self.limit.min(1 << 16));
        Nested(&mut self).visit_seq(seq)?;
        Ok(self.out)
    }
}

/// `outputs`: known names, each at most once.
struct OutputsSeed(&'static [&'static str]);

/// The `parameters` of a requested output we understand.
#[derive(Deserialize, Default)]
struct OutputParameters {
    #[serde(default)]
    binary_data: Option<bool>,
}

#[derive(Deserialize)]
struct RequestedOutput<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(default)]
    parameters: OutputParameters,
}

impl<'de> DeserializeSeed<'de> for OutputsSeed {
    type Value = Vec<(&'static str, Option<bool>)>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for OutputsSeed {
    type Value = Vec<(&'static str, Option<bool>)>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of requested outputs")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut wanted: Vec<(&'static str, Option<bool>)> = Vec::with_capacity(self.0.len());
        while let Some(out) = seq.next_element::<RequestedOutput<'de>>()? {
            let Some(&name) = self.0.iter().find(|n| **n == out.name) else {
                return Err(de::Error::custom(format!(
                    "unknown output {:?}; this model's outputs are {:?}",
                    out.name, self.0
                )));
            };
            if wanted.iter().any(|(n, _)| *n == name) {
                return Err(de::Error::custom(format!("output {name:?} is requested twice")));
            }
            wanted.push((name, out.parameters.binary_data));
        }
        Ok(wanted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUDGET: Budget = Budget { n_features: 4, max_rows: 3 };
    const OUTPUTS: &[&str] = &["predict", "predict_proba"];

    fn err(body: &str) -> String {
        parse(body.as_bytes(), BUDGET, OUTPUTS).expect_err(body)
    }

    #[test]
    fn flat_and_nested_data_in_any_field_order() {
        for body in [
            r#"{"inputs":[{"name":"x","shape":[2,4],"datatype":"FP32","data":[1,2,3,4,5,6,7,8]}]}"#,
            r#"{"inputs":[{"data":[[1,2,3,4],[5,6,7,8]],"datatype":"FP32","shape":[2,4],"name":"x"}]}"#,
        ] {
            let r = parse(body.as_bytes(), BUDGET, OUTPUTS).expect(body);
            assert_eq!(r.input.data.expect("data").values, [1., 2., 3., 4., 5., 6., 7., 8.]);
            assert_eq!(r.input.shape, [2, 4]);
        }
    }

    #[test]
    fn data_beyond_the_shape_or_budget_is_refused_at_the_first_extra_value() {
        // Truncated JSON after the extra value: the error comes before the parser sees the end.
        let e = err(r#"{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[[0],[0],[0],[0],[0],"#);
        assert!(e.contains("needs 4 values, data has more"), "{e}");
        let e = err(r#"{"inputs":[{"name":"x","datatype":"FP32","data":[0,0,0,0,0,0,0,0,0,0,0,0,0,"#);
        assert!(e.contains("exceed the limit of 3 rows of 4 features"), "{e}");
        let e = err(r#"{"inputs":[{"name":"x","shape":[1000000000,4],"datatype":"FP32","data":"#);
        assert!(e.contains("1000000000 rows exceed the limit of 3 rows"), "{e}");
        let e = err(r#"{"inputs":[{"name":"x","shape":[1,4,1,1,1"#);
        assert!(e.contains("must be [features] or [rows, features]"), "{e}");
        let e = err(r#"{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[[[1,2,3,4]]]}]}"#);
        assert!(e.contains("nests deeper than 2"), "{e}");
    }

    #[test]
    fn one_input_and_known_distinct_outputs() {
        let input = r#"{"name":"x","shape":[4],"datatype":"FP64","data":[1,2,3,4]}"#;
        let e = err(&format!(r#"{{"inputs":[{input},{input}]}}"#));
        assert!(e.contains("exactly one input tensor, got more"), "{e}");
        let e = err(&format!(r#"{{"inputs":[{input}],"outputs":[{{"name":"predict"}},{{"name":"predict"}}]}}"#));
        assert!(e.contains("\"predict\" is requested twice"), "{e}");
        let e = err(&format!(r#"{{"inputs":[{input}],"outputs":[{{"name":"shap"}}]}}"#));
        assert!(e.contains("unknown output \"shap\"") && e.contains("[\"predict\", \"predict_proba\"]"), "{e}");
        let ok = parse(
            format!(
                r#"{{"inputs":[{input}],"outputs":[{{"name":"predict_proba","parameters":{{"binary_data":true}}}}]}}"#
            )
            .as_bytes(),
            BUDGET,
            OUTPUTS,
        )
        .expect("valid");
        assert_eq!(ok.outputs, [("predict_proba", Some(true))]);
    }

    #[test]
    fn datatype_checks_run_whatever_the_field_order() {
        let r =
            parse(br#"{"inputs":[{"data":[1.5,-2,3,4],"name":"x","shape":[4],"datatype":"INT64"}]}"#, BUDGET, OUTPUTS)
                .expect("parses");
        let data = r.input.data.expect("data");
        assert!(data.check_datatype("INT64").expect_err("non-integer").contains("non-integer value 1.5"));
        assert!(data.check_datatype("FP32").is_ok());
        let r =
            parse(br#"{"inputs":[{"data":[1,-2,3,4],"name":"x","shape":[4],"datatype":"UINT8"}]}"#, BUDGET, OUTPUTS)
                .expect("parses");
        assert!(
            r.input.data.expect("data").check_datatype("UINT8").expect_err("negative").contains("negative value -2")
        );
    }
}
