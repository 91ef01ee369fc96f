"""`riskstream bench pipeline`: the parts' ceilings, the worker under open-loop load, cost vs N
and batch size, quality vs speed per bundle and variant."""

from riskstream.bench.pipeline.exceptions import PipelineBenchError
from riskstream.bench.pipeline.run import PipelineOptions, run_pipeline_bench

__all__ = ["PipelineBenchError", "PipelineOptions", "run_pipeline_bench"]
