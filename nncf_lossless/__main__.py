import sys

from nncf_lossless.cli.main import main

sys.exit(main())
