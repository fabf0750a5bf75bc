//! Where each value of a pass lives in the arena: lifetimes, in-place layers, and what the threads
//! share kept apart.

use super::*;

pub(super) fn value_index(source: Source) -> usize {
    match source {
        Source::Input => 0,
        Source::Node(j) => j + 1,
    }
}

/// The last layer that reads the input.
pub(super) fn input_last_use(layers: &[Layer<'_>]) -> usize {
    layers
        .iter()
        .rposition(|l| l.inputs.contains(&Source::Input))
        .unwrap_or(0)
}

/// For each layer that can write its output over one of its inputs, which input: a layer
/// that maps values one by one (a flatten or an identity keeps them as they lie) over an input
/// of the output's shape that no later layer reads. Running in place saves the output's
/// memory and, for a flatten or an identity, the copy.
pub(super) fn in_place_inputs(
    layers: &[Layer<'_>],
    input_shape: &[usize],
    shapes: &[Vec<usize>],
    last_use: &[usize],
) -> Vec<Option<usize>> {
    let input_last = input_last_use(layers);
    layers
        .iter()
        .enumerate()
        .map(|(i, layer)| {
            let candidates: &[usize] = match layer.op {
                Op::Relu
                | Op::Relu6
                | Op::Sigmoid
                | Op::HardSwish
                | Op::BatchNorm { .. }
                | Op::Softmax
                | Op::Flatten
                | Op::Sign { .. }
                | Op::Identity(_) => &[0],
                Op::Add | Op::Mul => &[0, 1],
                _ => &[],
            };
            candidates.iter().copied().find(|&k| {
                let (last, shape) = match layer.inputs[k] {
                    Source::Input => (input_last, input_shape),
                    Source::Node(j) => (last_use[j], &shapes[j][..]),
                };
                // A flatten changes the shape, not the values' order.
                let fits = if matches!(layer.op, Op::Flatten) {
                    elements(shape) == elements(&shapes[i])
                } else {
                    shape == &shapes[i][..]
                };
                last == i && fits
            })
        })
        .collect()
}

/// Each value's size and steps (step 0 copies the input in, step `i + 1` runs layer `i`), and
/// the value whose memory holds it: its own, or for a layer that runs in place, its input's.
/// A value and the layers that run in place over it make one lifetime, from the first write
/// to the last read; the others get an empty one.
pub(super) fn value_lifetimes(
    input_shape: &[usize],
    shapes: &[Vec<usize>],
    layers: &[Layer<'_>],
    last_use: &[usize],
    in_place: &[Option<usize>],
) -> (Vec<Lifetime>, Vec<usize>) {
    let mut lifetimes = vec![Lifetime {
        len: elements(input_shape) as usize,
        first: 0,
        last: input_last_use(layers) + 1,
    }];
    let mut storage = vec![0];
    for (i, (layer, shape)) in layers.iter().zip(shapes).enumerate() {
        let own = Lifetime {
            len: elements(shape) as usize,
            first: i + 1,
            last: last_use[i] + 1,
        };
        match in_place[i] {
            Some(k) => {
                let at = storage[value_index(layer.inputs[k])];
                let held = &mut lifetimes[at];
                held.last = held.last.max(own.last);
                held.len = held.len.max(own.len);
                lifetimes.push(Lifetime { len: 0, ..own });
                storage.push(at);
            }
            None => {
                lifetimes.push(own);
                storage.push(i + 1);
            }
        }
    }
    (lifetimes, storage)
}

/// How long memory that both threads have touched is not written again
/// ([`placement_lifetimes`]): until the layers after have touched this many bytes (weights,
/// inputs and outputs). On the Zen 4 VM at two threads, 8 MiB kept MobileNetV2's 14×14
/// depthwise layers off such memory (about four of its blocks) while Xception's middle flow,
/// whose 2 MiB of weights a layer take the memory out of the caches sooner, kept reusing what
/// it had just touched; a window counted in layers could not do both
/// (docs/performance/threads.md).
pub(super) const SHARED_WINDOW_BYTES: u64 = 8 << 20;

/// Values longer than this (in `f32`s, 1 MiB: a Zen 4 core's L2) are not kept apart: keeping
/// MobileNetV2's and Xception's larger ones apart too would have made their arenas 1.6–1.7
/// times as long.
pub(super) const SHARED_MOST_LEN: usize = 1 << 18;

/// How a split layer's threads divide the memory of a value it writes or reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Division {
    /// Each thread its own channels' planes: one contiguous part of the value.
    Planes,
    /// Each thread the same pixels of every plane (a product split by columns).
    Pixels,
    /// Every thread all of it (a product split by rows reads all its input).
    Whole,
}

/// How `layer` (its output `shape`) divides its output and its inputs over the threads, for
/// the layers whose division is known here: 1×1 and depthwise convolutions.
pub(super) fn divisions(layer: &Layer<'_>, shape: &[usize]) -> Option<(Division, Division)> {
    let Op::Conv { weight, params, .. } = &layer.op else {
        return None;
    };
    let plane = shape.iter().skip(1).product::<usize>();
    let [kh, kw] = params.kernel;
    if params.is_pointwise() {
        Some(match ops::splits_by_rows(weight, plane) {
            true => (Division::Planes, Division::Whole),
            false => (Division::Pixels, Division::Pixels),
        })
    } else if params.groups > 1 && weight.rows() == params.groups && weight.cols() == kh * kw {
        Some((Division::Planes, Division::Planes))
    } else {
        None
    }
}

/// The lifetimes the arena is placed by. At more than one thread, a value that both threads
/// touch is placed as if it lived until the layers after it have touched
/// [`SHARED_WINDOW_BYTES`], so that no value written soon after takes its memory: each core
/// then holds a copy of its cache lines, and a store to a line another core holds waits for
/// that core to drop it. Both touch a value where a layer reads it divided otherwise than the
/// layer that wrote it ([`Division`]): all of it on each thread (a 1×1 convolution split by
/// rows), or the same pixels of every plane after each thread wrote its own planes, or the
/// reverse (a 1×1 convolution split by columns between depthwise layers). On MobileNetV2 at
/// two threads, the 14×14 depthwise layers that wrote where the last block's projection had
/// just read took 24.4 µs a half against 16.9 where they did not; zeroing a half's output
/// first took 16 µs against 2 (docs/performance/threads.md). The activations' peak is
/// unchanged, and the arena is placed by these lifetimes only where that leaves its length as
/// it was.
pub(super) fn placement_lifetimes(
    layers: &[Layer<'_>],
    shapes: &[Vec<usize>],
    storage: &[usize],
    lifetimes: &[Lifetime],
    threads: usize,
) -> Vec<Lifetime> {
    let mut placed = lifetimes.to_vec();
    if threads < 2 {
        return placed;
    }
    let mut written: Vec<Option<Division>> = vec![None; lifetimes.len()];
    let mut shared = vec![false; lifetimes.len()];
    for (i, (layer, shape)) in layers.iter().zip(shapes).enumerate() {
        let Some((output, input)) = divisions(layer, shape) else {
            continue;
        };
        for (k, source) in layer.inputs.iter().enumerate() {
            let at = storage[value_index(*source)];
            // A second input is a residual, added where the output is written.
            let read = if k == 0 { input } else { output };
            shared[at] |= read == Division::Whole || written[at].is_some_and(|w| w != read);
        }
        written[storage[i + 1]] = Some(output);
    }
    let touched = bytes_touched(layers, storage, lifetimes);
    for (held, shared) in placed.iter_mut().zip(shared) {
        if shared && held.len <= SHARED_MOST_LEN {
            let last = held.last.min(layers.len());
            let until = touched[last].saturating_add(SHARED_WINDOW_BYTES);
            let step = touched.partition_point(|&t| t < until).min(layers.len());
            held.last = held.last.max(step);
        }
    }
    placed
}

/// The bytes a pass has touched by the end of each step (layer `i` is step `i + 1`; step 0
/// touches none): each layer's weights, inputs and output; a layer folded into another
/// touches none.
pub(super) fn bytes_touched(
    layers: &[Layer<'_>],
    storage: &[usize],
    lifetimes: &[Lifetime],
) -> Vec<u64> {
    let mut touched = vec![0u64; layers.len() + 1];
    for (i, layer) in layers.iter().enumerate() {
        let mut bytes = 0u64;
        if !matches!(layer.op, Op::Identity(_)) {
            let mut weights = WeightBytes::default();
            layer.op.add_weight_bytes(&mut weights);
            let inputs = layer
                .inputs
                .iter()
                .map(|s| lifetimes[storage[value_index(*s)]].len);
            let elements = inputs.sum::<usize>() + lifetimes[storage[i + 1]].len;
            bytes = weights.mapped + weights.owned + 4 * elements as u64;
        }
        touched[i + 1] = touched[i].saturating_add(bytes);
    }
    touched
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A convolution with zero weights `rows × cols`, at stride 1.
    fn conv(rows: usize, cols: usize, kernel: usize, groups: usize) -> Op<'static> {
        Op::Conv {
            weight: Matrix::dense(vec![0.0; rows * cols], rows, cols),
            bias: None,
            params: Conv2dParams {
                kernel: [kernel; 2],
                stride: [1, 1],
                padding: [kernel / 2; 4],
                dilation: [1, 1],
                groups,
            },
            activation: Activation::None,
            residual: false,
        }
    }

    fn pointwise(rows: usize, cols: usize) -> Op<'static> {
        conv(rows, cols, 1, 1)
    }

    fn depthwise(channels: usize) -> Op<'static> {
        conv(channels, 9, 3, channels)
    }

    fn layer(op: Op<'static>, input: Source) -> Layer<'static> {
        Layer {
            name: String::new(),
            op,
            inputs: vec![input],
        }
    }

    /// Each layer's output as its own value, of `len` elements, alive from its step to the
    /// next layer's; the input until the first layer.
    fn chain_lifetimes(lens: &[usize]) -> (Vec<Lifetime>, Vec<usize>) {
        let lifetimes = lens
            .iter()
            .enumerate()
            .map(|(i, &len)| Lifetime {
                len,
                first: i,
                last: (i + 1).min(lens.len() - 1),
            })
            .collect();
        (lifetimes, (0..lens.len()).collect())
    }

    #[test]
    fn what_every_thread_reads_whole_is_placed_apart_from_what_comes_soon_after() {
        // A 1×1 convolution at 14×14, split by rows, then one at 112×112 with 16 rows, which
        // the own kernels split by columns.
        let layers = vec![
            layer(Op::Relu, Source::Input),
            layer(pointwise(64, 16), Source::Node(0)),
            layer(Op::Relu, Source::Node(1)),
            layer(pointwise(16, 64), Source::Node(2)),
        ];
        let shapes = [[16, 14, 14], [64, 14, 14], [64, 14, 14], [16, 112, 112]].map(Vec::from);
        let (lifetimes, storage) = chain_lifetimes(&[100; 5]);
        let one = placement_lifetimes(&layers, &shapes, &storage, &lifetimes, 1);
        assert_eq!(
            one, lifetimes,
            "one thread places values by their own lifetimes"
        );
        let two = placement_lifetimes(&layers, &shapes, &storage, &lifetimes, 2);
        let mut want = lifetimes.clone();
        // The pass touches far less than the window: kept apart to its end.
        want[1].last = layers.len();
        if !kernels::own_kernel_available() {
            // The other kernels split every product by rows.
            want[3].last = layers.len();
        }
        assert_eq!(two, want);
    }

    #[test]
    fn planes_read_by_pixels_are_kept_apart_until_the_window_of_bytes_has_passed() {
        // A depthwise layer (a part of the planes to each thread), a 1×1 convolution at 56×56
        // that the own kernels split by columns (the same pixels of every plane to each
        // thread), then layers that touch more than the window between them.
        // Half the window's bytes: step 3 touches less than the window, steps 3 and 4 more.
        let big = SHARED_WINDOW_BYTES as usize / 4 / 2;
        let layers = vec![
            layer(depthwise(32), Source::Input),
            layer(pointwise(64, 32), Source::Node(0)),
            layer(Op::Relu, Source::Node(1)),
            layer(Op::Relu, Source::Node(2)),
            layer(Op::Relu, Source::Node(3)),
        ];
        let shapes = [
            [32, 56, 56],
            [64, 56, 56],
            [1, 1024, 1024],
            [1, 1024, 1024],
            [1, 1, 1],
        ];
        let shapes = shapes.map(Vec::from);
        let lens: Vec<usize> = [32 * 56 * 56, 32 * 56 * 56, 64 * 56 * 56, big, big, 1].into();
        let (lifetimes, storage) = chain_lifetimes(&lens);
        let two = placement_lifetimes(&layers, &shapes, &storage, &lifetimes, 2);
        // The depthwise layer's output (value 1), read at step 2, is kept apart through
        // step 4, by whose end the window has passed.
        assert_eq!(two[1].last, 4, "{two:?}");
        // Values longer than a core's L2 are placed by their own lifetimes.
        let long = [32 * 56 * 56, 2 * SHARED_MOST_LEN, 64 * 56 * 56, big, big, 1];
        let (lifetimes, storage) = chain_lifetimes(&long);
        let two = placement_lifetimes(&layers, &shapes, &storage, &lifetimes, 2);
        assert_eq!(two[1], lifetimes[1]);
    }
}
