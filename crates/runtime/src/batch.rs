//! Running a model over a whole labelled data set, in batches.

use super::metrics::{self, Evaluation};
use super::model::{InputSpec, Model};
use crate::data::Dataset;
use cxrm_format::error::{Error, Result};
use ndarray::{Array2, Array3, Array4, s};

/// One image of `data` as the model's input: normalised, and resized (each channel, with the
/// model's filter) when the data set's images are not the model's size.
pub fn input(data: &Dataset, i: usize, spec: &InputSpec) -> Result<Array3<f32>> {
    let px = data.image(i);
    if (data.channels, data.height, data.width) == (spec.channels, spec.height, spec.width) {
        return Ok(normalise(px, spec));
    }
    if data.channels != spec.channels
        || spec.fixed_resized_size() != Some([spec.height, spec.width])
    {
        return Err(Error::Usage(format!(
            "data images are {}x{}x{}, the model takes {}x{}x{}",
            data.channels, data.height, data.width, spec.channels, spec.height, spec.width
        )));
    }
    let plane = data.height * data.width;
    let resized: Vec<u8> = px
        .chunks_exact(plane)
        .flat_map(|p| {
            crate::resize::Resampler::for_input(spec).resize(
                p,
                data.width,
                data.height,
                1,
                spec.width,
                spec.height,
            )
        })
        .collect();
    Ok(normalise(&resized, spec))
}

/// 8-bit pixels `[C, H, W]` as the model's input, through the file's pixel arithmetic (spec
/// §7, "Input scaling").
pub fn normalise(pixels: &[u8], spec: &InputSpec) -> Array3<f32> {
    let plane = spec.height * spec.width;
    Array3::from_shape_fn((spec.channels, spec.height, spec.width), |(c, y, x)| {
        spec.scale_pixel(c, pixels[c * plane + y * spec.width + x])
    })
}

/// The model's class probabilities for the first `n` images of `data`; `progress` is told how
/// many images each batch finished.
pub fn predict(
    model: &Model<'_>,
    data: &Dataset,
    n: usize,
    batch: usize,
    progress: &mut dyn FnMut(usize),
) -> Result<Array2<f32>> {
    let n = n.min(data.len());
    if data.classes.len() != model.num_classes() {
        return Err(Error::Usage(format!(
            "the data has {} classes, the model {}",
            data.classes.len(),
            model.num_classes()
        )));
    }
    let spec = &model.input;
    let mut probs = Array2::<f32>::zeros((n, model.num_classes()));
    let batch = batch.max(1);
    for start in (0..n).step_by(batch) {
        let end = (start + batch).min(n);
        let mut x = Array4::<f32>::zeros((end - start, spec.channels, spec.height, spec.width));
        for i in start..end {
            x.slice_mut(s![i - start, .., .., ..])
                .assign(&input(data, i, spec)?);
        }
        let p = model.predict(x.view())?;
        probs.slice_mut(s![start..end, ..]).assign(&p);
        progress(end - start);
    }
    Ok(probs)
}

/// Accuracy, per-class precision/recall, confusion matrix and ROC AUC over the first `n` images.
pub fn evaluate(
    model: &Model<'_>,
    data: &Dataset,
    n: usize,
    batch: usize,
    progress: &mut dyn FnMut(usize),
) -> Result<Evaluation> {
    let n = n.min(data.len());
    if n == 0 {
        return Err(Error::Usage("the data set is empty".into()));
    }
    let probs = predict(model, data, n, batch, progress)?;
    Ok(metrics::evaluate(&data.labels[..n], probs.view()))
}
