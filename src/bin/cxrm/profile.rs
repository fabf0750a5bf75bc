//! `cxrm bench --profile`: where a batch-1 pass spends its time, layer by layer.

use crate::Failure;
use cxrm::runtime::Model;
use cxrm::runtime::ndarray::ArrayView4;
use std::collections::BTreeMap;

/// The median time of each layer over the profiled passes, with what the layer is.
pub struct Profile {
    passes: usize,
    layers: Vec<LayerTime>,
    /// The median over the passes of each pass's layers summed: above the layers' medians
    /// summed ([`Profile::total`]) where each pass has a few slow layers, but not the same ones.
    pass_layers_seconds: f64,
    /// The median over the passes of each whole pass, its hand-off to the threads and back
    /// included.
    pass_seconds: f64,
}

struct LayerTime {
    name: String,
    kind: String,
    kernel: &'static str,
    output_shape: Vec<usize>,
    multiply_adds: usize,
    seconds: f64,
}

/// Times every layer of `passes` passes of `image` (batch 1) and keeps each layer's median.
pub fn measure(
    model: &Model,
    image: ArrayView4<'_, f32>,
    passes: usize,
) -> Result<Profile, Failure> {
    let image = image.index_axis(cxrm::runtime::ndarray::Axis(0), 0);
    let passes = passes.max(1);
    let mut samples: Vec<Vec<f64>> = Vec::new();
    let mut pass_layers = Vec::with_capacity(passes);
    let mut pass_walls = Vec::with_capacity(passes);
    for _ in 0..passes {
        let start = std::time::Instant::now();
        let times = model.profile(image)?;
        pass_walls.push(start.elapsed().as_secs_f64());
        pass_layers.push(times.iter().sum::<f64>());
        samples.resize(times.len(), Vec::with_capacity(passes));
        for (s, t) in samples.iter_mut().zip(times) {
            s.push(t);
        }
    }
    let layers = model
        .layer_info()
        .into_iter()
        .zip(samples)
        .map(|(info, mut s)| LayerTime {
            name: info.name,
            kind: info.kind,
            kernel: info.kernel,
            output_shape: info.output_shape,
            multiply_adds: info.multiply_adds,
            seconds: median(&mut s),
        })
        .collect();
    Ok(Profile {
        passes,
        layers,
        pass_layers_seconds: median(&mut pass_layers),
        pass_seconds: median(&mut pass_walls),
    })
}

/// The middle value, the upper of the middle two for an even count (as the layers' medians
/// have always been taken here); 0 for none.
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// Per kind of layer: layers, seconds, multiply-adds.
fn by_kind(layers: &[LayerTime]) -> Vec<(&str, usize, f64, usize)> {
    let mut kinds: BTreeMap<&str, (usize, f64, usize)> = BTreeMap::new();
    for l in layers {
        let k = kinds.entry(&l.kind).or_default();
        k.0 += 1;
        k.1 += l.seconds;
        k.2 += l.multiply_adds;
    }
    let mut kinds: Vec<_> = kinds
        .into_iter()
        .map(|(k, (n, s, m))| (k, n, s, m))
        .collect();
    kinds.sort_by(|a, b| b.2.total_cmp(&a.2));
    kinds
}

/// Multiply-adds per second in billions, or nothing for layers without products.
fn gmacs(multiply_adds: usize, seconds: f64) -> Option<f64> {
    (multiply_adds > 0 && seconds > 0.0).then(|| multiply_adds as f64 / seconds / 1e9)
}

impl Profile {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "passes": self.passes,
            "total_ms": self.total() * 1e3,
            "pass_layers_ms": self.pass_layers_seconds * 1e3,
            "pass_ms": self.pass_seconds * 1e3,
            "kinds": by_kind(&self.layers).iter().map(|(kind, n, s, m)| serde_json::json!({
                "kind": kind, "layers": n, "ms": s * 1e3, "multiply_adds": m,
                "gmac_per_s": gmacs(*m, *s),
            })).collect::<Vec<_>>(),
            "layers": self.layers.iter().map(|l| serde_json::json!({
                "name": l.name, "kind": l.kind, "kernel": l.kernel,
                "output_shape": l.output_shape, "multiply_adds": l.multiply_adds,
                "ms": l.seconds * 1e3,
            })).collect::<Vec<_>>(),
        })
    }

    fn total(&self) -> f64 {
        self.layers.iter().map(|l| l.seconds).sum()
    }

    /// The table by kind, then the slowest `top` layers.
    pub fn print(&self, top: usize) {
        let total = self.total();
        println!(
            "profile    median of {} batch-1 passes per layer, {:.3} ms in all",
            self.passes,
            total * 1e3
        );
        println!(
            "           a pass: its layers {:.3} ms, in all {:.3} ms (medians over the passes)",
            self.pass_layers_seconds * 1e3,
            self.pass_seconds * 1e3
        );
        println!(
            "  {:<16} {:>6} {:>10} {:>7} {:>10}",
            "kind", "layers", "ms", "share", "GMAC/s"
        );
        for (kind, n, s, m) in by_kind(&self.layers) {
            let rate = gmacs(m, s).map_or(String::new(), |g| format!("{g:.1}"));
            println!(
                "  {kind:<16} {n:>6} {:>10.3} {:>6.1}% {rate:>10}",
                s * 1e3,
                100.0 * s / total
            );
        }
        let mut slowest: Vec<&LayerTime> = self.layers.iter().collect();
        slowest.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
        println!("  slowest layers:");
        for l in slowest.into_iter().take(top) {
            let rate = gmacs(l.multiply_adds, l.seconds)
                .map_or(String::new(), |g| format!("{g:.1} GMAC/s"));
            println!(
                "  {:<36} {:<14} {:>16} {:>8.3} ms {rate}",
                l.name,
                l.kind,
                format!("{:?}", l.output_shape),
                l.seconds * 1e3
            );
        }
    }
}
