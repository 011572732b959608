"""Retrieval: embedders, vector index and ranking."""
