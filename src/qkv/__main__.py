"""``python -m qkv ...`` (and ``torchrun -m qkv train ...``) runs the CLI."""

import sys

from qkv.cli.main import main

sys.exit(main())
