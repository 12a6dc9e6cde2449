"""The ``rectgrad`` command line. Each sub-command lives in its own module with a ``register(app)``.

User errors (bad arguments, missing files, unknown names, running out of memory) are printed as one line
and exit with status 2, warnings as one ``warning: ...`` line, each once; set ``RECTGRAD_DEBUG=1`` to see the traceback
(and Python's warnings) instead (``0``, ``false`` and ``no`` leave it off).
"""
from __future__ import annotations

import functools
import inspect
import os
import sys
import warnings

import typer

from rectgrad.cli import explain, reproduce, study, train

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  context_settings={"max_content_width": 120},  # the terminal's width up to 120 (click: 80)
                  help="Rectified Gradient attribution maps and the paper's experiments.")


def _print_version(value: bool) -> None:
    if value:
        import captum
        import torch

        import rectgrad

        typer.echo(f"rectgrad {rectgrad.__version__} (torch {torch.__version__}, captum {captum.__version__}, "
                   f"Python {sys.version.split()[0]})")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                       help="Print the versions of rectgrad, torch, captum and Python.")) -> None:
    """Rectified Gradient attribution maps and the paper's experiments."""


for _module in (explain, train, reproduce, study):
    _module.register(app)


def _listed_by_first_paragraph(group: typer.Typer) -> None:
    """Click's plain help (``rich_markup_mode=None``: Typer's boxed tables cut long option names at 80 columns) lists
    a command by its docstring's first sentence, cut at "Figs. ": each is listed by its first paragraph instead."""
    for info in group.registered_commands:
        info.short_help = info.short_help or (info.help or inspect.getdoc(info.callback) or "").split("\n\n")[0]
    for info in group.registered_groups:
        _listed_by_first_paragraph(info.typer_instance)


_listed_by_first_paragraph(app)

USER_ERRORS = (ValueError, TypeError, FileNotFoundError, KeyError, RuntimeError, OSError, ModuleNotFoundError)
IMAGE_OPTIONS = ("--count", "--scale", "--image-size")  # the options that bound memory, where a command has them
BATCH_OPTIONS = ("--batch-size", "--internal-batch-size", "--group")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``rectgrad`` script; returns the exit status."""
    with warnings.catch_warnings():
        if not _debug():
            warnings.showwarning = functools.partial(_show_warning, shown=set())
        return _run(argv)


def _debug() -> bool:
    return os.environ.get("RECTGRAD_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


def _decompression_bomb() -> type:
    from PIL import Image

    return Image.DecompressionBombError


def _memory_advice(argv: list[str]) -> str:
    """How to use less memory with the command in ``argv``: fewer or smaller images where it takes image files or
    has :data:`IMAGE_OPTIONS`, a smaller batch where it has :data:`BATCH_OPTIONS`."""
    command = typer.main.get_command(app)
    for word in argv:  # down the groups (rectgrad, study) to the command that ran
        subcommands = getattr(command, "commands", None)
        if subcommands is None:
            break
        command = subcommands.get(word, command)
    options = {option for parameter in command.params for option in getattr(parameter, "opts", ())}
    images = [option for option in IMAGE_OPTIONS if option in options]
    batches = [option for option in BATCH_OPTIONS if option in options]
    advice = []
    if images or any(parameter.param_type_name == "argument" for parameter in command.params):
        advice.append("fewer or smaller images" + (f" ({', '.join(images)})" if images else ""))
    if batches:
        advice.append(f"a smaller {' / '.join(batches)}")
    return "use " + " or ".join(advice) if advice else "free memory or use a machine with more"


def _message(exc: BaseException, argv: list[str]) -> str:
    import torch

    if isinstance(exc, (MemoryError, torch.cuda.OutOfMemoryError)):
        return f"out of memory ({str(exc) or 'the allocation failed'}): {_memory_advice(argv)}"
    if isinstance(exc, _decompression_bomb()):
        return f"an image would be too large to hold ({exc})"
    return _one_line(str(exc)) or type(exc).__name__


def _one_line(message: str, head: int = 500, tail: int = 300) -> str:
    """A message on one line: one quoting another error over many lines (a TorchScript traceback) keeps its beginning
    and its end, where rectgrad's messages say what to do."""
    text = " ".join(line.strip() for line in message.splitlines() if line.strip())
    return text if len(text) <= head + tail else f"{text[:head]} ... {text[-tail:]}"


def _show_warning(message, category, filename, lineno, file=None, line=None, *, shown: set | None = None) -> None:
    """A warning as one line, as errors are (``RECTGRAD_DEBUG=1``: Python's form, with file and line); with ``shown``
    (the lines said so far) each once a run, however often the work repeats it (a study's every setting)."""
    text = f"warning: {message}"
    if shown is not None:
        if text in shown:
            return
        shown.add(text)
    _say(text)


def _say(line: str) -> None:
    """``line`` on stderr, on a line of its own under a progress bar being drawn: on a terminal tqdm clears the bar
    and draws it again below; in a log (whose bars are redrawn rarely, rectgrad.progress) a new line ends the bar's."""
    from tqdm import tqdm

    if sys.stderr.isatty():
        tqdm.write(line, file=sys.stderr)
    else:
        print(("\n" if any(not bar.disable for bar in getattr(tqdm, "_instances", ())) else "") + line, file=sys.stderr)


def _run(argv: list[str] | None) -> int:
    try:
        status = app(args=argv, standalone_mode=False, prog_name="rectgrad")
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        print("aborted", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        _say("interrupted")
        return 130
    except Exception as exc:  # noqa: BLE001 - one clean line for user errors
        if callable(getattr(exc, "show", None)) and hasattr(exc, "exit_code"):  # usage errors (click or typer)
            exc.show()
            return exc.exit_code
        if _debug() or not isinstance(exc, (*USER_ERRORS, MemoryError, _decompression_bomb())):
            raise
        _say(f"error: {_message(exc, sys.argv[1:] if argv is None else argv)}")
        return 2
    if status == 130:  # typer returns (rather than raises) on Ctrl-C outside standalone mode
        _say("interrupted")
    return status if isinstance(status, int) else 0


if __name__ == "__main__":
    sys.exit(main())
