"""encore: reproducible lifelong sequential knowledge editing (MEMIT, EMMET, AlphaEdit, ENCORE)."""

__version__ = "0.1.0"
