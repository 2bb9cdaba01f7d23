"""``python -m dynamo_backend_protocol``: the same command as ``dynamo-backend-protocol``."""

import sys

from dynamo_backend_protocol.reference.cli import main

sys.exit(main())
