//! Files: `wasi:filesystem` from wasmtime-wasi, with opens recorded.
//!
//! Access control is wasmtime-wasi's (cap-std underneath): the guest sees
//! only the directories its policy grants, and the mirror sees them
//! read-only. This file wraps `descriptor.open-at`, the one door to every
//! file, so that each attempt to open a file, and above all each attempt to
//! write one, shows in the trace.

use super::InstanceState;
use crate::trace::HostCall;
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::filesystem::WasiFilesystemView;
use wasmtime_wasi::p2::bindings::filesystem::types::{
    self as fs, Descriptor, DescriptorFlags, ErrorCode, HostDescriptor, OpenFlags, PathFlags,
};

/// The version of `wasi:filesystem` that wasmtime-wasi defines; guests
/// importing any 0.2.x version are linked to it.
const FILESYSTEM_TYPES: &str = "wasi:filesystem/types@0.2.12";

/// Replaces `descriptor.open-at` in a linker that already has wasmtime-wasi.
pub(crate) fn add_recording_filesystem(linker: &mut Linker<InstanceState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut instance = linker.instance(FILESYSTEM_TYPES)?;
    instance.func_wrap_async(
        "[method]descriptor.open-at",
        |mut store,
         (fd, path_flags, path, open_flags, flags): (
            Resource<Descriptor>,
            PathFlags,
            String,
            OpenFlags,
            DescriptorFlags,
        )| {
            Box::new(async move {
                let write = open_flags.intersects(OpenFlags::CREATE | OpenFlags::TRUNCATE)
                    || flags.intersects(DescriptorFlags::WRITE | DescriptorFlags::MUTATE_DIRECTORY);
                let at = store.data().trace.now_micros();
                let opened = {
                    let mut view = store.data_mut().filesystem();
                    HostDescriptor::open_at(&mut view, fd, path_flags, path.clone(), open_flags, flags).await
                };
                let result: Result<Resource<Descriptor>, ErrorCode> = match opened {
                    Ok(fd) => Ok(fd),
                    Err(error) => Err(fs::Host::convert_error_code(&mut store.data_mut().filesystem(), error)?),
                };
                let error = result.as_ref().err().map(|code| format!("{code:?}"));
                store.data().trace.record_since(at, HostCall::FileOpen { path, write, error });
                Ok((result,))
            })
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}
