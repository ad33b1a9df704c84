"""Small helpers the benchmarks share (bench/ is on sys.path when a benchmark runs as a script)."""

import socket


def pct(values, p):
    """The p-th percentile of values, linearly interpolated (0.0 for no values)."""
    values = sorted(values)
    if not values:
        return 0.0
    k = (len(values) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
