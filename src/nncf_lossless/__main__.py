import sys

from nncf_lossless.cli import main

sys.exit(main())
