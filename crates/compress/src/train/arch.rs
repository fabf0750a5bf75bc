//! The architectures `--arch` names, as cxrm graphs with freshly initialised tensors.
//!
//! An architecture is only a list of layers; it becomes a spec §7 graph plus named tensors, and
//! from then on the trainer, the writer and the runtime all work from that graph. Nothing here
//! knows about burn.

use super::NamedTensor;
use cxrm_format::container::graph::{Graph, INPUT, Node};
use cxrm_format::container::value::Value;
use cxrm_format::error::{Error, Result};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// A network the trainer can build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arch {
    /// Fully connected ReLU layers of these widths, then the classifier. `lenet-300-100` is
    /// `Mlp([300, 100])`; `mlp-50` is a one-hidden-layer student.
    Mlp(Vec<usize>),
    /// The Caffe LeNet-5 that Deep Compression and MIRACLE report on: conv 20@5×5, max-pool,
    /// conv 50@5×5, max-pool, fc 500, fc classes (431K parameters for MNIST).
    LeNet5,
    /// LeNet-5's shape at other widths: conv `conv1`@5×5, max-pool, conv `conv2`@5×5, max-pool,
    /// fc `fc`, fc classes. `cnn-5-13-125` is LeNet-5 at a quarter width: a distillation
    /// student with 1/16 of its parameters.
    Cnn {
        conv1: usize,
        conv2: usize,
        fc: usize,
    },
    /// LeNet-5 with its second convolution depthwise-separable (depthwise 5×5 + pointwise).
    LeNet5Separable,
    /// VGG-style: two 3×3 conv blocks (16, 32 channels, each conv followed by batch norm and
    /// ReLU, each block by 2×2 max-pool), fc 128, fc classes.
    VggSmall,
    /// The depthwise-separable twin of `vgg-small`: a 3×3 stem, then depthwise 3×3 + pointwise
    /// 1×1 blocks in place of the later convolutions, the same pooling and classifier.
    MobilenetSmall,
    /// LeNet-5 as an XNOR-Net (Rastegari et al. 2016): the first and last layers stay real,
    /// conv2 and fc1 become binary layers, each behind a batch norm (so the signs it takes are
    /// not all positive) and followed by a ReLU. A binary layer is a `sign` followed by the
    /// layer with `α·sign(w)` weights per output channel, without XNOR-Net's input scaling `K`
    /// (XNOR-Net++ and Bi-Real Net drop it too): the batch norm then folds into the sign's
    /// per-channel thresholds when the model is written.
    LeNet5Xnor,
    /// `vgg-small` as an XNOR-Net: conv1 and fc2 real, conv2–conv4 and fc1 binary layers, each
    /// as batch norm → binary layer → ReLU.
    VggSmallXnor,
}

/// The names `--arch` accepts, for help texts and errors.
pub const ARCH_NAMES: &str = "lenet-300-100, lenet-5, lenet-5-separable, lenet-5-xnor, \
     vgg-small, vgg-small-xnor, mobilenet-small, mlp-H[-H...], cnn-C1-C2-F";

impl Arch {
    pub fn parse(name: &str) -> Result<Arch> {
        Ok(match name {
            "lenet-300-100" => Arch::Mlp(vec![300, 100]),
            "lenet-5" => Arch::LeNet5,
            "lenet-5-separable" => Arch::LeNet5Separable,
            "vgg-small" => Arch::VggSmall,
            "mobilenet-small" => Arch::MobilenetSmall,
            "lenet-5-xnor" => Arch::LeNet5Xnor,
            "vgg-small-xnor" => Arch::VggSmallXnor,
            _ => {
                let widths = |prefix: &str| {
                    name.strip_prefix(prefix).and_then(|rest| {
                        rest.split('-')
                            .map(|w| {
                                w.parse::<usize>()
                                    .ok()
                                    .filter(|&w| (1..=1 << 16).contains(&w))
                            })
                            .collect::<Option<Vec<usize>>>()
                    })
                };
                match (widths("mlp-"), widths("cnn-")) {
                    (Some(w), _) if !w.is_empty() => Arch::Mlp(w),
                    (_, Some(w)) if w.len() == 3 => Arch::Cnn {
                        conv1: w[0],
                        conv2: w[1],
                        fc: w[2],
                    },
                    _ => {
                        return Err(Error::Usage(format!(
                            "unknown architecture {name:?}; known: {ARCH_NAMES}"
                        )));
                    }
                }
            }
        })
    }

