//! Loading: the file's graph and weights into layers, their shapes checked, each weight in the form
//! its kernel takes.

use super::*;

/// A weight as loaded: values (borrowed from the map when stored dense f32), or factors.
pub(super) enum Loaded<'a> {
    Values(Cow<'a, [f32]>),
    Factored(Factored),
    /// A decoded weight sparse enough for the CSR kernels, shared by every node that uses it.
    Sparse(Csr),
}

/// `rows × cols` row-major to `cols × rows`.
pub(super) fn transpose(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0.0; m.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = m[r * cols + c];
        }
    }
    t
}

/// The three convolutions of a Tucker-2 layer: `U_inᵀ` (1×1), the core (the layer's own
/// window, stride, padding and dilation), `U_out` (1×1).
pub(super) fn tucker_steps<'a>(
    t: &cxrm_format::encoding::tucker::Tucker,
    p: Conv2dParams,
) -> Vec<(Matrix<'a>, Conv2dParams)> {
    let pointwise = Conv2dParams {
        kernel: [1, 1],
        stride: [1, 1],
        padding: [0; 4],
        dilation: [1, 1],
        groups: 1,
    };
    vec![
        (
            Matrix::dense(transpose(&t.u_in, t.inp, t.rank_in), t.rank_in, t.inp),
            pointwise,
        ),
        (
            Matrix::dense(t.core.clone(), t.rank_out, t.rank_in * t.spatial),
            p,
        ),
        (Matrix::dense(t.u_out.clone(), t.out, t.rank_out), pointwise),
    ]
}

pub(super) struct Loader<'f, 'a> {
    file: &'f Cxrm<'a>,
    options: RuntimeOptions,
    /// Decoded weights in CSR form, by tensor name: only those more than one node uses, since
    /// each cached matrix is a second copy of the layer's until loading ends.
    sparse: std::cell::RefCell<std::collections::HashMap<String, Csr>>,
    /// Tensors that more than one node names.
    shared: std::collections::HashSet<String>,
    /// Large encoded tensors decoded ahead of the layers, largest first ([`Loader::predecode`]);
    /// each is taken by the first layer that asks for it.
    decoded: std::cell::RefCell<std::collections::HashMap<String, Decoded>>,
    /// Tensors decoded so far (dense ones read in place do not count).
    decodes: std::cell::Cell<usize>,
}

/// A tensor decoded ahead of its layer: its values, or CSR rows where few enough of them are
/// nonzero that some layer could run it sparse.
pub(super) enum Decoded {
    Values(Vec<f32>),
    Sparse(Csr),
}

