"""``python -m hierbench.paper``: the paper's figures and tables from stored records (``make figures``).

The code is the package :mod:`hierbench.reports.paper`; this module is the command's name, which the
Makefile and the committed ``results/paper/`` (each artifact's "made by" line) use.
"""

from hierbench.reports.paper.command import main

__all__ = ["main"]

if __name__ == "__main__":
    raise SystemExit(main())
