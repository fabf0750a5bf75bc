//! Training progress on the terminal: one bar per phase (loss and accuracy of recent batches),
//! a line per epoch with its validation accuracy.

use cxrm::compress::train::Event;
use indicatif::{ProgressBar, ProgressStyle};

pub struct TrainProgress {
    bar: ProgressBar,
    /// Exponential moving averages of the batch loss and accuracy.
    loss: f64,
    accuracy: f64,
    quiet: bool,
}

impl TrainProgress {
    pub fn new(quiet: bool) -> TrainProgress {
        TrainProgress {
            bar: ProgressBar::hidden(),
            loss: f64::NAN,
            accuracy: f64::NAN,
            quiet,
        }
    }

    /// A line above the bar; to stderr as it is when there is no terminal to draw a bar on.
    pub fn println(&self, line: &str) {
        if self.quiet {
        } else if self.bar.is_hidden() {
            eprintln!("{line}");
        } else {
            self.bar.println(line);
        }
    }

    pub fn event(&mut self, e: Event) {
        if self.quiet {
            return;
        }
        match e {
            Event::Phase {
                name,
                epochs,
                steps_per_epoch,
            } => {
                self.bar.finish_and_clear();
                self.bar = ProgressBar::new((epochs * steps_per_epoch) as u64);
                self.bar.set_style(
                    ProgressStyle::with_template(&format!(
                        "{name:<22} {{bar:30}} {{pos}}/{{len}} steps {{msg}} eta {{eta}}"
                    ))
                    .expect("valid template"),
                );
                (self.loss, self.accuracy) = (f64::NAN, f64::NAN);
            }
            Event::Step { loss, accuracy } => {
                let ema = |old: f64, new: f64| if old.is_nan() { new } else { 0.95 * old + 0.05 * new };
                self.loss = ema(self.loss, loss);
                self.accuracy = ema(self.accuracy, accuracy);
                self.bar.set_message(format!("loss {:.4} acc {:.3}", self.loss, self.accuracy));
                self.bar.inc(1);
            }
            Event::Epoch {
                epoch,
                loss,
                train_accuracy,
                val_accuracy,
                best,
            } => self.println(&format!(
                "  epoch {epoch:>3}: loss {loss:.4}, train acc {train_accuracy:.4}, val acc {val_accuracy:.4}{}",
                if best { "  (best)" } else { "" }
            )),
            Event::PhaseEnd {
                name,
                best_epoch,
                val_accuracy,
            } => {
                self.bar.finish_and_clear();
                self.println(&format!(
                    "  {name}: kept epoch {best_epoch} (validation accuracy {val_accuracy:.4})"
                ));
            }
            Event::Note(line) => self.println(&format!("  {line}")),
        }
    }
}

impl Drop for TrainProgress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}
