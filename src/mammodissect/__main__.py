"""``python -m mammodissect`` runs the command line."""

import sys

from mammodissect.cli import main

sys.exit(main())
