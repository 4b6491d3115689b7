"""Memory of this process: current and peak resident set size, and growth rates."""

import ctypes
import resource
import sys
from typing import Callable, List, Optional, Tuple


def _status_kib(field: str) -> Optional[int]:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def rss_mib() -> float:
    """Current resident set size."""
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:
        kib = _status_kib("VmRSS")
        return kib / 1024 if kib is not None else float("nan")


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far."""
    kib = _status_kib("VmHWM")
    if kib is None:  # not Linux: ru_maxrss is bytes on macOS, KiB elsewhere
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        if sys.platform == "darwin":
            kib /= 1024
    return kib / 1024


def slope_per_1000(points: List[Tuple[int, float]]) -> float:
    """Least-squares slope of (docs, MiB) points, in MiB per 1,000 docs."""
    n = len(points)
    if n < 2:
        return float("nan")
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    sxy = sum((x - mx) * (y - my) for x, y in points)
    return 1000 * sxy / sxx


class MallInfo2(ctypes.Structure):
    """glibc's `struct mallinfo2` (glibc >= 2.33): the state of malloc's heap."""

    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",  # bytes of the main heap (sbrk)
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",  # bytes in mmapped chunks
            "usmblks",
            "fsmblks",
            "uordblks",  # bytes in use
            "fordblks",  # bytes free in the heap
            "keepcost",
        )
    ]


def mallinfo() -> Optional[Callable[[], MallInfo2]]:
    """glibc's `mallinfo2`, or None where the C library has none (not glibc, or < 2.33)."""
    try:
        fn = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError):
        return None
    fn.restype = MallInfo2
    return fn
