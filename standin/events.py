"""Events and signed webhook delivery from an SQLite outbox (https://docs.stripe.com/webhooks)."""
import hmac
import json
import logging
import os
import secrets
import time
import urllib.error
import urllib.request
from hashlib import sha256

from . import objects as o

log = logging.getLogger("standin.webhooks")
MAX_ATTEMPTS = 8
LEASE_SECONDS = 60


def emit(ctx, type_, obj, previous_attributes=None):
    """Store an event snapshot of `obj` and queue it for webhook delivery when an endpoint subscribes to it."""
    evt = o.event(type_, obj, ctx.api_version, ctx.now, previous_attributes, ctx.request)
    if ctx.webhook_url and (ctx.enabled_events is None or type_ in ctx.enabled_events):
        evt["pending_webhooks"] = 1
        ctx.tx.enqueue(evt["id"], time.time())
    ctx.tx.put(evt)
    return evt


def load_secret(data_dir, given=None):
    """The signing secret: the one given, else `whsec_...` generated once into `<data_dir>/standin_webhook_secret`."""
    if given:
        return given
    path = os.path.join(data_dir, "standin_webhook_secret")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(50):  # another process may be writing it right now
            with open(path) as fh:
                value = fh.read().strip()
            if value:
                return value
            time.sleep(0.01)
        raise RuntimeError(f"{path} is empty")
    value = "whsec_" + secrets.token_hex(24)
    with os.fdopen(fd, "w") as fh:
        fh.write(value)
    return value


def sign(secret, body, timestamp=None):
    """The `Stripe-Signature` header: t=<unix>,v1=<hex HMAC-SHA256 of "t.body">, and the fake v0 signature that
    test-mode events carry besides; https://docs.stripe.com/webhooks#verify-manually."""
    t = int(timestamp if timestamp is not None else time.time())
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, sha256).hexdigest()
    return f"t={t},v1={mac},v0={secrets.token_hex(32)}"


def http_post(url, body, headers):
    """POST the body with urllib (10 s timeout); returns the status, or 0 when the connection fails."""
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            resp.read()
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code
    except (OSError, ValueError) as e:
        log.info("webhook POST to %s failed: %s", url, type(e).__name__)
        return 0


def backoff(attempts, base):
    """Seconds until the next try after `attempts` failures (exponential, capped at an hour)."""
    return min(base * (2 ** (attempts - 1)), 3600.0)


class Outbox:
    """Delivery state and controls over the outbox shared by every StandIn on the same data_dir."""

    def __init__(self, standin):
        self.s = standin
        self.owner = secrets.token_hex(8)

    def _claim(self, tried, reverse):
        now = time.time()
        skip = ",".join(str(int(x)) for x in tried) or "-1"
        order = "DESC" if reverse else "ASC"
        with self.s.store.tx(write=True) as tx:
            row = tx.conn.execute(
                "UPDATE outbox SET lease_owner = ?, lease_until = ? WHERE seq = ("
                " SELECT seq FROM outbox WHERE state = 'pending' AND next_attempt <= ?"
                f" AND (lease_until IS NULL OR lease_until < ?) AND seq NOT IN ({skip}) ORDER BY seq {order} LIMIT 1)"
                " RETURNING seq, event_id, attempts", (self.owner, now + LEASE_SECONDS, now, now)).fetchone()
            evt = tx.get(row[1]) if row else None
        return row, evt

    def deliver_pending(self, reverse=False, duplicate=False):
        """Try each due event once (oldest first unless reverse); returns [(event_id, status)]."""
        results, tried = [], []
        if not self.s.webhook_url:
            return results
        while not self.s.hold_webhooks:
            row, evt = self._claim(tried, reverse)
            if row is None:
                break
            seq, event_id, attempts = row
            tried.append(seq)
            status = self._send(evt)
            if duplicate and 200 <= status < 300:
                self._send(evt)
            self._record(seq, event_id, attempts + 1, status)
            results.append((event_id, status))
        return results

    def _send(self, evt):
        body = json.dumps(o.public(evt), indent=2).encode()
        headers = {"Content-Type": "application/json; charset=utf-8", "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
                   "Stripe-Signature": sign(self.s.webhook_secret, body)}
        try:
            return int(self.s.deliver(self.s.webhook_url, body, headers) or 0)
        except Exception as e:  # a broken endpoint or deliver hook counts as a failed attempt
            log.info("webhook delivery of %s raised %s", evt["id"], type(e).__name__)
            return 0

    def _record(self, seq, event_id, attempts, status):
        now = time.time()
        ok = 200 <= status < 300
        state = "delivered" if ok else ("failed" if attempts >= self.s.webhook_max_attempts else "pending")
        with self.s.store.tx(write=True) as tx:
            tx.conn.execute(
                "UPDATE outbox SET state = ?, attempts = ?, last_status = ?, lease_owner = NULL, lease_until = NULL,"
                " next_attempt = ?, delivered_at = ? WHERE seq = ?",
                (state, attempts, status, now + (0 if ok else backoff(attempts, self.s.webhook_retry_base)),
                 now if ok else None, seq))
            if ok:  # an event never delivered stays pending: it is what `delivery_success=false` lists
                evt = tx.get(event_id)
                evt["pending_webhooks"] = 0
                tx.put(evt)
        if state == "failed":
            log.warning("gave up delivering %s after %d attempts (last status %s)", event_id, attempts, status)

    def redeliver(self, event_id):
        """Send one event again right now (a duplicate delivery, as Stripe may do); returns the status."""
        with self.s.store.tx() as tx:
            evt = tx.get(event_id, "event")
        return self._send(evt) if evt else None

    def rows(self, state=None):
        """Outbox rows as dicts (event_id, type, state, attempts, last_status), oldest first."""
        with self.s.store.tx() as tx:
            sql = "SELECT seq, event_id, state, attempts, last_status, next_attempt FROM outbox"
            rows = tx.conn.execute(sql + (" WHERE state = ?" if state else "") + " ORDER BY seq",
                                   (state,) if state else ()).fetchall()
            out = []
            for seq, eid, st, attempts, last, nxt in rows:
                evt = tx.get(eid)
                out.append({"seq": seq, "event_id": eid, "type": evt["type"], "state": st, "attempts": attempts,
                            "last_status": last, "next_attempt": nxt})
        return out

    def drop_pending(self):
        """Mark every pending event dropped (never delivered); returns their ids."""
        with self.s.store.tx(write=True) as tx:
            rows = tx.conn.execute("UPDATE outbox SET state = 'dropped' WHERE state = 'pending' RETURNING event_id")
            return [r[0] for r in rows.fetchall()]
