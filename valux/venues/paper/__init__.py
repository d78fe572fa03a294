"""The paper venue: realistic simulated fills, its durable order book, its market price lookup."""
