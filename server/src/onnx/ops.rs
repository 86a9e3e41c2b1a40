//! The ONNX-ML operators skl2onnx emits that tract 0.23 lacks: `Scaler` (StandardScaler and
//! friends), `Imputer` (SimpleImputer) and `TreeEnsembleRegressor` (trees, forests and boosting
//! for regression), and a fix of its
//! binary `TreeEnsembleClassifier` label. Both are built from
//! tract's own kernels; the regressor's trees are proved sound by `check` before they get here.

use tract_onnx::model::{OnnxOpRegister, ParsingContext};
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;
use tract_onnx::tract_hir::ops::array::TypedConcat;
use tract_onnx_opl::ml::tree::{Aggregate, Cmp, TreeEnsemble, TreeEnsembleData};

use super::attrs::{float, floats, ints, string, strings};

/// Adds our operators to tract's register.
pub fn register(reg: &mut OnnxOpRegister) {
    reg.insert("Scaler", scaler);
    reg.insert("Imputer", imputer);
    reg.insert("TreeEnsembleRegressor", tree_regressor);
    reg.insert("TreeEnsembleClassifier", tree_classifier);
}

/// `Y = (X - offset) * scale`, per column (or one value for all columns), as float32.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct Scaler {
    offset: Arc<Tensor>,
    scale: Arc<Tensor>,
}

/// The shape rules Scaler and TreeEnsembleRegressor share: one 2-D input, one float32 output.
fn one_2d_input_one_f32_output<'r, 'p: 'r>(
    s: &mut Solver<'r>,
    inputs: &'p [TensorProxy],
    outputs: &'p [TensorProxy],
) -> InferenceResult {
    check_input_arity(inputs, 1)?;
    check_output_arity(outputs, 1)?;
    s.equals(&inputs[0].rank, 2)?;
    s.equals(&outputs[0].datum_type, DatumType::F32)?;
    Ok(())
}

fn scaler(_ctx: &ParsingContext, node: &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let row = |v: &[f32]| -> TractResult<Arc<Tensor>> {
        let v = if v.is_empty() { &[0f32][..] } else { v };
        Ok(tensor1(v).into_shape(&[1, v.len()])?.into_arc_tensor())
    };
    let (offset, scale) = (floats(node, "offset"), floats(node, "scale"));
    let scale = if scale.is_empty() { row(&[1.0])? } else { row(scale)? };
    Ok((expand(Scaler { offset: row(offset)?, scale }), vec![]))
}

impl Expansion for Scaler {
    fn name(&self) -> StaticName {
        "Scaler".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        one_2d_input_one_f32_output(s, inputs, outputs)?;
        s.equals(&inputs[0].shape, &outputs[0].shape)?;
        Ok(())
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        let width = model.outlet_fact(inputs[0])?.shape[1].clone();
        for (what, t) in [("offset", &self.offset), ("scale", &self.scale)] {
            let n = t.shape()[1];
            ensure!(n == 1 || width == n.to_dim(), "Scaler {what} has {n} values for {width} columns");
        }
        let x = model.wire_node(format!("{prefix}.to_f32"), tract_core::ops::cast::cast(f32::datum_type()), inputs)?;
        let offset = model.add_const(format!("{prefix}.offset"), self.offset.clone())?;
        let scale = model.add_const(format!("{prefix}.scale"), self.scale.clone())?;
        let x = model.wire_node(format!("{prefix}.sub"), tract_core::ops::math::sub(), &[x[0], offset])?;
        model.wire_node(format!("{prefix}.mul"), tract_core::ops::math::mul(), &[x[0], scale])
    }
}

/// SimpleImputer: each value equal to `replaced_value_float` (NaN, as skl2onnx writes it for
/// `missing_values=np.nan`, matches every NaN) becomes its column's `imputed_value_floats` entry
/// (or the single value for all columns). Float inputs only; the output has the input's type.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct Imputer {
    imputed: Arc<Tensor>,
    replaced: u32,
}

