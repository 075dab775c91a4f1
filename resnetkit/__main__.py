"""``python -m resnetkit`` is the ``resnetkit`` command."""

import sys

from .cli import main

sys.exit(main())
