//! The sandbox contract's adversary (`docs/sandbox.md`): a module that
//! tries to act from the mirror, to reach what it was not granted, to leave
//! a door out of its directory, and to put secrets in the stored record.

use crate::effects::{Fixture, effects_policy};
use serde_json::Value;
use tempfile::tempdir;
use txmirror_runtime::TxRequest;
use txmirror_runtime::trace::{HostCall, HttpOutcome};
use txmirror_tests::{Behaviour, TestServer, guests, load, policy, runtime};

/// A module that tries to act from the mirror the ways a server might let
/// it: a body on a GET, a method override, a method in lower case, another
/// spelling of its granted host, credentials in the URL, another port, an
/// address in an odd spelling. The mirror sends only plain GETs, and its stubbed answers
/// carry nothing the guest could tell them by.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mirror_cannot_be_made_to_act_by_a_request_in_disguise() {
    let fixture = Fixture::with(guests::HOSTILE, Behaviour::default()).await;
    let port = fixture.server.url().rsplit(':').next().unwrap().to_string();
    let sink = format!("{}/sink", fixture.server.url());
    let request = |method: &str, url: &str, headers: Value, body: Option<&str>| serde_json::json!({ "method": method, "url": url, "headers": headers, "body": body });
    let none = Value::Array(Vec::new());
    let override_header = serde_json::json!([["X-HTTP-Method-Override", "DELETE"]]);
    let requests = Value::Array(vec![
        request("GET", &sink, none.clone(), Some("DELETE FROM accounts")),
        request("GET", &sink, override_header, None),
        request("purge", &sink, none.clone(), None),
        request("POST", &sink, none.clone(), Some("{}")),
        request("GET", &format!("http://LOCALHOST:{port}/spelt"), none.clone(), None),
        request("GET", &format!("http://user:secret@127.0.0.1:{port}/spelt"), none.clone(), None),
        request(
            "GET",
            &format!("http://127.0.0.1:{}/other-port", port.parse::<u16>().unwrap() + 1),
            none.clone(),
            None,
        ),
        request("GET", &format!("http://2130706433:{port}/odd"), none, None),
    ]);
    let transaction =
        TxRequest { path: Some("sneak".into()), input: requests.to_string().into_bytes(), ..Default::default() };
    let report = fixture.runtime.execute(&fixture.module, &fixture.policy, transaction).await.unwrap();
    assert!(report.failure.is_none(), "{report:#?}");

    let received = fixture.server.received();
    let acting: Vec<_> = received
        .iter()
        .filter(|r| r.method != "GET" || !r.body.is_empty() || r.headers.iter().any(|(n, _)| n.contains("override")))
        .collect();
    assert_eq!(acting.len(), 4, "the primary's four, none from the mirror: {received:#?}");
    assert!(acting.iter().all(|r| r.headers.iter().any(|(n, _)| n == "idempotency-key")), "each keyed: {acting:#?}");
    let plain: Vec<&str> = received.iter().filter(|r| !acting.contains(r)).map(|r| r.uri.as_str()).collect();
    assert_eq!(plain, ["/spelt", "/spelt"], "both twins, by another spelling; nothing else: {plain:?}");
    assert!(!plain.iter().any(|uri| uri.contains("other-port") || uri.contains("odd")), "{plain:?}");

    let attempt = &report.attempts[0];
    let mirror = attempt.mirror.as_ref().unwrap();
    let outcomes = |trace: &txmirror_runtime::Trace| -> Vec<String> {
        trace
            .events
            .iter()
            .filter_map(|e| match &e.call {
                HostCall::Http { outcome, .. } => Some(match outcome {
                    HttpOutcome::Answered { .. } => "sent".to_string(),
                    HttpOutcome::Stubbed { .. } => "stubbed".to_string(),
                    HttpOutcome::Denied { reason } => format!("denied: {reason}"),
                    other => format!("{other:?}"),
                }),
                _ => None,
            })
            .collect()
    };
    let mirror_outcomes = outcomes(mirror);
    assert_eq!(&mirror_outcomes[..5], ["stubbed", "stubbed", "stubbed", "stubbed", "sent"], "{mirror_outcomes:?}");
    assert!(mirror_outcomes[5].contains("user-info"), "{mirror_outcomes:?}");
    assert!(mirror_outcomes[6].contains("does not grant host `127.0.0.1:"), "{mirror_outcomes:?}");
    assert!(mirror_outcomes[7].contains("unusual spelling"), "{mirror_outcomes:?}");
    let primary_outcomes: Vec<String> = outcomes(&attempt.primary).into_iter().skip(4).collect();
    assert_eq!(primary_outcomes[1..], mirror_outcomes[5..], "the primary is refused alike");
    let answers = mirror.output.as_deref().unwrap_or_default();
    assert!(!answers.contains("x-txmirror"), "no marker the guest can read: {answers}");
}

