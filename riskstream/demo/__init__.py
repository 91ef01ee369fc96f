"""`riskstream demo`: the whole product on a laptop, from a simulated world to explained alerts."""

from riskstream.demo.run import DemoError, DemoResult, run_demo

__all__ = ["DemoError", "DemoResult", "run_demo"]
