"""notify_user: address a person, not a chat id, and fall back down the router's chain.

- `creation`: `notify_user()` stores the notification with the router's trace and queues the first send;
- `fallback`: the next step of the chain when a step fails, and the end states;
- `settlement`: reacting to deliveries settling and to urgent ones left unacknowledged;
- `inbox`: reading, listing and acknowledging notifications;
- `permissions`: who may notify, see, read and acknowledge; `trail`: audit target, principal, events.
"""
