"""``python -m trustinstaller``."""

import sys

from trustinstaller.cli import main

sys.exit(main())
