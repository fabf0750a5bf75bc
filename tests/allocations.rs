//! The runtime's memory promise: once warm, a batch-1 forward pass allocates nothing but the
//! array of logits it returns. Activations come from the arena planned at load, kernels'
//! scratch from per-thread pools (`crates/runtime/src/scratch.rs`). Counted by a global
//! allocator around the fourth pass of MobileNetV2 (depthwise and 1×1 convolutions, a strided
//! 3×3 one through im2col, residual adds, a dense layer), imported from the ONNX fixture.
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

#[test]
fn a_warm_batch_1_pass_allocates_only_its_logits() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let model_path = dir.path().join("mobilenetv2.cxrm");
    let source = root.join("fixtures/import/mobilenetv2_op13.onnx");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_cxrm"))
        .args(["import", source.to_str().unwrap(), "-o"])
        .arg(&model_path)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // `CXRM_ALLOCATIONS_MODEL=path.cxrm` counts another model's pass instead.
    let model_path = std::env::var_os("CXRM_ALLOCATIONS_MODEL").map_or(model_path, Into::into);
    let bytes = std::fs::read(&model_path).unwrap();
    let file = Cxrm::parse(&bytes).unwrap();
    let options = RuntimeOptions {
        threads: 1,
        ..RuntimeOptions::default()
    };
    let model = Model::load_with(&file, options).unwrap();
    let spec = &model.input;
    let len = spec.channels * spec.height * spec.width;
    let pixels = (0..len)
        .map(|i| ((i * 7919) % 255) as f32 / 255.0)
        .collect();
    let x = Array4::from_shape_vec((1, spec.channels, spec.height, spec.width), pixels).unwrap();
    for _ in 0..3 {
        model.forward(x.view()).unwrap();
    }
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let logits = model.forward(x.view()).unwrap();
    let count = ALLOCATIONS.load(Ordering::Relaxed) - before;
    assert!(logits.iter().all(|v| v.is_finite()));
    println!("allocations in a warm batch-1 pass: {count}");
    if kernels::own_kernel_available() {
        assert!(
            count <= 1,
            "{count} allocations in a warm pass; only the logits expected"
        );
    }
}
