"""Everything that touches the outside world: stores, codecs, runtime, CLI."""
