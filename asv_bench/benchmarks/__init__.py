"""asv benchmarks of fastml: one module per primitive, helpers shared by all of them in _util."""
