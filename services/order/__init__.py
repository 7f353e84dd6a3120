"""The order service: quote, checkout saga, payment, cancellation, expiry, returns and refunds."""
