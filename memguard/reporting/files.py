"""The one way memguard writes a report file: private, exclusive, atomic.

Every report file memguard writes (the exit report's ``log_path=PREFIX`` file, the pytest
plugin's ``--memguard-report`` document) goes through :func:`write_report_file`:

* the text is written to a new temporary file in the target's own directory, created
  with ``tempfile.mkstemp`` (``O_CREAT | O_EXCL | O_NOFOLLOW``, an unpredictable name,
  mode 0600): nothing planted in the directory, a symlink least of all, is ever opened
  or followed;
* the file is flushed to disk, then renamed over the target: a reader sees either the
  old file or the whole new one, never half of one.  A symlink planted at the target
  itself is replaced, not followed (``rename`` acts on the name).

Reports name the program, its arguments and its memory, so they are readable by their
owner only (0600), whatever the umask.
"""

from __future__ import annotations

import os
import tempfile

__all__ = ["REPORT_FILE_MODE", "write_report_file"]

#: The permissions of every report file: read and write for the owner only.
REPORT_FILE_MODE = 0o600


def write_report_file(path: str | os.PathLike[str], text: str) -> str:
    """Write ``text`` (UTF-8) to ``path`` atomically, as a new 0600 file; return the path written.

    :raises OSError: the directory does not exist or is not writable, ``path`` is a
        directory, the disk is full…; no temporary file is left behind.
    """
    name = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(name))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(name)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            if hasattr(os, "fchmod"):
                os.fchmod(f.fileno(), REPORT_FILE_MODE)
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, name)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return name
