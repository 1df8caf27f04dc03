"""Where spend logs come from: LiteLLM's database, its REST API, or a seeded generator."""
