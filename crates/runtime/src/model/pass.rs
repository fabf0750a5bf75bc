//! One image's forward pass: the arena, the input placed, and each layer run into its slot.

use super::*;

impl<'a> Model<'a> {
    /// An arena's buffer from the model's pool, or a new one when every arena is in use by
    /// another image: room for the arena from its buffer's first cache line boundary
    /// ([`aligned_arena`]).
    pub(super) fn take_arena(&self) -> Vec<f32> {
        take_buffer(&self.arenas, self.arena_len + scratch::LINE_VALUES)
    }

    pub(super) fn give_arena(&self, arena: Vec<f32>) {
        if let Ok(mut free) = self.arenas.lock() {
            free.push(arena);
        }
    }

    /// One image through the graph, in an arena from the model's pool (a new one when every
    /// arena is in use by another image), its output written into `out`.
    pub(super) fn forward_image(&self, image: ArrayView3<'_, f32>, out: &mut [f32]) {
        let mut buffer = self.take_arena();
        let arena = aligned_arena(&mut buffer, self.arena_len);
        let input = self.place_input(image, arena);
        for i in 0..self.layers.len() {
            self.run_layer(i, arena, input, &self.slots);
        }
        out.copy_from_slice(&arena[self.slots[self.layers.len()].clone()]);
        self.give_arena(buffer);
    }

