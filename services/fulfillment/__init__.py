"""Fulfillment: warehouses, shipments, carrier tracking, returns received, service tickets."""
