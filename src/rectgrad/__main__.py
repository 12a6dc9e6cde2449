"""``python -m rectgrad`` runs the command line."""
import sys

from rectgrad.cli import main

sys.exit(main())
