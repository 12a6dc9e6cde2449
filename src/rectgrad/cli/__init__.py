"""The ``rectgrad`` command line. Each sub-command lives in its own module with a ``register(app)``.

User errors (bad arguments, missing files, unknown names) are printed as one line and exit with
status 2; set ``RECTGRAD_DEBUG=1`` to see the traceback instead.
"""
from __future__ import annotations

import importlib
import os
import sys

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Rectified Gradient attribution maps and the paper's experiments.")

USER_ERRORS = (ValueError, TypeError, FileNotFoundError, KeyError, RuntimeError, OSError)

for _name in ("explain", "train", "reproduce", "study"):
    try:
        importlib.import_module(f"rectgrad.cli.{_name}").register(app)
    except ModuleNotFoundError as exc:  # a sub-command whose module is not there yet
        if exc.name != f"rectgrad.cli.{_name}":
            raise


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``rectgrad`` script; returns the exit status."""
    try:
        app(args=argv, standalone_mode=False, prog_name="rectgrad")
    except typer.Exit as exc:
        return exc.exit_code
    except SystemExit as exc:
        return int(exc.code or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - one clean line for user errors
        import click

        if isinstance(exc, click.exceptions.Abort):
            return 1
        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            return exc.exit_code
        if os.environ.get("RECTGRAD_DEBUG") or not isinstance(exc, USER_ERRORS):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
