"""The ``rectgrad`` console script's entry point, a module outside the rectgrad package: importing any module of the
package first runs ``rectgrad/__init__``, which imports torch (seconds), and a Ctrl-C then, before any code of
rectgrad ran, printed a Python traceback. :func:`main` imports the command itself, where it can catch that Ctrl-C."""
import importlib
import sys

COMMAND = "rectgrad.__main__"  # the module of the command's main()


def main() -> int:
    """The ``rectgrad`` command: its modules imported here, a Ctrl-C meanwhile one line and status 130, as in a run."""
    try:
        command = importlib.import_module(COMMAND)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return command.main()
