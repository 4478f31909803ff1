"""Small decoding policies, one role per module: blocks, refresh (row plans), scoring, unmasking.

Each is a dataclass whose init fields are its hyperparameters, built from a spec string by
`unmask.recipe`; the shared base and the spec parser live in base.py.
"""
