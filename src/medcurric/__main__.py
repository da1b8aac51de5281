"""``python -m medcurric`` runs the command line."""

import sys

from medcurric.cli import main

sys.exit(main())
