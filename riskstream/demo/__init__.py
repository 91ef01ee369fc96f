"""`riskstream demo`: the whole product on a laptop, from a simulated world to explained alerts."""

from riskstream.demo.exceptions import DemoError
from riskstream.demo.run import DemoResult, run_demo

__all__ = ["DemoError", "DemoResult", "run_demo"]
