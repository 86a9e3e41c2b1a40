//! ONNX models run with tract (pure Rust): the graph is checked, optimised once at load, and the
//! plan is shared by every request, each of which runs in its own state.

mod attrs;
mod check;
mod ops;
mod tabular;
pub mod tensors;
mod trees;
pub mod v2;

use std::collections::BTreeMap;
use std::sync::Arc;

use tract_onnx::pb::{self, ModelProto};
use tract_onnx::prelude::*;

pub use tensors::{DataType, TensorSpec};

/// Why an ONNX file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    #[error("not a valid ONNX model: {0}")]
    Decode(String),
    #[error("the ONNX model has no graph")]
    NoGraph,
    #[error("ONNX operator {op} (domain {domain:?}) is not supported by this server")]
    UnsupportedOp { op: String, domain: String },
    #[error("invalid ONNX model: {0}")]
    Invalid(String),
    #[error("the ONNX model cannot be prepared: {0}")]
    Runtime(String),
}

/// One line of a tract error chain (`a: b: c`), so a load failure prints on one line.
fn one_line(e: &TractError) -> String {
    format!("{e:#}").replace('\n', " ")
}

/// Runs `f`, turning a panic inside tract into an error. tract asserts on shapes a hostile graph
/// can declare (found by fuzzing: a matmul whose operands disagree loads, then asserts when run),
/// and no check of ours can foresee every one; a panic must fail one load or one request, never
/// take the server down (the release profile unwinds for this reason).
fn guarded<T>(f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let msg = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        Err(format!("the ONNX runtime failed: {}", msg.replace('\n', " ")))
    })
}

/// A loaded ONNX graph: its interface as the file declares it and tract's optimised plan.
#[derive(Clone)]
pub struct OnnxModel {
    plan: Arc<TypedSimplePlan>,
    /// The graph's inputs (initializers excluded), in the plan's order.
    pub inputs: Vec<TensorSpec>,
    /// The graph's outputs, in the plan's order.
    pub outputs: Vec<TensorSpec>,
    /// How many nodes of each op type the graph has (subgraphs not counted).
    pub op_counts: BTreeMap<String, usize>,
    /// Class labels named by a classifier node (`classlabels_*`), if any.
    pub class_labels: Vec<String>,
    /// `producer_name producer_version` of the file.
    pub producer: String,
    /// Whether the graph says what a missing value (NaN) means: an `Imputer` replacing NaN, or
    /// tree ensembles that route NaN (`nodes_missing_value_tracks_true`, HistGradientBoosting's).
    /// Other graphs get no NaN: the request is refused, as for the scikit-learn file.
    pub takes_missing: bool,
}

impl std::fmt::Debug for OnnxModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxModel").field("inputs", &self.inputs).field("outputs", &self.outputs).finish()
    }
}

/// Whether `bytes` start like an ONNX `ModelProto`: field 1 (`ir_version`, varint tag 0x08) with
/// a small version, then the tag of another `ModelProto` field (or the end). Pickles (0x80),
/// JSON (`{`), zip (`PK`) and the compressors' magic numbers never start with 0x08.
pub fn looks_like_onnx(bytes: &[u8]) -> bool {
    // Tags of ModelProto fields 2-8, 14 and 20 as wire type 0 or 2 (see onnx.proto).
    const NEXT: &[u8] = &[0x12, 0x1a, 0x22, 0x28, 0x32, 0x3a, 0x42, 0x72, 0xa2];
    match bytes {
        [0x08, v, rest @ ..] if (1..=0x7f).contains(v) => rest.first().is_none_or(|t| NEXT.contains(t)),
        _ => false,
    }
}

/// tract's ONNX front end with our extra operators.
fn framework() -> tract_onnx::Onnx {
    let mut onnx = tract_onnx::onnx();
    ops::register(&mut onnx.op_register);
    onnx
}

