#!/usr/bin/env python3
"""Entry point: see ``python run_stream.py --help``."""

import sys

from streamer.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
