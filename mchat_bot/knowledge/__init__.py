"""Channel knowledge: the index of what learning channels said, kept apart from curated memories."""
