"""The machine line a benchmark prints before and after its table, so a result records where
and how busy it ran."""

from __future__ import annotations

import os
import platform

import torch


def start_line(threads: int) -> str:
    return (
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
        f"{torch.__version__}, {threads} torch threads, load average "
        f"{os.getloadavg()[0]:.1f} at start"
    )


def end_line() -> str:
    return f"# load average {os.getloadavg()[0]:.1f} at end"
