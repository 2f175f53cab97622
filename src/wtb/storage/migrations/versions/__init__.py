"""Alembic revisions of the result store, oldest first."""
