"""The shop's code, one module a job: settings, catalog, security and storefront (the web pages), payments and
webhooks (Stripe), ledger, fulfilment and reconcile (orders), merchant (the command line)."""
