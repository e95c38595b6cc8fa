"""Discrete key-value bottleneck: key init, frozen encoders, class-incremental streams."""
