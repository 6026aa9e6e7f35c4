"""Pure domain of tierlog: events, aggregates, classification, routing, timers."""
