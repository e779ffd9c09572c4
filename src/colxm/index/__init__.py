"""Index: vectors -> compressed segments on disk (codec, k-means, inverted lists, lifecycle)."""
