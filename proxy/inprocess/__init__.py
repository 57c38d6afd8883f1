"""Tools an agent runs in its own process, inspected by the proxy through its reserved local API."""
