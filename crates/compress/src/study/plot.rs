//! The study's picture: test accuracy against stored size, one point per file, size on a log
//! axis (compression ratios are multiplicative), each method its own colour, the Pareto
//! frontier (the files no other file beats in both size and accuracy) drawn through them, and
//! every label placed where it covers no other label or point.

use super::Study;
use cxrm_format::error::{Error, Result};
use plotters::prelude::*;
use std::path::Path;

const METHODS: [(&str, RGBColor); 8] = [
    ("baseline", RGBColor(31, 119, 180)),
    ("deep-compression", RGBColor(214, 39, 40)),
    ("separable", RGBColor(44, 160, 44)),
    ("lowrank", RGBColor(255, 127, 14)),
    ("tucker", RGBColor(140, 86, 75)),
    ("xnor", RGBColor(127, 127, 127)),
    ("distill", RGBColor(148, 103, 189)),
    ("miracle", RGBColor(23, 190, 207)),
];

/// Label font size in pixels, and the width a character takes on average in it.
const FONT_PX: i32 = 13;
const CHAR_PX: i32 = 7;
/// Offsets from a point to its label's top-left corner, tried in order.
const LABEL_OFFSETS: [(i32, i32); 8] = [
    (9, -16),
    (9, 3),
    (-9, -16),
    (-9, 3),
    (9, -32),
    (9, 19),
    (-9, -32),
    (-9, 19),
];

/// A pixel rectangle: left, top, right, bottom.
type Rect = (i32, i32, i32, i32);

fn overlaps(a: Rect, b: Rect) -> bool {
    a.0 < b.2 && b.0 < a.2 && a.1 < b.3 && b.1 < a.3
}

/// Where each label goes, as an offset from its point: the first of [`LABEL_OFFSETS`] (a
/// leftward offset puts the label's right end there) whose box covers no point and no label
/// placed before it, or the first offset when every one collides.
fn place_labels(points: &[(i32, i32)], labels: &[String]) -> Vec<(i32, i32)> {
    let dots: Vec<Rect> = points
        .iter()
        .map(|&(x, y)| (x - 6, y - 6, x + 6, y + 6))
        .collect();
    let mut placed: Vec<Rect> = Vec::new();
    points
        .iter()
        .zip(labels)
        .map(|(&(x, y), label)| {
            let width = label.chars().count() as i32 * CHAR_PX;
            let rect = |(dx, dy): (i32, i32)| {
                let left = if dx < 0 { x + dx - width } else { x + dx };
                (left, y + dy, left + width, y + dy + FONT_PX)
            };
            let chosen = LABEL_OFFSETS
                .iter()
                .copied()
                .find(|&o| {
                    let r = rect(o);
                    !placed.iter().chain(&dots).any(|&p| overlaps(r, p))
                })
                .unwrap_or(LABEL_OFFSETS[0]);
            placed.push(rect(chosen));
            let (dx, dy) = chosen;
            (if dx < 0 { dx - width } else { dx }, dy)
        })
        .collect()
}

/// Indices of the Pareto frontier, smallest first: each is more accurate than every smaller
/// file (ties in size keep the more accurate).
fn pareto_frontier(kb: &[f64], acc: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..kb.len()).collect();
    order.sort_by(|&a, &b| kb[a].total_cmp(&kb[b]).then(acc[b].total_cmp(&acc[a])));
    let mut best = f64::NEG_INFINITY;
    order
        .into_iter()
        .filter(|&i| {
            let better = acc[i] > best;
            best = best.max(acc[i]);
            better
        })
        .collect()
}

/// A data name (`mnist`, `bundled`), or the last two components of a path.
fn short_name(data: &str) -> String {
    let parts: Vec<&str> = data.trim_end_matches('/').rsplit('/').take(2).collect();
    parts.into_iter().rev().collect::<Vec<_>>().join("/")
}

