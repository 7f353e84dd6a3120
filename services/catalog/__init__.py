"""The catalog service: products, merchants, prices, inventory with reservations, reviews, search."""
