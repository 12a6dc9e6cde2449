"""The ``rectgrad`` command (``python -m rectgrad`` too), or, without the ``cli`` extra, how to install it. The console
script enters through ``_rectgrad_launcher``, outside the package, so that a Ctrl-C while torch imports is one line
too (``python -m rectgrad`` imports the package, and so torch, before this module runs)."""
import sys

_CLI_EXTRA = {"typer", "rich", "click", "tqdm", "matplotlib", "PIL", "torchvision", "timm", "skimage"}


def main() -> int:
    try:
        from rectgrad.cli import main as command_line
    except KeyboardInterrupt:  # (a Ctrl-C while the command's modules import: seconds)
        print("interrupted", file=sys.stderr)
        return 130
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in _CLI_EXTRA:
            raise
        from rectgrad._checks import install_hint

        print(f"error: the rectgrad command needs the cli extra ({exc.name} is not installed): {install_hint('cli')}",
              file=sys.stderr)
        return 2
    return command_line()


if __name__ == "__main__":
    sys.exit(main())
