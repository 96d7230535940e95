"""Which version of each frame the child kernel already holds (the parent's side only).

Sending a frame costs a copy; sending it again when it has not changed is waste. The
tracker here answers "does the child hold exactly this version of ``name``?" cheaply. It
lives apart from ``transfer.py`` because the child loads that file by path and must not
need anything beyond the standard library, while this module is parent-only.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

from .transfer import _copy_on_write

__all__ = ["SentFrames"]


def _axis_names(obj: Any) -> tuple[Any, ...]:
    names: tuple[Any, ...] = (tuple(obj.index.names),)
    if hasattr(obj, "columns"):
        names += (tuple(obj.columns.names),)
    else:
        names += (obj.name,)
    return names


def _sample_digest(obj: Any) -> int:
    # Without copy-on-write the data may change under the same objects: hash the whole
    # frame when small, else evenly spaced rows plus the head and tail.
    import numpy as np
    import pandas as pd

    n = len(obj)
    rows = (
        obj
        if n <= 100_000
        else obj.iloc[
            np.unique(np.r_[0:64, n - 64 : n, np.linspace(0, n - 1, 4096, dtype=np.int64)])
        ]
    )
    try:
        hashed = pd.util.hash_pandas_object(rows, index=True)
        return hash(hashed.to_numpy().tobytes())
    except TypeError:  # unhashable cells (lists, dicts): fall back to their text
        return hash(rows.to_string())


@dataclass
class _Version:
    ref: weakref.ref[Any]
    state: tuple[Any, ...]
    names: tuple[Any, ...]
    snapshot: Any = None  # a shallow copy: makes pandas copy-on-write see a second reference
    digest: int | None = None
    finalizer: weakref.finalize | None = None


class SentFrames:
    """Which version of each named frame the child already holds.

    The trade-off chosen: with pandas copy-on-write (always on from pandas 3) the tracker
    keeps a *shallow* copy of every frame it sent. Because of that second reference, any
    in-place write to the user's frame (``df.loc[...] = ``, ``inplace=True``, ``df[c] +=``)
    makes pandas give the frame a fresh block instead of writing into the shared one, so
    comparing the identities of the frame's manager, blocks and axes (pinned by the
    shallow copy, so ids cannot be reused) catches every edit exactly, in time
    proportional to the number of blocks, whatever the number of rows. Axis names, which
    are mutable in place, are compared too; ``attrs`` are not.
    The price: the first write after a send copies the written block (what pandas would do
    anyway if any view existed), and the old version stays in memory until the frame is
    sent again, the child is replaced, or the user's frame is garbage collected.
    Without copy-on-write (pandas 2 with the option off) identity cannot see edits, so it
    hashes the frame up to 100 000 rows and an evenly spaced sample of ~4 200 rows beyond:
    an edit to a row outside the sample of a huge frame is then missed.
    """

    def __init__(self) -> None:
        self._sent: dict[str, _Version] = {}
        self._expired: set[str] = set()

    def is_current(self, name: str, obj: Any) -> bool:
        """True when the child already holds exactly this version of ``obj`` as ``name``."""
        version = self._sent.get(name)
        if version is None or version.ref() is not obj:
            return False
        if _axis_names(obj) != version.names:
            return False
        if version.snapshot is not None:
            return _same_state(_state(obj), version.state)
        return _sample_digest(obj) == version.digest

    def remember(self, name: str, obj: Any) -> None:
        """Record that the child now holds this version of ``obj`` as ``name``."""
        self.forget(name)
        self._expired.discard(name)
        cow = _copy_on_write()
        version = _Version(
            ref=weakref.ref(obj),
            state=_state(obj),
            names=_axis_names(obj),
            snapshot=obj.copy(deep=False) if cow else None,
            digest=None if cow else _sample_digest(obj),
        )
        # When the user drops the frame, drop our shallow copy with it.
        version.finalizer = weakref.finalize(obj, self._expire, name, id(version))
        self._sent[name] = version

    def forget(self, name: str | None = None) -> None:
        """Forget one name, or everything (the child was replaced)."""
        names = list(self._sent) if name is None else [name]
        for key in names:
            version = self._sent.pop(key, None)
            if version is not None and version.finalizer is not None:
                version.finalizer.detach()

    def names(self) -> list[str]:
        """Names the child holds a current copy of (as far as the tracker knows)."""
        return list(self._sent)

    def pop_expired(self) -> list[str]:
        """Names whose frames the user dropped since the last call (the child may let go)."""
        expired, self._expired = sorted(self._expired), set()
        return expired

    def _expire(self, name: str, token: int) -> None:
        version = self._sent.get(name)
        if version is not None and id(version) == token:
            del self._sent[name]
            self._expired.add(name)


def _state(obj: Any) -> tuple[Any, ...]:
    mgr = obj._mgr
    return (mgr, tuple(mgr.blocks), tuple(mgr.axes))


def _same_state(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    return (
        a[0] is b[0]
        and len(a[1]) == len(b[1])
        and len(a[2]) == len(b[2])
        and all(x is y for x, y in zip(a[1], b[1], strict=True))
        and all(x is y for x, y in zip(a[2], b[2], strict=True))
    )
