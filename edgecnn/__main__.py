import sys

from edgecnn.cli import main

sys.exit(main())
