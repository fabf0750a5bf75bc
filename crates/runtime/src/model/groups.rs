//! A batch's images in groups that run the late layers together, so that their weights are read
//! once a group.

use super::*;

/// The most images of a batch that one thread runs through the layers together
/// ([`Model::forward_images`]), each with an arena of its own. Four took most of what more
/// gave (Xception's 2048×1536 product at 5×5: 2.44 ms an image alone, 1.99 four at a time,
/// 1.95 eight, 2.09 sixteen; its 728×728 at 9×9: 1.03, 1.02, 0.99), and Xception's
/// throughput at batch 16 was level at four and eight (four alternating pairs) for half the
/// arenas.
pub(super) const MOST_IMAGES_TOGETHER: usize = 4;

/// One value per image of a group ([`Model::forward_images`]), held inline: a batch's pass
/// allocates nothing for its groups' lists of images, arenas and operands.
pub(super) type Group<T> = arrayvec::ArrayVec<T, MOST_IMAGES_TOGETHER>;

/// The most pixels of a 1×1 convolution that runs a group's images together: wider ones fill
/// whole panels on their own and read their weights once for many panels. Run together,
/// their inputs come from further away (a layer's eight inputs do not fit in L2), and
/// Xception's 72×72 and 36×36 layers were slower (2.25 against 2.13 ms an image), as were the
/// depthwise and pooling layers between them.
pub(super) const TOGETHER_MOST_PIXELS: usize = 256;

/// The most bytes of group arenas ([`GroupPlan`]) a thread holds at once: fewer images go
/// together where the activations they share are large.
pub(super) const GROUP_ARENA_BYTES: u64 = 64 << 20;

/// A source's index among a pass's values: the input is value 0, layer `i`'s output `i + 1`.
/// Whether `layer` (its output `shape`, `in_place` its input run over) runs a group's images
/// as one product: a 1×1 convolution over at most [`TOGETHER_MOST_PIXELS`].
pub(super) fn runs_images_together(
    layer: &Layer<'_>,
    shape: &[usize],
    in_place: Option<usize>,
) -> bool {
    let pixels: usize = shape.iter().skip(1).product();
    match &layer.op {
        Op::Conv { weight, params, .. } => {
            pixels <= TOGETHER_MOST_PIXELS
                && in_place.is_none()
                && ops::runs_images_together(weight, params)
        }
        _ => false,
    }
}

/// Where a group's images keep their values from the first layer they run together
/// ([`Model::forward_images`]): arenas of their own, planned at load for that part of the
/// graph only, so that a group holds one whole-pass arena (for each image's layers before,
/// in turn) and a small one per image, not a whole-pass arena per image (Xception's is 6.6
/// MB, the part from its middle flow on much less).
pub(super) struct GroupPlan {
    /// The first layer that runs a group's images together.
    pub(super) first: usize,
    /// Each value's place in a group arena (those alive from `first` on).
    pub(super) slots: Vec<Range<usize>>,
    /// What each image brings from its pass through the layers before `first`: a value
    /// (0 for the input) and where it lies in the whole-pass arena and in the group arena.
    pub(super) carried: Vec<(usize, Range<usize>, Range<usize>)>,
    /// The `f32`s of a group arena.
    pub(super) len: usize,
}

impl GroupPlan {
    /// The plan for a graph whose first layer to run images together is `first`: every
    /// lifetime that reaches that layer's step, those begun before it starting just before
    /// it, when they are carried over; `storage` maps each value to the lifetime that holds
    /// it, `lens` gives each value's length, `whole` is the whole-pass placement.
    pub(super) fn new(
        first: usize,
        lifetimes: &[Lifetime],
        storage: &[usize],
        lens: &[usize],
        whole: &arena::Placement,
    ) -> GroupPlan {
        let step = first + 1;
        let reaches = |l: &Lifetime| l.len > 0 && l.last >= step;
        let clipped: Vec<Lifetime> = lifetimes
            .iter()
            .map(|l| match reaches(l) {
                true => Lifetime {
                    first: l.first.max(step - 1),
                    ..*l
                },
                false => Lifetime {
                    len: 0,
                    last: l.first,
                    ..*l
                },
            })
            .collect();
        let placement = arena::place(&clipped);
        let slots = storage
            .iter()
            .zip(lens)
            .map(|(&at, &len)| placement.range(at, len))
            .collect();
        let carried = lifetimes
            .iter()
            .enumerate()
            .filter(|(_, l)| reaches(l) && l.first < step)
            .map(|(t, l)| (t, whole.range(t, l.len), placement.range(t, l.len)))
            .collect();
        GroupPlan {
            first,
            slots,
            carried,
            len: placement.len,
        }
    }
}

impl<'a> Model<'a> {
    /// How many images of a batch of `n` one thread runs through the layers together
    /// ([`Model::forward_images`]): the batch shared among the threads, at most
    /// [`MOST_IMAGES_TOGETHER`] and [`GROUP_ARENA_BYTES`] of arenas; one where no layer runs
    /// images together.
    pub(super) fn images_together(&self, n: usize) -> usize {
        let Some(plan) = &self.group else {
            return 1;
        };
        let per_thread = n.div_ceil(self.threads.count().max(1));
        let by_memory = GROUP_ARENA_BYTES / (4 * plan.len as u64).max(1);
        per_thread
            .min(MOST_IMAGES_TOGETHER)
            .min(usize::try_from(by_memory).unwrap_or(usize::MAX))
            .max(1)
    }