impl<'a> Loader<'_, 'a> {
    /// A node's tensor record; a tensor with a zero-size dimension is refused here, since no
    /// layer computes anything with it.
    fn record(&self, node: &Node, name: &str) -> Result<&TensorRecord<'a>> {
        let record = self.file.tensor(name).map_err(|_| {
            Error::Model(format!(
                "node {}: tensor {name:?} is not in the file",
                cxrm_format::text::escape(&node.name)
            ))
        })?;
        if record.shape.contains(&0) {
            return Err(Error::Model(format!(
                "node {}: tensor {:?} has shape {:?}, with nothing in it",
                cxrm_format::text::escape(&node.name),
                cxrm_format::text::escape(name),
                record.shape
            )));
        }
        Ok(record)
    }

    /// A tensor as f32, borrowed when it is stored dense f32, decoded otherwise.
    fn tensor(&self, node: &Node, name: &str) -> Result<(Cow<'a, [f32]>, Vec<usize>)> {
        let record = self.record(node, name)?;
        if self.options.check_crc && record.is_plain_dense() {
            self.file.check_crc(record)?;
        }
        let shape: Vec<usize> = record.shape.iter().map(|&d| d as usize).collect();
        if record.is_plain_dense() && record.dtype == DType::F32 {
            let view = self.file.view(name)?;
            if let Cow::Borrowed(bytes) = view.bytes
                && let Ok(values) = bytemuck::try_cast_slice::<u8, f32>(bytes)
                && cfg!(target_endian = "little")
            {
                return Ok((Cow::Borrowed(values), shape));
            }
        }
        let decoded = self.decoded.borrow_mut().remove(name);
        let values = match decoded {
            Some(Decoded::Values(values)) => values,
            Some(Decoded::Sparse(csr)) => self.densified(node, name, &csr)?,
            None => self.decode(record)?,
        };
        Ok((Cow::Owned(values), shape))
    }

    /// A tensor kept as CSR rows at [`Loader::predecode`], back in dense form for a layer that
    /// runs it dense.
    fn densified(&self, node: &Node, name: &str, csr: &Csr) -> Result<Vec<f32>> {
        csr.to_dense().ok_or_else(|| {
            Error::Model(format!(
                "node {}: no memory for the {}×{} values of {:?}",
                cxrm_format::text::escape(&node.name),
                csr.rows,
                csr.cols,
                cxrm_format::text::escape(name)
            ))
        })
    }

    /// The CSR rows [`Loader::predecode`] kept for `name`, taken out of its keeping.
    fn take_predecoded_sparse(&self, name: &str) -> Option<Csr> {
        let mut decoded = self.decoded.borrow_mut();
        match decoded.remove(name)? {
            Decoded::Sparse(csr) => Some(csr),
            values => {
                decoded.insert(name.to_string(), values);
                None
            }
        }
    }

    /// A tensor decoded to f32, its mapped pages given back.
    fn decode(&self, record: &TensorRecord<'a>) -> Result<Vec<f32>> {
        self.decodes.set(self.decodes.get() + 1);
        let values = self.file.decode_record(record)?.to_f32_vec();
        self.file.release_tensor(record);
        Ok(values)
    }

    /// Decode the graph's large encoded tensors now, largest first. Decoding one holds its
    /// bytes, its f32 copy and the decoder's working memory at once; in graph order the largest
    /// (an exit-flow pointwise weight, say) comes last, on top of every weight loaded before it,
    /// and set the load's peak. First, they meet an almost empty heap. Tensors stored dense f32
    /// (read in place) or factored (run as stored) are left to the layers, as are small ones.
    ///
    /// A tensor sparse enough for the most generous of the layers' thresholds is kept as CSR
    /// rows at once, the layer that runs it dense making its values again: kept dense, every
    /// pruned weight was decoded whole before any layer took its CSR rows, and the pruned
    /// Xception (30% kept, 59.5 MB of weights as the layers keep them) peaked at 92.7 MB while
    /// loading, past the memory bound.
    fn predecode(&self, graph: &Graph) -> Result<()> {
        const LARGE: u64 = 1 << 16;
        let mut names: Vec<&TensorRecord<'a>> = graph
            .nodes
            .iter()
            .flat_map(|n| &n.weights)
            .filter_map(|name| self.file.tensor(name).ok())
            .filter(|r| r.elements >= LARGE && !r.is_plain_dense())
            .filter(|r| {
                !r.stages
                    .first()
                    .and_then(|s| s.id())
                    .is_some_and(StageId::is_factored)
            })
            .collect();
        names.sort_by_key(|r| (std::cmp::Reverse(r.elements), r.index));
        names.dedup_by_key(|r| r.index);
        let most_sparse = self.options.sparse_below_density * MOST_SPARSE_FACTOR;
        for record in names {
            let values = self.decode(record)?;
            let rows = record.shape.first().map_or(1, |&r| r as usize).max(1);
            let cols = values.len() / rows;
            let decoded = match sparse_rows(&values, (rows, cols), most_sparse) {
                Some(csr) => Decoded::Sparse(csr),
                None => Decoded::Values(values),
            };
            self.decoded
                .borrow_mut()
                .insert(record.name.to_string(), decoded);
        }
        Ok(())
    }

    /// `m` with its values copied out of the map, whose pages are given back.
    fn owned(&self, m: Matrix<'a>) -> Matrix<'a> {
        match m {
            Matrix::Dense {
                data: Cow::Borrowed(values),
                rows,
                cols,
            } => Matrix::dense(copy_out_releasing(values, &|v| self.release(v)), rows, cols),
            other => other,
        }
    }

    /// Drops the mapped pages under `values` when they are borrowed from the file and the
    /// model keeps a copy of its own instead ([`Cxrm::release`]); no-op for owned values.
    fn release(&self, values: &[f32]) {
        self.file.release(bytemuck::cast_slice(values));
    }

    /// A weight tensor as the runtime will run it: its factors when it is stored factored,
    /// else its values, as CSR rows when at most `sparse_below` of them are nonzero.
    fn weight(
        &self,
        node: &Node,
        name: &str,
        sparse_below: f64,
    ) -> Result<(Loaded<'a>, Vec<usize>)> {
        let record = self.record(node, name)?;
        let shape: Vec<usize> = record.shape.iter().map(|&d| d as usize).collect();
        if let Some(csr) = self.sparse.borrow().get(name)
            && density(csr.val.len(), csr.rows * csr.cols) <= sparse_below
        {
            return Ok((Loaded::Sparse(csr.clone()), shape));
        }
        if let Some(f) = self.file.read_factored(record)? {
            self.decodes.set(self.decodes.get() + 1);
            self.file.release_tensor(record);
            return Ok((Loaded::Factored(f), shape));
        }
        if let Some(csr) = self.take_predecoded_sparse(name) {
            if density(csr.val.len(), csr.rows * csr.cols) > sparse_below {
                let values = self.densified(node, name, &csr)?;
                return Ok((Loaded::Values(Cow::Owned(values)), shape));
            }
            return Ok((self.sparse_weight(name, csr), shape));
        }
        let (values, shape) = self.tensor(node, name)?;
        // A decoded weight that the CSR kernels will take is kept in that form, so a weight
        // shared by many nodes is decoded and scanned once, not once per node.
        if let Cow::Owned(v) = &values
            && let [rows, ..] = shape[..]
            && let Some(csr) = sparse_rows(v, (rows, v.len() / rows.max(1)), sparse_below)
        {
            return Ok((self.sparse_weight(name, csr), shape));
        }
        Ok((Loaded::Values(values), shape))
    }

    /// `csr` as a layer's weight, a copy kept for the other nodes when more than one uses it.
    fn sparse_weight(&self, name: &str, csr: Csr) -> Loaded<'a> {
        if self.shared.contains(name) {
            self.sparse
                .borrow_mut()
                .insert(name.to_string(), csr.clone());
        }
        Loaded::Sparse(csr)
    }

    /// A `rows × cols` weight matrix: low-rank and matrix-shaped Tucker factors as products,
    /// anything else as values (sparse when mostly zero).
    fn weight_matrix(
        &self,
        loaded: Loaded<'a>,
        rows: usize,
        cols: usize,
        sparse_below: f64,
    ) -> Matrix<'a> {
        match loaded {
            Loaded::Values(v) => self.matrix(v, rows, cols, sparse_below),
            Loaded::Sparse(csr) => Matrix::Sparse(csr),
            Loaded::Factored(Factored::LowRank(lr)) => Matrix::Product(vec![
                Matrix::dense(lr.u, rows, lr.rank),
                Matrix::dense(lr.v, lr.rank, cols),
            ]),
            Loaded::Factored(Factored::Tucker(t)) if t.spatial == 1 => Matrix::Product(vec![
                Matrix::dense(t.u_out.clone(), t.out, t.rank_out),
                Matrix::dense(t.core.clone(), t.rank_out, t.rank_in),
                Matrix::dense(transpose(&t.u_in, t.inp, t.rank_in), t.rank_in, t.inp),
            ]),
            Loaded::Factored(Factored::Binary(b)) => Matrix::Signs(SignRows::from_binary(&b)),
            Loaded::Factored(f) => self.matrix(Cow::Owned(f.to_f32()), rows, cols, sparse_below),
        }
    }

    /// The weights of an XNOR layer: bits when stored `binary`, else a float matrix.
    /// `channels` is the input channel count of a convolution (`None` for a dense layer).
    fn xnor_weight(
        &self,
        loaded: Loaded<'a>,
        rows: usize,
        cols: usize,
        channels: Option<usize>,
    ) -> XnorWeight<'a> {
        match loaded {
            Loaded::Factored(Factored::Binary(b)) => XnorWeight::Bits(match channels {
                Some(c) => BitRows::for_conv(&b, c),
                None => BitRows::from_binary(&b),
            }),
            other => XnorWeight::Float(self.weight_matrix(
                other,
                rows,
                cols,
                self.options.sparse_below_density,
            )),
        }
    }

    fn matrix(
        &self,
        data: Cow<'a, [f32]>,
        rows: usize,
        cols: usize,
        sparse_below: f64,
    ) -> Matrix<'a> {
        match sparse_rows(&data, (rows, cols), sparse_below) {
            Some(csr) => {
                self.release(&data);
                Matrix::Sparse(csr)
            }
            None => Matrix::Dense { data, rows, cols },
        }
    }

    fn bias(&self, node: &Node, index: usize, len: usize) -> Result<Option<Vec<f32>>> {
        let Some(name) = node.weights.get(index) else {
            return Ok(None);
        };
        let (b, shape) = self.tensor(node, name)?;
        if b.len() != len || shape.len() != 1 {
            return Err(Error::Model(format!(
                "node {}: bias {name:?} has shape {shape:?}, expected [{len}]",
                node.name
            )));
        }
        let owned = b.to_vec();
        self.release(&b);
        Ok(Some(owned))
    }
}

