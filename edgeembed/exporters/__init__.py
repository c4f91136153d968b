"""Exporters turn the source transformer into a graph file; they need the `export` extra (torch)."""
