//! Binary-weight networks (BWN; Rastegari, Ordonez, Redmon & Farhadi, "XNOR-Net", ECCV 2016):
//! every weight of a layer becomes `α · sign(w)`, with one `α` (the mean magnitude) per output
//! channel, while activations stay real. The layers are the ordinary `conv2d` and `dense` ops;
//! their weights are stored `binary` (spec §5.9), one bit each plus a scale per row, and the
//! runtime multiplies by adding and subtracting.
//!
//! The first and the last weighted layers stay real, as in the paper's and most later binary
//! networks: the first sees raw pixels through few weights, the last writes the logits, and
//! together they hold a small share of the parameters.
//!
//! Training starts from the trained real-valued model and fine-tunes through the
//! straight-through estimator (the forward pass uses `α · sign(w)`; the gradient updates the
//! real-valued `w`), as `crate::train::net`'s `Binary` form does for XNOR layers.

use cxrm_format::container::graph::Graph;

/// The weights BWN binarizes: the first weight of every `conv2d` and `dense` node, except the
/// graph's first and last weighted nodes (in graph order).
pub fn binarized_weights(graph: &Graph) -> Vec<String> {
    let weighted: Vec<&str> = graph
        .nodes
        .iter()
        .filter(|n| matches!(n.op.as_str(), "conv2d" | "dense"))
        .filter_map(|n| n.weights.first().map(String::as_str))
        .collect();
    if weighted.len() <= 2 {
        return Vec::new();
    }
    weighted[1..weighted.len() - 1]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

#[cfg(feature = "train")]
pub use retrain::{BwnOptions, BwnReport, bwn, plan};

#[cfg(feature = "train")]
mod retrain {
    use super::binarized_weights;
    use crate::methods::deep_compression::store::TensorPlan;
    use crate::train::net::{Form, Net};
    use crate::train::{
        Event, NamedTensor, TrainData, TrainOptions, TrainedModel, device, fine_tune, finish,
        set_meta,
    };
    use cxrm_format::container::value::Value;
    use cxrm_format::error::{Error, Result};
    use std::collections::HashSet;

    #[derive(Debug, Clone)]
    pub struct BwnOptions {
        /// The fine-tuning under binarized weights.
        pub retrain: TrainOptions,
    }

    /// One binarized tensor, as a line of the report.
    #[derive(Debug, Clone, PartialEq)]
    pub struct BwnReport {
        pub tensor: String,
        pub rows: usize,
        pub cols: usize,
    }

    impl std::fmt::Display for BwnReport {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(
                f,
                "{:<16} {} x {} binary ({} sign bits, {} scales)",
                self.tensor,
                self.rows,
                self.cols,
                self.rows * self.cols,
                self.rows
            )
        }
    }

    /// Binarize `base`'s hidden layers and fine-tune them; the returned model's binarized
    /// weights are exactly `±α` per row, so [`plan`] stores them losslessly.
    pub fn bwn(
        base: &TrainedModel,
        data: &TrainData,
        opts: &BwnOptions,
        on: &mut dyn FnMut(Event),
    ) -> Result<(TrainedModel, Vec<BwnReport>)> {
        let names = binarized_weights(&base.graph);
        if names.is_empty() {
            return Err(Error::Usage(
                "bwn keeps the first and last weighted layers real, and this model has no \
                 other conv2d or dense layer"
                    .into(),
            ));
        }
        let mut net = Net::new(base.graph.clone(), base.tensors.clone(), &device())?;
        let mut reports = Vec::new();
        for name in &names {
            let t = base
                .tensors
                .iter()
                .find(|t| &t.name == name)
                .ok_or_else(|| Error::Model(format!("no tensor {name:?}")))?;
            let rows = t.shape.first().copied().unwrap_or(1).max(1);
            net.set_form(name, Form::Binary { rows }, &t.values)?;
            reports.push(BwnReport {
                tensor: name.clone(),
                rows,
                cols: t.values.len() / rows,
            });
        }
        let mut metadata = base.metadata.clone();
        let binary: HashSet<String> = names.iter().cloned().collect();
        let plan = plan_for(binary);
        fine_tune(
            &mut net,
            data,
            &opts.retrain,
            "fine-tune bwn",
            &mut metadata,
            &plan,
            on,
        )?;
        set_meta(
            &mut metadata,
            "compress.method",
            Value::String("bwn".into()),
        );
        set_meta(
            &mut metadata,
            "compress.retrain_epochs",
            Value::Int(opts.retrain.epochs as i64),
        );
        Ok((finish(&net, metadata), reports))
    }

    /// The storage plan of a BWN model: its binarized weights `binary`, the rest dense.
    pub fn plan(model: &TrainedModel) -> impl Fn(&NamedTensor) -> Option<TensorPlan> + use<> {
        plan_for(binarized_weights(&model.graph).into_iter().collect())
    }

    fn plan_for(binary: HashSet<String>) -> impl Fn(&NamedTensor) -> Option<TensorPlan> {
        move |t: &NamedTensor| binary.contains(&t.name).then(TensorPlan::binary)
    }
}