fn imputer(_ctx: &ParsingContext, node: &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let imputed = floats(node, "imputed_value_floats");
    ensure!(!imputed.is_empty(), "Imputer without imputed_value_floats (integer imputation) is not supported");
    let imputed = tensor1(imputed).into_shape(&[1, imputed.len()])?.into_arc_tensor();
    let replaced = float(node, "replaced_value_float").unwrap_or(0.0).to_bits();
    Ok((expand(Imputer { imputed, replaced }), vec![]))
}

impl Expansion for Imputer {
    fn name(&self) -> StaticName {
        "Imputer".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1)?;
        check_output_arity(outputs, 1)?;
        s.equals(&inputs[0].rank, 2)?;
        s.equals(&inputs[0].datum_type, &outputs[0].datum_type)?;
        s.equals(&inputs[0].shape, &outputs[0].shape)?;
        Ok(())
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        let fact = model.outlet_fact(inputs[0])?.clone();
        ensure!(fact.datum_type.is_float(), "Imputer on {:?} input is not supported (float only)", fact.datum_type);
        let n = self.imputed.shape()[1];
        ensure!(n == 1 || fact.shape[1] == n.to_dim(), "Imputer has {n} values for {} columns", fact.shape[1]);
        let imputed =
            model.add_const(format!("{prefix}.imputed"), self.imputed.cast_to_dt(fact.datum_type)?.into_owned())?;
        let replaced = f32::from_bits(self.replaced);
        let missing = if replaced.is_nan() {
            model.wire_node(format!("{prefix}.is_nan"), tract_core::ops::math::is_nan(), inputs)?
        } else {
            let value = tensor2(&[[replaced]]).cast_to_dt(fact.datum_type)?.into_owned();
            let value = model.add_const(format!("{prefix}.replaced"), value)?;
            let eq = tract_core::ops::binary::TypedBinOp(tract_core::ops::logic::comp_eq(), None);
            model.wire_node(format!("{prefix}.is_replaced"), eq, &[inputs[0], value])?
        };
        model.wire_node(format!("{prefix}.fill"), tract_core::ops::logic::Iff, &[missing[0], imputed, inputs[0]])
    }
}

/// Tree ensemble regression: the summed (or averaged, ...) leaf targets plus `base_values`.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct TreeEnsembleRegressor {
    ensemble: TreeEnsemble,
    base: Option<Arc<Tensor>>,
}

fn mode(s: &str) -> Option<Cmp> {
    Some(match s {
        "BRANCH_LEQ" => Cmp::LessEqual,
        "BRANCH_LT" => Cmp::Less,
        "BRANCH_GTE" => Cmp::GreaterEqual,
        "BRANCH_GT" => Cmp::Greater,
        "BRANCH_EQ" => Cmp::Equal,
        "BRANCH_NEQ" => Cmp::NotEqual,
        _ => return None,
    })
}

