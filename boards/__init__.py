"""qloom.boards."""
