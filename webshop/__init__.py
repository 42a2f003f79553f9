"""The shop's code, one module a job. Web: storefront (the shopper's pages), security (cookies, CSRF), admin (the
merchant's orders page). Catalog: catalog, catalog_rules, iso_codes. Stripe: payments, webhooks. Orders: ledger (all
SQL), fulfilment, reconcile, mail (order emails). Settings: settings. The command line: merchant."""
