"""The actor system: account entities, shards hosting them, the router and the runtime."""
