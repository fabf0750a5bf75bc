"""What the benchmark scripts share: the CPU's name, a confidence interval for a median, and
where a run's CPU round trips part near from far apart."""
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


# The widest step up between a run's round trips that splits it into near and far apart: on
# the 2-core Zen 4 VM the two states measured 50-100 ns and 325-400 ns.
FAR_FACTOR = 2.5
# Round trips needed on each side of a step for it to split the run: a lone glitch (a 5 ns
# trip, or one of 2,000 ns) is not a placement.
MIN_TRIPS_A_SIDE = 2


def far_boundary(trips):
    """The round trip above which the CPUs count as far apart: the geometric middle of the
    widest step up between the run's sorted round trips that has at least MIN_TRIPS_A_SIDE
    trips on either side and is at least FAR_FACTOR wide; infinite where none is (every
    round counts as near, the run's shortest trip then saying which placement that was).
    Relative to the run's own trips, since what is near depends on the machine; and at the
    widest step, not at a multiple of the shortest, since the host also put both CPUs on one
    core at times (30 ns, against 50-100 near and 325-400 far), which would have made a near
    round trip of 100 ns far."""
    trips = sorted(t for t in trips if t > 0)
    steps = [(trips[i + 1] / trips[i], trips[i], trips[i + 1])
             for i in range(MIN_TRIPS_A_SIDE - 1, len(trips) - MIN_TRIPS_A_SIDE)]
    if not steps:
        return math.inf
    ratio, below, above = max(steps)
    return math.sqrt(below * above) if ratio >= FAR_FACTOR else math.inf
