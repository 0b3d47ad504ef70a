import sys

from objalign.cli import main

sys.exit(main())
