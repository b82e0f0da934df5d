#!/usr/bin/env python3
"""Trains txmirror's failure-prediction model and exports it to ONNX.

Subcommands:

  generate  writes a synthetic dataset in txmirror's dataset format: features
            drawn at random, labels drawn from a hidden logistic function
            shaped like the default rules (for the placeholder model and for
            tests; real datasets come from `txmirror model export-dataset`).
  train     trains on a dataset, evaluates on a held-out dataset (made from
            another workload seed), and writes the .onnx file and its model
            card (JSON and Markdown).

The model reads the runtime's feature vector (``feature_schema.json``: the
names, their order and the schema version) and outputs, in ``probabilities``,
the probability of each class: index 1 is "the primary will fail". The
exported file carries its contract in the ONNX metadata, which the runtime
checks when it loads the model and refuses on any mismatch:

- ``txmirror.feature_schema_version``: the schema version, such as ``1``;
- ``txmirror.feature_names``: the feature names, comma-separated, in order;
- ``txmirror.model_name`` and ``txmirror.model_version``: shown in every
  prediction the model takes part in;
- ``txmirror.trained_on``: what the model learnt from.

The dataset format (see docs/learning.md): a line
``# txmirror-dataset format=1 feature_schema_version=1``, then CSV with a
header row. Rows whose ``failed`` label is empty (the runtime's adjustment
decided the outcome) are left out of training and evaluation.

Usage:
    python3 models/train.py generate --rows 4000 --seed 2026 --out train.csv
    python3 models/train.py train --dataset train.csv --holdout holdout.csv \\
        --out model.onnx --card model-card
"""

from __future__ import annotations

import argparse
import csv
import json
import pathlib
import sys

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
FORMAT_VERSION = 1
LEADING = ["transaction_id", "attempt_number", "path"]
TRAILING = [
    "scored_at",
    "rules_probability",
    "model_probability",
    "failure_probability",
    "action",
    "explored",
    "outcome",
    "failed",
]
# The policy's default threshold, at which the rules alone are judged.
POLICY_THRESHOLD = 0.3
# The most false diversions the chosen threshold may cause.
MAX_FALSE_POSITIVE_RATE = 0.02


class DatasetError(Exception):
    """A dataset file that does not fit the format or the schema."""


def load_schema() -> tuple[int, list[str]]:
    schema = json.loads((HERE / "feature_schema.json").read_text())
    return int(schema["version"]), list(schema["features"])


def columns(names: list[str]) -> list[str]:
    return LEADING + names + TRAILING


# --- the dataset format ------------------------------------------------------


def read_dataset(path: pathlib.Path, version: int, names: list[str]) -> dict[str, np.ndarray]:
    """Reads a dataset file, refusing another schema and missing or extra columns."""
    with path.open(newline="") as file:
        first = file.readline().strip()
        expected = f"# txmirror-dataset format={FORMAT_VERSION} feature_schema_version="
        if not first.startswith(expected):
            raise DatasetError(f"{path}: not a txmirror dataset (first line `{first[:80]}`)")
        found = first[len(expected) :]
        if found != str(version):
            raise DatasetError(f"{path}: feature schema version {found}; the schema here is version {version}")
        reader = csv.DictReader(file)
        header = reader.fieldnames or []
        wanted = columns(names)
        extra = [c for c in header if c not in wanted]
        if extra:
            raise DatasetError(
                f"{path}: column `{extra[0]}` is neither a feature of schema version {version} nor a dataset column"
            )
        missing = [c for c in wanted if c not in header]
        if missing:
            raise DatasetError(f"{path}: no `{missing[0]}` column")
        rows = [row for row in reader if row["failed"] in ("0", "1")]
    if not rows:
        raise DatasetError(f"{path}: no labelled rows")
    return {
        "features": np.array([[float(row[n]) for n in names] for row in rows], dtype=np.float32),
        "failed": np.array([int(row["failed"]) for row in rows], dtype=np.int64),
        "rules": np.array([float(row["rules_probability"]) for row in rows], dtype=np.float64),
        "explored": np.array([row["explored"] == "1" for row in rows]),
    }


