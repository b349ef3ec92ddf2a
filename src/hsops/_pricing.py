"""Pricing constants for cost per prediction and per function invocation.

AWS Lambda on-demand list prices (x86, us-east-1, 2026): per GB-second of configured
memory and per request. One set of numbers for the model benchmark, the local function
runtime's cost accounting and the AWS cost model, so every "cost" hsops prints means the
same thing. Lambda bills duration in 1 ms steps and memory from 128 MB in 1 MB steps.
"""

from __future__ import annotations

import math

LAMBDA_GB_SECOND_USD = 0.0000166667
LAMBDA_REQUEST_USD = 0.20 / 1_000_000
LAMBDA_MIN_MEMORY_MB = 128
MEMORY_HEADROOM = 1.25  # configured memory = peak RSS plus a quarter, as people size Lambdas


def lambda_memory_mb(peak_rss_mib: float) -> int:
    """The memory a function needs configured to serve with ``peak_rss_mib`` resident."""
    return max(LAMBDA_MIN_MEMORY_MB, math.ceil(peak_rss_mib * MEMORY_HEADROOM))


def invocation_cost_usd(duration_s: float, memory_mb: float) -> float:
    """One invocation: duration billed in whole milliseconds, plus the request."""
    billed_s = math.ceil(max(duration_s, 0.0) * 1000) / 1000
    return billed_s * (memory_mb / 1024) * LAMBDA_GB_SECOND_USD + LAMBDA_REQUEST_USD

# Step Functions standard workflows bill each state transition; a pipeline run's cost is
# its functions' invocations plus its transitions
STEP_FUNCTIONS_TRANSITION_USD = 0.025 / 1000
