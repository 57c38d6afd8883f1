"""What lives as long as the proxy: starting mitmproxy, the policy, the admin listener, the log's scrub,
the heap, and the direct forms of mitmproxy's hot paths."""
