"""The chassis' web edge: the @http entrypoint (access rules, transient
retries, typed errors answered as JSON) every service's HTTP endpoints use."""