    pub fn name(&self) -> String {
        match self {
            Arch::Mlp(w) if w[..] == [300, 100] => "lenet-300-100".into(),
            Arch::Mlp(w) => format!(
                "mlp-{}",
                w.iter()
                    .map(|x| x.to_string())
                    .collect::<Vec<_>>()
                    .join("-")
            ),
            Arch::LeNet5 => "lenet-5".into(),
            Arch::Cnn { conv1, conv2, fc } => format!("cnn-{conv1}-{conv2}-{fc}"),
            Arch::LeNet5Separable => "lenet-5-separable".into(),
            Arch::VggSmall => "vgg-small".into(),
            Arch::MobilenetSmall => "mobilenet-small".into(),
            Arch::LeNet5Xnor => "lenet-5-xnor".into(),
            Arch::VggSmallXnor => "vgg-small-xnor".into(),
        }
    }

    /// Trainable parameters for inputs `[C, H, W]` and `classes` outputs (batch norms' running
    /// statistics are not parameters).
    pub fn params(&self, input: [usize; 3], classes: usize) -> Result<usize> {
        let (_, tensors) = self.build(input, classes, 0)?;
        Ok(tensors
            .iter()
            .filter(|t| !t.name.ends_with(".mean") && !t.name.ends_with(".var"))
            .map(|t| t.values.len())
            .sum())
    }

    /// The depthwise-separable counterpart the study trains as the `separable` method.
    pub fn separable_twin(&self) -> Option<Arch> {
        match self {
            Arch::LeNet5 => Some(Arch::LeNet5Separable),
            Arch::VggSmall => Some(Arch::MobilenetSmall),
            _ => None,
        }
    }

    /// The XNOR-Net counterpart the study trains as the `xnor` method.
    pub fn xnor_twin(&self) -> Option<Arch> {
        match self {
            Arch::LeNet5 => Some(Arch::LeNet5Xnor),
            Arch::VggSmall => Some(Arch::VggSmallXnor),
            _ => None,
        }
    }

    fn layers(&self, classes: usize) -> Vec<Layer> {
        use Layer::*;
        let conv = |name: &str, out, k, pad| Conv {
            name: name.into(),
            out,
            kernel: k,
            pad,
            depthwise: false,
            xnor: false,
        };
        let xnor_conv = |name: &str, out, k, pad| Conv {
            name: name.into(),
            out,
            kernel: k,
            pad,
            depthwise: false,
            xnor: true,
        };
        let depthwise = |name: &str, k, pad| Conv {
            name: name.into(),
            out: 0,
            kernel: k,
            pad,
            depthwise: true,
            xnor: false,
        };
        let dense = |name: &str, out| Dense {
            name: name.into(),
            out,
            xnor: false,
        };
        let xnor_dense = |name: &str, out| Dense {
            name: name.into(),
            out,
            xnor: true,
        };
        let bn = |name: &str| BatchNorm { name: name.into() };
        match self {
            Arch::Mlp(widths) => {
                let mut l = vec![Flatten];
                for (i, &w) in widths.iter().enumerate() {
                    l.push(dense(&format!("fc{}", i + 1), w));
                    l.push(Relu);
                }
                l.push(dense(&format!("fc{}", widths.len() + 1), classes));
                l
            }
            Arch::LeNet5 => Arch::Cnn {
                conv1: 20,
                conv2: 50,
                fc: 500,
            }
            .layers(classes),
            &Arch::Cnn { conv1, conv2, fc } => vec![
                conv("conv1", conv1, 5, 0),
                MaxPool,
                conv("conv2", conv2, 5, 0),
                MaxPool,
                Flatten,
                dense("fc1", fc),
                Relu,
                dense("fc2", classes),
            ],
            Arch::LeNet5Separable => vec![
                conv("conv1", 20, 5, 0),
                MaxPool,
                depthwise("conv2_dw", 5, 0),
                conv("conv2_pw", 50, 1, 0),
                MaxPool,
                Flatten,
                dense("fc1", 500),
                Relu,
                dense("fc2", classes),
            ],
            Arch::VggSmall => vec![
                conv("conv1", 16, 3, 1),
                bn("bn1"),
                Relu,
                conv("conv2", 16, 3, 1),
                bn("bn2"),
                Relu,
                MaxPool,
                conv("conv3", 32, 3, 1),
                bn("bn3"),
                Relu,
                conv("conv4", 32, 3, 1),
                bn("bn4"),
                Relu,
                MaxPool,
                Flatten,
                dense("fc1", 128),
                Relu,
                dense("fc2", classes),
            ],
            Arch::LeNet5Xnor => vec![
                conv("conv1", 20, 5, 0),
                MaxPool,
                bn("bn2"),
                xnor_conv("conv2", 50, 5, 0),
                Relu,
                MaxPool,
                Flatten,
                bn("bn3"),
                xnor_dense("fc1", 500),
                Relu,
                dense("fc2", classes),
            ],
            Arch::VggSmallXnor => vec![
                conv("conv1", 16, 3, 1),
                bn("bn1"),
                Relu,
                bn("bn2"),
                xnor_conv("conv2", 16, 3, 1),
                Relu,
                MaxPool,
                bn("bn3"),
                xnor_conv("conv3", 32, 3, 1),
                Relu,
                bn("bn4"),
                xnor_conv("conv4", 32, 3, 1),
                Relu,
                MaxPool,
                Flatten,
                bn("bn5"),
                xnor_dense("fc1", 128),
                Relu,
                dense("fc2", classes),
            ],
            Arch::MobilenetSmall => vec![
                conv("conv1", 16, 3, 1),
                bn("bn1"),
                Relu,
                depthwise("conv2_dw", 3, 1),
                bn("bn2_dw"),
                Relu,
                conv("conv2_pw", 16, 1, 0),
                bn("bn2_pw"),
                Relu,
                MaxPool,
                depthwise("conv3_dw", 3, 1),
                bn("bn3_dw"),
                Relu,
                conv("conv3_pw", 32, 1, 0),
                bn("bn3_pw"),
                Relu,
                depthwise("conv4_dw", 3, 1),
                bn("bn4_dw"),
                Relu,
                conv("conv4_pw", 32, 1, 0),
                bn("bn4_pw"),
                Relu,
                MaxPool,
                Flatten,
                dense("fc1", 128),
                Relu,
                dense("fc2", classes),
            ],
        }
    }

