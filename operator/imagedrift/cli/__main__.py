"""``python -m imagedrift.cli``: the same as the ``imagedrift`` script."""

import sys

from imagedrift.cli import main

sys.exit(main())
