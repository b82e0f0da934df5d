//! Files: `wasi:filesystem` from wasmtime-wasi, with every change recorded.
//!
//! Access control is wasmtime-wasi's (cap-std underneath): the guest sees
//! only the directories its policy grants, and the mirror sees them
//! read-only. This file wraps `descriptor.open-at`, the one door to every
//! file (so each open, and above all each open to create or write, shows in
//! the trace), and every call that changes a directory without opening a
//! file: unlink, rename, mkdir, rmdir, link, symlink and set-times. A
//! symlink whose target leaves the directory it is made in is refused:
//! cap-std would not follow it, but it would outlive the transaction as a
//! door for whatever else reads the directory.

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
    // Each change: the call wasmtime-wasi makes, recorded under its name
    // with the path it names and how it ended.
    macro_rules! recorded {
        ($name:literal, $op:literal, |$view:ident, $args:tt: $types:ty| $path:expr, $call:expr) => {
            instance.func_wrap_async($name, |mut store, $args: $types| {
                Box::new(async move {
                    let at = store.data().trace.now_micros();
                    let path: String = $path;
                    let done = {
                        let mut $view = store.data_mut().filesystem();
                        $call.await
                    };
                    let result: Result<(), ErrorCode> = match done {
                        Ok(()) => Ok(()),
                        Err(error) => Err(fs::Host::convert_error_code(&mut store.data_mut().filesystem(), error)?),
                    };
                    let error = result.as_ref().err().map(|code| format!("{code:?}"));
                    store.data().trace.record_since(at, HostCall::FileChange { op: $op.into(), path, error });
                    Ok((result,))
                })
            })?;
        };
    }
    recorded!(
        "[method]descriptor.unlink-file-at",
        "unlink",
        |view, (fd, path): (Resource<Descriptor>, String)| path.clone(),
        HostDescriptor::unlink_file_at(&mut view, fd, path)
    );
    recorded!(
        "[method]descriptor.create-directory-at",
        "mkdir",
        |view, (fd, path): (Resource<Descriptor>, String)| path.clone(),
        HostDescriptor::create_directory_at(&mut view, fd, path)
    );
    recorded!(
        "[method]descriptor.remove-directory-at",
        "rmdir",
        |view, (fd, path): (Resource<Descriptor>, String)| path.clone(),
        HostDescriptor::remove_directory_at(&mut view, fd, path)
    );
    recorded!(
        "[method]descriptor.rename-at",
        "rename",
        |view, (fd, old, new_fd, new): (Resource<Descriptor>, String, Resource<Descriptor>, String)| format!(
            "{old} -> {new}"
        ),
        HostDescriptor::rename_at(&mut view, fd, old, new_fd, new)
    );
    recorded!(
        "[method]descriptor.link-at",
        "link",
        |view,
         (fd, flags, old, new_fd, new): (
            Resource<Descriptor>,
            PathFlags,
            String,
            Resource<Descriptor>,
            String
        )| format!("{new} -> {old}"),
        HostDescriptor::link_at(&mut view, fd, flags, old, new_fd, new)
    );
    recorded!(
        "[method]descriptor.symlink-at",
        "symlink",
        |view, (fd, target, link): (Resource<Descriptor>, String, String)| format!("{link} -> {target}"),
        async {
            if leaves_its_directory(&link, &target) {
                Err(ErrorCode::NotPermitted.into())
            } else {
                HostDescriptor::symlink_at(&mut view, fd, target, link).await
            }
        }
    );
    recorded!(
        "[method]descriptor.set-times-at",
        "set-times",
        |view,
         (fd, flags, path, atim, mtim): (
            Resource<Descriptor>,
            PathFlags,
            String,
            fs::NewTimestamp,
            fs::NewTimestamp
        )| path.clone(),
        HostDescriptor::set_times_at(&mut view, fd, flags, path, atim, mtim)
    );
    recorded!(
        "[method]descriptor.set-times",
        "set-times",
        |view, (fd, atim, mtim): (Resource<Descriptor>, fs::NewTimestamp, fs::NewTimestamp)| String::new(),
        HostDescriptor::set_times(&mut view, fd, atim, mtim)
    );
    linker.allow_shadowing(false);
    Ok(())
}

/// Whether a symlink made at `link` (relative to its directory) pointing
/// to `target` would point outside that directory: an absolute target, or
/// one whose `..` climb above it.
fn leaves_its_directory(link: &str, target: &str) -> bool {
    if target.starts_with('/') {
        return true;
    }
    // The link's own directory, as a depth below the preopened one.
    let mut depth: i64 = 0;
    let parents = link.rsplit_once('/').map_or("", |(dir, _)| dir);
    for part in parents.split('/').chain(target.split('/')) {
        match part {
            "" | "." => {}
            ".." => {
                depth -= 1;
                if depth < 0 {
                    return true;
                }
            }
            _ => depth += 1,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::leaves_its_directory;

    #[test]
    fn a_symlink_may_not_point_above_its_directory() {
        assert!(leaves_its_directory("link", "../outside"));
        assert!(leaves_its_directory("link", "/etc/passwd"));
        assert!(leaves_its_directory("a/link", "../../outside"));
        assert!(leaves_its_directory("link", "a/../../outside"));
        assert!(!leaves_its_directory("link", "inside.txt"));
        assert!(!leaves_its_directory("a/link", "../inside.txt"));
        assert!(!leaves_its_directory("a/b/link", "../../c/inside.txt"));
        assert!(!leaves_its_directory("link", "a/./b/../c"));
    }
}
