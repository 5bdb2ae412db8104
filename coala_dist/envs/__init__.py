"""Pure-JAX environments."""