    /// Where a pass reads the input: the image's own values where they lie contiguously and
    /// no layer writes over them ([`Model::reads_input_in_place`]), else a copy in its arena
    /// slot. The copy (`memmove`) was 1.7% of MobileNetV2's pass at one thread (perf); without
    /// it, the first layer's im2col reads the image from further away, and the two together
    /// went from 2.6% to 2.1%.
    pub(super) fn place_input<'i>(
        &self,
        image: ArrayView3<'i, f32>,
        arena: &mut [f32],
    ) -> Option<&'i [f32]> {
        let contiguous = image.to_slice();
        if self.reads_input_in_place && contiguous.is_some() {
            return contiguous;
        }
        let input = &mut arena[self.slots[0].clone()];
        match contiguous {
            Some(values) => input.copy_from_slice(values),
            None => input
                .iter_mut()
                .zip(image.iter())
                .for_each(|(d, s)| *d = *s),
        }
        None
    }

    /// Runs layer `i`, reading its inputs from their places in `arena` (the model's input
    /// from `input`, where the pass reads it where the caller holds it) and writing its output
    /// into its own place (which is an input's, for a layer that runs in place).
    pub(super) fn run_layer(
        &self,
        i: usize,
        arena: &mut [f32],
        input: Option<&[f32]>,
        slots: &[Range<usize>],
    ) {
        let layer = &self.layers[i];
        let place = slots[i + 1].clone();
        let (before, rest) = arena.split_at_mut(place.start);
        let (out, after) = rest.split_at_mut(place.len());
        let (before, after) = (&*before, &*after);
        let in_place = self.in_place[i].map(|k| layer.inputs[k]);
        let operand = |k: usize| -> Operand<'_> {
            let source = layer.inputs[k];
            if Some(source) == in_place {
                return Operand::Out;
            }
            Operand::Values(value_beside(slots, source, &place, (before, after), input))
        };
        let values = |k: usize| match operand(k) {
            Operand::Values(v) => v,
            Operand::Out => unreachable!("only element-wise layers run in place"),
        };
        let image = |k: usize| image_view(values(k), self.shape_of(layer.inputs[k]));
        // The rows an element-wise layer may be split in: the output's planes.
        let row_len = self.shapes[i].iter().skip(1).product::<usize>();
        let vector = |k: usize| {
            let v = values(k);
            ArrayView2::from_shape((1, v.len()), v).expect("a vector")
        };
        match &layer.op {
            Op::Conv {
                weight,
                bias,
                params,
                activation,
                residual,
            } => {
                let residual = residual.then(|| values(1));
                let bias = bias.as_deref();
                ops::conv2d_plus_into(image(0), weight, bias, params, *activation, residual, out)
            }
            Op::Dense { weight, bias } => ops::dense_into(vector(0), weight, bias.as_deref(), out),
            Op::ConvChain { steps, bias } => run_chain(image(0), steps, bias.as_deref(), out),
            Op::XnorConv {
                weight,
                bias,
                params,
                input,
            } => xnor::conv2d_into(image(0), weight, bias.as_deref(), params, input, out),
            Op::XnorDense {
                weight,
                bias,
                input,
            } => xnor::dense_into(vector(0), weight, bias.as_deref(), input, out),
            Op::MaxPool(p) => ops::pool2d_into(image(0), p, true, out),
            Op::AvgPool(p) => ops::pool2d_into(image(0), p, false, out),
            Op::GlobalAvgPool => ops::global_avg_pool_into(image(0), out),
            Op::Pad(padding) => ops::pad_into(image(0), *padding, out),
            Op::Concat => {
                // One image's inputs, each `[c_k, …]`, lie one after the other along axis 1.
                let mut at = 0;
                for k in 0..layer.inputs.len() {
                    let v = values(k);
                    out[at..at + v.len()].copy_from_slice(v);
                    at += v.len();
                }
            }
            Op::Add => {
                let rows = (None, row_len);
                ops::binary_into(out, operand(0), operand(1), rows, |a, b| a + b)
            }
            Op::Mul => {
                let (a, b) = (
                    self.shape_of(layer.inputs[0]),
                    self.shape_of(layer.inputs[1]),
                );
                // Shapes that differ are `[C, H, W]` times one scale per channel.
                let plane = (a != b).then(|| a[1..].iter().product());
                ops::binary_into(out, operand(0), operand(1), (plane, row_len), |a, b| a * b)
            }
            Op::Relu | Op::Relu6 | Op::Sigmoid | Op::HardSwish => {
                // Value by value from the input straight into the output (or in place), split
                // over the threads as an add is.
                let x = operand(0);
                ops::split_elements(out, row_len, &|at, part| {
                    let x = match x {
                        Operand::Values(x) => Some(&x[at..at + part.len()]),
                        Operand::Out => None,
                    };
                    map_values(&layer.op, x, part)
                });
            }
            Op::BatchNorm { .. }
            | Op::Softmax
            | Op::Flatten
            | Op::Sign { .. }
            | Op::Identity(_) => {
                // Element by element, over the input's values where the layer runs in place,
                // else over a copy of them: the same operations either way.
                if let Operand::Values(x) = operand(0) {
                    out.copy_from_slice(x);
                }
                element_wise(&layer.op, out);
            }
        }
    }
}

/// A layer that maps values one by one, from `x` into `out`, or over `out` in place where
/// `x` is `None`: the one definition of each map, whichever way the layer runs.
pub(super) fn map_values(op: &Op<'_>, x: Option<&[f32]>, out: &mut [f32]) {
    fn apply(x: Option<&[f32]>, out: &mut [f32], f: impl Fn(f32) -> f32) {
        match x {
            Some(x) => out.iter_mut().zip(x).for_each(|(o, &v)| *o = f(v)),
            None => out.iter_mut().for_each(|v| *v = f(*v)),
        }
    }
    match op {
        Op::Relu => apply(x, out, |v| v.max(0.0)),
        Op::Relu6 => apply(x, out, |v| v.clamp(0.0, 6.0)),
        Op::Sigmoid => apply(x, out, ops::sigmoid),
        Op::HardSwish => apply(x, out, ops::hard_swish),
        _ => unreachable!("not a value-by-value layer"),
    }
}