pub fn accuracy_vs_size(study: &Study, path: &Path) -> Result<()> {
    let fail = |e: String| Error::Usage(format!("cannot draw {}: {e}", path.display()));
    if study.rows.is_empty() {
        return Ok(());
    }
    let kb: Vec<f64> = study
        .rows
        .iter()
        .map(|r| r.stored_bytes as f64 / 1024.0)
        .collect();
    let acc: Vec<f64> = study.rows.iter().map(|r| r.accuracy * 100.0).collect();
    let (lo_kb, hi_kb) = kb
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    let (lo_acc, hi_acc) = acc
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    let y_lo = (lo_acc - (hi_acc - lo_acc).max(1.0) * 0.15).max(0.0);
    let y_hi = (hi_acc + (hi_acc - lo_acc).max(1.0) * 0.15).min(100.0);

    let svg = {
        let mut buf = String::new();
        {
            let root = SVGBackend::with_string(&mut buf, (900, 600)).into_drawing_area();
            root.fill(&WHITE).map_err(|e| fail(e.to_string()))?;
            let mut chart = ChartBuilder::on(&root)
                .caption(
                    format!(
                        "cxrm study on {}: accuracy vs stored size",
                        short_name(&study.data)
                    ),
                    ("sans-serif", 20),
                )
                .margin(20)
                .x_label_area_size(45)
                .y_label_area_size(60)
                .build_cartesian_2d((lo_kb / 1.6..hi_kb * 1.6).log_scale(), y_lo..y_hi)
                .map_err(|e| fail(e.to_string()))?;
            chart
                .configure_mesh()
                .x_desc("stored size (KB, log scale)")
                .y_desc(format!("test accuracy (%), {} images", study.test_images))
                .draw()
                .map_err(|e| fail(e.to_string()))?;
            let frontier = pareto_frontier(&kb, &acc);
            chart
                .draw_series(LineSeries::new(
                    frontier.iter().map(|&i| (kb[i], acc[i])),
                    ShapeStyle::from(&BLACK.mix(0.35)).stroke_width(1),
                ))
                .map_err(|e| fail(e.to_string()))?
                .label("Pareto frontier")
                .legend(|(x, y)| PathElement::new(vec![(x - 8, y), (x + 8, y)], BLACK.mix(0.35)));
            // Labels in the study's row order, each placed clear of the points and of the
            // labels before it.
            let labels: Vec<String> = study
                .rows
                .iter()
                .map(|r| format!("{} ({:.1}x)", r.model, r.ratio))
                .collect();
            let pixels: Vec<(i32, i32)> = kb
                .iter()
                .zip(&acc)
                .map(|(&x, &y)| chart.backend_coord(&(x, y)))
                .collect();
            let offsets = place_labels(&pixels, &labels);
            for (method, c) in METHODS {
                let points: Vec<(f64, f64, String, (i32, i32))> = study
                    .rows
                    .iter()
                    .zip(kb.iter().zip(&acc))
                    .zip(labels.iter().zip(&offsets))
                    .filter(|((r, _), _)| r.method == method)
                    .map(|((_, (&x, &y)), (label, &offset))| (x, y, label.clone(), offset))
                    .collect();
                if points.is_empty() {
                    continue;
                }
                chart
                    .draw_series(points.iter().map(|(x, y, label, offset)| {
                        EmptyElement::at((*x, *y))
                            + Circle::new((0, 0), 6, c.filled())
                            + Text::new(
                                label.clone(),
                                *offset,
                                ("sans-serif", 13).into_font().color(&c),
                            )
                    }))
                    .map_err(|e| fail(e.to_string()))?
                    .label(method)
                    .legend(move |(x, y)| Circle::new((x, y), 5, c.filled()));
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerRight)
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .map_err(|e| fail(e.to_string()))?;
            root.present().map_err(|e| fail(e.to_string()))?;
        }
        buf
    };
    cxrm_format::container::writer::write_atomically(path, |w| {
        std::io::Write::write_all(w, svg.as_bytes())
    })
}

