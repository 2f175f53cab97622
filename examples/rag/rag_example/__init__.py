"""A retrieval-augmented question-answering workflow over a small shipped corpus.

The corpus describes the Orrin Archipelago, a fictional island group, so no model has
seen it and every answer must come from retrieval. Nothing here calls a network service:
"LLM" steps are small deterministic algorithms that report token usage like real ones.
"""
