"""One package per method: losses, model, data, recipe (and cli where it has a job of its own)."""
