"""A recency-weighted bag-of-codes visit encoder: an example of a third-party ehrprog plugin."""
