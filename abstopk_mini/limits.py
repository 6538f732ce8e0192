"""Bounds checked before work: what a seed may be, and what this machine's memory and disk hold.

A size that cannot fit is refused with a ValueError naming the setting, the bytes it needs and
the bytes there are, before anything is allocated or written (a 256 GB ``torch.zeros`` fails after
minutes of swapping or kills the process; a harvest larger than the disk fails hours in).

* :data:`SEED_MAX`, :func:`check_seed` — seeds are ints in [0, 2**32 - 1]: every generator of the
  package takes them without overflow (torch, numpy, the shard order's ``seed * 100_003 + epoch``).
* :func:`available_memory` — bytes that can still be allocated: ``MemAvailable`` of
  ``/proc/meminfo`` (else the physical pages), capped by the cgroup's ``memory.max`` less its
  ``memory.current`` (a container's limit); the free memory of a CUDA device for a CUDA device.
* :func:`free_disk` — free bytes of the file system a (possibly not yet created) path will be on.
* :func:`check_memory`, :func:`check_disk` — the ValueError when a size does not fit.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

__all__ = ["SEED_MAX", "check_seed", "available_memory", "free_disk", "check_memory", "check_disk", "format_bytes"]

SEED_MAX = 2**32 - 1


def check_seed(value, name: str = "seed") -> None:
    """ValueError naming ``name`` (e.g. ``"--seed"``) unless ``value`` is an int in [0, SEED_MAX]."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= SEED_MAX:
        raise ValueError(f"{name} must be an int in [0, {SEED_MAX}] (2**32 - 1); got {value!r}")


def format_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def _cgroup_room() -> int | None:
    """Bytes left under a cgroup v2 memory limit, or None when there is none."""
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit == "max":
            return None
        return max(0, int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text().strip()))
    except (OSError, ValueError):
        return None


def available_memory(device=None) -> int | None:
    """Bytes that can still be allocated on ``device`` (default: host memory); None if unknown."""
    import torch

    device = torch.device(device) if device is not None else torch.device("cpu")
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type != "cpu":
        return None
    room = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    room = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    if room is None:
        try:
            room = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    cgroup = _cgroup_room()
    return room if cgroup is None else min(room, cgroup)


def free_disk(path) -> int | None:
    """Free bytes (for this user) of the file system ``path`` is, or will be created, on; None if unknown."""
    path = Path(path).absolute()
    for candidate in (path, *path.parents):
        if candidate.exists():
            try:
                return shutil.disk_usage(candidate).free
            except OSError:
                return None
    return None


def check_memory(nbytes: int, what: str, fix: str, device=None) -> None:
    """ValueError when ``nbytes`` exceed the memory :func:`available_memory` reports (nothing if unknown)."""
    room = available_memory(device)
    if room is not None and nbytes > room:
        where = "this machine" if device is None or str(device) == "cpu" else str(device)
        raise ValueError(f"{what} needs about {format_bytes(nbytes)} of memory, but {where} has "
                         f"{format_bytes(room)} available; {fix}")


def check_disk(nbytes: int, path, what: str, fix: str, already: int = 0) -> None:
    """ValueError when ``nbytes`` exceed the free disk at ``path`` plus ``already`` (bytes of files
    there that will be reused or replaced); nothing if the free space is unknown."""
    free = free_disk(path)
    if free is not None and nbytes > free + already:
        raise ValueError(f"{what} needs about {format_bytes(nbytes)} of disk in {str(path)!r}, but its file system "
                         f"has {format_bytes(free + already)} free; {fix}")
