"""The back office for one DATA_DIR: the order ledger, the Stripe client (or offline stand-in) and fulfilment."""

import payments
import webhooks
from fulfilment import Fulfilment
from ledger import Ledger


class Backend:
    """What both the web app and the merchant's commands work on; made once per process."""

    def __init__(self, config, business_name="Test shop"):
        self.config = config
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self.ledger = Ledger(config.data_dir / "shop.sqlite3")
        self.standin = config.standin
        if config.mode == "offline" and self.standin is None:
            from standin import StandIn  # only offline mode needs the stand-in; its state is in DATA_DIR
            self.standin = StandIn(config.data_dir, public_url=config.base_url,
                                   webhook_url=config.base_url + "/webhook",
                                   webhook_secret=config.stripe_webhook_secret or None,
                                   business_name=business_name, enabled_events=webhooks.EVENTS)
        self.stripe = payments.make_client(config, self.standin)
        self.fulfilment = Fulfilment(self.ledger, self.stripe, config.data_dir)
        # A crash between a hand-off and its commit is repaired before anything else runs.
        self.fulfilment.recover()

    def close(self):
        """Release what this process opened (the stand-in only if we made it)."""
        if self.standin is not None and self.config.standin is None:
            self.standin.close()
        self.ledger.close()
