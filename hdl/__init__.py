"""qloom.hdl."""
