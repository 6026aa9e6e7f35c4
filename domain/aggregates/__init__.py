"""The aggregates: Task, Agent, Endpoint and Scheduler, one module each.

Each module holds its aggregate's state record, a pure ``evolve`` over its events and
the decisions that belong to it (a command and the record in, events out).
``tierlog.domain.state.SchedulerState`` composes them and keeps the indexes that span
aggregates: queue order, idle agents, deadlines.
"""