/// Builds tract's compact tree layout (see `TreeEnsembleData`) from attributes `check` proved:
/// trees in order, node ids 0..n within each tree, votes (`{leaf}_*`) naming existing nodes.
fn ensemble(node: &NodeProto, leaf: &str, n_outputs: usize, aggregate: Aggregate) -> TractResult<TreeEnsemble> {
    let (trees, nodes) = (ints(node, "nodes_treeids"), ints(node, "nodes_nodeids"));
    let (features, values) = (ints(node, "nodes_featureids"), floats(node, "nodes_values"));
    let (yes, no, modes) =
        (ints(node, "nodes_truenodeids"), ints(node, "nodes_falsenodeids"), strings(node, "nodes_modes"));
    let nan_true = ints(node, "nodes_missing_value_tracks_true");
    let (v_trees, v_nodes) = (ints(node, &format!("{leaf}_treeids")), ints(node, &format!("{leaf}_nodeids")));
    let (v_ids, v_weights) = (ints(node, &format!("{leaf}_ids")), floats(node, &format!("{leaf}_weights")));

    let mut order: Vec<usize> = (0..nodes.len()).collect();
    order.sort_by_key(|&i| (trees[i], nodes[i]));
    let mut votes: Vec<usize> = (0..v_ids.len()).collect();
    votes.sort_by_key(|&i| (v_trees[i], v_nodes[i]));
    let mut votes = votes.into_iter().peekable();

    let (mut roots, mut rows, mut leaves) = (Vec::<u32>::new(), Vec::<u32>::new(), Vec::<u32>::new());
    let mut max_feature = 0;
    for i in order {
        if nodes[i] == 0 {
            roots.push((rows.len() / 5) as u32);
        }
        let root = roots.last().copied().unwrap_or(0);
        match mode(&modes[i]) {
            Some(cmp) => {
                max_feature = max_feature.max(features[i] as usize);
                let nan = u32::from(nan_true.get(i).is_some_and(|&v| v != 0));
                rows.extend([
                    features[i] as u32,
                    yes[i] as u32 + root,
                    no[i] as u32 + root,
                    values[i].to_bits(),
                    (0x100 * nan) | cmp as u32,
                ]);
            }
            None => {
                let start = (leaves.len() / 2) as u32;
                while let Some(&v) = votes.peek().filter(|&&v| (v_trees[v], v_nodes[v]) == (trees[i], nodes[i])) {
                    leaves.extend([v_ids[v] as u32, v_weights[v].to_bits()]);
                    votes.next();
                }
                rows.extend([start, (leaves.len() / 2) as u32, 0, 0, 0]);
            }
        }
    }
    let data = TreeEnsembleData {
        trees: rctensor1(&roots),
        nodes: tensor1(&rows).into_shape(&[rows.len() / 5, 5])?.into_arc_tensor(),
        leaves: tensor1(&leaves).into_shape(&[leaves.len() / 2, 2])?.into_arc_tensor(),
    };
    TreeEnsemble::build(data, max_feature, n_outputs, aggregate)
}

/// `base_values` as a `[1, n]` row to add to the scores, if given.
fn base_row(node: &NodeProto) -> TractResult<Option<Arc<Tensor>>> {
    let base = floats(node, "base_values");
    if base.is_empty() {
        return Ok(None);
    }
    Ok(Some(tensor1(base).into_shape(&[1, base.len()])?.into_arc_tensor()))
}

fn tree_regressor(_ctx: &ParsingContext, node: &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let n_targets = usize::try_from(super::attrs::int(node, "n_targets").unwrap_or(1))?;
    let aggregate = match string(node, "aggregate_function").as_deref().unwrap_or("SUM") {
        "SUM" => Aggregate::Sum,
        "AVERAGE" => Aggregate::Avg,
        "MIN" => Aggregate::Min,
        "MAX" => Aggregate::Max,
        other => bail!("TreeEnsembleRegressor aggregate_function {other} is not supported"),
    };
    match string(node, "post_transform").as_deref() {
        None | Some("NONE") => {}
        Some(other) => bail!("TreeEnsembleRegressor post_transform {other} is not supported"),
    }
    let ensemble = ensemble(node, "target", n_targets, aggregate)?;
    Ok((expand(TreeEnsembleRegressor { ensemble, base: base_row(node)? }), vec![]))
}

/// Wires the ensemble's scores plus `base`, if any.
fn wire_scores(
    prefix: &str,
    model: &mut TypedModel,
    inputs: &[OutletId],
    ensemble: &TreeEnsemble,
    base: Option<&Arc<Tensor>>,
) -> TractResult<TVec<OutletId>> {
    let op = tract_onnx_opl::ml::tree_ensemble_classifier::TreeEnsembleClassifier { ensemble: ensemble.clone() };
    let scores = model.wire_node(format!("{prefix}.trees"), op, inputs)?;
    let Some(base) = base else { return Ok(scores) };
    let base = model.add_const(format!("{prefix}.base"), base.clone())?;
    model.wire_node(format!("{prefix}.base_values"), tract_core::ops::math::add(), &[scores[0], base])
}

impl Expansion for TreeEnsembleRegressor {
    fn name(&self) -> StaticName {
        "TreeEnsembleRegressor".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        one_2d_input_one_f32_output(s, inputs, outputs)?;
        s.equals(&outputs[0].rank, 2)?;
        s.equals(&outputs[0].shape[0], &inputs[0].shape[0])?;
        s.equals(&outputs[0].shape[1], self.ensemble.n_classes().to_dim())?;
        Ok(())
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        wire_scores(prefix, model, inputs, &self.ensemble, self.base.as_ref())
    }
}