/// A layer that maps values one by one (or a softmax, row by row), applied to `x` in place.
/// A flatten and an identity keep the values as they lie.
pub(super) fn element_wise(op: &Op<'_>, x: &mut [f32]) {
    match op {
        Op::Relu | Op::Relu6 | Op::Sigmoid | Op::HardSwish => map_values(op, None, x),
        Op::BatchNorm { scale, shift } => {
            let plane = x.len() / scale.len().max(1);
            for ((channel, s), b) in x.chunks_exact_mut(plane.max(1)).zip(scale).zip(shift) {
                channel.iter_mut().for_each(|v| *v = *v * s + b);
            }
        }
        Op::Softmax => {
            let len = x.len();
            ops::softmax_rows(ArrayViewMut2::from_shape((1, len), x).expect("a vector"))
        }
        Op::Sign { threshold } => crate::signs::sign_in_place(x, threshold.as_deref()),
        Op::Flatten | Op::Identity(_) => {}
        _ => unreachable!("not an element-wise layer"),
    }
}

/// One image's values of shape `[C, H, W]` as a batch of one.
pub(super) fn image_view<'v>(values: &'v [f32], shape: &[usize]) -> ArrayView4<'v, f32> {
    let [c, h, w] = shape[..] else {
        unreachable!("shape checked at load")
    };
    ArrayView4::from_shape((1, c, h, w), values).expect("a value of its planned size")
}

/// A Tucker-2 layer's three convolutions, the two intermediates in scratch buffers.
pub(super) fn run_chain(
    x: ArrayView4<'_, f32>,
    steps: &[(Matrix<'_>, Conv2dParams)],
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    let (n, mut c, mut h, mut w) = x.dim();
    let last = steps.len() - 1;
    let (mut input, mut next) = (scratch::take::<f32>(), scratch::take::<f32>());
    for (s, (m, p)) in steps.iter().enumerate() {
        let from = if s == 0 {
            x
        } else {
            ArrayView4::from_shape((n, c, h, w), &input[..]).expect("the step's input")
        };
        let (oh, ow) = p.output_size(h, w).expect("checked at load");
        if s == last {
            ops::conv2d_into(from, m, bias, p, Activation::None, out);
        } else {
            next.resize(n * m.rows() * oh * ow, 0.0);
            ops::conv2d_into(from, m, None, p, Activation::None, &mut next);
            std::mem::swap(&mut input, &mut next);
        }
        (c, h, w) = (m.rows(), oh, ow);
    }
    scratch::give(input);
    scratch::give(next);
}

/// Where `source` lies for a layer whose output takes `place` of an arena whose values lie
/// at `slots`, split around it into `before` and `after`: the caller's input where the pass
/// reads it in place, else its slot. (The planner keeps every input of a layer apart from its
/// output.)
pub(super) fn value_beside<'v>(
    slots: &[Range<usize>],
    source: Source,
    place: &Range<usize>,
    (before, after): (&'v [f32], &'v [f32]),
    input: Option<&'v [f32]>,
) -> &'v [f32] {
    if let (Source::Input, Some(values)) = (source, input) {
        return values;
    }
    let r = &slots[value_index(source)];
    if r.start >= place.end {
        &after[r.start - place.end..r.end - place.end]
    } else {
        &before[r.clone()]
    }
}

/// A buffer of at least `len` values from `pool`, or a new one when the pool has none.
pub(super) fn take_buffer(pool: &Mutex<Vec<Vec<f32>>>, len: usize) -> Vec<f32> {
    let mut buffer = pool
        .lock()
        .ok()
        .and_then(|mut free| free.pop())
        .unwrap_or_default();
    if buffer.len() < len {
        buffer.resize(len, 0.0);
    }
    buffer
}

/// The `len` values of an arena from the first cache line boundary of its `buffer`
/// ([`scratch::line_aligned`]). The planner places every value a whole number of lines from
/// the arena's start, so each then starts on a line of its own: without it every 64-byte
/// AVX-512 load of a whole vector of activations straddles two lines (that CPU was not at
/// hand to measure it); the AVX2 passes of Xception and MobileNetV2 on Zen 3 measured level
/// either way.
pub(super) fn aligned_arena(buffer: &mut [f32], len: usize) -> &mut [f32] {
    scratch::line_aligned(buffer, len)
}
