"""How prepare hands memory back to the OS, so that its peak follows what it holds (glibc; elsewhere no-ops).

glibc decides by itself whether a buffer gets its own mapping (returned to the OS when freed) or
a place in the heap (kept for reuse). It starts by mapping every buffer of 128 KiB or more, but
each time a mapped buffer is freed it raises that threshold to the buffer's size. A large
dataset's columns (several MB at 600,000 images) are freed once they are no longer needed, and
from then on the 4 MiB blocks of pixels and records go to the heap, which keeps what they leave
behind (bench/RESULTS.md, "Main process under 1.1x"). A small dataset's columns never raise it
past the blocks, so it always ran with them mapped.
"""

from __future__ import annotations

import ctypes
import functools
import gc

# mallopt's parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
MAPPED_FROM = 1 << 20  # buffers of this size or more get a mapping of their own
# Free memory at the heap's top kept for reuse before it is given back. Fixing the mmap threshold
# fixes this one as well (at 128 KiB), and the heap is then shrunk and regrown all the time.
KEPT_AT_TOP = 64 << 20


def map_large_buffers() -> None:
    """Fix glibc's mmap threshold at MAPPED_FROM for the rest of this process (a stage runs in one
    of its own: `resnet-mlops prepare`)."""
    libc = _libc()
    if libc is not None:
        libc.mallopt(_M_MMAP_THRESHOLD, MAPPED_FROM)
        libc.mallopt(_M_TRIM_THRESHOLD, KEPT_AT_TOP)


def release_freed() -> None:
    """Collect garbage and hand freed memory back to the OS: glibc's malloc_trim returns free pages
    inside the heap too. Reading a large folder leaves many freed Python objects scattered through
    memory; what follows (validation, the manifest, the shards) would otherwise sit on top of them."""
    gc.collect()
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


@functools.cache
def _libc():
    """The C library when it is glibc (it has malloc_trim and mallopt), else None."""
    try:
        libc = ctypes.CDLL(None)
        libc.malloc_trim, libc.mallopt
    except (OSError, AttributeError):
        return None
    return libc
