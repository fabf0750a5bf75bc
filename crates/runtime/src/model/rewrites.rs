//! The graph rewrites made once at load: batch norms folded, activations, residual adds and signs
//! fused, weights repacked for their kernels.

use super::*;

/// How many layers read each layer's output, counted once in one pass over the inputs (the
/// folding and fusing passes change ops, and only the last of them inputs, so the counts
/// hold throughout; asking per layer would make loading quadratic in the graph's size).
pub(super) fn reader_counts(layers: &[Layer<'_>]) -> Vec<usize> {
    let mut counts = vec![0; layers.len()];
    for layer in layers {
        let mut read: Vec<usize> = layer
            .inputs
            .iter()
            .filter_map(|s| match s {
                Source::Node(j) => Some(*j),
                _ => None,
            })
            .collect();
        // A layer that reads the same output twice (x + x) is one reader.
        read.sort_unstable();
        read.dedup();
        for j in read {
            counts[j] += 1;
        }
    }
    counts
}

/// Fold each batch norm into the convolution or dense layer that feeds only it:
/// `w' = w · γ/σ` per output channel, `b' = (b − μ) · γ/σ + β`.
/// `release` gets the mapped weights that folding copied.
pub(super) fn fold_batch_norms(layers: &mut [Layer<'_>], release: &dyn Fn(&[f32])) {
    let readers = reader_counts(layers);
    for i in 0..layers.len() {
        let (Op::BatchNorm { scale, shift }, [Source::Node(j)]) =
            (&layers[i].op, &layers[i].inputs[..])
        else {
            continue;
        };
        let j = *j;
        if readers[j] != 1 {
            continue;
        }
        let (scale, shift) = (scale.clone(), shift.clone());
        let folded = match &mut layers[j].op {
            Op::Conv { weight, bias, .. } | Op::Dense { weight, bias } => {
                fold_into(weight, bias, &scale, &shift, release);
                true
            }
            Op::ConvChain { steps, bias } => {
                let last = steps.len() - 1;
                fold_into(&mut steps[last].0, bias, &scale, &shift, release);
                true
            }
            _ => false,
        };
        if folded {
            layers[i].op = Op::Identity("batch_norm (folded)");
        }
    }
}

/// Fuse each `sign` into the binary `conv2d` (groups 1) or `dense` that is its only reader: the
/// pair is a binary layer, run on popcounts of the input's signs at the sign's thresholds
/// ([`xnor`], unscaled). The sign becomes an identity, which the arena runs in place.
pub(super) fn fuse_signs(layers: &mut [Layer<'_>], shapes: &[Vec<usize>]) {
    let readers = reader_counts(layers);
    for j in 0..layers.len() {
        let [Source::Node(i)] = layers[j].inputs[..] else {
            continue;
        };
        if readers[i] != 1 {
            continue;
        }
        let Op::Sign { threshold } = &layers[i].op else {
            continue;
        };
        let input = SignInput::Thresholds(threshold.clone());
        let fused = match &mut layers[j].op {
            Op::Conv {
                weight: Matrix::Signs(w),
                bias,
                params,
                activation: Activation::None,
                residual: false,
            } if params.groups == 1 => Op::XnorConv {
                weight: XnorWeight::Bits(BitRows::for_conv(&w.to_binary(), shapes[i][0])),
                bias: bias.take(),
                params: *params,
                input,
            },
            Op::Dense {
                weight: Matrix::Signs(w),
                bias,
            } => Op::XnorDense {
                weight: XnorWeight::Bits(BitRows::from_binary(&w.to_binary())),
                bias: bias.take(),
                input,
            },
            _ => continue,
        };
        layers[j].op = fused;
        layers[i].op = Op::Identity("sign (fused)");
    }
}

/// Binary weights of a convolution with no `sign` in front (BWN) are decoded to f32 for the
/// blocked products: adding a row of the input per weight measured 0.5x the `gemm` crate's
/// speed on LeNet-5's conv2 (124 against 63 µs, one thread, `cargo bench --bench kernels --
/// bwn`), while on a dense layer at batch 1, whose matrix-vector product is bound by reading
/// the weights, the bits were 4.7x faster (1.08 against 5.05 ms at 4096×4096). Dense layers
/// keep their bits.
pub(super) fn decode_binary_convolutions(layers: &mut [Layer<'_>]) {
    for layer in layers.iter_mut() {
        if let Op::Conv { weight, .. } = &mut layer.op
            && let Matrix::Signs(signs) = weight
        {
            let dense = Matrix::dense(signs.to_dense(), signs.rows, signs.cols);
            *weight = dense;
        }
    }
}

/// Fuse each `relu`/`relu6` into the convolution it reads, when it is that convolution's only
/// reader (through batch norms already folded into it): the activation is then applied to each
/// part of the output as the convolution writes it, instead of in a pass of its own. The fused
/// layer becomes an identity.
pub(super) fn fuse_activations(layers: &mut [Layer<'_>]) {
    let readers = reader_counts(layers);
    for i in 0..layers.len() {
        let (fused, shown) = match layers[i].op {
            Op::Relu => (Activation::Relu, "relu (fused)"),
            Op::Relu6 => (Activation::Relu6, "relu6 (fused)"),
            _ => continue,
        };
        let [Source::Node(mut j)] = layers[i].inputs[..] else {
            continue;
        };
        // Back through the identities that folded batch norms left, each read only here.
        while readers[j] == 1
            && let (Op::Identity(_), [Source::Node(k)]) = (&layers[j].op, &layers[j].inputs[..])
        {
            j = *k;
        }
        if readers[j] != 1 {
            continue;
        }
        if let Op::Conv { activation, .. } = &mut layers[j].op
            && *activation == Activation::None
        {
            *activation = fused;
            layers[i].op = Op::Identity(shown);
        }
    }
}

/// Fuses each residual `add` into the 1×1 convolution (stride 1, no padding, one group) that
/// gives one of its operands, where the add is that convolution's only reader (through the
/// identities that folded batch norms left) and the other operand is computed before the
/// convolution runs. The convolution takes the other operand as a second input and adds it
/// to each thread's part of its output as soon as the part is done
/// ([`ops::conv2d_plus_into`]); the add becomes an identity, which runs in place.
/// MobileNetV2's projections and Xception's middle flow end this way. (Where the other
/// operand comes later, as in Xception's entry flow, whose shortcut convolution runs before
/// the block it bypasses, fusing would keep that operand's inputs alive longer.)
pub(super) fn fuse_residual_adds(layers: &mut [Layer<'_>]) {
    let readers = reader_counts(layers);
    for i in 0..layers.len() {
        let (Op::Add, &[a, b]) = (&layers[i].op, &layers[i].inputs[..]) else {
            continue;
        };
        let fusable = |conv_side: Source, other: Source| {
            let Source::Node(mut j) = conv_side else {
                return None;
            };
            while readers[j] == 1
                && let (Op::Identity(_), [Source::Node(k)]) = (&layers[j].op, &layers[j].inputs[..])
            {
                j = *k;
            }
            let Op::Conv {
                params,
                residual: false,
                ..
            } = &layers[j].op
            else {
                return None;
            };
            let pointwise = params.is_pointwise();
            let computed_before = match other {
                Source::Input => true,
                Source::Node(k) => k < j,
            };
            (readers[j] == 1 && pointwise && computed_before && other != conv_side)
                .then_some((j, conv_side, other))
        };
        let Some((j, conv_side, other)) = fusable(a, b).or_else(|| fusable(b, a)) else {
            continue;
        };
        if let Op::Conv { residual, .. } = &mut layers[j].op {
            *residual = true;
            layers[j].inputs.push(other);
            layers[i].op = Op::Identity("add (fused)");
            layers[i].inputs = vec![conv_side];
        }
    }
}

/// Repacks the weights of each 1×1 convolution whose output planes fill fewer vector lanes
/// than its channels would, by more than the repacked kernel's own cost
/// ([`kernels::channels_fill_more_lanes`]), as channel panels, in
/// place of the row-major weights (mapped pages are given to `release`). Only where one of
/// the runtime's own kernels runs (AVX-512, or AVX2 with FMA), the only ones that read them.
pub(super) fn pack_channel_panels(
    layers: &mut [Layer<'_>],
    shapes: &[Vec<usize>],
    release: &dyn Fn(&[f32]),
) {
    if !kernels::channel_panels_available() {
        return;
    }
    for (layer, shape) in layers.iter_mut().zip(shapes) {
        let Op::Conv { weight, params, .. } = &mut layer.op else {
            continue;
        };
        let pointwise = params.is_pointwise();
        let plane = shape.iter().skip(1).product::<usize>();
        let Matrix::Dense { data, rows, cols } = weight else {
            continue;
        };
        let (rows, cols) = (*rows, *cols);
        if !pointwise || !kernels::channels_fill_more_lanes(rows, cols, plane) {
            continue;
        }
        let data = match std::mem::take(data) {
            Cow::Borrowed(values) => copy_out_releasing(values, release),
            Cow::Owned(values) => values,
        };
        *weight = match kernels::ChannelPanels::pack_in_place(data, rows, cols) {
            Ok(panels) => Matrix::Panels(panels),
            Err(values) => Matrix::dense(values, rows, cols),
        };
    }
}

/// Gives each convolution that [`winograd::suits`] its weights in Winograd's domain as well,
/// releasing the mapped pages of the dense weights, which no pass reads again. A layer whose
/// transform cannot be allocated keeps its direct product.
pub(super) fn transform_for_winograd(layers: &mut [Layer<'_>], release: &dyn Fn(&[f32])) {
    for layer in layers.iter_mut() {
        let Op::Conv { weight, params, .. } = &mut layer.op else {
            continue;
        };
        let Matrix::Dense { data, rows, cols } = weight else {
            continue;
        };
        let (cout, cin) = (*rows, *cols / 9);
        if *cols % 9 != 0 || !winograd::suits(params, cin, cout) {
            continue;
        }
        let Some(domain) = WinogradWeights::transform(data, cout, cin) else {
            continue;
        };
        if let Cow::Borrowed(values) = data {
            release(values);
        }
        let dense = Box::new(std::mem::replace(weight, Matrix::dense(Vec::new(), 0, 0)));
        *weight = Matrix::Winograd {
            dense,
            domain: Box::new(domain),
        };
    }
}

/// `w' = w · s` per output row, `b' = b · s + t`. Weights borrowed from the map are copied
/// to be scaled, and `release` gets the originals, which no pass reads again.
pub(super) fn fold_into(
    weight: &mut Matrix<'_>,
    bias: &mut Option<Vec<f32>>,
    scale: &[f32],
    shift: &[f32],
    release: &dyn Fn(&[f32]),
) {
    let b = bias.get_or_insert_with(|| vec![0.0; weight.rows()]);
    for (r, bv) in b.iter_mut().enumerate() {
        *bv = *bv * scale[r] + shift[r];
    }
    if let Matrix::Dense { data, .. } = weight
        && let Cow::Borrowed(values) = *data
    {
        *data = Cow::Owned(copy_out_releasing(values, release));
    }
    weight.scale_rows(scale);
}

/// `values`, borrowed from the map, copied out a chunk at a time, each chunk's pages given to
/// `release` once it is copied. Copying a whole tensor before giving its pages back held both
/// at once: Xception's largest weight (1536 → 2048, 12.6 MB) was resident twice at the end of
/// folding, and that was the peak of the whole run (101.1–101.5 MB against 87.5 after load).
/// The chunks end at addresses that are multiples of their size: reading the start of a chunk
/// maps the pages around it that are in the page cache (Linux's fault-around, 64 KiB), and
/// with chunks at any address that brought back the end of the chunk before, 21 MB of
/// Xception's 84 that stayed resident beside the copies.
pub(super) fn copy_out_releasing(values: &[f32], release: &dyn Fn(&[f32])) -> Vec<f32> {
    /// 256 KiB: a few dozen pages resident twice at most.
    const CHUNK_BYTES: usize = 256 << 10;
    let mut copy = Vec::with_capacity(values.len());
    let mut rest = values;
    while !rest.is_empty() {
        let to_boundary = CHUNK_BYTES - rest.as_ptr() as usize % CHUNK_BYTES;
        let (chunk, after) = rest.split_at(to_boundary.div_ceil(4).min(rest.len()));
        copy.extend_from_slice(chunk);
        release(chunk);
        rest = after;
    }
    copy
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    #[test]
    fn a_copy_out_of_the_map_gives_back_every_value_in_chunks_that_end_on_boundaries() {
        let values: Vec<f32> = (0..300_000).map(|i| i as f32).collect();
        // An odd start, so that the first chunk is a short one.
        let values = &values[3..];
        let released = RefCell::new(Vec::new());
        let copy = copy_out_releasing(values, &|chunk| {
            released
                .borrow_mut()
                .push((chunk.as_ptr() as usize, chunk.len()))
        });
        assert_eq!(copy, values);
        let released = released.into_inner();
        assert!(released.len() > 2, "{} chunks", released.len());
        let mut at = values.as_ptr() as usize;
        for (i, &(start, len)) in released.iter().enumerate() {
            assert_eq!(start, at, "chunk {i} follows the one before");
            at += 4 * len;
            if i + 1 < released.len() {
                assert_eq!(at % (256 << 10), 0, "chunk {i} ends on a boundary");
            }
        }
        assert_eq!(
            at,
            values.as_ptr() as usize + 4 * values.len(),
            "every value"
        );
    }
}
