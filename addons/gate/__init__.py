"""Who sends a request and where it may go, decided before any of it leaves: identity, drills,
reserved hosts and the local API, egress, freezes, and the turn each request opens."""
