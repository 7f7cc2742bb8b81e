"""Channel knowledge: the index of what learning channels said.

Every post of a learning channel is indexed as a message of its own, apart from the curated memories,
so that a question is answered from what the channel actually said. ``documents`` turns a post and its
conversation into the text that is indexed.
"""