    /// Whether layer `i` runs a group's images as one product ([`ops::pointwise_images`]): a
    /// 1×1 convolution over at most [`TOGETHER_MOST_PIXELS`].
    pub(super) fn runs_images_together(&self, i: usize) -> bool {
        runs_images_together(&self.layers[i], &self.shapes[i], self.in_place[i])
    }

    /// Several images through the graph, their outputs written into `out` one after another:
    /// each alone up to the first layer that runs them together ([`GroupPlan`]), then the
    /// group a layer at a time, each image in a group arena of its own. The small 1×1
    /// convolutions take all the images' pixels in one product, so each tile of weights is
    /// read from memory once for the group (Xception's 728×728 middle flow took 0.99 against
    /// 1.04 ms an image eight at a time, its 2048×1536 layer at 5×5 2.0 against 2.5); every
    /// other layer runs on each image in turn, as in [`Model::forward_image`], with the same
    /// bits.
    pub(super) fn forward_images(&self, images: &[ArrayView3<'_, f32>], out: &mut [f32]) {
        let (Some(plan), [_, _, ..]) = (&self.group, images) else {
            let rows = out.chunks_exact_mut(self.num_classes());
            for (image, row) in images.iter().zip(rows) {
                self.forward_image(image.view(), row);
            }
            return;
        };
        // Up to the first layer that runs them together, each image runs alone in one arena,
        // its activations in cache from one layer to the next; then what the rest of the
        // pass reads moves to the image's group arena.
        let mut alone = self.take_arena();
        let mut buffers: Group<Vec<f32>> = images.iter().map(|_| self.take_group_arena()).collect();
        let mut arenas: Group<&mut [f32]> = buffers
            .iter_mut()
            .map(|b| aligned_arena(b, plan.len))
            .collect();
        let mut inputs: Group<Option<&[f32]>> = Group::new();
        for (image, group_arena) in images.iter().zip(&mut arenas) {
            let arena = aligned_arena(&mut alone, self.arena_len);
            let input = self.place_input(image.view(), arena);
            for i in 0..plan.first {
                self.run_layer(i, arena, input, &self.slots);
            }
            for (value, from, to) in &plan.carried {
                // The input stays where the caller holds it when the pass reads it there.
                if *value > 0 || input.is_none() {
                    group_arena[to.clone()].copy_from_slice(&arena[from.clone()]);
                }
            }
            inputs.push(input);
        }
        self.give_arena(alone);
        for i in plan.first..self.layers.len() {
            if self.runs_images_together(i) {
                self.run_layer_on_images(i, &mut arenas, &inputs, &plan.slots);
            } else {
                for (arena, input) in arenas.iter_mut().zip(&inputs) {
                    self.run_layer(i, arena, *input, &plan.slots);
                }
            }
        }
        let last = &plan.slots[self.layers.len()];
        for (arena, row) in arenas.iter().zip(out.chunks_exact_mut(last.len())) {
            row.copy_from_slice(&arena[last.clone()]);
        }
        drop(arenas);
        if let Ok(mut free) = self.group_arenas.lock() {
            free.extend(buffers);
        }
    }

    /// A group arena's buffer ([`GroupPlan`]) from the model's pool, or a new one.
    pub(super) fn take_group_arena(&self) -> Vec<f32> {
        let len = self.group.as_ref().map_or(0, |g| g.len);
        take_buffer(&self.group_arenas, len + scratch::LINE_VALUES)
    }

    /// Layer `i`, a 1×1 convolution ([`Model::runs_images_together`]), on every image of a
    /// group at once: each arena's operands, then one [`ops::pointwise_images`].
    pub(super) fn run_layer_on_images(
        &self,
        i: usize,
        arenas: &mut [&mut [f32]],
        inputs: &[Option<&[f32]>],
        slots: &[Range<usize>],
    ) {
        let layer = &self.layers[i];
        let Op::Conv {
            weight,
            bias,
            activation,
            residual,
            ..
        } = &layer.op
        else {
            unreachable!("a convolution (runs_images_together)")
        };
        let place = slots[i + 1].clone();
        let (mut xs, mut residuals, mut outs) = (Group::new(), Group::new(), Group::new());
        for (arena, input) in arenas.iter_mut().zip(inputs) {
            let (before, rest) = arena.split_at_mut(place.start);
            let (out, after) = rest.split_at_mut(place.len());
            let (before, after) = (&*before, &*after);
            let value =
                |k: usize| value_beside(slots, layer.inputs[k], &place, (before, after), *input);
            xs.push(value(0));
            residuals.push(residual.then(|| value(1)));
            outs.push(out);
        }
        ops::pointwise_images(
            &xs,
            weight,
            bias.as_deref(),
            *activation,
            &residuals,
            &mut outs,
        );
    }
}
