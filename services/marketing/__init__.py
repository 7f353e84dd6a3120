"""The marketing service: discount rules and pricing, coupons, campaigns and notifications,
attribution, A/B experiments and recommendations (README.md)."""
