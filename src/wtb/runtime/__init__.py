"""The user's graph at run time: what WTB keeps of how the user compiled it (`compiled`),
and what one cell attempt sees of its store, cache and checkpointer (`attempt`, over the
store `overlay`)."""
