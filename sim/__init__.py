"""qloom.sim."""
