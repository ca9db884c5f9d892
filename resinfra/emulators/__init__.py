"""Cloud emulators for the real Pulumi engine: provider plugins speaking the engine's gRPC protocol."""
