"""The chassis' storage: the MongoDB store dependency (guarded reads, one
transaction for state, outbox and inbox) and the versioned read models a
service keeps of other services' aggregates."""
