"""The pure core: decisions over plain data. No I/O, no clocks (``now`` is an argument)."""
