"""User-facing errors: one clear line naming the file and the problem, no traceback."""

from __future__ import annotations

import functools
import sys


class InputError(Exception):
    """Bad user input (missing file, malformed STAR/MRC, inconsistent sizes...). The message is one line."""


def fail(path, problem: str) -> InputError:
    """An :class:`InputError` whose message starts with the offending file."""
    return InputError(f"{path}: {problem}")


def user_errors_exit(main):
    """Decorator for absl ``main`` functions: an :class:`InputError` or an ``OSError`` (unwritable or full disk)
    prints one ``error: ...`` line and exits 2."""

    @functools.wraps(main)
    def wrapped(argv):
        from absl import logging

        logging.set_verbosity(logging.WARNING)  # keep JAX's backend probing out of the user's terminal
        try:
            return main(argv)
        except InputError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        except OSError as e:  # unwritable or full disk, a folder where a file should be...: one line, no traceback
            where = e.filename if e.filename is not None else "(file system)"
            print(f"error: {where}: {e.strerror or e}; files written before this are intact", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)

    return wrapped
