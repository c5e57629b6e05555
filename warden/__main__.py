"""``python -m warden`` is ``warden-pbx``."""

import sys

from .cli import main

sys.exit(main())
