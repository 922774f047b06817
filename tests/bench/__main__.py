"""``python -m tests.bench``: the time-to-trust table."""

import sys

from tests.bench.ttt import main

sys.exit(main())
