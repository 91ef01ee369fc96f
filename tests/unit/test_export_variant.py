"""Which graph a bundle serves when none is named (`export.loader.default_variant`)."""

from __future__ import annotations

import pytest

from export.loader import default_variant
from export.manifest import CPU_SPEED_KEY, Variant


def _variants(**figures: tuple[bool, float | None]) -> dict[str, Variant]:
    return {
        name: Variant(f"{name}.onnx", ok, "", {} if wps is None else {CPU_SPEED_KEY: wps})
        for name, (ok, wps) in figures.items()
    }


@pytest.mark.parametrize(
    ("figures", "cuda", "expected"),
    [
        ({"fp32": (True, 900.0), "int8": (True, 700.0)}, False, "fp32"),
        ({"fp32": (True, 700.0), "int8": (True, 900.0)}, False, "int8"),
        ({"fp32": (True, 700.0), "int8": (False, 900.0)}, False, "fp32"),  # unverified: never
        ({"fp32": (True, None), "int8": (True, None)}, False, "int8"),  # older bundle: INT8
        ({"fp32": (True, 900.0), "int8": (True, None)}, False, "int8"),  # figures incomplete
        ({"fp32": (True, 900.0), "int8": (True, 700.0), "fp16": (True, None)}, True, "fp16"),
        ({"fp32": (True, 900.0), "fp16": (False, None)}, True, "fp32"),
    ],
)
def test_default_variant(
    figures: dict[str, tuple[bool, float | None]], cuda: bool, expected: str
) -> None:
    assert default_variant(_variants(**figures), cuda) == expected
