"""`python -m panopticdepth` = the `panopticdepth` command (handy under `torchrun -m`)."""

import sys

from .cli.main import main

sys.exit(main())