impl OnnxModel {
    /// Decodes, checks and optimises an ONNX model.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, OnnxError> {
        let proto: ModelProto =
            framework().proto_model_for_read(&mut &bytes[..]).map_err(|e| OnnxError::Decode(one_line(&e)))?;
        let graph = proto.graph.as_ref().ok_or(OnnxError::NoGraph)?;
        let onnx = framework();
        check::graph(graph, &|op| onnx.op_register.0.contains_key(op))?;
        let initializers: std::collections::HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
        let inputs = graph
            .input
            .iter()
            .filter(|v| !initializers.contains(v.name.as_str()))
            .map(TensorSpec::from_proto)
            .collect::<Result<Vec<_>, _>>()?;
        let outputs = graph.output.iter().map(TensorSpec::from_proto).collect::<Result<Vec<_>, _>>()?;
        let mut op_counts = BTreeMap::new();
        for node in &graph.node {
            *op_counts.entry(node.op_type.clone()).or_insert(0) += 1;
        }
        let class_labels = class_labels(graph);
        let takes_missing = takes_missing(graph);
        let plan = guarded(|| {
            let mut model = onnx.model_for_proto_model(&proto).map_err(|e| one_line(&e))?;
            for (i, spec) in inputs.iter().enumerate() {
                let fact = input_fact(&model.symbols, spec);
                model.set_input_fact(i, fact).map_err(|e| one_line(&e))?;
            }
            let mut typed = model.into_typed().map_err(|e| one_line(&e))?;
            trees::replace_slow_kernels(&mut typed);
            typed.into_optimized().and_then(|m| m.into_runnable()).map_err(|e| one_line(&e))
        })
        .map_err(OnnxError::Runtime)?;
        if plan.model().inputs.len() != inputs.len() || plan.model().outputs.len() != outputs.len() {
            return Err(OnnxError::Invalid("the graph's declared inputs or outputs do not match its nodes".into()));
        }
        let producer = format!("{} {}", proto.producer_name, proto.producer_version).trim().to_string();
        Ok(Self { plan, inputs, outputs, op_counts, class_labels, producer, takes_missing })
    }

    /// Runs the graph on one tensor per input (in [`OnnxModel::inputs`] order), returning one per
    /// output. Each call has its own state, so calls may run concurrently.
    pub fn run(&self, inputs: TVec<TValue>) -> Result<TVec<TValue>, String> {
        guarded(|| self.plan.run(inputs).map_err(|e| one_line(&e)))
    }

    /// The input a tabular (`/predict`) request fills: the only input, 2-D and numeric.
    pub fn tabular_input(&self) -> Option<&TensorSpec> {
        match self.inputs.as_slice() {
            [i] if i.shape.len() == 2 && i.datatype.is_numeric() => Some(i),
            _ => None,
        }
    }

    /// Features per row of a tabular model (0 when its width is dynamic or it is not tabular).
    pub fn n_features(&self) -> usize {
        self.tabular_input().and_then(|i| usize::try_from(i.shape[1]).ok()).unwrap_or(0)
    }

    /// The label output: the first integer or string output of rank 1 (a classifier's), if any.
    pub fn label_output(&self) -> Option<usize> {
        self.outputs.iter().position(|o| o.shape.len() == 1 && !o.datatype.is_float())
    }

    /// The probabilities output: a float output of rank 2 next to a label output.
    pub fn proba_output(&self) -> Option<usize> {
        self.label_output()?;
        self.outputs.iter().position(|o| o.shape.len() == 2 && o.datatype.is_float())
    }

    /// The value output of a regressor: the first float output, when there is no label output.
    pub fn value_output(&self) -> Option<usize> {
        if self.label_output().is_some() {
            return None;
        }
        self.outputs.iter().position(|o| o.datatype.is_float())
    }

    /// What `inspect` prints.
    pub fn describe(&self) -> serde_json::Value {
        serde_json::json!({
            "format": "onnx",
            "producer": self.producer,
            "inputs": self.inputs.iter().map(TensorSpec::metadata).collect::<Vec<_>>(),
            "outputs": self.outputs.iter().map(TensorSpec::metadata).collect::<Vec<_>>(),
            "class_labels": self.class_labels,
            "ops": self.op_counts,
            "takes_missing_values": self.takes_missing,
        })
    }
}

/// The fact tract needs for an input: its type and shape, a symbol per dynamic dimension (`N`
/// for the batch, shared by all inputs), since skl2onnx leaves dynamic dimensions unnamed.
fn input_fact(symbols: &SymbolScope, spec: &TensorSpec) -> InferenceFact {
    let fact = InferenceFact::dt(spec.datatype.datum_type());
    if spec.shape.is_empty() {
        return fact;
    }
    let dims: TVec<TDim> = spec
        .shape
        .iter()
        .enumerate()
        .map(|(j, &d)| match (d, j) {
            (d, _) if d >= 0 => d.to_dim(),
            (_, 0) => symbols.sym("N").to_dim(),
            _ => symbols.sym(&format!("{}_{j}", spec.name)).to_dim(),
        })
        .collect();
    fact.with_shape(dims)
}

/// See [`OnnxModel::takes_missing`].
fn takes_missing(graph: &pb::GraphProto) -> bool {
    graph.node.iter().any(|n| match n.op_type.as_str() {
        "Imputer" => attrs::float(n, "replaced_value_float").is_some_and(f32::is_nan),
        "TreeEnsembleClassifier" | "TreeEnsembleRegressor" => {
            attrs::ints(n, "nodes_missing_value_tracks_true").iter().any(|&v| v != 0)
        }
        _ => false,
    })
}

/// `classlabels_int64s` / `classlabels_strings` of the first classifier node that has them.
fn class_labels(graph: &pb::GraphProto) -> Vec<String> {
    graph
        .node
        .iter()
        .find_map(|n| {
            let ints = attrs::ints(n, "classlabels_int64s");
            let strs = attrs::strings(n, "classlabels_strings");
            match (ints.is_empty(), strs.is_empty()) {
                (false, _) => Some(ints.iter().map(ToString::to_string).collect()),
                (true, false) => Some(strs),
                (true, true) => None,
            }
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_inside_the_runtime_is_an_error() {
        let quiet = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let got: Result<(), String> = guarded(|| panic!("assertion failed: k compatible"));
        std::panic::set_hook(quiet);
        assert_eq!(got.unwrap_err(), "the ONNX runtime failed: assertion failed: k compatible");
        assert_eq!(guarded(|| Ok::<_, String>(7)), Ok(7));
    }

    #[test]
    fn the_signature_is_ir_version_then_another_model_field() {
        assert!(looks_like_onnx(&[0x08, 0x08, 0x12, 0x08]));
        assert!(looks_like_onnx(&[0x08, 0x07, 0x3a]));
        assert!(!looks_like_onnx(&[0x08, 0x08, 0x99]));
        assert!(!looks_like_onnx(&[0x80, 0x05]));
        assert!(!looks_like_onnx(b"{\"format\""));
        assert!(!looks_like_onnx(b"PK\x03\x04"));
        assert!(!looks_like_onnx(&[0x08]));
    }

    #[test]
    fn garbage_is_a_one_line_error() {
        for bytes in [&[0x08, 0x08, 0x12, 0xff, 0xff][..], &[0x08, 0x07], b"\x08\x07\x3a\x05hello"] {
            let e = OnnxModel::from_bytes(bytes).expect_err("garbage").to_string();
            assert!(!e.contains('\n'), "{e}");
        }
    }
}
