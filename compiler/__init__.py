"""qloom.compiler."""
