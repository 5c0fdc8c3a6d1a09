"""``python -m meshlab.storage.nfsd``: ``meshlab nfs-server`` without importing the whole CLI."""

from __future__ import annotations

import sys

from meshlab.storage.nfsd.commands import main

sys.exit(main())
