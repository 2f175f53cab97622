"""Alembic environment of the result store, driven from code (see wtb.storage.migrate)."""
