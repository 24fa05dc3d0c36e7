"""How a script ends: bad input and interruptions in one clear line, never a traceback."""

from __future__ import annotations

import atexit
import gc
import os
import shlex
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

from semcorr.config.settings import REPO_ROOT
from semcorr.storage.files import WriteError


def script_path(name: str) -> str:
    """A script of this repository ('evaluate.py', 'finetuning/finetune.py') as a path from the working folder,
    so that a command printed here runs as printed."""
    return os.path.relpath(REPO_ROOT / name)


def command_line(argv: list[str] | None = None) -> str:
    """This script's command (or `argv`, its script first), quoted for a shell: 'python evaluate.py --flag value'."""
    argv = list(sys.argv if argv is None else argv)
    if argv and Path(argv[0]).suffix == ".py":
        argv[0] = os.path.relpath(argv[0])
    return shlex.join(["python", *argv])


def run_main(main: Callable[[], object]) -> None:
    """Run a script's main: bad input and interruptions end with one clear line, not a traceback.

    A file that cannot be written (a full disk, a file-size limit) is one line too (storage/files.WriteError).
    Set SEMCORR_TRACEBACK=1 to see the full traceback instead. Warnings print as one line each.
    """
    warnings.formatwarning = lambda message, *_, **__: f"warning: {message}\n"
    atexit.unregister(gc.freeze)  # (once however often a process runs a main)
    atexit.register(gc.freeze)  # the interpreter's last garbage collection skips torch's million objects: 1.3 s
    if os.environ.get("SEMCORR_TRACEBACK"):
        main()
        return
    try:
        main()
    except KeyboardInterrupt as stop:  # a flow that knows what it saved says so in the exception
        sys.exit(
            str(stop)
            or "interrupted: what was finished (features in the feature cache, downloaded files) is kept; "
            f"run the same command again to continue: {command_line()}"
        )
    except (ValueError, FileNotFoundError, PermissionError, WriteError) as err:
        sys.exit(f"error: {err}")
