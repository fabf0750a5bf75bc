"""What the benchmark scripts share: the CPU's name, and a confidence interval for a median."""
import math
import platform


def cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def median_interval(values, confidence=0.95):
    """A distribution-free confidence interval for the median of `values`: the order
    statistics x(k) and x(n+1-k), with k the largest rank for which a Binomial(n, 1/2) count
    falls below k with probability at most (1 - confidence) / 2. None below 6 values, where
    even the extremes do not cover 95%."""
    xs, n = sorted(values), len(values)
    tail, k, below = (1 - confidence) / 2, 0, 0.0
    while True:
        below += math.comb(n, k) / 2 ** n  # P(count <= k)
        if below > tail:
            break
        k += 1
    return None if k == 0 else [xs[k - 1], xs[n - k]]
