"""Runtime helpers below train, evaluate, serve and compress: precision resolution and autocast, batched
inference."""
