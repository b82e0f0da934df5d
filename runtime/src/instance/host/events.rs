//! `txmirror:transaction/events`: events buffered until the commit (outbox).

use super::{InstanceState, MAX_EVENT_BYTES, MAX_WRITE_SET_BYTES};
use crate::instance::bindings::txmirror::transaction::events::{EventError, Host};
use crate::store::EventEntry;
use crate::trace::{Effect, HostCall};
use crate::vocab::{Role, validate_name};

impl Host for InstanceState {
    fn emit(&mut self, stream: String, payload: Vec<u8>) -> wasmtime::Result<Result<(), EventError>> {
        let bytes = payload.len();
        // The contract's `event-error` has no case of its own for a stream
        // not granted (adding one would break every built module), so the
        // refusal is an `invalid-stream` that says so.
        let refused = if let Err(reason) = validate_name(&stream) {
            Some(EventError::InvalidStream(format!("stream name {reason}")))
        } else if !self.policy.capabilities.grants_stream(&stream) {
            Some(EventError::InvalidStream(format!(
                "stream `{stream}` is not granted: the policy's capabilities.streams does not list it"
            )))
        } else if bytes > MAX_EVENT_BYTES {
            Some(EventError::TooLarge(format!("{bytes} bytes; an event may have {MAX_EVENT_BYTES}")))
        } else if self.kv.written_bytes() + self.event_bytes + bytes > MAX_WRITE_SET_BYTES {
            Some(EventError::TooLarge(format!("the transaction's writes exceed {MAX_WRITE_SET_BYTES} bytes")))
        } else {
            None
        };
        if let Some(error) = refused {
            let reason = format!("{error:?}");
            self.trace.record(HostCall::Emit { stream, bytes, effect: Effect::Denied { reason } });
            return Ok(Err(error));
        }
        let effect = match self.role {
            Role::Primary => Effect::Buffered,
            Role::Mirror => Effect::Withheld,
        };
        self.trace.record(HostCall::Emit { stream: stream.clone(), bytes, effect });
        // The mirror's event is the primary's to come: published at once
        // on the stream's predicted view.
        if let Some(tap) = &self.event_tap {
            tap.publish(&stream, &payload);
        }
        self.event_bytes += bytes;
        self.events.push(EventEntry { stream, payload });
        Ok(Ok(()))
    }
}
