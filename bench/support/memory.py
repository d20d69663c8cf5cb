"""Peak memory of a bench's child process."""

from __future__ import annotations

import resource


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB: VmHWM, the high-water mark of its own address space.

    Not ru_maxrss: Linux carries that over exec from the process that started this one, so a child
    started by a bench (or pytest) that had grown to 400 MB reports at least 400 MB, whatever it used."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker_peak_mb() -> float:
    """The peak resident memory of this process's largest finished child, MB (prepare's workers are
    forked, not exec'd: theirs is their own, counting the pages they share with this process)."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
