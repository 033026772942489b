import sys

from fct_registry.cli import main

sys.exit(main())
