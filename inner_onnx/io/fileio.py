"""Writing results without ever losing or half-writing a file.

Outputs go to a temporary file in the target folder, then `os.replace` puts
them in place, so a crash leaves either the old file or the new one. Output
paths are checked before any work starts: never the input, never a missing
folder, never an existing file without `--force`.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from inner_onnx.errors import InputError


def check_output_path(output: str | Path, inputs: Iterable[str | Path], force: bool) -> Path:
    """Refuse an output that would overwrite an input, lands in a missing folder, or exists."""
    output = Path(output)
    if output.exists() and output.is_dir():
        raise InputError(f"output path is a folder: {output}")
    resolved = output.resolve()
    for source in inputs:
        if Path(source).exists() and Path(source).resolve() == resolved:
            raise InputError(f"output {output} is the same file as the input {source}; choose -o")
    if not resolved.parent.is_dir():
        raise InputError(f"output folder does not exist: {output.parent}")
    if output.exists() and not force:
        raise InputError(f"output {output} exists; pass --force to overwrite it")
    # Permissions alone do not tell (root, read-only or virtual file systems): try it now,
    # before the work, the way the final write will (a temporary file in the folder).
    try:
        with tempfile.NamedTemporaryFile(dir=resolved.parent, prefix=f".{output.name}."):
            pass
    except OSError as exc:
        raise InputError(
            f"cannot write in the output folder {output.parent}: {exc.strerror}"
        ) from None
    return output


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    path = Path(path)
    descriptor, temporary = tempfile.mkstemp(
        dir=path.resolve().parent, prefix=f".{path.name}.", suffix=".tmp"
    )
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp creates 0600; give the result the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | Path, payload: object) -> None:
    write_bytes_atomic(path, (json.dumps(payload, indent=2, sort_keys=False) + "\n").encode())