/// Deep Compression's weights, one panel per layer: the histogram of the trained weights
/// before compression (grey), of the weights that survive pruning after retraining (colour),
/// and a line at each trained centroid the file stores.
pub fn weight_histograms(
    before: &crate::train::TrainedModel,
    after: &crate::train::TrainedModel,
    layers: &[String],
    path: &Path,
) -> Result<()> {
    let fail = |e: String| Error::Usage(format!("cannot draw {}: {e}", path.display()));
    let values = |m: &crate::train::TrainedModel, name: &str| -> Vec<f32> {
        m.tensors
            .iter()
            .find(|t| t.name == name)
            .map(|t| t.values.clone())
            .unwrap_or_default()
    };
    let mut buf = String::new();
    {
        let height = 230 * layers.len().max(1) as u32;
        let root = SVGBackend::with_string(&mut buf, (900, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| fail(e.to_string()))?;
        for (panel, name) in root
            .split_evenly((layers.len().max(1), 1))
            .iter()
            .zip(layers)
        {
            let w0 = values(before, name);
            let w1: Vec<f32> = values(after, name)
                .into_iter()
                .filter(|&v| v != 0.0)
                .collect();
            let mut centroids = w1.clone();
            centroids.sort_by(f32::total_cmp);
            centroids.dedup();
            let lim = w0
                .iter()
                .chain(&w1)
                .fold(0f32, |m, v| m.max(v.abs()))
                .max(1e-6) as f64
                * 1.02;
            const BINS: usize = 120;
            let bin =
                |v: f32| (((v as f64 + lim) / (2.0 * lim) * BINS as f64) as usize).min(BINS - 1);
            let count = |w: &[f32]| {
                let mut h = vec![0u32; BINS];
                w.iter().for_each(|&v| h[bin(v)] += 1);
                h
            };
            let (h0, h1) = (count(&w0), count(&w1));
            let top = h0.iter().chain(&h1).copied().max().unwrap_or(1).max(1) as f64;
            let mut chart = ChartBuilder::on(panel)
                .caption(
                    format!(
                        "{name}: {} weights, {} kept, {} centroids",
                        w0.len(),
                        w1.len(),
                        centroids.len()
                    ),
                    ("sans-serif", 15),
                )
                .margin(10)
                .x_label_area_size(25)
                .y_label_area_size(50)
                .build_cartesian_2d(-lim..lim, 0.0..top * 1.05)
                .map_err(|e| fail(e.to_string()))?;
            chart
                .configure_mesh()
                .disable_mesh()
                .draw()
                .map_err(|e| fail(e.to_string()))?;
            let width = 2.0 * lim / BINS as f64;
            for (h, style) in [
                (&h0, RGBColor(170, 170, 170).filled()),
                (&h1, RGBColor(214, 39, 40).mix(0.7).filled()),
            ] {
                chart
                    .draw_series(
                        h.iter()
                            .enumerate()
                            .filter(|&(_, &c)| c > 0)
                            .map(|(i, &c)| {
                                let x = -lim + i as f64 * width;
                                Rectangle::new([(x, 0.0), (x + width, c as f64)], style)
                            }),
                    )
                    .map_err(|e| fail(e.to_string()))?;
            }
            chart
                .draw_series(centroids.iter().map(|&c| {
                    PathElement::new(vec![(c as f64, 0.0), (c as f64, top * 1.05)], BLUE.mix(0.6))
                }))
                .map_err(|e| fail(e.to_string()))?;
        }
        root.present().map_err(|e| fail(e.to_string()))?;
    }
    cxrm_format::container::writer::write_atomically(path, |w| {
        std::io::Write::write_all(w, buf.as_bytes())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_frontier_keeps_files_no_other_beats() {
        let kb = [100.0, 3.0, 40.0, 1700.0, 45.0];
        let acc = [99.0, 97.0, 99.4, 99.3, 99.1];
        assert_eq!(pareto_frontier(&kb, &acc), vec![1, 2]);
    }

    #[test]
    fn labels_of_points_at_one_place_do_not_overlap() {
        // lowrank and tucker at nearly the same size and accuracy.
        let points = [(300, 200), (302, 201), (600, 400)];
        let labels: Vec<String> = ["lenet-5 (2.7x)", "lenet-5 (2.8x)", "lenet-5 (1.0x)"]
            .map(String::from)
            .to_vec();
        let offsets = place_labels(&points, &labels);
        let rect = |i: usize| {
            let (x, y) = points[i];
            let (dx, dy) = offsets[i];
            let w = labels[i].len() as i32 * CHAR_PX;
            (x + dx, y + dy, x + dx + w, y + dy + FONT_PX)
        };
        assert!(!overlaps(rect(0), rect(1)), "{offsets:?}");
        assert_eq!(offsets[2], LABEL_OFFSETS[0]);
    }
}
