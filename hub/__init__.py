"""vethub core: orders, worklist items, studies and results, independent of wire formats."""

__version__ = "0.1.0"
