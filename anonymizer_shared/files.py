"""Files written whole or not at all: a reader never sees half a file, a crash leaves none."""

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# The project folder of a source checkout: default home of models/ and jsonFiles/.
PROJECT_ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def atomic_output(path: Path, mode: int = 0o644) -> Iterator[Path]:
    """A temporary path beside `path` to write into; renamed to `path` when the block ends without
    error, removed otherwise. The rename is atomic, so `path` holds the old content or the new."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name[:64]}.", suffix=".partial")
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        temporary.chmod(mode)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def atomic_write(path: Path, data: bytes | str, mode: int = 0o644) -> None:
    """Write `data` to `path` atomically, flushed to disk before the rename."""
    with atomic_output(path, mode) as temporary, temporary.open("wb") as out:
        out.write(data.encode() if isinstance(data, str) else data)
        out.flush()
        os.fsync(out.fileno())
