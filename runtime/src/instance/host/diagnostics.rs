//! `log`, `validation`, `config` and `context`: the small, read-only capabilities.

use super::InstanceState;
use crate::instance::bindings::txmirror::transaction::{config, context, log, types, validation};
use crate::trace::HostCall;

/// The longest log line kept; longer ones are cut.
const MAX_LOG_LINE: usize = 4096;

impl types::Host for InstanceState {}

impl log::Host for InstanceState {
    fn log(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        let level = match level {
            log::Level::Debug => "debug",
            log::Level::Info => "info",
            log::Level::Warn => "warn",
            log::Level::Error => "error",
        };
        let mut message = message;
        if message.len() > MAX_LOG_LINE {
            let mut end = MAX_LOG_LINE;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        tracing::debug!(target: "txmirror::guest", role = %self.role, level, "{message}");
        self.trace.record(HostCall::Log { level: level.to_string(), message });
        Ok(())
    }
}

impl validation::Host for InstanceState {
    fn report(&mut self, issue: types::ValidationIssue) -> wasmtime::Result<()> {
        self.trace.record(HostCall::Validation { field: issue.field, message: issue.message });
        Ok(())
    }
}

impl context::Host for InstanceState {
    fn transaction_id(&mut self) -> wasmtime::Result<String> {
        Ok(self.journal().map(|journal| journal.transaction_id().to_string()).unwrap_or_default())
    }

    fn effect_key(&mut self, ordinal: u32) -> wasmtime::Result<String> {
        Ok(self.journal().map(|journal| journal.key(ordinal)).unwrap_or_default())
    }

    async fn sent_effects(&mut self) -> wasmtime::Result<Vec<context::SentEffect>> {
        let Some(journal) = self.journal() else { return Ok(Vec::new()) };
        // A journal that cannot be read stops the guest: a compensation
        // that saw nothing sent would undo nothing.
        let effects =
            journal.sent().await.map_err(|error| wasmtime::Error::msg(format!("the effect journal: {error}")))?;
        Ok(effects
            .into_iter()
            .map(|effect| context::SentEffect {
                path: effect.path,
                ordinal: effect.ordinal,
                method: effect.method,
                url: effect.url,
                key: effect.key,
                sends: effect.sends,
                status: effect.response.as_ref().map(|response| response.status),
                body: effect.response.map(|response| response.body).unwrap_or_default(),
            })
            .collect())
    }
}

impl config::Host for InstanceState {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        let value = self.policy.config.get(&key).cloned();
        self.trace.record(HostCall::Config { key, found: value.is_some() });
        Ok(value)
    }
}
