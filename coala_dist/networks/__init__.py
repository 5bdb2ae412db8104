"""Flax networks: the Hawk (RG-LRU) sequence policy."""
