"""CPU-scale experiments that reuse the product's pieces (not part of the installed package)."""
