"""Channel knowledge: the index of what learning channels said, kept apart from curated memories.

Every post of a learning channel is logged (``lines``) and indexed as a message of its own
(``index``), so that a question is answered from what the channel actually said. ``documents`` turns
a post and its conversation into the text that is indexed.
"""
