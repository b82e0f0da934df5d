//! The cost of a prediction: features from a mirror's trace, scored by the
//! default rules, and by the rules plus the placeholder ONNX model (the real
//! ONNX Runtime, one intra-op thread). The trace is the payment path's (ten
//! host calls, one stubbed POST), the size a gate scores.
//!
//! Run with `cargo bench -p txmirror-benches --bench prediction`.

#![allow(clippy::unwrap_used, reason = "benchmark")]

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use txmirror_runtime::Role;
use txmirror_runtime::policy::ResourceRequirements;
use txmirror_runtime::predict::{
    Action, EndpointView, FeatureContext, Features, InputFeature, InputKind, InputProfile, Model, ModelScore,
    OnlineModel, Prior, RuleSet,
};
use txmirror_runtime::trace::{Effect, HostCall, HttpOutcome, Trace, TraceEvent};

fn payment_trace() -> Trace {
    let event = |at_micros, call| TraceEvent { at_micros, duration_micros: 20, call };
    Trace {
        role: Role::Mirror,
        events: vec![
            event(10, HostCall::KvGet { namespace: "payments".into(), key: "order-1".into(), version: Some(0) }),
            event(20, HostCall::Config { key: "primary_gateway".into(), found: true }),
            event(
                30,
                HostCall::Http {
                    method: "GET".into(),
                    url: "http://gateway:8080/health".into(),
                    safe: true,
                    request_bytes: None,
                    outcome: HttpOutcome::Answered { status: 200, response_bytes: 2, retry_after_ms: None },
                },
            ),
            event(40, HostCall::Log { level: "info".into(), message: "charging order order-1".into() }),
            event(
                50,
                HostCall::Http {
                    method: "POST".into(),
                    url: "http://gateway:8080/charges".into(),
                    safe: false,
                    request_bytes: Some(96),
                    outcome: HttpOutcome::Stubbed { status: 201, source: "policy".into() },
                },
            ),
            event(
                60,
                HostCall::KvWrite {
                    namespace: "payments".into(),
                    key: "order-1".into(),
                    bytes: Some(120),
                    effect: Effect::Withheld,
                },
            ),
            event(70, HostCall::Emit { stream: "payments".into(), bytes: 40, effect: Effect::Withheld }),
            event(80, HostCall::Validation { field: "currency".into(), message: "must be ISO 4217".into() }),
            event(90, HostCall::KvGet { namespace: "payments".into(), key: "order-2".into(), version: Some(7) }),
            event(95, HostCall::KvScan { namespace: "payments".into(), prefix: "order-".into(), returned: 3 }),
        ],
        fuel_consumed: 40_000,
        memory_peak_bytes: 1 << 20,
        duration_micros: 900,
        ended: "returned 123 bytes".into(),
        output: Some("{}".into()),
        failure: None,
    }
}

fn prediction(c: &mut Criterion) {
    let trace = payment_trace();
    let limits = ResourceRequirements::default();
    let rules = RuleSet::defaults();
    let inputs = InputProfile::default();
    let model = Model::load(std::path::Path::new(txmirror_tests::models::PLACEHOLDER), None).unwrap();
    let features = || {
        let context = FeatureContext {
            limits: limits.attempt_limits(),
            attempt: 1,
            contended: &|_, key, _| key == "order-2",
            endpoint: &|endpoint, _| {
                endpoint.ends_with("/charges").then_some(EndpointView {
                    latency_ms: 40.0,
                    error_rate: 0.1,
                    ..EndpointView::default()
                })
            },
            deviation: &|_, _, _| Some(0.5),
            path_failure_rate: 0.05,
            input_bytes: 120,
        };
        Features::from_trace(black_box(&trace), &context)
    };
    let mut group = c.benchmark_group("prediction");
    group.bench_function("features_and_rules", |b| b.iter(|| black_box(rules.score(&features(), &inputs))));
    group.bench_function("features_rules_and_model", |b| {
        b.iter(|| {
            let prediction = rules.score(&features(), &inputs);
            let p = model.score(&prediction.features).unwrap();
            black_box(prediction.with_model(
                model.info(),
                ModelScore { probability: p, learnt: None },
                1.0,
                Action::Divert,
            ))
        })
    });
    // A gate decision as the runtime makes it with online learning on (the
    // default): features, rules, the ONNX model, and the online model
    // refining it, with declared inputs read from the transaction.
    let declared = [
        InputFeature {
            name: "amount_cents".into(),
            pointer: "/amount_cents".into(),
            kind: InputKind::Number,
            paths: vec![],
        },
        InputFeature { name: "currency".into(), pointer: "/currency".into(), kind: InputKind::Category, paths: vec![] },
    ];
    let input = br#"{"order_id": "order-7", "amount_cents": 1250, "currency": "EUR"}"#;
    let online = OnlineModel::default();
    let prior = |probability| Prior::of(model.info(), probability);
    group.bench_function("inputs_features_rules_model_and_online", |b| {
        b.iter(|| {
            let inputs = InputProfile::read(black_box(input), &declared, "charge");
            let prediction = rules.score(&features(), &inputs);
            let p = model.score(&prediction.features).unwrap();
            let learnt = online.score(&prediction.features, &prior(p));
            black_box(prediction.with_model(
                model.info(),
                ModelScore { probability: p, learnt: Some(learnt) },
                1.0,
                Action::Divert,
            ))
        })
    });
    // The target of issue 13: rules, features (with declared inputs) and
    // the online model, the ONNX model's probability given.
    group.bench_function("inputs_features_rules_and_online", |b| {
        b.iter(|| {
            let inputs = InputProfile::read(black_box(input), &declared, "charge");
            let prediction = rules.score(&features(), &inputs);
            black_box(online.score(&prediction.features, &prior(0.2)))
        })
    });
    let fixed = features();
    group.bench_function("online_update", |b| {
        let mut failed = false;
        b.iter(|| {
            failed = !failed;
            black_box(online.learn(black_box(&fixed), &prior(0.2), failed))
        })
    });
    group.bench_function("model_alone", |b| b.iter(|| black_box(model.score(black_box(&fixed)).unwrap())));
    group.finish();
}

criterion_group!(benches, prediction);
criterion_main!(benches);
