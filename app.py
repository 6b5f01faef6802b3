"""Start the web chat on the default corpus, building or updating its index first (`python app.py --help`)."""
from __future__ import annotations

import sys

from qa.cli import main

if __name__ == "__main__":
    sys.exit(main(["serve", *sys.argv[1:]]))
