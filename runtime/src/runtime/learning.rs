//! What the runtime learns from the deployment as it runs: the online
//! model updated after each attempt with an honest label, saved in the
//! store now and then and at start restored from it (see `predict/online.rs`).

use super::Runtime;
use crate::dataset;
use crate::predict::Learnt;
use crate::predict::online::{OnlineModel, Prior, STORE_NAME};
use crate::store::{StateStore, StoreError};
use crate::trace::HostCall;
use crate::transaction::AttemptReport;
use crate::vocab::GateVerdict;
use std::time::Instant;

/// The online model is saved every this many updates. A crash loses at
/// most this many attempts' learning, which the next ones make up for.
const SAVE_EVERY: u64 = 20;

/// Reads what a store holds of what a runtime has learnt, if anything.
fn saved(store: &dyn StateStore) -> Result<Option<Learnt>, StoreError> {
    let Some(bytes) = store.learnt(STORE_NAME)? else { return Ok(None) };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|error| StoreError::Corrupt { what: format!("learnt `{STORE_NAME}`"), reason: error.to_string() })
}

/// The online model a runtime on `store` starts with: the saved one, or a
/// fresh one if none was saved or what was saved cannot be read (learning
/// starts again; nothing a transaction needs is lost).
pub(super) fn restore(store: &dyn StateStore) -> Result<OnlineModel, StoreError> {
    let model = match saved(store) {
        Ok(learnt) => learnt.and_then(|learnt| learnt.model),
        Err(StoreError::Corrupt { what, reason }) => {
            tracing::warn!(%what, %reason, "what was learnt cannot be read; the online model starts afresh");
            None
        }
        Err(error) => return Err(error),
    };
    Ok(OnlineModel::restore(model))
}

impl Runtime {
    /// What this runtime has learnt of its deployment so far.
    pub fn learnt(&self) -> Learnt {
        // Endpoint evidence fades under each policy's half-life; shown here
        // under the default one.
        let evidence = crate::policy::PredictionSettings::default().evidence();
        Learnt {
            model: self.inner.online.snapshot(),
            endpoints: self.inner.endpoints.health.summary(&evidence, Instant::now()),
            paths: self.inner.paths.summary(),
        }
    }

    /// What was last saved in this runtime's store of what a runtime on it
    /// learnt (`txmirror model status` on a local store).
    pub fn saved_learnt(&self) -> Result<Option<Learnt>, StoreError> {
        saved(self.inner.store.as_ref())
    }

    /// Learns from a concluded attempt, if online learning scored it and
    /// its outcome is an honest label; saves now and then.
    pub(super) fn learn_online(&self, report: &AttemptReport) {
        let Some(scored) = dataset::scored(report) else { return };
        let prediction = scored.prediction;
        let (Some(failed), Some(probability), Some(_)) =
            (scored.failed, prediction.model_probability, prediction.learnt_probability)
        else {
            return;
        };
        let Some(slot) = &self.inner.model else { return };
        let model = slot.current();
        let updates = self.inner.online.learn(&prediction.features, &Prior::of(model.info(), probability), failed);
        // A trial of the model's standing: its outcome joins the record.
        let tried = report
            .primary
            .events
            .iter()
            .any(|event| matches!(event.call, HostCall::Gate { decision: GateVerdict::Trial(_), .. }));
        if tried {
            self.inner.online.record_trial(failed);
        }
        if updates.is_multiple_of(SAVE_EVERY) {
            self.save_learnt();
        }
    }

    /// Saves what was learnt. A failure to save costs only learning, never
    /// a transaction: it is logged, and the next save tries again.
    pub(super) fn save_learnt(&self) {
        let learnt = self.learnt();
        let saved = serde_json::to_vec(&learnt)
            .map_err(|error| error.to_string())
            .and_then(|bytes| self.inner.store.save_learnt(STORE_NAME, &bytes).map_err(|error| error.to_string()));
        if let Err(error) = saved {
            tracing::warn!(%error, "what was learnt could not be saved");
        }
    }

    /// The online model's probability for features the ONNX model scored
    /// `probability`, if online learning is on for this policy.
    pub(super) fn learnt_probability(
        &self,
        features: &crate::predict::Features,
        probability: f32,
        model: &crate::predict::ModelInfo,
    ) -> f32 {
        self.inner.online.score(features, &Prior::of(model, probability))
    }
}
