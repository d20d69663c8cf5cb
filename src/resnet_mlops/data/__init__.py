"""Data preparation: sources, the split, and the prepared dataset on disk."""
