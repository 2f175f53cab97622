"""Real services the test session starts: PostgreSQL and PgBouncer, on loopback ports."""
