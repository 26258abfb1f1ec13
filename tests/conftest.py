import os

from hypothesis import HealthCheck, settings

# Numba compiles on first use, so the first example of a test can be slow: no deadline.
settings.register_profile(
    "fastml",
    deadline=None,
    max_examples=int(os.environ.get("FASTML_HYPOTHESIS_EXAMPLES", "40")),
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=bool(os.environ.get("CI")),
)
settings.load_profile("fastml")