/// A host whose GETs must not come from the mirror (they spend a quota, or
/// act): the policy has the mirror answer them from the primary's recorded
/// answers; and a method left out of `send_methods` is unsafe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_keeps_the_mirrors_safe_calls_from_a_host() {
    let dir = tempdir().unwrap();
    let files = dir.path().join("files");
    std::fs::create_dir_all(&files).unwrap();
    let server = TestServer::start(Behaviour { body: r#"{"quota": "spent"}"#.into(), ..Behaviour::default() }).await;
    let runtime = runtime(&dir.path().join("data"));
    let module = load(&runtime, guests::HOSTILE).await;
    let text = format!(
        "{}\n[mirror]\nsend_methods = [\"GET\"]\n[[mirror.hosts]]\nhost = \"{}\"\nsafe_calls = \"recorded\"\n",
        effects_policy(&server, &files),
        server.authority().replace("127.0.0.1", "LOCALHOST")
    );
    let policy = policy(&text);
    let get = serde_json::json!([{ "method": "GET", "url": format!("{}/sink", server.url()), "headers": [] }]);
    let fetch = || TxRequest { path: Some("sneak".into()), input: get.to_string().into_bytes(), ..Default::default() };
    let mut sources = Vec::new();
    for _ in 0..2 {
        let report = runtime.execute(&module, &policy, fetch()).await.unwrap();
        assert!(report.failure.is_none(), "{report:#?}");
        let mirror = report.attempts[0].mirror.as_ref().unwrap();
        sources.extend(mirror.events.iter().filter_map(|e| match &e.call {
            HostCall::Http { outcome: HttpOutcome::Stubbed { source, .. }, .. } => Some(source.clone()),
            _ => None,
        }));
    }
    assert_eq!(server.received().len(), 2, "the primaries' GETs only: {:#?}", server.received());
    assert_eq!(sources.len(), 2, "each mirror answered itself: {sources:?}");
    assert!(sources.iter().all(|s| s == "last-response" || s == "synthesised"), "{sources:?}");
    assert_eq!(sources[1], "last-response", "the second from the first primary's answer");

    // HEAD is not in `send_methods`: the primary's goes keyed, the mirror's not at all.
    let head = serde_json::json!([{ "method": "HEAD", "url": format!("{}/sink", server.url()), "headers": [] }]);
    let sneak = TxRequest { path: Some("sneak".into()), input: head.to_string().into_bytes(), ..Default::default() };
    let report = runtime.execute(&module, &policy, sneak).await.unwrap();
    assert!(report.failure.is_none(), "{report:#?}");
    let heads: Vec<_> = server.received().into_iter().filter(|r| r.method == "HEAD").collect();
    assert_eq!(heads.len(), 1, "{heads:#?}");
    assert!(heads[0].headers.iter().any(|(name, _)| name == "idempotency-key"), "{heads:#?}");
}

/// Every change to a granted directory is in the trace, in both twins: the
/// primary's done (or refused), the mirror's refused (its view is
/// read-only); a symlink pointing outside the directory is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_to_a_directory_is_traced_and_no_link_leaves_it() {
    let fixture = Fixture::with(guests::HOSTILE, Behaviour::default()).await;
    let (runtime, module, policy) = (&fixture.runtime, &fixture.module, &fixture.policy);
    let files = fixture.files();
    std::fs::write(files.join("seen.txt"), b"before").unwrap();
    let request = TxRequest { path: Some("files".into()), input: b"{}".to_vec(), ..Default::default() };
    let report = runtime.execute(module, policy, request).await.unwrap();
    assert!(report.failure.is_none(), "{report:#?}");
    let changes = |trace: &txmirror_runtime::Trace| -> Vec<(String, String, bool)> {
        trace
            .events
            .iter()
            .filter_map(|e| match &e.call {
                HostCall::FileChange { op, path, error } => Some((op.clone(), path.clone(), error.is_none())),
                _ => None,
            })
            .collect()
    };
    let attempt = &report.attempts[0];
    let done = |op: &str, path: &str, ok: bool| (op.to_string(), path.to_string(), ok);
    assert_eq!(
        changes(&attempt.primary),
        [
            done("mkdir", "d", true),
            done("rename", "a.txt -> d/b.txt", true),
            done("set-times", "", true),
            done("symlink", "escape -> ../outside", false),
            done("symlink", "inside -> d/b.txt", true),
            done("unlink", "inside", true),
            done("rmdir", "d", false),
        ],
        "{:#?}",
        attempt.primary
    );
    // Both read the file that was there when the attempt started: the
    // mirror from its copy of the directory.
    for trace in [&attempt.primary, attempt.mirror.as_ref().unwrap()] {
        let output: Value = serde_json::from_str(trace.output.as_deref().unwrap()).unwrap();
        assert_eq!(output["seen"], "before", "{output}");
    }
    let mirror = changes(attempt.mirror.as_ref().unwrap());
    assert!(mirror.len() >= 3 && mirror.iter().all(|(_, _, ok)| !ok), "the mirror changes nothing: {mirror:?}");
    assert!(std::fs::symlink_metadata(files.join("escape")).is_err(), "no link out of the directory");
    assert_eq!(std::fs::read(files.join("d/b.txt")).unwrap(), b"a", "the primary's changes stand");
}

