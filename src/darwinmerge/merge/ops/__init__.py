"""merge/ops."""
