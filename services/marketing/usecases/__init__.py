"""Marketing's use cases, one module per idea: pricing a cart (`carts`),
promotions, coupons, campaigns, transactional notifications, the order event
handlers (`order_events`), attribution, experiments and recommendations. Each
takes its dependencies as parameters, validates its payload and runs one
transaction per write (state + events)."""
