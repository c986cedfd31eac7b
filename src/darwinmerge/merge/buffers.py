"""Reused byte buffers for a merge to disk: its reads and outputs recycle their memory.

A merge to disk reads every parent tensor into a fresh buffer and makes every output in
another, then frees both: tens of GB of memory that the kernel must zero page by page
(a page fault per 4 KiB, several microseconds each in a virtual machine, where fresh
pages may also have to come back from the host). The layers of a model repeat the same
shapes, so a buffer freed by one layer fits the next: :class:`BufferPool` keeps freed
buffers by exact byte size and hands them out again.

Only buffers the pool allocated come back to it, and only where the merge knows that
nothing else refers to them (an input block once merged, an output once written): the
checkpoint reader takes its buffers from the pool when given one, the executor returns
inputs after a job and outputs after the sink has written them. Idle buffers count
against the executor's memory budget, which evicts them before it starts a job that
would not fit beside them.
"""

from __future__ import annotations

import threading

import torch

__all__ = ["BufferPool"]


class BufferPool:
    """Byte buffers by exact size, thread-safe; see the module docstring."""

    def __init__(self, max_idle: int = 1 << 62) -> None:
        self.max_idle = max_idle
        self._lock = threading.Lock()
        self._free: dict[int, list[torch.Tensor]] = {}
        # storage addresses of the buffers this pool made (a merge's parents, resident or
        # not, are never at one of them: only what the pool made can come back to it)
        self._ours: set[int] = set()
        self._idle_at: set[int] = set()  # ... of those now idle in _free
        self.idle = 0  # bytes idle in the pool
        self.fresh = 0  # bytes allocated new
        self.reused = 0  # bytes handed out again

    def take(self, nbytes: int) -> torch.Tensor:
        """A uint8 CPU tensor of ``nbytes`` (contents undefined), reused when one fits."""
        with self._lock:
            size = self._fit(nbytes)
            if size:
                free = self._free[size]
                buf = free.pop()
                if not free:
                    del self._free[size]
                self._idle_at.discard(buf.data_ptr())
                self.idle -= size
                self.reused += nbytes
                return buf[:nbytes]
        buf = torch.empty(nbytes, dtype=torch.uint8)
        with self._lock:
            self._ours.add(buf.data_ptr())
            self.fresh += nbytes
        return buf

    def _fit(self, nbytes: int) -> int:
        """The size of the idle buffer :meth:`take` would hand out (0: none): the exact
        size, else the smallest at most 1/8 larger (an embedding's buffer serves the next
        tensor of about its size)."""
        fits = [n for n, free in self._free.items() if free and nbytes <= n <= nbytes * 9 // 8]
        return min(fits, default=0)

    def fits(self, nbytes: int) -> int:
        """Bytes of the idle buffer a ``take(nbytes)`` now would reuse (0: none)."""
        with self._lock:
            return self._fit(nbytes)

    def reusable(self, sizes: list[int]) -> dict[int, int]:
        """The idle buffers ``take`` calls of these sizes would reuse, as {bytes: count}."""
        with self._lock:
            left = {n: len(free) for n, free in self._free.items() if free}
            used: dict[int, int] = {}
            for nbytes in sorted(sizes, reverse=True):
                fits = [n for n, k in left.items() if k and nbytes <= n <= nbytes * 9 // 8]
                if fits:
                    n = min(fits)
                    left[n] -= 1
                    used[n] = used.get(n, 0) + 1
            return used

    def give(self, *tensors: torch.Tensor | None) -> None:
        """Return these tensors' buffers (no-op for tensors the pool did not make, or for a
        buffer already returned). The caller guarantees nothing else uses them."""
        for t in tensors:
            if t is None or t.device.type != "cpu":
                continue
            storage = t.untyped_storage()
            ptr, nbytes = storage.data_ptr(), storage.nbytes()
            with self._lock:
                if ptr not in self._ours or ptr in self._idle_at:
                    continue
                if self.idle + nbytes > self.max_idle:
                    self._ours.discard(ptr)  # freed when the caller lets it go
                    continue
                buf = torch.empty(0, dtype=torch.uint8).set_(storage)
                self._free.setdefault(nbytes, []).append(buf)
                self._idle_at.add(ptr)
                self.idle += nbytes

    def evict(self, nbytes: int, spare: dict[int, int] | None = None) -> None:
        """Free idle buffers, largest first, until ``nbytes`` are freed or none is left,
        sparing ``spare`` ({bytes: count}: the ones the next job will take)."""
        spare = spare or {}
        with self._lock:
            for size in sorted(self._free, reverse=True):
                free = self._free[size]
                while len(free) > spare.get(size, 0) and nbytes > 0:
                    buf = free.pop()
                    ptr = buf.data_ptr()
                    self._idle_at.discard(ptr)
                    self._ours.discard(ptr)
                    self.idle -= size
                    nbytes -= size
                if not free:
                    del self._free[size]
                if nbytes <= 0:
                    return

    def drop_unwanted(self, wanted: set[int], above: int) -> None:
        """Free the idle buffers of more than ``above`` bytes that no ``take`` of a size in
        ``wanted`` (the large buffers later jobs will ask for) would reuse: an idle 1 GiB
        buffer no later job fits would otherwise sit in the pool, counted against the
        budget, while every smaller buffer given back is freed for want of room."""
        with self._lock:
            for size in [n for n in self._free if n > above]:
                if any(n <= size <= n * 9 // 8 for n in wanted):
                    continue
                for buf in self._free.pop(size):
                    ptr = buf.data_ptr()
                    self._idle_at.discard(ptr)
                    self._ours.discard(ptr)
                    self.idle -= size

    def clear(self) -> None:
        """Free every idle buffer."""
        self.evict(self.idle)
