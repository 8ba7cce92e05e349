"""The router: "notify Ada, urgent" → an ordered chain of channels, and why.

- `snapshot`: the inputs of one decision (a person's identities with their preferences, the
  connectors' states) and its output (the chain of routes and the trace);
- `chain`: `choose()`, the pure decision over a snapshot (no database, no clock, no settings);
- `loading`: reads a snapshot's parts from the database, one query each;
- `cache`: keeps them per process and forgets what changed (the signal receivers);
- `decision`: `decide()`, which glues them and adds the quota levels (read fresh).
"""
