#!/usr/bin/env python3
"""Trains a failure-prediction model for txmirror and exports it to ONNX.

The model reads the runtime's feature vector (``feature_schema.json``: the
names, their order and the schema version) and outputs, in ``probabilities``,
the probability of each class: index 1 is "the primary will fail".

The exported file carries its contract in the ONNX metadata, which the
runtime checks when it loads the model and refuses on any mismatch:

- ``txmirror.feature_schema_version``: the schema version, such as ``1``;
- ``txmirror.feature_names``: the feature names, comma-separated, in order;
- ``txmirror.model_name`` and ``txmirror.model_version``: shown in every
  prediction the model takes part in;
- ``txmirror.trained_on``: what the model learnt from.

Without ``--dataset`` it trains on a small generated set (the placeholder
model): features drawn at random, labels drawn from a hidden logistic
function shaped like the default rules. With ``--dataset FILE.csv`` it trains
on labelled traces: one column per feature, named as in the schema, and a
``failed`` column of 0 or 1.

Usage:
    python3 models/train.py --out target/models/placeholder.onnx
"""

from __future__ import annotations

import argparse
import csv
import json
import pathlib
import sys

import numpy as np
import onnx
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

HERE = pathlib.Path(__file__).resolve().parent


def load_schema() -> tuple[int, list[str]]:
    schema = json.loads((HERE / "feature_schema.json").read_text())
    return int(schema["version"]), list(schema["features"])


def generate(names: list[str], samples: int, seed: int, failure_shift: float) -> tuple[np.ndarray, np.ndarray]:
    """Draws a synthetic, labelled set of feature vectors."""
    rng = np.random.default_rng(seed)
    n = samples
    columns = {
        "contended_keys": rng.poisson(0.3, n).astype(float),
        "validation_errors": (rng.random(n) < 0.08) * rng.integers(1, 4, n),
        "outbound_latency_ratio": rng.lognormal(-1.8, 0.9, n),
        "endpoint_error_rate": rng.beta(0.4, 4.0, n),
        "fuel_ratio": rng.beta(2.0, 6.0, n) * rng.choice([1.0, 1.8], n, p=[0.93, 0.07]),
        "memory_ratio": rng.beta(2.0, 6.0, n) * rng.choice([1.0, 1.8], n, p=[0.95, 0.05]),
        "baseline_deviation": np.abs(rng.normal(0.0, 1.3, n)),
        "attempt": rng.choice([1.0, 2.0, 3.0], n, p=[0.8, 0.15, 0.05]),
        "path_failure_rate": rng.beta(0.5, 6.0, n),
        "unsafe_calls": rng.integers(0, 3, n).astype(float),
    }
    columns["predicted_timeout"] = (columns["outbound_latency_ratio"] >= 1.0).astype(float)
    # The hidden truth: shaped like the default rules, with noise.
    logit = (
        -3.2
        + failure_shift
        + 0.7 * np.minimum(columns["contended_keys"], 3)
        + 2.8 * (columns["validation_errors"] > 0)
        + 2.2 * columns["predicted_timeout"]
        + 0.6 * np.minimum(columns["outbound_latency_ratio"], 3)
        + 3.0 * columns["endpoint_error_rate"]
        + 2.5 * (columns["fuel_ratio"] >= 1.0)
        + 2.5 * (columns["memory_ratio"] >= 1.0)
        + 0.25 * columns["baseline_deviation"]
        + 0.3 * (columns["attempt"] - 1)
        + 1.5 * columns["path_failure_rate"]
    )
    failed = rng.random(n) < 1.0 / (1.0 + np.exp(-logit))
    # A mirror that itself failed mostly foretells a failed primary.
    columns["mirror_failed"] = ((failed & (rng.random(n) < 0.5)) | (rng.random(n) < 0.02)).astype(float)
    features = np.column_stack([np.asarray(columns[name], dtype=np.float32) for name in names])
    return features, failed.astype(np.int64)


def read_dataset(path: pathlib.Path, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Reads labelled feature vectors from a CSV file."""
    with path.open(newline="") as file:
        reader = csv.DictReader(file)
        missing = [name for name in names + ["failed"] if name not in (reader.fieldnames or [])]
        if missing:
            sys.exit(f"{path}: missing columns {', '.join(missing)}")
        rows = list(reader)
    if not rows:
        sys.exit(f"{path}: no rows")
    features = np.array([[float(row[name]) for name in names] for row in rows], dtype=np.float32)
    failed = np.array([int(row["failed"]) for row in rows], dtype=np.int64)
    if len(set(failed.tolist())) < 2:
        sys.exit(f"{path}: needs both failed and successful examples")
    return features, failed


def main() -> None:
    schema_version, schema_names = load_schema()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=pathlib.Path, help="where to write the .onnx file")
    parser.add_argument("--dataset", type=pathlib.Path, help="a CSV of labelled features; else generated")
    parser.add_argument("--samples", type=int, default=4000, help="size of the generated set")
    parser.add_argument("--seed", type=int, default=2026, help="seed of the generated set")
    parser.add_argument("--failure-shift", type=float, default=0.0, help="added to the hidden logit (generated set)")
    parser.add_argument("--name", default="placeholder", help="the model's name")
    parser.add_argument("--version", default="1", help="the model's version")
    # For test fixtures: models that break the contract on purpose.
    parser.add_argument("--schema-version", type=int, default=schema_version, help=argparse.SUPPRESS)
    parser.add_argument("--rename-feature", nargs=2, metavar=("OLD", "NEW"), help=argparse.SUPPRESS)
    parser.add_argument("--no-metadata", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.dataset:
        features, failed = read_dataset(args.dataset, schema_names)
        trained_on = f"dataset {args.dataset.name} ({len(failed)} rows)"
    else:
        features, failed = generate(schema_names, args.samples, args.seed, args.failure_shift)
        trained_on = f"generated set ({args.samples} rows, seed {args.seed}, shift {args.failure_shift})"

    classifier = LogisticRegression(max_iter=2000)
    model = make_pipeline(StandardScaler(), classifier)
    model.fit(features, failed)
    probabilities = model.predict_proba(features)[:, 1]
    eps = 1e-7
    log_loss = -np.mean(failed * np.log(probabilities + eps) + (1 - failed) * np.log(1 - probabilities + eps))
    accuracy = np.mean((probabilities >= 0.5) == failed)

    onx = convert_sklearn(
        model,
        initial_types=[("features", FloatTensorType([None, len(schema_names)]))],
        options={LogisticRegression: {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    names = list(schema_names)
    if args.rename_feature:
        old, new = args.rename_feature
        names = [new if name == old else name for name in names]
    onx.doc_string = f"txmirror failure predictor {args.name} {args.version}, trained on a {trained_on}"
    if not args.no_metadata:
        for key, value in {
            "txmirror.feature_schema_version": str(args.schema_version),
            "txmirror.feature_names": ",".join(names),
            "txmirror.model_name": args.name,
            "txmirror.model_version": args.version,
            "txmirror.trained_on": trained_on,
        }.items():
            entry = onx.metadata_props.add()
            entry.key, entry.value = key, value
    onnx.checker.check_model(onx)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    temporary = args.out.with_suffix(args.out.suffix + ".tmp")
    temporary.write_bytes(onx.SerializeToString())
    temporary.replace(args.out)
    print(
        f"{args.out}: {args.name} {args.version}, schema v{args.schema_version}, "
        f"{len(failed)} rows, {failed.mean():.1%} failed, accuracy {accuracy:.3f}, log loss {log_loss:.3f}"
    )


if __name__ == "__main__":
    main()
