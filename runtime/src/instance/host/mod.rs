//! What the host gives an instance: one file per capability.
//!
//! Each capability checks the policy's grants and the instance's [`Role`]:
//! the primary's effects are buffered for the commit, the mirror's are
//! withheld. Every call is recorded in the instance's trace.
//!
//! [`Role`]: crate::vocab::Role

mod diagnostics;
mod events;
mod filesystem;
mod journal;
mod kv;
mod mirror_files;
mod outbound;
mod output;
mod sockets;
mod state;

pub(crate) use filesystem::add_recording_filesystem;
pub(crate) use journal::EffectJournal;
pub use journal::effect_key;
pub(crate) use kv::KvView;
pub(crate) use mirror_files::MirrorFiles;
pub use outbound::EndpointMemory;
pub(crate) use sockets::add_closed_sockets;
pub(crate) use state::{EventTap, InstanceSetup, InstanceState};

/// The largest value one `kv.put` may write.
pub const MAX_VALUE_BYTES: usize = 1 << 20;
/// The most bytes one transaction may write in all (values and events).
pub const MAX_WRITE_SET_BYTES: usize = 16 << 20;
/// The largest event payload.
pub const MAX_EVENT_BYTES: usize = 256 << 10;
/// The largest HTTP response body an instance may receive.
pub const MAX_RESPONSE_BYTES: usize = 4 << 20;
