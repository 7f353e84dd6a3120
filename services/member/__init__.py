"""The member service: profiles, consent, points ledger, tiers, lifecycle segments, erasure."""