/// A card number in a query string never reaches the stored record: the
/// trace keeps the names of the query's fields, not their values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_values_are_redacted_before_a_trace_is_stored() {
    let fixture = Fixture::with(guests::HOSTILE, Behaviour::default()).await;
    let url = format!("{}/sink?card=4111111111111111&cvc=123", fixture.server.url());
    let requests = serde_json::json!([
        { "method": "GET", "url": url, "headers": [] },
        { "method": "POST", "url": url, "headers": [], "body": "{}" },
    ]);
    let request =
        TxRequest { path: Some("sneak".into()), input: requests.to_string().into_bytes(), ..Default::default() };
    let report = fixture.runtime.execute(&fixture.module, &fixture.policy, request).await.unwrap();
    assert!(report.failure.is_none(), "{report:#?}");
    let received = fixture.server.received();
    assert!(received.iter().all(|r| r.uri.contains("card=4111111111111111")), "sent as the guest asked");
    let attempt = &report.attempts[0];
    for trace in [&attempt.primary, attempt.mirror.as_ref().unwrap()] {
        let urls: Vec<&str> = trace
            .events
            .iter()
            .filter_map(|e| match &e.call {
                HostCall::Http { url, .. } => Some(url.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(urls.len(), 2);
        assert!(urls.iter().all(|url| url.ends_with("/sink?card=REDACTED&cvc=REDACTED")), "{urls:?}");
    }
    let stored = fixture.runtime.transaction(&report.transaction_id).unwrap().unwrap();
    let text = serde_json::to_string(&stored.history).unwrap();
    assert!(!text.contains("4111111111111111"), "no card number in the stored record");

    // Nor in the effect journal, which a dead letter shows: the output
    // never meets this policy's criterion, so the transaction is one.
    let files = fixture._dir.path().join("files");
    let unmet = policy(&format!(
        "{}\n[retry]\nmax_attempts = 1\n[success_criteria]\nrequired_output_fields = [\"never\"]\n",
        effects_policy(&fixture.server, &files)
    ));
    let request =
        TxRequest { path: Some("sneak".into()), input: requests.to_string().into_bytes(), ..Default::default() };
    let report = fixture.runtime.execute(&fixture.module, &unmet, request).await.unwrap();
    let letter = fixture.runtime.dead_letter(&report.transaction_id).unwrap().expect("dead-lettered");
    assert_eq!(letter.effects.len(), 1, "the POST: {letter:#?}");
    assert!(letter.effects[0].url.ends_with("/sink?card=REDACTED&cvc=REDACTED"), "{:?}", letter.effects[0].url);
}

/// Sockets are linked closed: a connection, a datagram, a listener and a
/// name lookup are each refused and traced, in both twins, and nothing
/// reaches a listener on the address the guest aimed at.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_way_to_a_socket_is_refused_and_traced() {
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = tcp.local_addr().unwrap();
    let udp = std::net::UdpSocket::bind(addr).unwrap();
    tcp.set_nonblocking(true).unwrap();
    udp.set_nonblocking(true).unwrap();
    let fixture = Fixture::with(guests::HOSTILE, Behaviour::default()).await;
    let (runtime, module, policy) = (&fixture.runtime, &fixture.module, &fixture.policy);
    let input = serde_json::json!({ "addr": addr.to_string() }).to_string().into_bytes();
    let request = TxRequest { path: Some("sockets".into()), input, ..Default::default() };
    let report = runtime.execute(module, policy, request).await.unwrap();
    assert!(report.failure.is_none(), "{report:#?}");
    let attempt = &report.attempts[0];
    for trace in [&attempt.primary, attempt.mirror.as_ref().unwrap()] {
        let output: Value = serde_json::from_str(trace.output.as_deref().unwrap()).unwrap();
        for way in ["tcp", "udp", "listen", "lookup"] {
            assert!(output[way].is_string(), "{way} was refused: {output}");
        }
        let refused: Vec<(String, String)> = trace
            .events
            .iter()
            .filter_map(|e| match &e.call {
                HostCall::Socket { op, detail, error } => {
                    assert_eq!(error, "access-denied");
                    Some((op.clone(), detail.clone()))
                }
                _ => None,
            })
            .collect();
        for op in ["tcp", "udp", "name-lookup"] {
            assert!(refused.iter().any(|(o, _)| o == op), "{op} traced in the {:?}: {refused:?}", trace.role);
        }
        assert!(refused.contains(&("name-lookup".into(), "example.com".into())), "{refused:?}");
    }
    assert_eq!(tcp.accept().unwrap_err().kind(), std::io::ErrorKind::WouldBlock, "no connection came");
    let mut buffer = [0u8; 64];
    assert_eq!(udp.recv_from(&mut buffer).unwrap_err().kind(), std::io::ErrorKind::WouldBlock, "no datagram came");
}

/// The mirror reads the directory as it was when the attempt started: a
/// file the primary writes while the mirror runs (the twins both wait
/// 300 ms on a GET between looking and looking again) stays out of its
/// view.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mirror_does_not_see_what_the_primary_writes_meanwhile() {
    let slow = Behaviour { delay: std::time::Duration::from_millis(300), ..Behaviour::default() };
    let fixture = Fixture::with(guests::HOSTILE, slow).await;
    let (server, runtime, module, policy) = (&fixture.server, &fixture.runtime, &fixture.module, &fixture.policy);
    let files = fixture.files();
    let input = serde_json::json!({ "wait_url": format!("{}/wait", server.url()) }).to_string().into_bytes();
    let request = TxRequest { path: Some("later".into()), input, ..Default::default() };
    let report = runtime.execute(module, policy, request).await.unwrap();
    assert!(report.failure.is_none(), "{report:#?}");
    let attempt = &report.attempts[0];
    let output =
        |trace: &txmirror_runtime::Trace| -> Value { serde_json::from_str(trace.output.as_deref().unwrap()).unwrap() };
    let primary = output(&attempt.primary);
    assert_eq!(primary, serde_json::json!({ "before": null, "wrote": null, "after": "written by a twin" }));
    let mirror = output(attempt.mirror.as_ref().unwrap());
    assert!(mirror["wrote"].is_string(), "the mirror's write is refused: {mirror}");
    assert_eq!(mirror["before"], Value::Null, "{mirror}");
    assert_eq!(
        mirror["after"],
        Value::Null,
        "the primary's file, written meanwhile, is not in the mirror's view: {mirror}"
    );
    // Both twins waited on the GET, so the primary had written the file
    // long before the mirror looked again.
    assert_eq!(server.received().iter().filter(|r| r.uri == "/wait").count(), 2);
    assert_eq!(std::fs::read(files.join("late.txt")).unwrap(), b"written by a twin");
}

