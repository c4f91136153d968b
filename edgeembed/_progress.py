"""One progress bar helper for long work (encode, calibration): tqdm when wanted, else nothing."""

from __future__ import annotations

from typing import Any


def progress_bar(total: int, show: bool, unit: str, desc: str) -> Any | None:
    """A tqdm bar on stderr, or None when not wanted (callers check for None)."""
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit=unit, desc=desc)
