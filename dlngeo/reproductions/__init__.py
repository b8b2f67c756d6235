"""Paper reproductions: the computations behind ``examples/`` (one module per paper)."""
