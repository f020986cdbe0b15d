"""The placement engine: which stores hold an object's copies, and reading and writing them."""
