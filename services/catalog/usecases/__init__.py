"""The catalog's use cases, each run inside one open transaction (`tx`):
`commands` (products, prices, merchants, reviews, erasure) and `inventory`
(stock adjustments, reservations, release, dispatch, restock)."""