def write_dataset(path: pathlib.Path, version: int, names: list[str], rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as file:
        file.write(f"# txmirror-dataset format={FORMAT_VERSION} feature_schema_version={version}\n")
        writer = csv.DictWriter(file, fieldnames=columns(names), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


# --- generate ----------------------------------------------------------------


def rules_probability(f: dict[str, np.ndarray]) -> np.ndarray:
    """The default rules of docs/features.md, as the runtime scores them."""
    p = (
        0.2 * (f["contended_keys"] > 0)
        + 0.4 * (f["validation_errors"] > 0)
        + 0.3 * (f["predicted_timeout"] > 0)
        + 0.1 * (f["baseline_deviation"] > 3)
        + 0.3 * (f["endpoint_error_rate"] >= 0.5)
        + 0.5 * (f["fuel_ratio"] >= 1)
        + 0.5 * (f["memory_ratio"] >= 1)
        + 0.3 * (f["rate_limit_wait_ms"] > 0)
    )
    return np.clip(p, 0.0, 1.0)


def generate(names: list[str], rows: int, seed: int, failure_shift: float) -> list[dict]:
    """Draws a synthetic, labelled dataset."""
    rng = np.random.default_rng(seed)
    n = rows
    f = {
        "contended_keys": rng.poisson(0.3, n).astype(float),
        "validation_errors": ((rng.random(n) < 0.08) * rng.integers(1, 4, n)).astype(float),
        "outbound_latency_ratio": rng.lognormal(-1.8, 0.9, n),
        "endpoint_error_rate": rng.beta(0.4, 4.0, n),
        "fuel_ratio": rng.beta(2.0, 6.0, n) * rng.choice([1.0, 1.8], n, p=[0.93, 0.07]),
        "memory_ratio": rng.beta(2.0, 6.0, n) * rng.choice([1.0, 1.8], n, p=[0.95, 0.05]),
        "baseline_deviation": np.abs(rng.normal(0.0, 1.3, n)),
        "attempt": rng.choice([1.0, 2.0, 3.0], n, p=[0.8, 0.15, 0.05]),
        "path_failure_rate": rng.beta(0.5, 6.0, n),
        "unsafe_calls": rng.integers(0, 3, n).astype(float),
        "input_bytes": np.round(rng.lognormal(5.3, 0.8, n)),
        "outbound_request_bytes": np.round(rng.lognormal(5.0, 1.0, n)),
        "rate_limited_share": rng.beta(0.3, 8.0, n),
        # Most endpoints have no known limit (0); the others run below or above it.
        "rate_limit_load": (rng.random(n) < 0.15) * rng.gamma(4.0, 0.22, n),
    }
    # A share of the transactions call nothing outside (a deposit, a
    # transfer): every feature of outbound calls is 0 for them, as the
    # runtime computes it, so that a model has seen such rows.
    calls = rng.random(n) >= 0.3
    for name in ["outbound_latency_ratio", "endpoint_error_rate", "unsafe_calls", "outbound_request_bytes",
                 "rate_limited_share", "rate_limit_load"]:
        f[name] = f[name] * calls
    f["predicted_timeout"] = (f["outbound_latency_ratio"] >= 1.0).astype(float)
    f["rate_limit_wait_ms"] = (f["rate_limit_load"] > 1.0) * np.round(rng.uniform(1.0, 1000.0, n))
    # Most hosts' breakers are closed; a few are open, or half-open with a trial due.
    f["breaker_state"] = rng.choice([0.0, 0.5, 1.0], n, p=[0.93, 0.03, 0.04]) * calls
    logit = (
        -3.2
        + failure_shift
        + 0.7 * np.minimum(f["contended_keys"], 3)
        + 2.8 * (f["validation_errors"] > 0)
        + 2.2 * f["predicted_timeout"]
        + 0.6 * np.minimum(f["outbound_latency_ratio"], 3)
        + 3.0 * f["endpoint_error_rate"]
        + 2.5 * (f["fuel_ratio"] >= 1.0)
        + 2.5 * (f["memory_ratio"] >= 1.0)
        + 0.25 * f["baseline_deviation"]
        + 0.3 * (f["attempt"] - 1)
        + 1.5 * f["path_failure_rate"]
        + 2.0 * (f["rate_limit_wait_ms"] > 0)
        + 1.2 * f["rate_limited_share"]
        + 2.5 * (f["breaker_state"] >= 1.0)
    )
    failed = rng.random(n) < 1.0 / (1.0 + np.exp(-logit))
    # A mirror that itself failed mostly foretells a failed primary.
    f["mirror_failed"] = ((failed & (rng.random(n) < 0.5)) | (rng.random(n) < 0.02)).astype(float)
    rules = rules_probability(f)
    out = []
    for i in range(n):
        row = {"transaction_id": f"generated-{seed}-{i}", "attempt_number": int(f["attempt"][i]), "path": "generated"}
        row.update({name: float(np.float32(f[name][i])) for name in names})
        row.update(
            {
                "scored_at": "end",
                "rules_probability": float(np.float32(rules[i])),
                "model_probability": "",
                "failure_probability": float(np.float32(rules[i])),
                "action": "explored:none",
                "explored": 1,
                "outcome": "unavailable" if failed[i] else "committed",
                "failed": int(failed[i]),
            }
        )
        out.append(row)
    return out


# --- train -------------------------------------------------------------------


def confusion(failed: np.ndarray, flagged: np.ndarray) -> dict[str, float]:
    tp = int(np.sum(flagged & (failed == 1)))
    fp = int(np.sum(flagged & (failed == 0)))
    fn = int(np.sum(~flagged & (failed == 1)))
    tn = int(np.sum(~flagged & (failed == 0)))
    return {
        "precision": tp / (tp + fp) if tp + fp else 0.0,
        "recall": tp / (tp + fn) if tp + fn else 0.0,
        "false_positive_rate": fp / (fp + tn) if fp + tn else 0.0,
        "flagged": tp + fp,
    }


def calibration_error(failed: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error over equal-width probability bins."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (p >= lo) & ((p < hi) if hi < 1.0 else (p <= hi))
        if inside.any():
            total += inside.mean() * abs(p[inside].mean() - failed[inside].mean())
    return float(total)


def choose_threshold(failed: np.ndarray, p: np.ndarray) -> float:
    """The lowest threshold whose false-positive rate stays within the limit."""
    candidates = np.unique(np.concatenate([p, [1.0]]))
    for threshold in candidates:
        if confusion(failed, p >= threshold)["false_positive_rate"] <= MAX_FALSE_POSITIVE_RATE:
            return float(threshold)
    return 1.0


def new_model(kind: str, c: float):
    """A fresh, unfitted model of the given kind."""
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if kind == "gbt":
        return GradientBoostingClassifier(n_estimators=150, max_depth=3, random_state=0)
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=c))


def export(model, names: list[str], metadata: dict[str, str], doc: str):
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    import onnx

    onx = convert_sklearn(
        model,
        initial_types=[("features", FloatTensorType([None, len(names)]))],
        options={LogisticRegression: {"zipmap": False}, GradientBoostingClassifier: {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    onx.doc_string = doc
    for key, value in metadata.items():
        entry = onx.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(onx)
    return onx


def write_card(prefix: pathlib.Path, card: dict) -> None:
    prefix.parent.mkdir(parents=True, exist_ok=True)
    prefix.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
    h = card["holdout"]
    rules = card["rules_alone"]
    lines = [
        f"# Model card: {card['name']} {card['version']}",
        "",
        f"Feature schema version {card['feature_schema_version']}. {card['kind']} "
        f"(scikit-learn {card['sklearn_version']}), exported to ONNX by skl2onnx.",
        "",
        f"- Trained on: {card['trained_on']} ({card['training_rows']} labelled rows, "
        f"{card['training_failure_rate']:.1%} failed).",
        f"- Evaluated on: {card['holdout_source']} ({h['rows']} labelled rows, {h['failure_rate']:.1%} failed).",
        f"- Chosen threshold: {card['threshold']:.4f} (the lowest whose false-positive rate on out-of-fold "
        f"predictions of the training set is at most {MAX_FALSE_POSITIVE_RATE:.0%}).",
        "",
        "| on the held-out set | model | rules alone (threshold 0.3) |",
        "|---|---|---|",
        f"| AUC | {h['auc']:.3f} | {rules['auc']:.3f} |",
        f"| precision | {h['precision']:.3f} | {rules['precision']:.3f} |",
        f"| recall | {h['recall']:.3f} | {rules['recall']:.3f} |",
        f"| false-positive rate (false diversions) | {h['false_positive_rate']:.3f} | {rules['false_positive_rate']:.3f} |",
        f"| expected calibration error (10 bins) | {h['calibration_error']:.3f} | {rules['calibration_error']:.3f} |",
        "",
        f"Command: `{card['command']}`",
        "",
    ]
    prefix.with_suffix(".md").write_text("\n".join(lines))


def train(args: argparse.Namespace, version: int, names: list[str]) -> None:
    import sklearn
    import onnx  # noqa: F401  (fail early if the packages are missing)
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import cross_val_predict

    try:
        data = read_dataset(args.dataset, version, names)
        holdout = read_dataset(args.holdout, version, names) if args.holdout else None
    except DatasetError as error:
        sys.exit(f"train.py: {error}")
    if len(set(data["failed"].tolist())) < 2:
        sys.exit(f"train.py: {args.dataset} needs both failed and successful attempts")

    # The threshold comes from out-of-fold predictions on the training set:
    # in-sample scores of a flexible model are too confident.
    folds = min(5, int(np.bincount(data["failed"]).min()))
    if folds >= 2:
        out_of_fold = cross_val_predict(
            new_model(args.kind, args.c), data["features"], data["failed"], cv=folds, method="predict_proba"
        )[:, 1]
    else:
        out_of_fold = new_model(args.kind, args.c).fit(data["features"], data["failed"]).predict_proba(data["features"])[:, 1]
    threshold = choose_threshold(data["failed"], out_of_fold)
    model = new_model(args.kind, args.c)
    model.fit(data["features"], data["failed"])

    trained_on = f"{args.dataset.name} ({len(data['failed'])} rows)"
    metadata = {
        "txmirror.feature_schema_version": str(args.schema_version if args.schema_version is not None else version),
        "txmirror.feature_names": ",".join(
            [args.rename_feature[1] if args.rename_feature and n == args.rename_feature[0] else n for n in names]
        ),
        "txmirror.model_name": args.name,
        "txmirror.model_version": args.version,
        "txmirror.trained_on": trained_on,
        "txmirror.threshold": repr(float(threshold)),
    }
    if args.no_metadata:
        metadata = {}
    onx = export(model, names, metadata, f"txmirror failure predictor {args.name} {args.version}, trained on {trained_on}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    temporary = args.out.with_suffix(args.out.suffix + ".tmp")
    temporary.write_bytes(onx.SerializeToString())
    temporary.replace(args.out)

    summary = f"{args.out}: {args.name} {args.version}, schema v{version}, {len(data['failed'])} rows"
    evaluation = holdout if holdout is not None else data
    p = model.predict_proba(evaluation["features"])[:, 1]
    failed = evaluation["failed"]
    two_classes = len(set(failed.tolist())) == 2
    held = {
        "rows": int(len(failed)),
        "failure_rate": float(failed.mean()),
        "auc": float(roc_auc_score(failed, p)) if two_classes else float("nan"),
        **confusion(failed, p >= threshold),
        "calibration_error": calibration_error(failed, p),
    }
    rules = {
        "auc": float(roc_auc_score(failed, evaluation["rules"])) if two_classes else float("nan"),
        **confusion(failed, evaluation["rules"] >= POLICY_THRESHOLD),
        "calibration_error": calibration_error(failed, evaluation["rules"]),
    }
    if args.predictions_out:
        # The model's probabilities for the evaluation rows, to check the
        # runtime's ONNX scores against scikit-learn's.
        with args.predictions_out.open("w", newline="") as file:
            writer = csv.writer(file, lineterminator="\n")
            writer.writerow(names + ["probability"])
            for row, probability in zip(evaluation["features"], p):
                writer.writerow([repr(float(v)) for v in row] + [repr(float(probability))])
    if args.card:
        write_card(
            args.card,
            {
                "name": args.name,
                "version": args.version,
                "feature_schema_version": version,
                "sklearn_version": sklearn.__version__,
                "kind": "Gradient-boosted trees (150 trees of depth 3)"
                if args.kind == "gbt"
                else "Logistic regression on standardised features",
                "trained_on": str(args.dataset),
                "training_rows": int(len(data["failed"])),
                "training_failure_rate": float(data["failed"].mean()),
                "holdout_source": str(args.holdout) if args.holdout else "the training set (no holdout given)",
                "threshold": threshold,
                "holdout": held,
                "rules_alone": rules,
                "command": " ".join(["python3", "models/train.py"] + sys.argv[1:]),
            },
        )
    print(
        f"{summary}; on {'the holdout' if holdout is not None else 'the training set'}: "
        f"AUC {held['auc']:.3f}, recall {held['recall']:.3f} and false-positive rate "
        f"{held['false_positive_rate']:.3f} at threshold {threshold:.3f}"
    )


def main() -> None:
    version, names = load_schema()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    gen = commands.add_parser("generate", help="write a synthetic dataset")
    gen.add_argument("--out", required=True, type=pathlib.Path)
    gen.add_argument("--rows", type=int, default=4000)
    gen.add_argument("--seed", type=int, default=2026)
    gen.add_argument("--failure-shift", type=float, default=0.0, help="added to the hidden logit")

    tr = commands.add_parser("train", help="train, evaluate and export a model")
    tr.add_argument("--dataset", required=True, type=pathlib.Path, help="the training dataset")
    tr.add_argument("--holdout", type=pathlib.Path, help="a dataset from another seed, to evaluate on")
    tr.add_argument("--out", required=True, type=pathlib.Path, help="where to write the .onnx file")
    tr.add_argument("--card", type=pathlib.Path, help="write the model card to CARD.json and CARD.md")
    tr.add_argument("--predictions-out", type=pathlib.Path, help="write the evaluation rows' probabilities")
    tr.add_argument("--name", default="placeholder")
    tr.add_argument("--version", default="1")
    tr.add_argument("--kind", choices=["gbt", "logistic"], default="gbt",
                    help="gradient-boosted trees (default) or a logistic regression")
    tr.add_argument("--c", type=float, default=1.0, help="the logistic regression's inverse regularisation strength")
    # For test fixtures: models that break the contract on purpose.
    tr.add_argument("--schema-version", type=int, help=argparse.SUPPRESS)
    tr.add_argument("--rename-feature", nargs=2, metavar=("OLD", "NEW"), help=argparse.SUPPRESS)
    tr.add_argument("--no-metadata", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.command == "generate":
        rows = generate(names, args.rows, args.seed, args.failure_shift)
        write_dataset(args.out, version, names, rows)
        print(f"{args.out}: {len(rows)} generated rows, seed {args.seed}")
    else:
        train(args, version, names)


if __name__ == "__main__":
    main()