    /// The graph and freshly initialised tensors for inputs `[C, H, W]` and `classes` outputs.
    /// Weights are He-uniform (`U(±√(6/fan_in))`, for ReLU networks), biases zero, batch norms
    /// the identity; the same seed gives the same tensors.
    pub fn build(
        &self,
        input: [usize; 3],
        classes: usize,
        seed: u64,
    ) -> Result<(Graph, Vec<NamedTensor>)> {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut nodes = Vec::new();
        let mut tensors = Vec::new();
        let mut prev = INPUT.to_string();
        let [mut c, mut h, mut w] = input;
        let mut flat: Option<usize> = None;
        let mut counters = std::collections::HashMap::<&str, usize>::new();
        let mut auto_name = |kind: &'static str| {
            let n = counters.entry(kind).or_insert(0);
            *n += 1;
            format!("{kind}{n}")
        };
        let mut he = |fan_in: usize, n: usize| -> Vec<f32> {
            let bound = (6.0 / fan_in as f32).sqrt();
            (0..n).map(|_| rng.random_range(-bound..bound)).collect()
        };
        for layer in self.layers(classes) {
            let node = match layer {
                Layer::Conv {
                    name,
                    out,
                    kernel,
                    pad,
                    depthwise,
                    xnor,
                } => {
                    let (out, groups) = if depthwise { (c, c) } else { (out, 1) };
                    let cin = c / groups;
                    let fan_in = cin * kernel * kernel;
                    let (wn, bn) = (format!("{name}.weight"), format!("{name}.bias"));
                    tensors.push(NamedTensor::new(
                        &wn,
                        vec![out, cin, kernel, kernel],
                        he(fan_in, out * fan_in),
                    ));
                    tensors.push(NamedTensor::new(&bn, vec![out], vec![0.0; out]));
                    if h + 2 * pad < kernel || w + 2 * pad < kernel {
                        return Err(Error::Usage(format!(
                            "{}: a {kernel}x{kernel} kernel does not fit a {h}x{w} input",
                            self.name()
                        )));
                    }
                    (c, h, w) = (out, h + 2 * pad - kernel + 1, w + 2 * pad - kernel + 1);
                    let p = pad as i64;
                    if xnor {
                        prev = push_sign(&mut nodes, &name, &prev);
                    }
                    Node::new(&name, "conv2d", &[&prev], &[&wn, &bn])
                        .attr("padding", Value::ints([p, p, p, p]))
                        .attr("groups", Value::Int(groups as i64))
                }
                Layer::Dense { name, out, xnor } => {
                    let inp = flat.ok_or_else(|| {
                        Error::Usage(format!("{}: dense layer before flatten", self.name()))
                    })?;
                    let (wn, bn) = (format!("{name}.weight"), format!("{name}.bias"));
                    tensors.push(NamedTensor::new(&wn, vec![out, inp], he(inp, out * inp)));
                    tensors.push(NamedTensor::new(&bn, vec![out], vec![0.0; out]));
                    flat = Some(out);
                    if xnor {
                        prev = push_sign(&mut nodes, &name, &prev);
                    }
                    Node::new(&name, "dense", &[&prev], &[&wn, &bn])
                }
                Layer::BatchNorm { name } => {
                    // Per channel of an image, or per feature of a vector.
                    let c = flat.unwrap_or(c);
                    let names = ["gamma", "beta", "mean", "var"].map(|k| format!("{name}.{k}"));
                    for (n, v) in names.iter().zip([1.0, 0.0, 0.0, 1.0]) {
                        tensors.push(NamedTensor::new(n, vec![c], vec![v; c]));
                    }
                    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
                    Node::new(&name, "batch_norm", &[&prev], &refs)
                        .attr("epsilon", Value::Float(1e-5))
                }
                Layer::Relu => Node::new(auto_name("relu"), "relu", &[&prev], &[]),
                Layer::MaxPool => {
                    (h, w) = (h / 2, w / 2);
                    Node::new(auto_name("pool"), "max_pool2d", &[&prev], &[])
                        .attr("kernel", Value::ints([2, 2]))
                        .attr("stride", Value::ints([2, 2]))
                }
                Layer::Flatten => {
                    flat = Some(c * h * w);
                    Node::new("flatten", "flatten", &[&prev], &[])
                }
            };
            prev = node.name.clone();
            nodes.push(node);
        }
        Ok((Graph { nodes }, tensors))
    }
}