/// A module emits only to the streams its policy grants: an event for
/// another module's stream is refused with a clear error and traced, in
/// both twins, and nothing of it is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_emits_only_to_the_streams_it_is_granted() {
    // The fixture's policy grants the stream `effects` only.
    let fixture = Fixture::with(guests::HOSTILE, Behaviour::default()).await;
    let (runtime, module, policy) = (&fixture.runtime, &fixture.module, &fixture.policy);
    let input = serde_json::json!({ "streams": ["effects", "payments", "effects2"] }).to_string().into_bytes();
    let request = TxRequest { path: Some("emit".into()), input, ..Default::default() };
    let report = runtime.execute(module, policy, request).await.unwrap();
    assert!(report.failure.is_none(), "{report:#?}");
    let attempt = &report.attempts[0];
    for trace in [&attempt.primary, attempt.mirror.as_ref().unwrap()] {
        let output: Value = serde_json::from_str(trace.output.as_deref().unwrap()).unwrap();
        assert_eq!(output["effects"], Value::Null, "{output}");
        for stream in ["payments", "effects2"] {
            let error = output[stream].as_str().unwrap_or_default();
            assert!(error.contains(&format!("stream `{stream}` is not granted")), "{stream}: {output}");
        }
        let denied: Vec<&str> = trace
            .events
            .iter()
            .filter_map(|e| match &e.call {
                HostCall::Emit { stream, effect: txmirror_runtime::trace::Effect::Denied { .. }, .. } => {
                    Some(stream.as_str())
                }
                _ => None,
            })
            .collect();
        assert_eq!(denied, ["payments", "effects2"], "{:?}", trace.role);
    }
    assert_eq!(runtime.events("effects", 0, 10).unwrap().len(), 1);
    assert!(runtime.events("payments", 0, 10).unwrap().is_empty());
    assert!(runtime.events("effects2", 0, 10).unwrap().is_empty());
}
