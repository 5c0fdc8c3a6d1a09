"""Waiting for something the lab does at its own pace (a controller, a kubelet, a provisioner)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(check: Callable[[], T | None], timeout: float = 15.0, what: str = "condition", *,
             interval: float = 0.05) -> T:
    """Call ``check`` until it returns something truthy and return that; fail naming ``what`` (and the last
    value seen) after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what} (last: {last!r})")
        time.sleep(interval)