impl<'a> Model<'a> {
    pub fn load(file: &Cxrm<'a>) -> Result<Model<'a>> {
        Self::load_with(file, RuntimeOptions::default())
    }

    pub fn load_with(file: &Cxrm<'a>, options: RuntimeOptions) -> Result<Model<'a>> {
        let graph = file
            .graph()?
            .ok_or_else(|| Error::Model("the file has no graph section".into()))?;
        if graph.nodes.is_empty() {
            return Err(Error::Model("the graph has no nodes".into()));
        }
        let meta = file.metadata()?;
        let input = InputSpec::from_metadata(&meta)?;
        let classes: Vec<String> =
            match value::get(&meta, "model.classes").and_then(Value::as_array) {
                Some(items) => items
                    .iter()
                    .map(|v| v.as_str().map(str::to_string))
                    .collect::<Option<_>>()
                    .ok_or_else(|| Error::Model("model.classes must be strings".into()))?,
                None => Vec::new(),
            };
        let mut uses = std::collections::HashMap::<&str, usize>::new();
        for name in graph.nodes.iter().flat_map(|n| &n.weights) {
            *uses.entry(name).or_default() += 1;
        }
        let loader = Loader {
            file,
            options,
            sparse: Default::default(),
            shared: uses
                .into_iter()
                .filter(|&(_, n)| n > 1)
                .map(|(name, _)| name.to_string())
                .collect(),
            decodes: Default::default(),
            decoded: Default::default(),
        };
        loader.predecode(&graph)?;
        let mut layers: Vec<Layer<'a>> = Vec::with_capacity(graph.nodes.len());
        let mut shapes: Vec<Vec<usize>> = Vec::with_capacity(graph.nodes.len());
        let input_shape = vec![input.channels, input.height, input.width];
        let budget = options.budget.unwrap_or_default();
        budget.check(
            || "the model's input".into(),
            elements(&input_shape).saturating_mul(4),
        )?;
        if let Some([rh, rw]) = input.fixed_resized_size() {
            budget.check(
                || "the resized image before its crop (input.crop_from)".into(),
                (input.channels as u64)
                    .saturating_mul(rh as u64)
                    .saturating_mul(rw as u64),
            )?;
        }
        // Node names to layer indices, so that resolving inputs stays linear in the graph.
        let mut index: std::collections::HashMap<&str, usize> =
            std::collections::HashMap::with_capacity(graph.nodes.len());
        for node in &graph.nodes {
            let inputs: Vec<Source> = node
                .inputs
                .iter()
                .map(|i| {
                    if i == INPUT {
                        Source::Input
                    } else {
                        Source::Node(index[i.as_str()])
                    }
                })
                .collect();
            let in_shapes: Vec<&Vec<usize>> = inputs
                .iter()
                .map(|s| match s {
                    Source::Input => &input_shape,
                    Source::Node(i) => &shapes[*i],
                })
                .collect();
            let (op, out_shape) = build_op(&loader, node, &in_shapes)?;
            if out_shape.contains(&0) {
                return Err(Error::Model(format!(
                    "node {} ({}) gives an empty output, shape {out_shape:?}",
                    cxrm_format::text::escape(&node.name),
                    node.op
                )));
            }
            index.insert(&node.name, layers.len());
            shapes.push(out_shape);
            layers.push(Layer {
                name: node.name.clone(),
                op,
                inputs,
            });
        }
        fold_batch_norms(&mut layers, &|copied| loader.release(copied));
        fuse_signs(&mut layers, &shapes);
        decode_binary_convolutions(&mut layers);
        fuse_activations(&mut layers);
        pack_channel_panels(&mut layers, &shapes, &|copied| loader.release(copied));
        if options.winograd {
            transform_for_winograd(&mut layers, &|copied| loader.release(copied));
        }
        // Last: it changes layers' inputs, which the passes above count.
        fuse_residual_adds(&mut layers);
        let out = shapes.last().expect("nonempty");
        if out.len() != 1 {
            return Err(Error::Model(format!(
                "the last node must give a vector per image (e.g. after flatten/dense), it gives shape {out:?}"
            )));
        }
        if !classes.is_empty() && classes.len() != out[0] {
            return Err(Error::Model(format!(
                "model.classes names {} classes, the output has {}",
                classes.len(),
                out[0]
            )));
        }
        let mut last_use: Vec<usize> = (0..layers.len()).collect();
        for (i, l) in layers.iter().enumerate() {
            for s in &l.inputs {
                if let Source::Node(j) = s {
                    last_use[*j] = i;
                }
            }
        }
        let work_per_image = layers.iter().zip(&shapes).map(|(l, s)| l.op.work(s)).sum();
        let in_place = in_place_inputs(&layers, &input_shape, &shapes, &last_use);
        let reads_input_in_place = !layers
            .iter()
            .zip(&in_place)
            .any(|(l, k)| k.is_some_and(|k| l.inputs[k] == Source::Input));
        let (lifetimes, storage) =
            value_lifetimes(&input_shape, &shapes, &layers, &last_use, &in_place);
        let peak_live = arena::peak_live(&lifetimes);
        let peak_bytes_per_image = peak_live.saturating_mul(4);
        budget.check(
            || "one image's activations at their peak".into(),
            peak_bytes_per_image,
        )?;
        let threads = Threads::pinned_if(options.threads, options.pin_threads);
        // Values that every thread reads whole kept apart from what comes soon after, where
        // that costs no memory. No placement is shorter than the peak, so a spread one that
        // reaches it is kept without planning the plain one too (a long graph takes seconds).
        let apart = placement_lifetimes(&layers, &shapes, &storage, &lifetimes, threads.count());
        let placement = match (apart != lifetimes).then(|| arena::place(&apart)) {
            Some(spread) if spread.len as u64 <= peak_live => spread,
            Some(spread) => {
                let plain = arena::place(&lifetimes);
                if spread.len <= plain.len {
                    spread
                } else {
                    plain
                }
            }
            None => arena::place(&lifetimes),
        };
        let arena_bytes_per_image = (placement.len as u64).saturating_mul(4);
        budget.check(
            || "one image's activation arena".into(),
            arena_bytes_per_image,
        )?;
        let lens: Vec<usize> = std::iter::once(&input_shape)
            .chain(&shapes)
            .map(|shape| elements(shape) as usize)
            .collect();
        let slots = storage
            .iter()
            .zip(&lens)
            .map(|(&at, &len)| placement.range(at, len))
            .collect();
        let group = (0..layers.len())
            .find(|&i| runs_images_together(&layers[i], &shapes[i], in_place[i]))
            .map(|first| GroupPlan::new(first, &lifetimes, &storage, &lens, &placement));
        Ok(Model {
            layers,
            input,
            classes,
            input_shape,
            shapes,
            slots,
            in_place,
            reads_input_in_place,
            arena_len: placement.len,
            arenas: Mutex::new(Vec::new()),
            group,
            group_arenas: Mutex::new(Vec::new()),
            work_per_image,
            peak_bytes_per_image,
            arena_bytes_per_image,
            budget,
            weights_decoded: loader.decodes.get(),
            threads,
        })
    }
}

pub(super) fn build_op<'a>(
    loader: &Loader<'_, 'a>,
    node: &Node,
    ins: &[&Vec<usize>],
) -> Result<(Op<'a>, Vec<usize>)> {
    let fail = |what: String| Error::Model(format!("node {} ({}): {what}", node.name, node.op));
    let arity = |n: std::ops::RangeInclusive<usize>| {
        if n.contains(&ins.len()) {
            Ok(())
        } else if n.start() == n.end() {
            Err(fail(format!(
                "takes {} input(s), has {}",
                n.start(),
                ins.len()
            )))
        } else {
            Err(fail(format!(
                "takes at least {} inputs, has {}",
                n.start(),
                ins.len()
            )))
        }
    };
    let image = |s: &Vec<usize>| -> Result<(usize, usize, usize)> {
        match s[..] {
            [c, h, w] => Ok((c, h, w)),
            _ => Err(fail(format!("needs a C×H×W input, got shape {s:?}"))),
        }
    };
    let op = format::Op::parse(node)?;
    arity(op.arity())?;
    Ok(match op {
        format::Op::Conv2d(conv) | format::Op::XnorConv2d(conv) => {
            let (c, h, w) = image(ins[0])?;
            let name = node
                .weights
                .first()
                .ok_or_else(|| fail("needs a weight tensor".into()))?;
            // A convolution's product is a blocked GEMM, which the CSR kernel beats only when
            // fewer weights are left than for a matrix-vector product; an XNOR layer's float
            // fallback is a matrix-vector product per position.
            let pixels = (h / conv.stride[0].max(1)) * (w / conv.stride[1].max(1));
            let params_with = |kernel: [usize; 2]| Conv2dParams {
                kernel,
                stride: conv.stride,
                padding: conv.padding,
                dilation: conv.dilation,
                groups: conv.groups,
            };
            // Layers that run by Winograd's F(4×4, 3×3) stay dense: told from the stored
            // shape, before the weight is decoded.
            let winograd = match loader.record(node, name)?.shape[..] {
                [cout, cin, kh, kw] => {
                    let p = params_with([kh as usize, kw as usize]);
                    loader.options.winograd && winograd::suits(&p, cin as usize, cout as usize)
                }
                _ => false,
            };
            let sparse_below = if matches!(op, format::Op::XnorConv2d(_)) {
                loader.options.sparse_below_density
            } else if pixels >= CONV_SPARSE_MIN_PIXELS
                && !winograd
                && kernels::sparse_in_registers()
            {
                loader.options.sparse_below_density * CONV_SPARSE_FACTOR
            } else if pixels >= CONV_SPARSE_MID_PIXELS
                && !winograd
                && kernels::sparse_in_registers()
            {
                loader.options.sparse_below_density * MID_CONV_SPARSE_FACTOR
            } else {
                loader.options.sparse_below_density * SMALL_CONV_SPARSE_FACTOR
            };
            let (loaded, shape) = loader.weight(node, name, sparse_below)?;
            let [cout, cg, kh, kw] = shape[..] else {
                return Err(fail(format!(
                    "weight {name:?} must be [out, in/groups, kh, kw], found {shape:?}"
                )));
            };
            let groups = conv.groups;
            if cg * groups != c || cout % groups != 0 {
                return Err(fail(format!(
                    "input has {c} channels, weight {name:?} {shape:?} with groups {groups} expects {}",
                    cg * groups
                )));
            }
            let params = params_with([kh, kw]);
            let (oh, ow) = params
                .output_size(h, w)
                .ok_or_else(|| fail(format!("a {kh}x{kw} kernel does not fit a {h}x{w} input")))?;
            let bias = loader.bias(node, 1, cout)?;
            let cols = cg * kh * kw;
            let op = if matches!(op, format::Op::XnorConv2d(_)) {
                if groups != 1 {
                    return Err(fail(format!(
                        "XNOR convolutions take groups 1, not {groups}"
                    )));
                }
                Op::XnorConv {
                    weight: loader.xnor_weight(loaded, cout, cols, Some(c)),
                    bias,
                    params,
                    input: SignInput::Scaled,
                }
            } else {
                match loaded {
                    Loaded::Factored(Factored::Tucker(t)) if groups == 1 => Op::ConvChain {
                        steps: tucker_steps(&t, params),
                        bias,
                    },
                    loaded => {
                        let mut weight = loader.weight_matrix(loaded, cout, cols, sparse_below);
                        if groups == c && cout == c {
                            // The depthwise kernel is direct; it takes its few weights dense,
                            // and as a copy of its own: read in place, they would keep resident
                            // the file pages around them, mostly weights folded into copies (a
                            // fault maps a whole page-cache folio, up to 2 MB).
                            weight = loader.owned(weight.into_dense());
                        }
                        Op::Conv {
                            weight,
                            bias,
                            params,
                            activation: Activation::None,
                            residual: false,
                        }
                    }
                }
            };
            (op, vec![cout, oh, ow])
        }
        format::Op::Dense | format::Op::XnorDense => {
            let [n] = ins[0][..] else {
                return Err(fail(format!(
                    "needs a flat input (add a flatten node), got shape {:?}",
                    ins[0]
                )));
            };
            let name = node
                .weights
                .first()
                .ok_or_else(|| fail("needs a weight tensor".into()))?;
            let sparse_below = loader.options.sparse_below_density;
            let (loaded, shape) = loader.weight(node, name, sparse_below)?;
            let [out, inp] = shape[..] else {
                return Err(fail(format!(
                    "weight {name:?} must be [out, in], found {shape:?}"
                )));
            };
            if inp != n {
                return Err(fail(format!(
                    "input has {n} features, weight {name:?} expects {inp}"
                )));
            }
            let bias = loader.bias(node, 1, out)?;
            let op = if op == format::Op::XnorDense {
                Op::XnorDense {
                    weight: loader.xnor_weight(loaded, out, inp, None),
                    bias,
                    input: SignInput::Scaled,
                }
            } else {
                Op::Dense {
                    weight: loader.weight_matrix(loaded, out, inp, sparse_below),
                    bias,
                }
            };
            (op, vec![out])
        }
        format::Op::BatchNorm { epsilon } => {
            let c = ins[0]
                .first()
                .copied()
                .ok_or_else(|| fail("needs an input with channels".into()))?;
            if node.weights.len() != 4 {
                return Err(fail("needs gamma, beta, mean and var".into()));
            }
            let mut t = Vec::new();
            for name in &node.weights {
                let (v, _) = loader.tensor(node, name)?;
                if v.len() != c {
                    return Err(fail(format!(
                        "{name:?} has {} values for {c} channels",
                        v.len()
                    )));
                }
                t.push(v);
            }
            let eps = epsilon as f32;
            let scale: Vec<f32> = t[0]
                .iter()
                .zip(t[3].iter())
                .map(|(g, v)| g / (v + eps).sqrt())
                .collect();
            let shift: Vec<f32> = t[1]
                .iter()
                .zip(t[2].iter())
                .zip(&scale)
                .map(|((b, m), s)| b - m * s)
                .collect();
            t.iter().for_each(|v| loader.release(v));
            (Op::BatchNorm { scale, shift }, ins[0].clone())
        }
        format::Op::Relu => (Op::Relu, ins[0].clone()),
        format::Op::Relu6 => (Op::Relu6, ins[0].clone()),
        format::Op::Softmax => {
            if ins[0].len() != 1 {
                return Err(fail(format!(
                    "softmax takes a vector per image, got shape {:?}",
                    ins[0]
                )));
            }
            (Op::Softmax, ins[0].clone())
        }
        format::Op::Flatten => (Op::Flatten, vec![ins[0].iter().product()]),
        format::Op::MaxPool2d(pool) | format::Op::AvgPool2d(pool) => {
            let (c, h, w) = image(ins[0])?;
            let kernel = pool.kernel;
            let p = PoolParams {
                kernel,
                stride: pool.stride,
                padding: pool.padding,
            };
            let (oh, ow) = p.output_size(h, w).ok_or_else(|| {
                fail(format!(
                    "a {}x{} window does not fit a {h}x{w} input",
                    kernel[0], kernel[1]
                ))
            })?;
            (
                if matches!(op, format::Op::MaxPool2d(_)) {
                    Op::MaxPool(p)
                } else {
                    Op::AvgPool(p)
                },
                vec![c, oh, ow],
            )
        }
        format::Op::GlobalAvgPool => {
            let (c, _, _) = image(ins[0])?;
            (Op::GlobalAvgPool, vec![c])
        }
        format::Op::Sigmoid => (Op::Sigmoid, ins[0].clone()),
        format::Op::HardSwish => (Op::HardSwish, ins[0].clone()),
        format::Op::Mul => {
            let channel_scale = ins[1].len() == 1 && ins[0].len() == 3 && ins[0][0] == ins[1][0];
            if ins[0] != ins[1] && !channel_scale {
                return Err(fail(format!(
                    "multiplies shapes {:?} and {:?} (equal shapes, or [C, H, W] and [C])",
                    ins[0], ins[1]
                )));
            }
            (Op::Mul, ins[0].clone())
        }
        format::Op::Concat => {
            let first = ins[0];
            let same_rest = ins
                .iter()
                .all(|s| s.len() == first.len() && s[1..] == first[1..]);
            if !same_rest {
                return Err(fail(format!(
                    "joins shapes {ins:?}: all must be vectors, or share H and W"
                )));
            }
            let mut out = first.clone();
            out[0] = ins.iter().map(|s| s[0]).sum();
            (Op::Concat, out)
        }
        format::Op::Pad { padding: p } => {
            let (c, h, w) = image(ins[0])?;
            (Op::Pad(p), vec![c, h + p[0] + p[2], w + p[1] + p[3]])
        }
        format::Op::Sign => {
            let threshold = match node.weights.first() {
                Some(name) => {
                    let (t, _) = loader.tensor(node, name)?;
                    if t.len() != ins[0][0] {
                        return Err(fail(format!(
                            "threshold {name:?} has {} values for an input of shape {:?} (one per \
                             channel, or per element of a vector)",
                            t.len(),
                            ins[0]
                        )));
                    }
                    Some(t.into_owned())
                }
                None => None,
            };
            (Op::Sign { threshold }, ins[0].clone())
        }
        format::Op::Add => {
            if ins[0] != ins[1] {
                return Err(fail(format!("adds shapes {:?} and {:?}", ins[0], ins[1])));
            }
            (Op::Add, ins[0].clone())
        }
    })
}

/// `data` (`rows × cols`) as CSR rows where at most `sparse_below` of its values are nonzero;
/// the nonzeros counted once, for the decision and the rows' room.
pub(super) fn sparse_rows(
    data: &[f32],
    (rows, cols): (usize, usize),
    sparse_below: f64,
) -> Option<Csr> {
    let data = data.get(..rows.checked_mul(cols)?)?;
    let nonzero = ops::nonzeros(data);
    (density(nonzero, data.len()) <= sparse_below)
        .then(|| Csr::from_dense_counted(data, rows, cols, nonzero))
}

/// The fraction of `total` values that `nonzero` is.
pub(super) fn density(nonzero: usize, total: usize) -> f64 {
    nonzero as f64 / total.max(1) as f64
}

pub(super) fn elements(shape: &[usize]) -> u64 {
    shape.iter().fold(1u64, |n, &d| n.saturating_mul(d as u64))
}
