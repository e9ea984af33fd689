//! `n_epochs`, `batch_size` and `learning_rate_multiplier`: their `auto` values as
//! OpenAI documents them, and the ranges a request may set.

/// The hyperparameters a job trains with (every `auto` resolved).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Hyperparameters {
    pub n_epochs: usize,
    /// Examples per optimizer step.
    pub batch_size: usize,
    /// Scales [`BASE_LEARNING_RATE`].
    pub learning_rate_multiplier: f64,
}

/// The learning rate a multiplier of 1.0 means for the LoRA adapters (AdamW). OpenAI
/// scales the base model's pretraining rate; adapters train at a higher one, so the
/// multipliers OpenAI picks (0.05–0.2) give 1e-4–4e-4.
pub const BASE_LEARNING_RATE: f64 = 2e-3;

/// Which API's `auto` rules apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// `/v1/fine_tuning/jobs`: epochs picked from the dataset's size.
    FineTuning,
    /// Legacy `/v1/fine-tunes`: 4 epochs.
    LegacyFineTunes,
}

/// OpenAI's documented `auto` values for a training set of `n_examples`:
/// - `n_epochs`: legacy, 4. Today's API aims at 3 epochs, raised so the run sees at
///   least 100 examples (at most 25 epochs) and lowered so it sees at most 25,000 (at
///   least 1 epoch).
/// - `batch_size`: about 0.2% of the examples, between 1 and 256.
/// - `learning_rate_multiplier`: 0.05, 0.1 or 0.2 as the batch grows (larger batches
///   train well at larger rates).
pub fn auto_hyperparameters(n_examples: usize, api: Api) -> Hyperparameters {
    let n = n_examples.max(1);
    let n_epochs = match api {
        Api::LegacyFineTunes => 4,
        Api::FineTuning => {
            const TARGET: usize = 3;
            if n * TARGET < 100 {
                (100 / n).min(25)
            } else if n * TARGET > 25_000 {
                (25_000 / n).max(1)
            } else {
                TARGET
            }
        }
    };
    let batch_size = (n * 2 / 1000).clamp(1, 256);
    let learning_rate_multiplier = match batch_size {
        0..=8 => 0.05,
        9..=64 => 0.1,
        _ => 0.2,
    };
    Hyperparameters { n_epochs, batch_size, learning_rate_multiplier }
}

/// The hyperparameters a request set; `None` is `auto`. Integers are signed so that a
/// negative value is reported as out of range rather than as a type error.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Requested {
    pub n_epochs: Option<i64>,
    pub batch_size: Option<i64>,
    pub learning_rate_multiplier: Option<f64>,
}

/// A hyperparameter out of range: the request's 400.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct HyperError {
    /// The request field, e.g. `hyperparameters.n_epochs` (the caller may rename it for
    /// the legacy API's top-level fields).
    pub param: &'static str,
    pub message: String,
}

/// Ranges OpenAI accepts.
pub const N_EPOCHS_RANGE: std::ops::RangeInclusive<i64> = 1..=50;
pub const BATCH_SIZE_RANGE: std::ops::RangeInclusive<i64> = 1..=256;
/// Exclusive of 0.
pub const MAX_LEARNING_RATE_MULTIPLIER: f64 = 10.0;

impl Requested {
    /// Checks each set value's range (before the training file is read).
    pub fn check(&self) -> Result<(), HyperError> {
        let int = |param: &'static str, name: &str, v: Option<i64>, range: &std::ops::RangeInclusive<i64>| match v {
            Some(v) if !range.contains(&v) => {
                Err(HyperError { param, message: format!("Invalid {name}: {v}. It must be an integer between {} and {}.", range.start(), range.end()) })
            }
            _ => Ok(()),
        };
        int("hyperparameters.n_epochs", "n_epochs", self.n_epochs, &N_EPOCHS_RANGE)?;
        int("hyperparameters.batch_size", "batch_size", self.batch_size, &BATCH_SIZE_RANGE)?;
        match self.learning_rate_multiplier {
            Some(m) if !(m > 0.0 && m <= MAX_LEARNING_RATE_MULTIPLIER) => Err(HyperError {
                param: "hyperparameters.learning_rate_multiplier",
                message: format!("Invalid learning_rate_multiplier: {m}. It must be greater than 0 and at most {MAX_LEARNING_RATE_MULTIPLIER}."),
            }),
            _ => Ok(()),
        }
    }

    /// The values to train with: the set ones (checked), `auto` for the rest. A batch
    /// larger than the training set is cut to it.
    pub fn resolve(&self, n_examples: usize, api: Api) -> Result<Hyperparameters, HyperError> {
        self.check()?;
        let auto = auto_hyperparameters(n_examples, api);
        Ok(Hyperparameters {
            n_epochs: self.n_epochs.map_or(auto.n_epochs, |v| v as usize),
            batch_size: self.batch_size.map_or(auto.batch_size, |v| v as usize).min(n_examples.max(1)),
            learning_rate_multiplier: self.learning_rate_multiplier.unwrap_or(auto.learning_rate_multiplier),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_follows_openai() {
        let small = auto_hyperparameters(10, Api::FineTuning);
        assert_eq!(small, Hyperparameters { n_epochs: 10, batch_size: 1, learning_rate_multiplier: 0.05 });
        assert_eq!(auto_hyperparameters(2, Api::FineTuning).n_epochs, 25);
        assert_eq!(auto_hyperparameters(1000, Api::FineTuning).n_epochs, 3);
        assert_eq!(auto_hyperparameters(20_000, Api::FineTuning).n_epochs, 1);
        assert_eq!(auto_hyperparameters(10, Api::LegacyFineTunes).n_epochs, 4);
        let big = auto_hyperparameters(50_000, Api::FineTuning);
        assert_eq!((big.batch_size, big.learning_rate_multiplier), (100, 0.2));
        assert_eq!(auto_hyperparameters(1_000_000, Api::FineTuning).batch_size, 256);
    }

    #[test]
    fn out_of_range_values_name_their_field() {
        let e = Requested { n_epochs: Some(0), ..Default::default() }.check().unwrap_err();
        assert_eq!(e.param, "hyperparameters.n_epochs");
        let e = Requested { batch_size: Some(257), ..Default::default() }.check().unwrap_err();
        assert_eq!(e.param, "hyperparameters.batch_size");
        let e = Requested { learning_rate_multiplier: Some(-1.0), ..Default::default() }.check().unwrap_err();
        assert_eq!(e.param, "hyperparameters.learning_rate_multiplier");
        let h = Requested { batch_size: Some(64), ..Default::default() }.resolve(5, Api::FineTuning).unwrap();
        assert_eq!(h.batch_size, 5);
    }
}
