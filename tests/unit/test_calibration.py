"""Severity and short-window calibration: measured on validation, carried by the manifest."""

from __future__ import annotations

import json

import numpy as np
import pytest

from events.calibration import MIN_SUPPORT, HeadCalibration, parse_calibration
from export.exceptions import CorruptBundleError
from export.manifest import Manifest, Variant
from training.calibration import calibrate, calibrate_head


def _head(short_true: bool) -> HeadCalibration:
    """400 cases alerted on long windows (true above 0.9, 3 in 4 true in 0.6-0.9), 40 on
    2-event and 40 on 1-event windows (all true or all false), 400 silent ones; each its own
    case."""
    rng = np.random.default_rng(0)
    long_hi = rng.uniform(0.9, 1.0, 200)
    long_mid = rng.uniform(0.6, 0.9, 200)
    short = rng.uniform(0.6, 1.0, 80)
    quiet = rng.uniform(0.0, 0.5, 400)
    scores = np.concatenate([long_hi, long_mid, short, quiet])
    true = np.concatenate([
        np.ones(200, bool), np.arange(200) % 4 != 0, np.full(80, short_true), np.zeros(400, bool),
    ])  # fmt: skip
    lengths = np.concatenate([np.full(400, 10), np.full(40, 2), np.full(40, 1), np.full(400, 5)])
    return calibrate_head(scores, true, np.arange(len(scores)), lengths, threshold=0.6)


def test_short_windows_alert_only_when_validation_shows_them_precise() -> None:
    imprecise, precise = _head(short_true=False), _head(short_true=True)
    assert imprecise.min_events == 3
    assert imprecise.measured["windows_of_2"] == {"alerts": 40, "precision": 0.0}
    assert precise.min_events == 1
    # the long windows' alerts: 200 + 150 true of 400
    assert imprecise.measured["longer_windows"]["precision"] == pytest.approx(350 / 400)


def test_severity_cuts_are_where_validation_precision_reaches_95_and_80_percent() -> None:
    head = _head(short_true=False)  # only the long windows count once short ones are gated
    assert head.critical_from is not None
    assert head.high_from is not None
    # Every alert at or above 0.9 is true, below it 3 in 4: 95 % holds down to about 0.825
    # (50 of the 3-in-4 alerts mixed in), 80 % down to the threshold (350 of 400 true).
    assert 0.8 < head.critical_from <= 0.9
    assert head.high_from == pytest.approx(0.6, abs=0.01)
    assert head.severity(0.95) == "critical"
    assert head.severity(head.critical_from - 1e-6) == "high"
    assert HeadCalibration(critical_from=0.99, high_from=0.9).severity(0.7) == "medium"


def test_a_case_counts_once_however_many_of_its_events_score_high() -> None:
    # One bot episode with 100 high-scoring events, and 12 normal user-days with one each:
    # counted in events that is 100 of 112 true; counted as an analyst meets them, 1 of 13.
    scores = np.concatenate([np.full(100, 0.99), np.full(12, 0.95)])
    true = np.r_[np.ones(100, bool), np.zeros(12, bool)]
    case = np.r_[np.zeros(100, int), np.arange(1, 13)]
    head = calibrate_head(scores, true, case, np.full(112, 9), threshold=0.9)
    assert head.measured["all"] == {"alerts": 13, "precision": pytest.approx(1 / 13)}
    assert head.critical_from is None
    assert head.high_from is None


def test_a_cut_needs_enough_alerts_behind_it() -> None:
    n = MIN_SUPPORT - 1  # too few alerts, all true
    scores = np.linspace(0.9, 1.0, n)
    head = calibrate_head(scores, np.ones(n, bool), np.arange(n), np.full(n, 8), threshold=0.5)
    assert head.critical_from is None
    assert head.high_from is None
    assert head.severity(0.99) == "medium"


def test_calibrate_reads_cases_from_the_validation_split() -> None:
    from training.metrics import EvalInput

    # user a: an episode (index 0) of 3 abnormal-click events; user b: normal, 2 days
    day = 86_400_000
    inp = EvalInput(
        scores=np.zeros((6, 2)),
        y=np.array([[0, 1], [0, 1], [0, 1], [0, 0], [0, 0], [0, 0]], dtype=float),
        weight=np.ones(6),
        user_ids=np.array(["a", "a", "a", "b", "b", "b"], dtype=object),
        ts_ms=np.array([0, 1, 2, 3, 4, day + 5]) + 100 * day,
        episode=np.array([[-1, 0]] * 3 + [[-1, -1]] * 3),
        episodes=[object()],
        first_purchase_ms={},
    )
    scores = np.full((6, 2), 0.9)
    out = calibrate(
        inp, scores, np.array([1, 2, 3, 1, 2, 3]), {"fraud": 0.5, "abnormal_click": 0.5}
    )
    assert set(out) == {"fraud", "abnormal_click"}
    # abnormal_click: the episode (true) and b's two days (false); fraud: three user-days
    assert out["abnormal_click"].measured["all"] == {"alerts": 3, "precision": pytest.approx(1 / 3)}
    assert out["fraud"].measured["all"] == {"alerts": 3, "precision": 0.0}


def _manifest(**kw: object) -> Manifest:
    return Manifest(
        model_version="v", created_at="t", encoding_version=1, encoding_spec_hash="h",
        window={}, inputs=[], outputs=[], thresholds={"fraud": 0.5}, files={}, opset=17,
        variants={"fp32": Variant("model.onnx", True, "ok")}, source={}, evaluation={},
        **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def test_manifest_carries_calibration_and_older_bundles_still_load() -> None:
    fraud = HeadCalibration(0.9, 0.7, 2, {"alerts": 12})
    written = _manifest(calibration={"fraud": fraud.to_dict()}).to_json()
    loaded = Manifest.from_dict(json.loads(written))
    assert parse_calibration(loaded.calibration)["fraud"] == fraud
    # An older manifest has no such key at all: it loads, with an empty calibration.
    body = _manifest().content()
    del body["calibration"]
    from export.manifest import _canonical_hash

    old = Manifest.from_dict({**body, "manifest_sha256": _canonical_hash(body)})
    assert old.calibration == {}


@pytest.mark.parametrize(
    ("calibration", "names"),
    [
        ({"fraud": {"min_events": 0}}, "calibration.fraud.min_events"),
        ({"fraud": {"critical_from": 1.5}}, "calibration.fraud.critical_from"),
        ({"spam": {}}, "calibration.spam"),
    ],
)
def test_a_bad_calibration_is_refused_naming_the_key(
    calibration: dict[str, object], names: str
) -> None:
    with pytest.raises(CorruptBundleError, match=names):
        Manifest.from_dict(json.loads(_manifest(calibration=calibration).to_json()))
