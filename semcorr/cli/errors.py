"""How a script ends: bad input and interruptions in one clear line, never a traceback."""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable

from semcorr.storage.files import WriteError


def run_main(main: Callable[[], object]) -> None:
    """Run a script's main: bad input and interruptions end with one clear line, not a traceback.

    A file that cannot be written (a full disk, a file-size limit) is one line too (storage/files.WriteError).
    Set SEMCORR_TRACEBACK=1 to see the full traceback instead. Warnings print as one line each.
    """
    warnings.formatwarning = lambda message, *_, **__: f"warning: {message}\n"
    if os.environ.get("SEMCORR_TRACEBACK"):
        main()
        return
    try:
        main()
    except KeyboardInterrupt as stop:  # a flow that knows what it saved says so in the exception
        sys.exit(str(stop) or "interrupted: features extracted so far are in the feature cache; re-running resumes")
    except (ValueError, FileNotFoundError, PermissionError, WriteError) as err:
        sys.exit(f"error: {err}")
