//! The runtime's memory promise: once warm, a forward pass allocates nothing but the array of
//! logits it returns, on one thread or two. Activations come from the arena planned at load,
//! kernels' scratch from per-thread pools (`crates/runtime/src/scratch.rs`). Counted by a global
//! allocator around the fifth pass of MobileNetV2 (depthwise and 1×1 convolutions, a strided
//! 3×3 one through im2col, residual adds, a dense layer), imported from the ONNX fixture, and
//! of the runtime fixtures' compressed and binary LeNet-5s.
//!
//! The `gemm` crate allocates its packing buffers on every call, so the count is only
//! asserted where the runtime's own kernels (AVX-512 or AVX2) run the products.

use cxrm::Cxrm;
use cxrm::runtime::{Model, RuntimeOptions, kernels};
use ndarray::Array4;
use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as the caller's contract.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as the caller's contract.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as the caller's contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// The allocations of `model_path`'s fifth pass over a batch of `batch` fixed inputs, on
/// `threads` threads.
fn warm_pass_allocations(model_path: &Path, batch: usize, threads: usize) -> usize {
    let bytes = std::fs::read(model_path).unwrap();
    let file = Cxrm::parse(&bytes).unwrap();
    let options = RuntimeOptions {
        threads,
        ..RuntimeOptions::default()
    };
    let model = Model::load_with(&file, options).unwrap();
    let spec = &model.input;
    let len = batch * spec.channels * spec.height * spec.width;
    let pixels = (0..len)
        .map(|i| ((i * 7919) % 255) as f32 / 255.0)
        .collect();
    let shape = (batch, spec.channels, spec.height, spec.width);
    let x = Array4::from_shape_vec(shape, pixels).unwrap();
    for _ in 0..4 {
        model.forward(x.view()).unwrap();
    }
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let logits = model.forward(x.view()).unwrap();
    let count = ALLOCATIONS.load(Ordering::Relaxed) - before;
    assert!(logits.iter().all(|v| v.is_finite()));
    count
}

/// The MobileNetV2 fixture imported into `dir`.
fn imported_mobilenet(dir: &Path) -> std::path::PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let model_path = dir.join("mobilenetv2.cxrm");
    let source = root.join("fixtures/import/mobilenetv2_op13.onnx");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_cxrm"))
        .args(["import", source.to_str().unwrap(), "-o"])
        .arg(&model_path)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    model_path
}

/// The one test of this file: the counter is global, and the test harness's own work when
/// another test ended (its report of it) would be counted too.
#[test]
fn warm_passes_allocate_only_their_logits() {
    a_warm_batch_1_pass_allocates_only_its_logits();
    warm_passes_of_compressed_and_binary_models_allocate_only_their_logits();
    a_warm_batch_pass_allocates_only_its_logits();
}

fn a_warm_batch_1_pass_allocates_only_its_logits() {
    let dir = tempfile::tempdir().unwrap();
    // `CXRM_ALLOCATIONS_MODEL=path.cxrm` counts another model's pass instead.
    let model_path = std::env::var_os("CXRM_ALLOCATIONS_MODEL")
        .map_or_else(|| imported_mobilenet(dir.path()), Into::into);
    let count = warm_pass_allocations(&model_path, 1, 1);
    println!("allocations in a warm batch-1 pass: {count}");
    if kernels::own_kernel_available() {
        assert!(
            count <= 1,
            "{count} allocations in a warm pass; only the logits expected"
        );
    }
}

/// The same promise for the compressed layers: pruned and shared weights (Deep Compression),
/// low-rank factors, signs fused into a convolution and a dense layer at thresholds, and
/// XNOR-Net's binary layers on the popcount kernels (whose signs, gathered windows and counts
/// come from the scratch pools, and whose padding corrections are kept from the first pass).
fn warm_passes_of_compressed_and_binary_models_allocate_only_their_logits() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for fixture in [
        "fixtures/runtime/lenet5_dc.cxrm",
        "fixtures/runtime/lenet5_factored.cxrm",
        "fixtures/runtime/lenet5_sign.cxrm",
        "fixtures/runtime/lenet5_xnor.cxrm",
        "fixtures/valid/binary_layers.cxrm",
    ] {
        let count = warm_pass_allocations(&root.join(fixture), 1, 1);
        println!("{fixture}: {count} allocations in a warm batch-1 pass");
        if kernels::own_kernel_available() {
            assert!(
                count <= 1,
                "{fixture}: {count} allocations in a warm pass; only the logits expected"
            );
        }
    }
}

/// Batches too: a thread's group of images keeps its lists of images, arenas and operands
/// inline, and the batch's groups go to the threads straight from their rows. On two threads
/// the job that keeps the pool's other worker spinning for the pass is the other half of a
/// join, on the stack.
fn a_warm_batch_pass_allocates_only_its_logits() {
    let dir = tempfile::tempdir().unwrap();
    let model_path = std::env::var_os("CXRM_ALLOCATIONS_MODEL")
        .map_or_else(|| imported_mobilenet(dir.path()), Into::into);
    for (batch, threads) in [(2, 1), (16, 1), (16, 2), (1, 2)] {
        let count = warm_pass_allocations(&model_path, batch, threads);
        println!("batch {batch}, {threads} thread(s): {count} allocations in a warm pass");
        if kernels::own_kernel_available() {
            assert!(
                count <= 1,
                "batch {batch}, {threads} thread(s): {count} allocations in a warm pass"
            );
        }
    }
}
