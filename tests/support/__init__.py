"""Test helpers shared by the test tree: services, kill points, pgvector."""
