"""The ``rectgrad`` command (``python -m rectgrad`` too), or, without the ``cli`` extra, how to install it."""
import sys

_CLI_EXTRA = {"typer", "rich", "click", "tqdm", "matplotlib", "PIL", "torchvision", "timm", "skimage"}


def main() -> int:
    try:
        from rectgrad.cli import main as command_line
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in _CLI_EXTRA:
            raise
        print(f"error: the rectgrad command needs the cli extra ({exc.name} is not installed): pip install "
              "'rectgrad[cli]' (in a clone: pip install -e \".[cli]\")", file=sys.stderr)
        return 2
    return command_line()


if __name__ == "__main__":
    sys.exit(main())
