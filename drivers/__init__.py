"""Hardware behind small Protocols, each with a real and a simulated backend."""
