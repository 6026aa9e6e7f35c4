"""The long-running scheduler: the writer thread, the wall clock, the Ollama prober."""