/// A binary tree classifier whose votes all go to one score, P(second class) (skl2onnx's layout
/// for two classes). tract 0.23 expands the probabilities right but takes the label as the argmax
/// of that single score, always the first class; we take it from both probabilities.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct BinaryTreeClassifier {
    ensemble: TreeEnsemble,
    base: Option<Arc<Tensor>>,
    logistic: bool,
    labels: Arc<Tensor>,
}

/// tract's own builder, for every layout but the binary one.
fn tract_tree_classifier(ctx: &ParsingContext, node: &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let register = tract_onnx::onnx().op_register;
    let build =
        register.0.get("TreeEnsembleClassifier").ok_or_else(|| anyhow!("tract has no TreeEnsembleClassifier"))?;
    build(ctx, node)
}

fn tree_classifier(ctx: &ParsingContext, node: &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let (int_labels, str_labels) = (ints(node, "classlabels_int64s"), strings(node, "classlabels_strings"));
    let n_labels = int_labels.len() + str_labels.len();
    if n_labels != 2 || ints(node, "class_ids").iter().any(|&c| c != 0) {
        return tract_tree_classifier(ctx, node);
    }
    let logistic = match string(node, "post_transform").as_deref() {
        None | Some("NONE") => false,
        Some("LOGISTIC") => true,
        Some(other) => bail!("binary TreeEnsembleClassifier post_transform {other} is not supported"),
    };
    let base = base_row(node)?;
    ensure!(base.as_ref().is_none_or(|b| b.len() == 1), "binary TreeEnsembleClassifier needs one base value");
    let labels = if int_labels.is_empty() { rctensor1(&str_labels) } else { rctensor1(int_labels) };
    let ensemble = ensemble(node, "class", 1, Aggregate::Sum)?;
    Ok((expand(BinaryTreeClassifier { ensemble, base, logistic, labels }), vec![]))
}

impl Expansion for BinaryTreeClassifier {
    fn name(&self) -> StaticName {
        "BinaryTreeEnsembleClassifier".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1)?;
        check_output_arity(outputs, 2)?;
        s.equals(&outputs[0].datum_type, self.labels.datum_type())?;
        s.equals(&outputs[1].datum_type, DatumType::F32)?;
        s.equals(&outputs[0].rank, 1)?;
        s.equals(&outputs[1].rank, 2)?;
        s.equals(&outputs[0].shape[0], &inputs[0].shape[0])?;
        s.equals(&outputs[1].shape[0], &inputs[0].shape[0])?;
        s.equals(&outputs[1].shape[1], 2.to_dim())?;
        Ok(())
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        use tract_core::ops::nn::{Reduce, Reducer};
        let mut p = wire_scores(prefix, model, inputs, &self.ensemble, self.base.as_ref())?;
        if self.logistic {
            p = model.wire_node(format!("{prefix}.logistic"), tract_core::ops::nn::sigmoid(), &p)?;
        }
        let one = model.add_const(format!("{prefix}.one"), rctensor2(&[[1f32]]))?;
        let q = model.wire_node(format!("{prefix}.complement"), tract_core::ops::math::sub(), &[one, p[0]])?;
        let proba = model.wire_node(format!("{prefix}.proba"), TypedConcat::new(1), &[q[0], p[0]])?;
        let best =
            model.wire_node(format!("{prefix}.argmax"), Reduce::new(tvec!(1), Reducer::ArgMax(false)), &proba)?;
        let best = model.wire_node(format!("{prefix}.rm_axis"), AxisOp::Rm(1), &best)?;
        let best =
            model.wire_node(format!("{prefix}.to_i32"), tract_core::ops::cast::cast(i32::datum_type()), &best)?;
        let default = Tensor::zero_dt(self.labels.datum_type(), &[])?.into_arc_tensor();
        let lookup = tract_onnx_opl::ml::DirectLookup::new(self.labels.clone(), default)?;
        let labels = model.wire_node(format!("{prefix}.labels"), lookup, &best)?;
        Ok(tvec!(labels[0], proba[0]))
    }

    fn nboutputs(&self) -> TractResult<usize> {
        Ok(2)
    }
}
