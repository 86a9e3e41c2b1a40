//! Tree ensemble scores without tract 0.23's slow leaf lookup. tract's `TreeEnsemble` finds a
//! leaf's votes with `outer_iter().skip(start)` over the whole leaves array, and ndarray's axis
//! iterator has no `nth`: every tree of every row walks past all the leaves before it, so a
//! 100-tree forest took ~20 ms a row (onnxruntime: ~15 µs). [`FastTrees`] evaluates the same
//! data with tract's exact semantics (comparisons in float32, NaN routing, aggregation from zero
//! with averages over the votes a class got) but slices the votes directly; [`replace_slow_kernels`]
//! swaps it in for tract's op in a typed model, whichever builder (tract's or ours) wired it.

use tract_onnx::tract_hir::internal::*;
use tract_onnx_opl::ml::tree::{Aggregate, Cmp, TreeEnsemble};
use tract_onnx_opl::ml::tree_ensemble_classifier::TreeEnsembleClassifier;

/// tract's tree-ensemble scores op, evaluated with direct leaf slices.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct FastTrees {
    ensemble: TreeEnsemble,
}

/// Replaces every tract `TreeEnsembleClassifier` scores op in `model` by [`FastTrees`]; returns
/// how many it replaced.
pub fn replace_slow_kernels(model: &mut TypedModel) -> usize {
    let mut n = 0;
    for node in &mut model.nodes {
        if let Some(op) = node.op_as::<TreeEnsembleClassifier>() {
            let fast = FastTrees { ensemble: op.ensemble.clone() };
            node.op = Box::new(fast);
            n += 1;
        }
    }
    n
}

impl FastTrees {
    /// Scores `[rows, n_classes]` of `x` `[rows, features]`, as tract's `TreeEnsemble::eval`.
    fn scores(&self, x: tract_ndarray::ArrayView2<'_, f32>) -> TractResult<tract_ndarray::Array2<f32>> {
        let e = &self.ensemble;
        if x.ncols() <= e.max_used_feature {
            bail!(
                "Invalid input shape: input has {} features, tree ensemble use feature #{}",
                x.ncols(),
                e.max_used_feature
            );
        }
        let roots = e.data.trees.try_as_plain_ram()?.as_slice::<u32>()?;
        let nodes = e.data.nodes.try_as_plain_ram()?.as_slice::<u32>()?;
        let leaves = e.data.leaves.try_as_plain_ram()?.as_slice::<u32>()?;
        let mut out = tract_ndarray::Array2::<f32>::zeros((x.nrows(), e.n_classes));
        let mut counts = vec![0usize; e.n_classes];
        for (row, mut scores) in x.outer_iter().zip(out.outer_iter_mut()) {
            counts.iter_mut().for_each(|c| *c = 0);
            for &root in roots {
                let mut id = root as usize;
                let (start, end) = loop {
                    let n = nodes.get(id * 5..id * 5 + 5).ok_or_else(|| anyhow!("tree node {id} out of range"))?;
                    let Ok(cmp) = Cmp::try_from((n[4] & 0xFF) as u8) else { break (n[0] as usize, n[1] as usize) };
                    let v = *row.get(n[0] as usize).ok_or_else(|| anyhow!("feature {} out of range", n[0]))?;
                    let goes_true = if v.is_nan() { n[4] & 0x100 != 0 } else { cmp.compare(v, f32::from_bits(n[3])) };
                    id = if goes_true { n[1] } else { n[2] } as usize;
                };
                let votes =
                    leaves.get(start * 2..end * 2).ok_or_else(|| anyhow!("leaf votes {start}..{end} out of range"))?;
                for vote in votes.chunks_exact(2) {
                    let class = vote[0] as usize;
                    let (w, total) = (
                        f32::from_bits(vote[1]),
                        scores.get_mut(class).ok_or_else(|| anyhow!("class {class} out of range"))?,
                    );
                    match e.aggregate_fn {
                        Aggregate::Sum | Aggregate::Avg => *total += w,
                        Aggregate::Max => *total = total.max(w),
                        Aggregate::Min => *total = total.min(w),
                    }
                    counts[class] += 1;
                }
            }
            if e.aggregate_fn == Aggregate::Avg {
                for (total, &c) in scores.iter_mut().zip(&counts) {
                    if c > 1 {
                        *total /= c as f32;
                    }
                }
            }
        }
        Ok(out)
    }
}

impl Op for FastTrees {
    fn name(&self) -> StaticName {
        "TreeEnsembleScores".into()
    }

    op_as_typed_op!();
}

impl EvalOp for FastTrees {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let input = input.cast_to::<f32>()?;
        let x = input.to_plain_array_view::<f32>()?;
        let x = if x.ndim() == 1 { x.insert_axis(tract_ndarray::Axis(0)) } else { x };
        let x = x.into_dimensionality::<tract_ndarray::Ix2>()?;
        Ok(tvec!(self.scores(x)?.into_tvalue()))
    }
}

impl TypedOp for FastTrees {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let n = &inputs[0].shape[0];
        Ok(tvec!(f32::fact(&[n.clone(), self.ensemble.n_classes().into()])))
    }

    as_op!();
}
