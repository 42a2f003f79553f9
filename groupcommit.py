"""Group commit: fulfilments that arrive together share one write transaction and one fsync of the hand-off file.

Each fulfilment must hand off its line durably (fsync) before its order is marked paid (COMMIT), and every
worker takes the database's writer lock for that. One fsync per order made the lock the limit on how many
webhooks a second the shop can take (bench/run.py figure 6). Here the first caller to arrive runs a turn for
everyone queued behind it, then passes the lead to the next caller still waiting; nobody waits for more than
the turn in progress and their own.
"""

import threading

MAX_BATCH = 64  # claims per transaction: bounds how long one turn holds the writer lock


class _Ticket:
    __slots__ = ("claim", "error", "lead", "result", "wake")

    def __init__(self, claim):
        self.claim, self.result, self.error, self.lead = claim, None, None, False
        self.wake = threading.Event()


class GroupCommit:
    """Runs claims inside shared write transactions of `database`, then hands off what they return in one go.

    claim(db) runs inside the transaction and returns a record to hand off, or None. hand_off(records) makes
    them durable, or raises: then the whole transaction rolls back and every caller in it gets the error.
    """

    def __init__(self, database, hand_off):
        self.database, self.hand_off = database, hand_off
        self._lock = threading.Lock()
        self._queue = []
        self._leading = False  # a caller is running (or about to run) a turn

    def run(self, claim, alone=False):
        """claim's record once it is handed off and committed, or None when it returned None; raises its error.

        alone: the claim hands off its record itself; it gets a transaction of its own and no hand_off()."""
        ticket = _Ticket(claim)
        if alone:  # a claim that hands off by itself and must not share its transaction (a custom action)
            self._commit([ticket], hand_off=False)
            return _outcome(ticket)
        with self._lock:
            self._queue.append(ticket)
            if not self._leading:
                self._leading = ticket.lead = True
        if not ticket.lead:
            ticket.wake.wait()  # woken when our turn is committed, or to lead the next one
        if ticket.lead:
            self._turn()
        return _outcome(ticket)

    def _turn(self):
        with self._lock:
            batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
        try:
            self._commit(batch)
        finally:
            with self._lock:
                if self._queue:  # the next caller in line leads the next turn
                    following = self._queue[0]
                    following.lead = True
                    following.wake.set()
                else:
                    self._leading = False
            for ticket in batch:
                ticket.lead = False
                ticket.wake.set()

    def _commit(self, batch, hand_off=True):
        claimed = False
        try:
            with self.database.write() as db:
                for ticket in batch:
                    ticket.result = ticket.claim(db)
                claimed = True
                records = [t.result for t in batch if t.result is not None]
                if records and hand_off:
                    self.hand_off(records)
        except BaseException as error:  # the transaction rolled back: nothing of this turn happened
            for ticket in batch:
                ticket.result = None
            if claimed or len(batch) == 1 or not isinstance(error, Exception):
                for ticket in batch:
                    ticket.error = error
                if not isinstance(error, Exception):
                    raise
            else:  # one claim failed: the others must not fail with it, so each gets a turn of its own
                for ticket in batch:
                    self._commit([ticket])


def _outcome(ticket):
    if ticket.error is not None:
        raise ticket.error
    return ticket.result
