"""Find the built zoo models, for benchmarks: `zoo_models(half)`.

Light on purpose (no torch): a benchmark can list and check the zoo before it
imports anything heavy. A model counts as built only if its folder holds a
meta.json whose cache key matches the current manifest entry and build code.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.zoo.manifest import Half, ZooEntry, entries

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_ZOO_DIR = ROOT / "benchmarks" / ".cache" / "zoo"
# --quick models are too weak for measurements and never mix with the real zoo.
QUICK_ZOO_DIR = ROOT / "benchmarks" / ".cache" / "zoo-quick"
# The code a model's weights and files depend on: changing any of it rebuilds the zoo.
BUILD_SOURCES = (
    "benchmarks/zoo/architectures.py",
    "benchmarks/zoo/build.py",
    "benchmarks/zoo/datasets.py",
    "benchmarks/zoo/triggers.py",
    "converters/torch_to_onnx.py",
    "converters/verify.py",
)
COMMON_FILES = ("model.onnx", "clean.npz", "eval.npz", "meta.json")
BACKDOOR_FILES = ("bad.npz", "eval_bad.npz")


def build_code_version() -> str:
    digest = hashlib.sha256()
    for source in BUILD_SOURCES:
        digest.update(source.encode())
        digest.update((ROOT / source).read_bytes())
    return digest.hexdigest()[:16]


def cache_key(entry: ZooEntry, quick: bool) -> str:
    """Hash of the manifest entry, the build mode and the build code."""
    description = json.dumps({"entry": asdict(entry), "quick": quick}, sort_keys=True)
    return hashlib.sha256(f"{description}:{build_code_version()}".encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ZooModel:
    """A built zoo model: its manifest entry and the folder with its files."""

    entry: ZooEntry
    folder: Path

    @property
    def model_path(self) -> Path:
        return self.folder / "model.onnx"

    @property
    def clean_path(self) -> Path:
        return self.folder / "clean.npz"

    @property
    def bad_path(self) -> Path:
        return self.folder / "bad.npz"

    @property
    def eval_path(self) -> Path:
        return self.folder / "eval.npz"

    @property
    def eval_bad_path(self) -> Path:
        return self.folder / "eval_bad.npz"

    @property
    def trigger_spec(self) -> str | None:
        """The `--trigger` spec of a patch or blend trigger, with trigger.npy's full path."""
        spec = self.meta["trigger_spec"]
        return (
            None if spec is None else spec.replace("trigger.npy", str(self.folder / "trigger.npy"))
        )

    @property
    def meta(self) -> dict[str, Any]:
        return json.loads((self.folder / "meta.json").read_text())


def is_built(entry: ZooEntry, root: Path, quick: bool = False) -> bool:
    """Whether `root/NAME` holds every file of `entry`, built from this entry and code."""
    folder = root / entry.name
    needed = COMMON_FILES + (BACKDOOR_FILES if entry.scenario == "backdoor" else ())
    if not all((folder / name).is_file() for name in needed):
        return False
    meta = json.loads((folder / "meta.json").read_text())
    return meta.get("cache_key") == cache_key(entry, quick)


def zoo_models(half: Half | None = None, root: Path = DEFAULT_ZOO_DIR) -> list[ZooModel]:
    """The built models of the zoo (or of one half), in manifest order.

    Raises FileNotFoundError naming the models that are missing or out of date, so a
    benchmark never runs on part of a half without saying so."""
    wanted = entries(half)
    stale = [entry.name for entry in wanted if not is_built(entry, root)]
    if stale:
        raise FileNotFoundError(
            f"zoo models not built or out of date in {root}: {', '.join(stale)}; run "
            f"`python -m benchmarks.zoo.build --out {root}`"
        )
    return [ZooModel(entry, root / entry.name) for entry in wanted]
