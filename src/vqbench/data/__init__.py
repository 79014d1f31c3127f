"""Image sources and the data module."""
