"""Results back to practice software: outbox events become deliveries, deliveries get sent.

Three steps, each its own short transaction, so that a crash at any point
loses nothing and no database lock is held while a socket waits:

1. ``dispatch`` (dispatch.py): undispatched outbox rows become ``Delivery``
   rows (one per delivery kind of the order's source that subscribes to the
   event) and are marked dispatched, in one transaction.
2. ``claim`` (leases.py): due pending deliveries are leased: ``attempts`` goes
   up and ``next_attempt_at`` moves to the end of the lease, so another
   process (or this one after a crash) retries only once the lease has run out.
3. ``settle`` (leases.py): the outcome is written: delivered, or pending again
   after an exponential backoff with jitter (policy.py), or failed after the
   last attempt.

Several hub processes may share one PostgreSQL: both dispatch and claim
take rows with ``FOR UPDATE SKIP LOCKED``. On SQLite the single process
serialises writers with ``BEGIN IMMEDIATE`` (hub/db.py).

Per-order ordering: a delivery is not claimed while an earlier one for the
same source, kind and order is still pending, nor while an earlier outbox
event of that order is still undispatched.

The kinds (webhook, HL7 ORU, ...) are declared by the adapters that send them
(kinds.py); worker.py runs the three steps in the background; review.py is
what people do: list, read and resend.
"""
