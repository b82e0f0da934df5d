//! Sockets: linked closed, every attempt refused and traced.
//!
//! A guest built with wasi-libc (Python through componentize-py, C, Go)
//! imports `wasi:sockets` whether it opens a socket or not, so refusing the
//! import would refuse every such module. The imports are therefore linked,
//! but to doors that never open: every way into a socket starts with
//! `create-tcp-socket`, `create-udp-socket` or `resolve-addresses`, and this
//! file replaces all three with a call that records the attempt in the
//! trace and answers `access-denied`, in both twins. No policy setting
//! opens them. Underneath, wasmtime-wasi's own defaults (TCP, UDP and name
//! lookups off, no address allowed) stay as a second wall.

use super::InstanceState;
use crate::trace::HostCall;
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::p2::bindings::sockets::network::{ErrorCode, IpAddressFamily, Network};
use wasmtime_wasi::p2::bindings::sockets::{ip_name_lookup::ResolveAddressStream, tcp::TcpSocket, udp::UdpSocket};

/// The version of `wasi:sockets` that wasmtime-wasi defines; guests
/// importing any 0.2.x version are linked to it.
const VERSION: &str = "0.2.12";

/// Replaces the three ways into a socket in a linker that already has
/// wasmtime-wasi.
pub(crate) fn add_closed_sockets(linker: &mut Linker<InstanceState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    linker.instance(&format!("wasi:sockets/tcp-create-socket@{VERSION}"))?.func_wrap(
        "create-tcp-socket",
        |store, (family,): (IpAddressFamily,)| {
            store.data().trace.record(refused("tcp", family_name(family)));
            Ok((Err::<Resource<TcpSocket>, _>(ErrorCode::AccessDenied),))
        },
    )?;
    linker.instance(&format!("wasi:sockets/udp-create-socket@{VERSION}"))?.func_wrap(
        "create-udp-socket",
        |store, (family,): (IpAddressFamily,)| {
            store.data().trace.record(refused("udp", family_name(family)));
            Ok((Err::<Resource<UdpSocket>, _>(ErrorCode::AccessDenied),))
        },
    )?;
    linker.instance(&format!("wasi:sockets/ip-name-lookup@{VERSION}"))?.func_wrap(
        "resolve-addresses",
        |store, (_network, name): (Resource<Network>, String)| {
            store.data().trace.record(refused("name-lookup", name));
            Ok((Err::<Resource<ResolveAddressStream>, _>(ErrorCode::AccessDenied),))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

fn refused(op: &str, detail: String) -> HostCall {
    HostCall::Socket { op: op.into(), detail, error: "access-denied".into() }
}

fn family_name(family: IpAddressFamily) -> String {
    match family {
        IpAddressFamily::Ipv4 => "ipv4",
        IpAddressFamily::Ipv6 => "ipv6",
    }
    .into()
}