/// A `sign` node binarizing `prev` for the binary layer `layer`; returns its name.
fn push_sign(nodes: &mut Vec<Node>, layer: &str, prev: &str) -> String {
    let name = format!("{layer}_sign");
    nodes.push(Node::new(&name, "sign", &[prev], &[]));
    name
}

/// One step of an architecture, before shapes are known.
enum Layer {
    /// `depthwise`: one filter per input channel (`out` is ignored).
    Conv {
        name: String,
        out: usize,
        kernel: usize,
        pad: usize,
        depthwise: bool,
        /// A binary layer: a `sign` in front, weights `α·sign(w)` per output channel.
        xnor: bool,
    },
    Dense {
        name: String,
        out: usize,
        /// A binary layer, as for `Conv`.
        xnor: bool,
    },
    BatchNorm {
        name: String,
    },
    Relu,
    MaxPool,
    Flatten,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(arch: &Arch) -> usize {
        arch.params([1, 28, 28], 10).unwrap()
    }

    #[test]
    fn parameter_counts_match_the_papers_networks() {
        // Deep Compression, Table 1: LeNet-300-100 267K, LeNet-5 431K.
        assert_eq!(params(&Arch::parse("lenet-300-100").unwrap()), 266_610);
        assert_eq!(params(&Arch::parse("lenet-5").unwrap()), 431_080);
        assert!(params(&Arch::MobilenetSmall) < params(&Arch::VggSmall));
        assert!(params(&Arch::LeNet5Separable) < params(&Arch::LeNet5));
        // LeNet-5's shape at full width is LeNet-5, tensor for tensor.
        let full = Arch::parse("cnn-20-50-500").unwrap();
        assert_eq!(
            full.build([1, 28, 28], 10, 3).unwrap(),
            Arch::LeNet5.build([1, 28, 28], 10, 3).unwrap()
        );
    }

    #[test]
    fn names_round_trip_and_bad_names_are_usage_errors() {
        for name in [
            "lenet-300-100",
            "lenet-5",
            "lenet-5-separable",
            "vgg-small",
            "mobilenet-small",
            "mlp-50",
            "mlp-64-32",
            "cnn-5-13-125",
        ] {
            assert_eq!(Arch::parse(name).unwrap().name(), name);
        }
        for bad in [
            "",
            "mlp-",
            "mlp-0",
            "mlp-x",
            "resnet",
            "cnn-5-13",
            "cnn-5-13-0",
        ] {
            assert!(matches!(Arch::parse(bad), Err(Error::Usage(_))), "{bad}");
        }
    }

    #[test]
    fn same_seed_same_tensors() {
        let a = Arch::LeNet5.build([1, 28, 28], 10, 7).unwrap();
        let b = Arch::LeNet5.build([1, 28, 28], 10, 7).unwrap();
        let c = Arch::LeNet5.build([1, 28, 28], 10, 8).unwrap();
        assert_eq!(a.1, b.1);
        assert_ne!(a.1, c.1);
        assert_eq!(a.0, b.0);
    }
}
